// Runs the cases tests/test_javascript_verifier.py writes (one JSON file) through the verifier and
// prints what it answered to each, as JSON: {"ok": true, "result": …} or {"ok": false, "error": "<message>",
// "kind": "<the error's class>"}.

import { readFileSync } from "node:fs";

import { publicKeysFromSigningKeys, VerificationError, verifyLicenseFile, verifyResponse } from "../license-verifier.mjs";

const { signing_keys: signingKeys, cases } = JSON.parse(readFileSync(process.argv[2], "utf8"));
const publicKeys = publicKeysFromSigningKeys(signingKeys);

const CHECKS = { expected_nonce: "expectedNonce", expected_call: "expectedCall", license_key: "licenseKey" };

function run({ kind, now, max_age_seconds: maxAgeSeconds, options, body_base64: body, header, text }) {
  const checks = { now: new Date(now) };
  for (const [name, value] of Object.entries(options)) {
    checks[CHECKS[name] ?? name] = value;
  }
  if (kind === "response") {
    if (maxAgeSeconds !== undefined) {
      checks.maxAgeMs = maxAgeSeconds * 1000;
    }
    return verifyResponse(Buffer.from(body, "base64"), header, publicKeys, checks);
  }
  return verifyLicenseFile(text, publicKeys, checks);
}

const outcomes = cases.map((testCase) => {
  try {
    return { ok: true, result: run(testCase) };
  } catch (error) {
    if (!(error instanceof VerificationError)) {
      throw error;
    }
    return { ok: false, error: error.message, kind: error.name };
  }
});
process.stdout.write(JSON.stringify(outcomes));
