"""Offline checks for answers from the license server: signed API responses and license files.

Copy this single file into an app; it needs only the standard library and `cryptography`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

__all__ = [
    "UnknownSigningKeyError",
    "VerificationError",
    "load_public_key",
    "public_keys_from_signing_keys",
    "verify_license_file",
    "verify_response",
]

ALGORITHM = "ed25519"
LICENSE_FILE_BEGIN = "-----BEGIN LICENSE FILE-----"
LICENSE_FILE_END = "-----END LICENSE FILE-----"
# A device clock a little behind the server's must not reject a file that was just issued.
CLOCK_SKEW_LEEWAY = timedelta(minutes=5)

_PARAM = r'([A-Za-z][A-Za-z0-9_-]*)\s*=\s*"([^"\\]*)"'
_SIGNATURE_HEADER = re.compile(rf"\s*{_PARAM}(?:\s*,\s*{_PARAM})*\s*")

PublicKeys = Mapping[str, Ed25519PublicKey | str | bytes]


class VerificationError(Exception):
    """The answer or license file cannot be trusted; the message says why."""


class UnknownSigningKeyError(VerificationError):
    """Signed by a key this app does not hold: most often the server has moved to a key published
    after this build, so the app should ask to be updated (tampering looks the same: do not trust it)."""


def load_public_key(pem: str | bytes) -> Ed25519PublicKey:
    """Load an Ed25519 public key from SubjectPublicKeyInfo PEM."""
    try:
        key = load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise VerificationError(f"Public key is not valid PEM: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise VerificationError(f"Public key is not an Ed25519 key ({type(key).__name__}).")
    return key


def public_keys_from_signing_keys(document: Mapping[str, Any] | str | bytes) -> dict[str, Ed25519PublicKey]:
    """Return the Ed25519 keys of a /api/v1/signing-keys answer by kid, inactive ones included."""
    if isinstance(document, str | bytes):
        document = _parse_json_object(document, "Signing keys document")
    keys = document.get("keys") if isinstance(document, Mapping) else None
    if not isinstance(keys, list):
        raise VerificationError('Signing keys document has no "keys" list.')
    result: dict[str, Ed25519PublicKey] = {}
    for entry in keys:
        if not isinstance(entry, Mapping):
            raise VerificationError("Signing keys document has an entry that is not an object.")
        if entry.get("algorithm") != ALGORITHM:
            continue
        kid, pem = entry.get("kid"), entry.get("public_key")
        if not isinstance(kid, str) or not kid or not isinstance(pem, str):
            raise VerificationError('Signing key entry needs a "kid" and a "public_key" string.')
        if kid in result:
            raise VerificationError(f"Signing keys document lists kid {kid!r} twice.")
        result[kid] = load_public_key(pem)
    return result


def verify_response(
    body: bytes,
    signature_header: str,
    public_keys: PublicKeys,
    *,
    expected_nonce: str | None = None,
    expected_call: str | None = None,
    license_key: str | None = None,
    fingerprint: str | None = None,
    max_age: timedelta | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Check the X-License-Signature of a response body and return the parsed body.

    Pass the `nonce` you sent, the call you made (`expected_call`: "activate", "validate",
    "deactivate" or "checkout"), the `license_key` you sent and this device's `fingerprint`: the
    signature proves only that the server wrote the answer, and a proxy could send your nonce with
    another call (a deactivate names the device, with no `valid` to read), with another license key
    it holds, or with another device's fingerprint (or none), and hand you that answer. An answer that
    lets the app run must name this device.

    An app that keeps an answer to run offline checks it again with `max_age`, its grace period:
    the answer's `meta.server_time` must be no older than that at `now` (the device clock by
    default), and not ahead of it by more than a few minutes, which a clock set back would show.
    """
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise ValueError("now must be timezone-aware.")
    if max_age is not None and max_age < timedelta(0):
        raise ValueError("max_age must not be negative.")
    if not isinstance(body, bytes):
        raise TypeError("body must be the raw response bytes, not decoded text.")
    params = _parse_signature_header(signature_header)
    if params["algorithm"] != ALGORITHM:
        raise VerificationError(f"Unsupported signature algorithm {params['algorithm']!r}; expected {ALGORITHM!r}.")
    key = _lookup_key(public_keys, params["keyid"])
    signature = _b64decode(params["signature"], "Signature")
    _verify(key, signature, body, "Response signature does not match the body.")
    document = _parse_json_object(body, "Response body")
    meta = document.get("meta")
    meta = meta if isinstance(meta, dict) else {}
    if expected_nonce is not None:
        nonce = meta.get("nonce")
        # The nonce is the replay guard, so comparing it must not leak how much of a guess matched.
        if not isinstance(nonce, str) or not hmac.compare_digest(nonce.encode(), expected_nonce.encode()):
            raise VerificationError("Response nonce does not match the request nonce (possible replay).")
    if expected_call is not None and meta.get("call") != expected_call:
        if meta.get("call") is None:
            raise VerificationError(f"Response names no call; expected an answer to {expected_call!r}.")
        raise VerificationError(f"Response answers another call ({meta['call']!r}), not {expected_call!r}.")
    if license_key is not None:
        _check_license_key(meta.get("key_sha256"), license_key, "Response is about another license key, or names none.")
    if fingerprint is not None and _lets_the_app_run(document):
        _check_device(document.get("activation"), fingerprint, "Response is about another device, or none.")
    if max_age is not None:
        server_time = _parse_timestamp(meta.get("server_time"), "server_time", "Response meta")
        if server_time > now + CLOCK_SKEW_LEEWAY:
            raise VerificationError(f"Response is from the future ({server_time.isoformat()}); check the clock.")
        if now - server_time > max_age:
            raise VerificationError(f"Response is older than {max_age} (server time {server_time.isoformat()}).")
    return document


def _lets_the_app_run(document: Mapping[str, Any]) -> bool:
    """An answer to activate, validate, checkout or deactivate that is not a refusal: it names a device."""
    return "error" not in document and document.get("valid", True) is not False and "activation" in document


def _check_license_key(key_sha256: object, license_key: str, message: str) -> None:
    mine = hashlib.sha256(license_key.encode()).hexdigest()
    if not isinstance(key_sha256, str) or not hmac.compare_digest(key_sha256.encode(), mine.encode()):
        raise VerificationError(message)


def _check_device(activation: object, fingerprint: str, message: str) -> None:
    issued_to = activation.get("fingerprint") if isinstance(activation, Mapping) else None
    # The server drops spaces and line ends around a fingerprint (a machine-id file read whole ends
    # in one), so the app's own copy is compared the same way.
    mine = fingerprint.strip()
    if not isinstance(issued_to, str) or not hmac.compare_digest(issued_to.encode(), mine.encode()):
        raise VerificationError(message)


def verify_license_file(
    text: str,
    public_keys: PublicKeys,
    *,
    fingerprint: str | None = None,
    license_key: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Check an offline license file's signature and validity window, and return its payload.

    Pass this device's `fingerprint` and the app's `license_key`: a file is issued to one device
    for one key, and a copy must not unlock another device, nor pass for a file of the app's key.
    """
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise ValueError("now must be timezone-aware.")
    envelope = _parse_json_object(_b64decode(_armored_body(text), "License file"), "License file")
    for field in ("enc", "sig", "alg", "kid"):
        if not isinstance(envelope.get(field), str):
            raise VerificationError(f'License file has no "{field}" string.')
    if envelope["alg"] != ALGORITHM:
        raise VerificationError(f"Unsupported license file algorithm {envelope['alg']!r}; expected {ALGORITHM!r}.")
    key = _lookup_key(public_keys, envelope["kid"])
    payload_bytes = _b64decode(envelope["enc"], "License payload")
    signature = _b64decode(envelope["sig"], "License signature")
    _verify(key, signature, payload_bytes, "License file signature does not match its payload.")

    payload = _parse_json_object(payload_bytes, "License payload")
    # The outer kid and alg are unsigned; only the signed copies inside the payload may be trusted.
    for field in ("kid", "alg"):
        if payload.get(field) != envelope[field]:
            raise VerificationError(f"License file {field} differs between the envelope and the signed payload.")
    issued_at = _parse_timestamp(payload.get("issued_at"), "issued_at", "License payload")
    expires_at = _parse_timestamp(payload.get("expires_at"), "expires_at", "License payload")
    if expires_at <= now:
        raise VerificationError(f"License file expired at {expires_at.isoformat()}.")
    if issued_at > now + CLOCK_SKEW_LEEWAY:
        raise VerificationError(f"License file is issued in the future ({issued_at.isoformat()}); check the clock.")
    if fingerprint is not None:
        _check_device(payload.get("activation"), fingerprint, "License file was issued to another device.")
    if license_key is not None:
        _check_license_key(
            payload.get("key_sha256"), license_key, "License file is for another license key, or names none."
        )
    return payload


def _parse_signature_header(header: str) -> dict[str, str]:
    if not header:
        raise VerificationError("X-License-Signature header is missing.")
    if not _SIGNATURE_HEADER.fullmatch(header):
        raise VerificationError("X-License-Signature header is malformed.")
    params: dict[str, str] = {}
    for match in re.finditer(_PARAM, header):
        name = match.group(1).lower()
        if name in params:
            raise VerificationError(f"X-License-Signature header repeats {name!r}.")
        params[name] = match.group(2)
    missing = [name for name in ("keyid", "algorithm", "signature") if name not in params]
    if missing:
        raise VerificationError(f"X-License-Signature header lacks {', '.join(missing)}.")
    return params


def _lookup_key(public_keys: PublicKeys, kid: str) -> Ed25519PublicKey:
    key = public_keys.get(kid)
    if key is None:
        raise UnknownSigningKeyError(
            f"Unknown signing key {kid!r}: this app does not hold its public key "
            "(ship the server's published signing keys with the app)."
        )
    if isinstance(key, str | bytes):
        return load_public_key(key)
    if not isinstance(key, Ed25519PublicKey):
        raise VerificationError(f"Key for kid {kid!r} is not an Ed25519 public key.")
    return key


def _verify(key: Ed25519PublicKey, signature: bytes, data: bytes, message: str) -> None:
    try:
        key.verify(signature, data)
    except InvalidSignature as exc:
        raise VerificationError(message) from exc


def _armored_body(text: str) -> str:
    if not isinstance(text, str):
        raise TypeError("text must be the license file as str.")
    # Text editors on Windows save a byte-order mark before the first line.
    lines = [line.strip() for line in text.removeprefix("\ufeff").splitlines() if line.strip()]
    if len(lines) < 3 or lines[0] != LICENSE_FILE_BEGIN or lines[-1] != LICENSE_FILE_END:
        raise VerificationError("Not a license file: BEGIN/END LICENSE FILE lines are missing.")
    return "".join(lines[1:-1])


def _b64decode(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except ValueError as exc:
        raise VerificationError(f"{what} is not valid base64.") from exc


def _parse_json_object(data: str | bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise VerificationError(f"{what} is not valid JSON.") from exc
    if not isinstance(document, dict):
        raise VerificationError(f"{what} is not a JSON object.")
    return document


def _parse_timestamp(value: object, field: str, where: str) -> datetime:
    if not isinstance(value, str):
        raise VerificationError(f'{where} has no "{field}" timestamp.')
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise VerificationError(f"{where} {field} is not an ISO 8601 timestamp.") from exc
    # Comparing a naive time against the device clock would silently assume the device's zone.
    if parsed.tzinfo is None:
        raise VerificationError(f"{where} {field} has no timezone.")
    return parsed
