// Offline checks for answers from the license server: signed API responses and license files.
//
// Copy this single file into an app (Node.js 18 or newer, Electron); it needs only the
// runtime's own `node:crypto`. It makes the same checks as clients/python/license_verifier.py.

import { Buffer } from "node:buffer";
import { createHash, createPublicKey, KeyObject, timingSafeEqual, verify } from "node:crypto";

const ALGORITHM = "ed25519";
const LICENSE_FILE_BEGIN = "-----BEGIN LICENSE FILE-----";
const LICENSE_FILE_END = "-----END LICENSE FILE-----";
// A device clock a little behind the server's must not reject a file that was just issued.
const CLOCK_SKEW_LEEWAY_MS = 5 * 60 * 1000;

const PARAM = String.raw`([A-Za-z][A-Za-z0-9_-]*)\s*=\s*"([^"\\]*)"`;
const SIGNATURE_HEADER = new RegExp(String.raw`^\s*${PARAM}(?:\s*,\s*${PARAM})*\s*$`);
// What Python's str.strip() trims, which is how the server trims a fingerprint: JavaScript's trim()
// also takes U+FEFF and leaves U+001C to U+001F and U+0085, so a fingerprint with those would differ.
const PYTHON_WHITESPACE = "\\t\\n\\v\\f\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const AROUND_WHITESPACE = new RegExp(`^[${PYTHON_WHITESPACE}]+|[${PYTHON_WHITESPACE}]+$`, "g");
// The line ends Python's str.splitlines() splits at, as the Python verifier reads license files.
const LINE_END = /\r\n|[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
const TIMESTAMP = /^(\d{4}-\d{2}-\d{2})[T ](\d{2}:\d{2})(?::(\d{2})(?:[.,](\d+))?)?(Z|[+-]\d{2}(?::?\d{2})?)?$/i;

/** The answer or license file cannot be trusted; the message says why. */
export class VerificationError extends Error {
  constructor(message) {
    super(message);
    this.name = "VerificationError";
  }
}

/**
 * Signed by a key this app does not hold: most often the server has moved to a key published after
 * this build, so the app should ask to be updated (tampering looks the same, so do not trust it).
 */
export class UnknownSigningKeyError extends VerificationError {
  constructor(message) {
    super(message);
    this.name = "UnknownSigningKeyError";
  }
}

/** Load an Ed25519 public key from SubjectPublicKeyInfo PEM. */
export function loadPublicKey(pem) {
  let key;
  try {
    key = createPublicKey(pem);
  } catch (error) {
    throw new VerificationError(`Public key is not valid PEM: ${error.message}`);
  }
  if (key.asymmetricKeyType !== ALGORITHM) {
    throw new VerificationError(`Public key is not an Ed25519 key (${key.asymmetricKeyType}).`);
  }
  return key;
}

/** The Ed25519 keys of a /api/v1/signing-keys answer (object or JSON text), by kid, inactive ones included. */
export function publicKeysFromSigningKeys(document) {
  if (typeof document === "string" || document instanceof Uint8Array) {
    document = parseJsonObject(document, "Signing keys document");
  }
  const keys = isObject(document) ? document.keys : undefined;
  if (!Array.isArray(keys)) {
    throw new VerificationError('Signing keys document has no "keys" list.');
  }
  const result = new Map();
  for (const entry of keys) {
    if (!isObject(entry)) {
      throw new VerificationError("Signing keys document has an entry that is not an object.");
    }
    if (entry.algorithm !== ALGORITHM) {
      continue;
    }
    const { kid, public_key: pem } = entry;
    if (typeof kid !== "string" || !kid || typeof pem !== "string") {
      throw new VerificationError('Signing key entry needs a "kid" and a "public_key" string.');
    }
    if (result.has(kid)) {
      throw new VerificationError(`Signing keys document lists kid ${quoted(kid)} twice.`);
    }
    result.set(kid, loadPublicKey(pem));
  }
  return result;
}

/**
 * Check the X-License-Signature of a response body and return the parsed body.
 *
 * Pass the `expectedNonce` you sent, the call you made (`expectedCall`: "activate", "validate",
 * "deactivate" or "checkout"), the `licenseKey` you sent and this device's `fingerprint`: the
 * signature proves only that the server wrote the answer, and a proxy could send your nonce with
 * another call, with another license key it holds, or with another device's fingerprint (or none),
 * and hand you that answer. An answer that lets the app run must name this device.
 *
 * An app that keeps an answer to run offline checks it again with `maxAgeMs`, its grace period:
 * the answer's `meta.server_time` must be no older than that at `now` (the device clock by
 * default), and not ahead of it by more than a few minutes, which a clock set back would show.
 *
 * @param {Uint8Array} body the raw response bytes, as received: the signature covers them, not re-encoded JSON
 * @param {string} signatureHeader the X-License-Signature header
 * @param {Map<string, KeyObject|string>|Object<string, KeyObject|string>} publicKeys by kid
 */
export function verifyResponse(body, signatureHeader, publicKeys, checks = {}) {
  checkOptions(checks, RESPONSE_CHECKS);
  const { expectedNonce, expectedCall, licenseKey, fingerprint, maxAgeMs, now = new Date() } = checks;
  if (body instanceof ArrayBuffer) {
    body = new Uint8Array(body);
  }
  if (!(body instanceof Uint8Array)) {
    throw new TypeError("body must be the raw response bytes (an ArrayBuffer, Uint8Array or Buffer), not decoded text.");
  }
  checkNow(now);
  if (maxAgeMs !== undefined && !(typeof maxAgeMs === "number" && maxAgeMs >= 0)) {
    throw new RangeError("maxAgeMs must be a number of milliseconds, not negative.");
  }
  const params = parseSignatureHeader(signatureHeader);
  if (params.algorithm !== ALGORITHM) {
    throw new VerificationError(
      `Unsupported signature algorithm ${quoted(params.algorithm)}; expected '${ALGORITHM}'.`,
    );
  }
  const key = lookupKey(publicKeys, params.keyid);
  checkSignature(key, base64Decode(params.signature, "Signature"), body, "Response signature does not match the body.");
  const document = parseJsonObject(body, "Response body");
  const meta = isObject(document.meta) ? document.meta : {};
  // The nonce is the replay guard, so comparing it must not leak how much of a guess matched.
  if (expectedNonce !== undefined && !(typeof meta.nonce === "string" && sameText(meta.nonce, expectedNonce))) {
    throw new VerificationError("Response nonce does not match the request nonce (possible replay).");
  }
  if (expectedCall !== undefined && meta.call !== expectedCall) {
    if (meta.call === undefined || meta.call === null) {
      throw new VerificationError(`Response names no call; expected an answer to ${quoted(expectedCall)}.`);
    }
    throw new VerificationError(
      `Response answers another call (${quoted(meta.call)}), not ${quoted(expectedCall)}.`,
    );
  }
  if (licenseKey !== undefined) {
    checkLicenseKey(meta.key_sha256, licenseKey, "Response is about another license key, or names none.");
  }
  if (fingerprint !== undefined && letsTheAppRun(document)) {
    checkDevice(document.activation, fingerprint, "Response is about another device, or none.");
  }
  if (maxAgeMs !== undefined) {
    const serverTime = parseTimestamp(meta.server_time, "server_time", "Response meta");
    if (serverTime > now.getTime() + CLOCK_SKEW_LEEWAY_MS) {
      throw new VerificationError(`Response is from the future (${meta.server_time}); check the clock.`);
    }
    if (now.getTime() - serverTime > maxAgeMs) {
      throw new VerificationError(`Response is older than ${maxAgeMs} ms (server time ${meta.server_time}).`);
    }
  }
  return document;
}

/**
 * Check an offline license file's signature and validity window, and return its payload.
 *
 * Pass this device's `fingerprint` and the app's `licenseKey`: a file is issued to one device
 * for one key, and a copy must not unlock another device, nor pass for a file of the app's key.
 */
export function verifyLicenseFile(text, publicKeys, checks = {}) {
  checkOptions(checks, FILE_CHECKS);
  const { fingerprint, licenseKey, now = new Date() } = checks;
  if (typeof text !== "string") {
    throw new TypeError("text must be the license file as a string.");
  }
  checkNow(now);
  const envelope = parseJsonObject(base64Decode(armoredBody(text), "License file"), "License file");
  for (const field of ["enc", "sig", "alg", "kid"]) {
    if (typeof envelope[field] !== "string") {
      throw new VerificationError(`License file has no "${field}" string.`);
    }
  }
  if (envelope.alg !== ALGORITHM) {
    throw new VerificationError(
      `Unsupported license file algorithm ${quoted(envelope.alg)}; expected '${ALGORITHM}'.`,
    );
  }
  const key = lookupKey(publicKeys, envelope.kid);
  const payloadBytes = base64Decode(envelope.enc, "License payload");
  const signature = base64Decode(envelope.sig, "License signature");
  checkSignature(key, signature, payloadBytes, "License file signature does not match its payload.");

  const payload = parseJsonObject(payloadBytes, "License payload");
  // The outer kid and alg are unsigned; only the signed copies inside the payload may be trusted.
  for (const field of ["kid", "alg"]) {
    if (payload[field] !== envelope[field]) {
      throw new VerificationError(`License file ${field} differs between the envelope and the signed payload.`);
    }
  }
  const issuedAt = parseTimestamp(payload.issued_at, "issued_at", "License payload");
  const expiresAt = parseTimestamp(payload.expires_at, "expires_at", "License payload");
  if (expiresAt <= now.getTime()) {
    throw new VerificationError(`License file expired at ${payload.expires_at}.`);
  }
  if (issuedAt > now.getTime() + CLOCK_SKEW_LEEWAY_MS) {
    throw new VerificationError(`License file is issued in the future (${payload.issued_at}); check the clock.`);
  }
  if (fingerprint !== undefined) {
    checkDevice(payload.activation, fingerprint, "License file was issued to another device.");
  }
  if (licenseKey !== undefined) {
    checkLicenseKey(payload.key_sha256, licenseKey, "License file is for another license key, or names none.");
  }
  return payload;
}

/** An answer to activate, validate, checkout or deactivate that is not a refusal: it names a device. */
function letsTheAppRun(document) {
  return !("error" in document) && document.valid !== false && "activation" in document;
}

function checkLicenseKey(keySha256, licenseKey, message) {
  const mine = createHash("sha256").update(licenseKey, "utf8").digest("hex");
  if (typeof keySha256 !== "string" || !sameText(keySha256, mine)) {
    throw new VerificationError(message);
  }
}

function checkDevice(activation, fingerprint, message) {
  const issuedTo = isObject(activation) ? activation.fingerprint : undefined;
  // The server drops the whitespace around a fingerprint (a machine-id file read whole ends in a
  // line end), so the app's own copy is compared the same way.
  const mine = fingerprint.replace(AROUND_WHITESPACE, "");
  if (typeof issuedTo !== "string" || !sameText(issuedTo, mine)) {
    throw new VerificationError(message);
  }
}

function sameText(a, b) {
  const left = Buffer.from(a, "utf8");
  const right = Buffer.from(b, "utf8");
  return left.length === right.length && timingSafeEqual(left, right);
}

const RESPONSE_CHECKS = ["expectedNonce", "expectedCall", "licenseKey", "fingerprint", "maxAgeMs", "now"];
const FILE_CHECKS = ["fingerprint", "licenseKey", "now"];
const TEXT_CHECKS = new Set(["expectedNonce", "expectedCall", "licenseKey", "fingerprint"]);

// A check the app meant to make and misspelt ({key} for {licenseKey}), or gave a value it does not
// have (an unset environment variable), would otherwise be skipped without a word.
function checkOptions(checks, known) {
  for (const [name, value] of Object.entries(checks)) {
    if (!known.includes(name)) {
      throw new TypeError(`Unknown option ${quoted(name)}: the options are ${known.join(", ")}.`);
    }
    if (value === undefined) {
      throw new TypeError(`Option ${quoted(name)} is undefined: leave it out to skip its check.`);
    }
    if (TEXT_CHECKS.has(name) && typeof value !== "string") {
      throw new TypeError(`Option ${quoted(name)} must be a string.`);
    }
  }
}

function checkNow(now) {
  if (!(now instanceof Date) || Number.isNaN(now.getTime())) {
    throw new TypeError("now must be a valid Date.");
  }
}

function parseSignatureHeader(header) {
  if (!header) {
    throw new VerificationError("X-License-Signature header is missing.");
  }
  if (!SIGNATURE_HEADER.test(header)) {
    throw new VerificationError("X-License-Signature header is malformed.");
  }
  const params = {};
  for (const [, rawName, value] of header.matchAll(new RegExp(PARAM, "g"))) {
    const name = rawName.toLowerCase();
    if (Object.hasOwn(params, name)) {
      throw new VerificationError(`X-License-Signature header repeats ${quoted(name)}.`);
    }
    params[name] = value;
  }
  const missing = ["keyid", "algorithm", "signature"].filter((name) => !Object.hasOwn(params, name));
  if (missing.length) {
    throw new VerificationError(`X-License-Signature header lacks ${missing.join(", ")}.`);
  }
  return params;
}

function lookupKey(publicKeys, kid) {
  const key =
    publicKeys instanceof Map ? publicKeys.get(kid) : Object.hasOwn(publicKeys, kid) ? publicKeys[kid] : undefined;
  if (key === undefined) {
    throw new UnknownSigningKeyError(
      `Unknown signing key ${quoted(kid)}: this app does not hold its public key ` +
        "(ship the server's published signing keys with the app).",
    );
  }
  if (typeof key === "string" || key instanceof Uint8Array) {
    return loadPublicKey(key);
  }
  if (!(key instanceof KeyObject) || key.asymmetricKeyType !== ALGORITHM || key.type !== "public") {
    throw new VerificationError(`Key for kid ${quoted(kid)} is not an Ed25519 public key.`);
  }
  return key;
}

function checkSignature(key, signature, data, message) {
  if (!verify(null, data, key, signature)) {
    throw new VerificationError(message);
  }
}

function armoredBody(text) {
  // Text editors on Windows save a byte-order mark before the first line.
  const lines = text
    .replace(/^\ufeff/, "")
    .split(LINE_END)
    .map((line) => line.replace(AROUND_WHITESPACE, ""))
    .filter((line) => line);
  if (lines.length < 3 || lines[0] !== LICENSE_FILE_BEGIN || lines.at(-1) !== LICENSE_FILE_END) {
    throw new VerificationError("Not a license file: BEGIN/END LICENSE FILE lines are missing.");
  }
  return lines.slice(1, -1).join("");
}

// Buffer.from(…, "base64") skips what is not base64; a tampered file must fail instead.
function base64Decode(value, what) {
  if (!BASE64.test(value)) {
    throw new VerificationError(`${what} is not valid base64.`);
  }
  return Buffer.from(value, "base64");
}

function parseJsonObject(data, what) {
  let document;
  try {
    const text = typeof data === "string" ? data : new TextDecoder("utf-8", { fatal: true }).decode(data);
    document = JSON.parse(text);
  } catch {
    throw new VerificationError(`${what} is not valid JSON.`);
  }
  if (!isObject(document)) {
    throw new VerificationError(`${what} is not a JSON object.`);
  }
  return document;
}

// As Python's repr() writes a string, so both verifiers give the same messages.
function quoted(value) {
  return typeof value === "string" ? `'${value}'` : String(value);
}

function isObject(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Milliseconds since the epoch of an ISO 8601 time that names its offset. */
function parseTimestamp(value, field, where) {
  if (typeof value !== "string") {
    throw new VerificationError(`${where} has no "${field}" timestamp.`);
  }
  const parts = TIMESTAMP.exec(value);
  if (parts === null) {
    throw new VerificationError(`${where} ${field} is not an ISO 8601 timestamp.`);
  }
  const [, date, minutes, seconds = "00", fraction = "", offset] = parts;
  // Comparing a time with no offset against the device clock would silently assume the device's zone.
  if (offset === undefined) {
    throw new VerificationError(`${where} ${field} has no timezone.`);
  }
  // Date.parse reads only Z and ±HH:MM, and at most milliseconds.
  const zone = /^z$/i.test(offset) ? "Z" : offset.length === 3 ? `${offset}:00` : `${offset.slice(0, 3)}:${offset.slice(-2)}`;
  const milliseconds = (fraction + "000").slice(0, 3);
  const parsed = Date.parse(`${date}T${minutes}:${seconds}.${milliseconds}${zone}`);
  if (Number.isNaN(parsed)) {
    throw new VerificationError(`${where} ${field} is not an ISO 8601 timestamp.`);
  }
  return parsed;
}
