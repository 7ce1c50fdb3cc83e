"""The JavaScript verifier (clients/javascript) decides as the Python one does, on this server's own answers.

Each case is run through both; they must agree on every answer and license file, trusted or not, and
on why one is not.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from license_verifier import (
    UnknownSigningKeyError,
    VerificationError,
    public_keys_from_signing_keys,
    verify_license_file,
    verify_response,
)

from tests.factories import make_license

NODE = shutil.which("node")
CLIENT = Path(__file__).resolve().parent.parent / "clients" / "javascript"

WRITES_A_TIME = {"older than", "from the future", "expired", "issued in the future"}

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(NODE is None, reason="Node.js is not installed: the JavaScript verifier's tests need it."),
]


@dataclass
class Case:
    name: str
    # A fragment of the refusal both verifiers must give; None: both must trust it.
    refused_for: str | None
    kind: str = "response"
    body: bytes = b""
    header: str = ""
    text: str = ""
    options: dict[str, str] = field(default_factory=dict)
    now: datetime = field(default_factory=timezone.now)
    max_age: timedelta | None = None

    def as_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "kind": self.kind,
            "options": self.options,
            "now": self.now.isoformat(),
            "body_base64": base64.b64encode(self.body).decode(),
            "header": self.header,
            "text": self.text,
        }
        if self.max_age is not None:
            document["max_age_seconds"] = self.max_age.total_seconds()
        return document


def python_outcome(case: Case, public_keys) -> dict[str, Any]:
    try:
        if case.kind == "response":
            result = verify_response(
                case.body, case.header, public_keys, now=case.now, max_age=case.max_age, **case.options
            )
        else:
            result = verify_license_file(case.text, public_keys, now=case.now, **case.options)
    except VerificationError as error:
        return {"ok": False, "error": str(error), "kind": type(error).__name__}
    return {"ok": True, "result": result}


def javascript_outcomes(cases: list[Case], signing_keys: dict, tmp_path: Path) -> list[dict[str, Any]]:
    path = tmp_path / "cases.json"
    path.write_text(json.dumps({"signing_keys": signing_keys, "cases": [case.as_json() for case in cases]}))
    finished = subprocess.run(
        [NODE, str(CLIENT / "tests" / "run-cases.mjs"), str(path)], capture_output=True, text=True, timeout=60
    )
    assert finished.returncode == 0, finished.stderr
    return json.loads(finished.stdout)


def response(name: str, refused_for: str | None, answer: tuple[bytes, str], options=None, **more) -> Case:
    body, header = answer
    return Case(name, refused_for, body=body, header=header, options=options or {}, **more)


def file_case(name: str, refused_for: str | None, text: str, options=None, **more) -> Case:
    return Case(name, refused_for, kind="file", text=text, options=options or {}, **more)


def signed(client, call: str, body: dict) -> tuple[bytes, str]:
    response = client.post(f"/api/v1/licenses/{call}", json.dumps(body), content_type="application/json")
    return response.content, response["X-License-Signature"]


def test_both_verifiers_trust_and_refuse_the_same_answers_and_files(api_client, tmp_path):
    key = make_license(max_activations=3).key
    device = {"key": key, "fingerprint": "device-1"}
    activated = signed(api_client, "activate", {**device, "nonce": "n-activate"})
    validated = signed(api_client, "validate", {**device, "nonce": "n-validate"})
    unknown_key = signed(
        api_client, "validate", {"key": "NO-SUCH-KEY", "fingerprint": "device-1", "nonce": "n-unknown"}
    )
    checkout_body, checkout_header = signed(api_client, "checkout", {**device, "nonce": "n-checkout", "ttl": 86400})
    deactivated = signed(api_client, "deactivate", {**device, "nonce": "n-deactivate"})
    license_file = json.loads(checkout_body)["license_file"]
    signing_keys = api_client.get("/api/v1/signing-keys").json()
    public_keys = public_keys_from_signing_keys(signing_keys)
    payload = verify_license_file(license_file, public_keys)
    issued_at = datetime.fromisoformat(payload["issued_at"])
    expires_at = datetime.fromisoformat(payload["expires_at"])

    def checks(nonce: str, call: str, **changes: str) -> dict[str, str]:
        return {
            "expected_nonce": nonce,
            "expected_call": call,
            "license_key": key,
            "fingerprint": "device-1",
            **changes,
        }

    body, header = validated
    kid = header.split('keyid="', 1)[1].split('"', 1)[0]
    signature = header.split('signature="', 1)[1].split('"', 1)[0]
    valid = checks("n-validate", "validate")
    file_checks = {"fingerprint": "device-1", "license_key": key}
    armored_lines = license_file.splitlines()
    flipped = armored_lines[1][:10] + ("A" if armored_lines[1][10] != "A" else "B") + armored_lines[1][11:]
    week = timedelta(days=7)
    now = timezone.now()
    tampered = "\n".join([armored_lines[0], flipped, *armored_lines[2:]])
    crlf = "\r\n" + license_file.replace("\n", "\r\n") + "\r\n\r\n"
    reordered = f'signature="{signature}" ,algorithm = "ed25519", keyid="{kid}"'
    cases = [
        response("activate", None, activated, checks("n-activate", "activate")),
        response("validate", None, validated, valid),
        response("checkout", None, (checkout_body, checkout_header), checks("n-checkout", "checkout")),
        response("deactivate", None, deactivated, checks("n-deactivate", "deactivate")),
        response("a refusal", None, unknown_key, checks("n-unknown", "validate", license_key="NO-SUCH-KEY")),
        response("another nonce", "nonce does not match", validated, {**valid, "expected_nonce": "n-other"}),
        response("another call", "another call", deactivated, checks("n-deactivate", "validate")),
        response("another key", "another license key", validated, {**valid, "license_key": "OTHER"}),
        response("another device", "another device", validated, {**valid, "fingerprint": "device-2"}),
        response("spaces it trims", None, validated, {**valid, "fingerprint": " device-1\n"}),
        response("more it trims", None, validated, {**valid, "fingerprint": "\x1cdevice-1\u3000\x85"}),
        response("a mark it keeps", "another device", validated, {**valid, "fingerprint": "\ufeffdevice-1"}),
        response("a changed body", "does not match the body", (body.replace(b"device-1", b"device-2"), header)),
        unknown_signer := response("an unknown key", "Unknown signing key", (body, header.replace(kid, "other-kid"))),
        response("parameters in another order", None, (body, reordered)),
        response("a malformed header", "malformed", (body, f"keyid={kid}, algorithm=ed25519")),
        response("no base64", "not valid base64", (body, header.replace(signature, "!!" + signature[2:]))),
        response("kept", None, validated, valid, now=now + timedelta(days=6), max_age=week),
        response("kept too long", "older than", validated, valid, now=now + timedelta(days=8), max_age=week),
        response(
            "a clock set back", "from the future", validated, valid, now=now - timedelta(minutes=10), max_age=week
        ),
        file_case("a license file", None, license_file, file_checks),
        file_case("a file with CRLF and blank lines", None, crlf, file_checks),
        file_case("a file saved with a byte-order mark", None, "\ufeff" + crlf, file_checks),
        file_case("for another device", "another device", license_file, {**file_checks, "fingerprint": "device-2"}),
        file_case("for another key", "another license key", license_file, {**file_checks, "license_key": "OTHER"}),
        file_case("an expired file", "expired", license_file, file_checks, now=expires_at),
        file_case("from the future", "issued in the future", license_file, now=issued_at - timedelta(minutes=10)),
        file_case("within the clock's leeway", None, license_file, file_checks, now=issued_at - timedelta(minutes=4)),
        file_case("a tampered file", "", tampered),
        file_case("no license file", "Not a license file", "hello"),
    ]

    python = [python_outcome(case, public_keys) for case in cases]
    javascript = javascript_outcomes(cases, signing_keys, tmp_path)

    assert python[cases.index(unknown_signer)]["kind"] == UnknownSigningKeyError.__name__
    for case, in_python, in_javascript in zip(cases, python, javascript, strict=True):
        if case.refused_for is None:
            assert in_python["ok"], (case.name, in_python)
            assert in_javascript == json.loads(json.dumps(in_python, default=str)), case.name
        else:
            assert not in_python["ok"] and case.refused_for in in_python["error"], (case.name, in_python)
            assert not in_javascript["ok"] and case.refused_for in in_javascript["error"], (case.name, in_javascript)
            assert in_javascript["kind"] == in_python["kind"], case.name
            # Python writes times and durations its own way; every other refusal reads the same in both.
            if case.refused_for not in WRITES_A_TIME:
                assert in_javascript["error"] == in_python["error"], case.name


def test_the_javascript_verifiers_own_tests_pass():
    finished = subprocess.run(
        [NODE, "--test", str(CLIENT / "tests" / "license-verifier.test.mjs")],
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert finished.returncode == 0, finished.stdout + finished.stderr
