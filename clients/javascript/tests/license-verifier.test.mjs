// What only the JavaScript verifier has to get right: how keys and bodies are handed to it. Its
// decisions are checked against the Python verifier's on the server's own answers by
// tests/test_javascript_verifier.py.

import assert from "node:assert/strict";
import { generateKeyPairSync, sign } from "node:crypto";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import * as verifier from "../license-verifier.mjs";

import {
  loadPublicKey,
  UnknownSigningKeyError,
  VerificationError,
  verifyLicenseFile,
  verifyResponse,
} from "../license-verifier.mjs";

const { privateKey, publicKey } = generateKeyPairSync("ed25519");
const body = Buffer.from(JSON.stringify({ valid: true, meta: { nonce: "n-1" } }));
const header = `keyid="k1", algorithm="ed25519", signature="${sign(null, body, privateKey).toString("base64")}"`;
const pem = publicKey.export({ type: "spki", format: "pem" });

test("keys may be PEM text or key objects, in a Map or a plain object", () => {
  for (const keys of [{ k1: pem }, new Map([["k1", publicKey]]), { k1: loadPublicKey(pem) }]) {
    assert.equal(verifyResponse(body, header, keys, { expectedNonce: "n-1" }).valid, true);
  }
});

test("a key id that names an object's inherited property is an unknown key", () => {
  const borrowed = header.replace('keyid="k1"', 'keyid="constructor"');

  assert.throws(() => verifyResponse(body, borrowed, { k1: pem }), VerificationError);
});

test("a body already decoded to text is a mistake in the app, not an untrusted answer", () => {
  assert.throws(() => verifyResponse(body.toString(), header, { k1: pem }), TypeError);
});

test("a body may be the ArrayBuffer fetch gives", () => {
  const arrayBuffer = body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength);

  assert.equal(verifyResponse(arrayBuffer, header, { k1: pem }).valid, true);
});

test("a misspelt, undefined or wrongly typed check is refused rather than skipped", () => {
  const keys = { k1: pem };

  assert.throws(() => verifyResponse(body, header, keys, { key: "DEMO" }), /Unknown option 'key'/);
  assert.throws(() => verifyResponse(body, header, keys, { nonce: "n-1" }), TypeError);
  assert.throws(() => verifyResponse(body, header, keys, { fingerprint: undefined }), /leave it out/);
  assert.throws(() => verifyResponse(body, header, keys, { licenseKey: 42 }), /must be a string/);
  assert.throws(() => verifyLicenseFile("", keys, { fingerPrint: "pc-1" }), /Unknown option 'fingerPrint'/);
  assert.throws(() => verifyLicenseFile("", keys, { expectedNonce: "n-1" }), TypeError);
});

test("a key this build does not hold is told apart, so the app can ask to be updated", () => {
  assert.throws(() => verifyResponse(body, header, { k2: pem }), UnknownSigningKeyError);
});

test("a key that is not Ed25519 is refused", () => {
  const { publicKey: rsa } = generateKeyPairSync("rsa", { modulusLength: 2048 });

  assert.throws(() => loadPublicKey(rsa.export({ type: "spki", format: "pem" })), VerificationError);
  assert.throws(() => verifyResponse(body, header, { k1: rsa }), VerificationError);
  assert.throws(() => verifyResponse(body, header, { k1: privateKey }), VerificationError);
});

test("a grace period must be a number of milliseconds", () => {
  assert.throws(() => verifyResponse(body, header, { k1: pem }, { maxAgeMs: -1 }), RangeError);
  assert.throws(() => verifyResponse(body, header, { k1: pem }, { maxAgeMs: "7 days" }), RangeError);
});

test("the TypeScript declarations declare what the module exports, and nothing else", () => {
  const declarations = readFileSync(new URL("../license-verifier.d.mts", import.meta.url), "utf8");
  const declared = [...declarations.matchAll(/^export (?:class|function) (\w+)/gm)].map(([, name]) => name);

  assert.deepEqual(declared.sort(), Object.keys(verifier).sort());
});
