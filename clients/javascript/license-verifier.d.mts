// Types for license-verifier.mjs, for TypeScript apps: copy this file beside it.

import type { KeyObject } from "node:crypto";

/** The answer or license file cannot be trusted; the message says why. */
export class VerificationError extends Error {}

/** Signed by a key this app does not hold: most often a key published after this build. */
export class UnknownSigningKeyError extends VerificationError {}

/** Public keys by their kid: key objects, or PEM text. */
export type PublicKeys = Map<string, KeyObject | string> | Record<string, KeyObject | string>;

export type LicenseCall = "activate" | "validate" | "deactivate" | "checkout";

/** Each check is made only when given; leave one out to skip it (undefined is refused). */
export interface ResponseChecks {
  /** The nonce the request sent. */
  expectedNonce?: string;
  /** The call the request made. */
  expectedCall?: LicenseCall;
  /** The license key the request sent. */
  licenseKey?: string;
  /** This device's fingerprint: an answer that lets the app run must name it. */
  fingerprint?: string;
  /** For an answer kept to run offline: its grace period, from meta.server_time. */
  maxAgeMs?: number;
  /** The time to check against; the device clock by default. */
  now?: Date;
}

export interface LicenseFileChecks {
  /** This device's fingerprint: the file must be issued to it. */
  fingerprint?: string;
  /** The app's license key: the file must be for it. */
  licenseKey?: string;
  /** The time to check against; the device clock by default. */
  now?: Date;
}

/** A JSON object as the server wrote it: read its fields as the README of the native API says. */
export type JsonObject = { [field: string]: unknown };

export function loadPublicKey(pem: string | Uint8Array): KeyObject;

/** The Ed25519 keys of a /api/v1/signing-keys answer (object or JSON text), by kid. */
export function publicKeysFromSigningKeys(document: string | Uint8Array | JsonObject): Map<string, KeyObject>;

/** The parsed body of a license call's answer, once its signature and the checks given pass. */
export function verifyResponse(
  body: ArrayBuffer | Uint8Array,
  signatureHeader: string,
  publicKeys: PublicKeys,
  checks?: ResponseChecks,
): JsonObject;

/** The payload of an offline license file, once its signature, validity window and the checks given pass. */
export function verifyLicenseFile(text: string, publicKeys: PublicKeys, checks?: LicenseFileChecks): JsonObject;
