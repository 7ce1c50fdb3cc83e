from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from license_verifier import (
    UnknownSigningKeyError,
    VerificationError,
    load_public_key,
    public_keys_from_signing_keys,
    verify_license_file,
    verify_response,
)

KID = "2026-01"
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


@pytest.fixture
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def public_keys(signing_key: Ed25519PrivateKey) -> dict[str, Ed25519PublicKey]:
    return {KID: signing_key.public_key()}


def public_pem(key: Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def signature_header(signature: bytes, *, kid: str = KID, algorithm: str = "ed25519") -> str:
    return f'keyid="{kid}", algorithm="{algorithm}", signature="{b64(signature)}"'


def signed_response(key: Ed25519PrivateKey, *, nonce: str | None = "n-123", kid: str = KID) -> tuple[bytes, str]:
    body = json.dumps(
        {"meta": {"server_time": "2026-11-23T10:00:00Z", "nonce": nonce}, "license": {"status": "active"}}
    ).encode()
    return body, signature_header(key.sign(body), kid=kid)


def license_payload(**overrides: Any) -> dict[str, Any]:
    payload = {
        "license": {"key_suffix": "ABC123", "status": "active"},
        "activation": {"fingerprint": "device-1"},
        "key_sha256": hashlib.sha256(b"MY-KEY").hexdigest(),
        "issued_at": "2026-11-23T09:00:00Z",
        "expires_at": "2026-12-23T09:00:00+00:00",
        "kid": KID,
        "alg": "ed25519",
    }
    payload.update(overrides)
    return payload


def armor(envelope: dict[str, Any], *, newline: str = "\n") -> str:
    encoded = b64(json.dumps(envelope).encode())
    lines = [encoded[i : i + 64] for i in range(0, len(encoded), 64)]
    return newline.join(["-----BEGIN LICENSE FILE-----", *lines, "-----END LICENSE FILE-----", ""])


def license_envelope(key: Ed25519PrivateKey, payload: dict[str, Any], *, kid: str = KID) -> dict[str, Any]:
    payload_bytes = json.dumps(payload).encode()
    return {"enc": b64(payload_bytes), "sig": b64(key.sign(payload_bytes)), "alg": "ed25519", "kid": kid}


def license_file(key: Ed25519PrivateKey, *, newline: str = "\n", kid: str = KID, **overrides: Any) -> str:
    return armor(license_envelope(key, license_payload(**overrides), kid=kid), newline=newline)


def flip_base64_char(value: str, index: int) -> str:
    replacement = "B" if value[index] == "A" else "A"
    return value[:index] + replacement + value[index + 1 :]


# Signed API answers


def test_valid_answer_returns_body(signing_key, public_keys):
    body, header = signed_response(signing_key)

    assert verify_response(body, header, public_keys) == json.loads(body)


def test_key_given_as_pem_verifies(signing_key):
    body, header = signed_response(signing_key)

    assert verify_response(body, header, {KID: public_pem(signing_key)})["license"] == {"status": "active"}
    assert verify_response(body, header, {KID: public_pem(signing_key).encode()})["license"] == {"status": "active"}


def test_changed_byte_in_body_fails(signing_key, public_keys):
    body, header = signed_response(signing_key)
    tampered = body.replace(b'"active"', b'"activf"')

    with pytest.raises(VerificationError, match="does not match"):
        verify_response(tampered, header, public_keys)


def test_signature_from_another_key_fails(public_keys):
    body, header = signed_response(Ed25519PrivateKey.generate())

    with pytest.raises(VerificationError, match="does not match"):
        verify_response(body, header, public_keys)


def test_unknown_kid_fails_as_its_own_error_so_the_app_can_ask_to_be_updated(signing_key, public_keys):
    body, header = signed_response(signing_key, kid="retired-1999")

    with pytest.raises(UnknownSigningKeyError, match="Unknown signing key"):
        verify_response(body, header, public_keys)


def test_header_params_in_any_order_and_spacing_pass(signing_key, public_keys):
    body, _ = signed_response(signing_key)
    header = f'signature = "{b64(signing_key.sign(body))}",algorithm="ed25519" ,  keyid="{KID}"'

    assert verify_response(body, header, public_keys)["meta"]["nonce"] == "n-123"


@pytest.mark.parametrize(
    "header",
    [
        "",
        "garbage",
        'keyid="2026-01", algorithm="ed25519"',
        'keyid="2026-01", algorithm="ed25519", signature="abc", signature="abc"',
        'keyid="2026-01", algorithm="ed25519", signature="abc",',
        "keyid=2026-01, algorithm=ed25519, signature=abc",
        'keyid="2026-01" algorithm="ed25519" signature="abc"',
    ],
)
def test_bad_header_syntax_fails(signing_key, public_keys, header):
    body, _ = signed_response(signing_key)

    with pytest.raises(VerificationError, match="X-License-Signature"):
        verify_response(body, header, public_keys)


def test_signature_that_is_not_base64_fails(signing_key, public_keys):
    body, _ = signed_response(signing_key)

    with pytest.raises(VerificationError, match="base64"):
        verify_response(body, f'keyid="{KID}", algorithm="ed25519", signature="not base64!"', public_keys)


def test_non_ed25519_algorithm_fails(signing_key, public_keys):
    body, _ = signed_response(signing_key)
    header = signature_header(signing_key.sign(body), algorithm="hmac-sha256")

    with pytest.raises(VerificationError, match="Unsupported signature algorithm"):
        verify_response(body, header, public_keys)


def test_matching_nonce_passes(signing_key, public_keys):
    body, header = signed_response(signing_key, nonce="n-123")

    assert verify_response(body, header, public_keys, expected_nonce="n-123")["meta"]["nonce"] == "n-123"


@pytest.mark.parametrize("answered_nonce", ["n-999", None])
def test_nonce_mismatch_fails(signing_key, public_keys, answered_nonce):
    body, header = signed_response(signing_key, nonce=answered_nonce)

    with pytest.raises(VerificationError, match="nonce"):
        verify_response(body, header, public_keys, expected_nonce="n-123")


def test_an_answer_to_the_call_made_passes(signing_key, public_keys):
    body, header = signed(signing_key, {"valid": True, "meta": {"nonce": "n-1", "call": "validate"}})

    assert verify_response(body, header, public_keys, expected_nonce="n-1", expected_call="validate")["valid"]


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({"nonce": "n-1", "call": "deactivate"}, "answers another call \\('deactivate'\\)"),
        ({"nonce": "n-1"}, "names no call"),
        (None, "names no call"),
    ],
)
def test_an_answer_to_another_call_or_to_none_named_fails(signing_key, public_keys, meta, message):
    body, header = signed(signing_key, {"activation": {"fingerprint": "device-1"}, "meta": meta})

    with pytest.raises(VerificationError, match=message):
        verify_response(body, header, public_keys, expected_call="validate")


def test_an_answer_about_the_key_sent_passes_and_one_about_another_or_none_fails(signing_key, public_keys):
    mine = {"key_sha256": hashlib.sha256(b"MY-KEY").hexdigest()}
    theirs = {"key_sha256": hashlib.sha256(b"OTHER-KEY").hexdigest()}
    answers = {
        name: signed(signing_key, {"valid": True, "meta": meta})
        for name, meta in [("mine", mine), ("theirs", theirs), ("none", {"key_sha256": None})]
    }

    assert verify_response(*answers["mine"], public_keys, license_key="MY-KEY")["valid"]
    for name in ("theirs", "none"):
        with pytest.raises(VerificationError, match="another license key, or names none"):
            verify_response(*answers[name], public_keys, license_key="MY-KEY")


def signed(key: Ed25519PrivateKey, document: dict[str, Any]) -> tuple[bytes, str]:
    body = json.dumps(document).encode()
    return body, signature_header(key.sign(body))


@pytest.mark.parametrize(
    "answer",
    [
        {"valid": True, "code": "VALID", "activation": {"fingerprint": "device-1"}},
        {"created": False, "activation": {"fingerprint": "device-1"}, "license": {}},
        {"valid": False, "code": "NOT_ACTIVATED", "activation": None},
        {"error": {"code": "activation_limit_reached", "message": "..."}},
        {"license_file": "-----BEGIN LICENSE FILE-----...", "kid": KID},
    ],
)
def test_an_answer_for_this_device_or_a_refusal_passes_the_device_check(signing_key, public_keys, answer):
    body, header = signed(signing_key, answer)

    assert verify_response(body, header, public_keys, fingerprint="device-1") == answer


def test_the_device_is_compared_as_the_server_stores_it_without_surrounding_spaces(signing_key, public_keys):
    """The server trims the fingerprint it is sent; a machine-id file read whole ends in a newline."""
    body, header = signed(signing_key, {"valid": True, "activation": {"fingerprint": "device-1"}})

    assert verify_response(body, header, public_keys, fingerprint="device-1\n")["valid"] is True
    assert verify_license_file(license_file(signing_key), public_keys, fingerprint=" device-1 ", now=NOW)


@pytest.mark.parametrize(
    "answer",
    [
        {"valid": True, "code": "VALID", "activation": {"fingerprint": "device-2"}},
        {"valid": True, "code": "VALID", "activation": None},
        {"created": True, "activation": {"fingerprint": "device-2"}, "license": {}},
        {"created": True, "activation": {}, "license": {}},
        {"license_file": "-----BEGIN LICENSE FILE-----...", "activation": {"fingerprint": "device-2"}},
    ],
)
def test_an_answer_that_lets_another_device_or_none_run_fails(signing_key, public_keys, answer):
    """A proxy that sends our nonce with another device's fingerprint, or none, gets a signed VALID."""
    body, header = signed(signing_key, answer)

    with pytest.raises(VerificationError, match="another device, or none"):
        verify_response(body, header, public_keys, fingerprint="device-1")


def test_signed_body_that_is_not_json_fails(signing_key, public_keys):
    body = b"<html>oops</html>"

    with pytest.raises(VerificationError, match="not valid JSON"):
        verify_response(body, signature_header(signing_key.sign(body)), public_keys)


@pytest.mark.parametrize("later", [timedelta(0), timedelta(days=7), -timedelta(minutes=4)])
def test_a_kept_answer_within_its_grace_period_passes(signing_key, public_keys, later):
    body, header = signed_response(signing_key)

    answer = verify_response(body, header, public_keys, max_age=timedelta(days=7), now=NOW + later)

    assert answer["license"] == {"status": "active"}


@pytest.mark.parametrize(
    ("later", "message"),
    [
        (timedelta(days=7, seconds=1), "older than 7 days"),
        # The device clock set back to before the answer was made: a kept answer would never age.
        (-timedelta(hours=1), "from the future"),
    ],
)
def test_a_kept_answer_past_its_grace_period_or_ahead_of_the_clock_fails(signing_key, public_keys, later, message):
    body, header = signed_response(signing_key)

    with pytest.raises(VerificationError, match=message):
        verify_response(body, header, public_keys, max_age=timedelta(days=7), now=NOW + later)


def test_a_negative_grace_period_is_a_mistake_in_the_app_not_a_refused_answer(signing_key, public_keys):
    body, header = signed_response(signing_key)

    with pytest.raises(ValueError, match="max_age must not be negative"):
        verify_response(body, header, public_keys, max_age=-timedelta(days=1), now=NOW)


def test_an_answer_with_no_server_time_fails_a_grace_period(signing_key, public_keys):
    body = json.dumps({"meta": {"nonce": "n-123"}, "valid": True}).encode()

    with pytest.raises(VerificationError, match='no "server_time"'):
        verify_response(body, signature_header(signing_key.sign(body)), public_keys, max_age=timedelta(days=1))


# Signing keys


def test_signing_keys_document_yields_ed25519_keys_by_kid(signing_key):
    other = Ed25519PrivateKey.generate()
    document = {
        "keys": [
            {"kid": KID, "algorithm": "ed25519", "public_key": public_pem(signing_key), "active": True},
            {"kid": "2025-01", "algorithm": "ed25519", "public_key": public_pem(other), "active": False},
            {"kid": "ec-1", "algorithm": "es256", "public_key": public_pem(ec.generate_private_key(ec.SECP256R1()))},
        ]
    }

    for raw_or_parsed in (document, json.dumps(document), json.dumps(document).encode()):
        keys = public_keys_from_signing_keys(raw_or_parsed)
        assert sorted(keys) == ["2025-01", KID]
        body, header = signed_response(signing_key)
        assert verify_response(body, header, keys) == json.loads(body)


@pytest.mark.parametrize(
    "document",
    [
        "not json",
        "[]",
        {"keys": "nope"},
        {"keys": [{"kid": KID, "algorithm": "ed25519", "public_key": "not a pem"}]},
        {"keys": [{"algorithm": "ed25519", "public_key": "x"}]},
    ],
)
def test_malformed_signing_keys_document_fails(document):
    with pytest.raises(VerificationError):
        public_keys_from_signing_keys(document)


def test_loading_a_non_ed25519_pem_fails():
    with pytest.raises(VerificationError, match="not an Ed25519 key"):
        load_public_key(public_pem(ec.generate_private_key(ec.SECP256R1())))


# Offline license files


def test_valid_license_file_returns_payload(signing_key, public_keys):
    assert verify_license_file(license_file(signing_key), public_keys, now=NOW) == license_payload()


def test_license_file_for_this_device_passes(signing_key, public_keys):
    payload = verify_license_file(license_file(signing_key), public_keys, fingerprint="device-1", now=NOW)

    assert payload["activation"]["fingerprint"] == "device-1"


@pytest.mark.parametrize("activation", [{"fingerprint": "device-2"}, {"fingerprint": None}, {}, "device-1"])
def test_license_file_for_another_device_fails(signing_key, public_keys, activation):
    text = license_file(signing_key, activation=activation)

    with pytest.raises(VerificationError, match="another device"):
        verify_license_file(text, public_keys, fingerprint="device-1", now=NOW)


def test_license_file_for_the_app_key_passes(signing_key, public_keys):
    payload = verify_license_file(license_file(signing_key), public_keys, license_key="MY-KEY", now=NOW)

    assert payload["key_sha256"] == hashlib.sha256(b"MY-KEY").hexdigest()


@pytest.mark.parametrize("key_sha256", [hashlib.sha256(b"OTHER-KEY").hexdigest(), None, "MY-KEY", 1])
def test_license_file_for_another_key_or_naming_none_fails(signing_key, public_keys, key_sha256):
    text = license_file(signing_key, key_sha256=key_sha256)

    with pytest.raises(VerificationError, match="another license key, or names none"):
        verify_license_file(text, public_keys, license_key="MY-KEY", now=NOW)


def test_crlf_line_endings_and_surrounding_blank_lines_are_tolerated(signing_key, public_keys):
    text = "\r\n\r\n  " + license_file(signing_key, newline="\r\n") + "\r\n\r\n"

    assert verify_license_file(text, public_keys, now=NOW)["kid"] == KID


def test_a_file_saved_with_a_byte_order_mark_is_read(signing_key, public_keys):
    text = "\ufeff" + license_file(signing_key, newline="\r\n")

    assert verify_license_file(text, public_keys, now=NOW)["kid"] == KID


def test_tampered_payload_fails(signing_key, public_keys):
    envelope = license_envelope(signing_key, license_payload())
    envelope["enc"] = flip_base64_char(envelope["enc"], len(envelope["enc"]) // 2)

    with pytest.raises(VerificationError, match="signature does not match"):
        verify_license_file(armor(envelope), public_keys, now=NOW)


def test_extended_expiry_with_old_signature_fails(signing_key, public_keys):
    envelope = license_envelope(signing_key, license_payload())
    envelope["enc"] = b64(json.dumps(license_payload(expires_at="2099-01-01T00:00:00Z")).encode())

    with pytest.raises(VerificationError, match="signature does not match"):
        verify_license_file(armor(envelope), public_keys, now=NOW)


def test_flipped_character_in_armored_text_fails(signing_key, public_keys):
    lines = license_file(signing_key).splitlines()
    lines[2] = flip_base64_char(lines[2], 10)

    with pytest.raises(VerificationError):
        verify_license_file("\n".join(lines), public_keys, now=NOW)


def test_license_file_signed_by_another_key_fails(public_keys):
    with pytest.raises(VerificationError, match="signature does not match"):
        verify_license_file(license_file(Ed25519PrivateKey.generate()), public_keys, now=NOW)


@pytest.mark.parametrize("expires_at", ["2026-11-23T09:59:59Z", "2026-11-23T10:00:00Z", "2026-11-23T11:00:00+01:00"])
def test_expired_license_file_fails(signing_key, public_keys, expires_at):
    with pytest.raises(VerificationError, match="expired"):
        verify_license_file(license_file(signing_key, expires_at=expires_at), public_keys, now=NOW)


def test_license_file_issued_within_clock_leeway_passes(signing_key, public_keys):
    issued_at = (NOW + timedelta(minutes=5)).isoformat()

    assert verify_license_file(license_file(signing_key, issued_at=issued_at), public_keys, now=NOW)


def test_future_issued_license_file_fails(signing_key, public_keys):
    issued_at = (NOW + timedelta(minutes=5, seconds=1)).isoformat()

    with pytest.raises(VerificationError, match="future"):
        verify_license_file(license_file(signing_key, issued_at=issued_at), public_keys, now=NOW)


def test_timestamp_without_timezone_fails(signing_key, public_keys):
    with pytest.raises(VerificationError, match="no timezone"):
        verify_license_file(license_file(signing_key, expires_at="2026-12-23T09:00:00"), public_keys, now=NOW)


def test_kid_mismatch_between_envelope_and_payload_fails(signing_key):
    keys = {KID: signing_key.public_key(), "other": signing_key.public_key()}

    with pytest.raises(VerificationError, match="kid differs"):
        verify_license_file(license_file(signing_key, kid="other"), keys, now=NOW)


def test_alg_mismatch_inside_payload_fails(signing_key, public_keys):
    with pytest.raises(VerificationError, match="alg differs"):
        verify_license_file(license_file(signing_key, alg="rsa"), public_keys, now=NOW)


def test_license_file_with_unknown_kid_fails(signing_key, public_keys):
    with pytest.raises(UnknownSigningKeyError, match="Unknown signing key"):
        verify_license_file(license_file(signing_key, kid="nope"), public_keys, now=NOW)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "hello world",
        "-----BEGIN LICENSE FILE-----\n-----END LICENSE FILE-----",
        "-----BEGIN LICENSE FILE-----\n!!!not base64!!!\n-----END LICENSE FILE-----",
        "-----BEGIN LICENSE FILE-----\n" + b64(b"not json") + "\n-----END LICENSE FILE-----",
        "-----BEGIN LICENSE FILE-----\n" + b64(b'{"enc": 1}') + "\n-----END LICENSE FILE-----",
        "-----BEGIN LICENSE FILE-----\n" + b64("é".encode("latin-1")) + "\n-----END LICENSE FILE-----",
    ],
)
def test_garbage_text_fails_with_verification_error(public_keys, text):
    with pytest.raises(VerificationError):
        verify_license_file(text, public_keys, now=NOW)
