"""The GetKeyManager dialect, through HTTP, as an app built for GetKeyManager calls it."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from django.utils import timezone

from licensing import errors, services
from licensing.models import Activation, ApiKey, AuditEvent, RsaKey
from tests.factories import activate, make_license, make_plan

pytestmark = pytest.mark.django_db

BASE = "/compat/getkeymanager/api/v1/"
ENVELOPE = {"response", "response_base64", "private_key_used", "signature"}
PLAIN = {"code", "message", "timestamp"}
FORM = "application/x-www-form-urlencoded"


def _private_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()


@pytest.fixture(scope="session")
def vendor_pems():
    """The RSA keys a vendor signed with at GetKeyManager: made once, imported per test (keygen is slow)."""
    return {"global": _private_pem(), "product": _private_pem()}


@pytest.fixture(autouse=True)
def global_rsa_key(db, vendor_pems, actor):
    return services.import_rsa_key(private_key_pem=vendor_pems["global"], actor=actor)


@pytest.fixture
def product_rsa_key(product, vendor_pems, actor):
    # The global key signed the product's answers until now: its own key replaces it there.
    return services.import_rsa_key(private_key_pem=vendor_pems["product"], product=product, replace=True, actor=actor)


def post(client, endpoint: str, fields: dict, **extra):
    return client.post(BASE + endpoint, data=urlencode(fields), content_type=FORM, **extra)


def call(client, endpoint: str, api_key, issued, identifier: str | None = "domain.ltd", meta=None, **fields):
    """Post the form an app sends; `meta` holds request headers and REMOTE_ADDR."""
    body = {"api_key": api_key.key, "license_key": issued.key}
    if identifier is not None:
        body["identifier"] = identifier
    return post(client, endpoint, {**body, **fields}, **(meta or {}))


def verify_signature(body: dict, public_key_pem: str) -> None:
    public_key = serialization.load_pem_public_key(public_key_pem.encode())
    public_key.verify(
        base64.b64decode(body["signature"]),
        base64.b64decode(body["response_base64"]),
        padding.PKCS1v15(),
        hashes.SHA256(),
    )


def envelope(response, rsa_key: RsaKey, *, status: int = 200, used: str = "global") -> dict:
    """Check the envelope and its signature with the key an app embeds; return `response`."""
    assert response.status_code == status
    body = response.json()
    assert set(body) == ENVELOPE
    assert body["private_key_used"] == used
    verify_signature(body, rsa_key.public_key_pem)
    assert json.loads(base64.b64decode(body["response_base64"])) == body["response"]
    answer = body["response"]
    assert type(answer["code"]) is int
    assert type(answer["message"]) is str
    assert type(answer["timestamp"]) is int
    assert abs(answer["timestamp"] - time.time()) < 60
    return answer


def expect(response, rsa_key: RsaKey, code: int, message: str | None = None, **kwargs) -> dict:
    answer = envelope(response, rsa_key, **kwargs)
    assert set(answer) == PLAIN
    assert answer["code"] == code
    if message is not None:
        assert answer["message"] == message
    return answer


# ---------------------------------------------------------------- signatures


def test_the_global_key_signs_when_the_product_has_none(client, api_key, issued, global_rsa_key):
    activate(issued, "domain.ltd")

    response = call(client, "verify", api_key, issued)

    expect(response, global_rsa_key, 200, "License key is valid", used="global")


def test_the_products_own_imported_key_signs_and_the_global_key_does_not_verify(
    client, api_key, issued, product_rsa_key, global_rsa_key
):
    activate(issued, "domain.ltd")

    response = call(client, "verify", api_key, issued)

    expect(response, product_rsa_key, 200, used="product")
    with pytest.raises(InvalidSignature):
        verify_signature(response.json(), global_rsa_key.public_key_pem)


def test_the_signature_covers_exactly_the_base64_bytes(client, api_key, issued, global_rsa_key):
    body = call(client, "verify", api_key, issued).json()
    signed = base64.b64decode(body["response_base64"])
    public_key = serialization.load_pem_public_key(global_rsa_key.public_key_pem.encode())
    signature = base64.b64decode(body["signature"])
    tampered = signed.replace(b'"code":202', b'"code":200')
    assert tampered != signed

    public_key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
    with pytest.raises(InvalidSignature):
        public_key.verify(signature, tampered, padding.PKCS1v15(), hashes.SHA256())


def test_the_signed_bytes_are_written_as_phps_json_encode_writes_them(client, api_key, global_rsa_key):
    issued = make_license(metadata={"site": "https://shop.example/é"})
    activate(issued, "domain.ltd/shop")

    body = call(client, "get-license-key-details", api_key, issued, identifier="domain.ltd/shop").json()

    signed = base64.b64decode(body["response_base64"])
    assert b'"identifier":"domain.ltd\\/shop"' in signed
    assert b'"site":"https:\\/\\/shop.example\\/\\u00e9"' in signed
    assert json.loads(signed) == body["response"]
    verify_signature(body, global_rsa_key.public_key_pem)


def test_a_global_key_is_made_when_the_install_has_none(client, api_key, issued, global_rsa_key):
    global_rsa_key.delete()

    response = call(client, "verify", api_key, issued)

    expect(response, RsaKey.objects.get(product=None), 202, used="global")


# ---------------------------------------------------------------- verify


def test_verify_answers_200_for_an_activated_identifier_and_counts_it(client, api_key, issued, global_rsa_key):
    activation = activate(issued, "domain.ltd").activation
    # Last-seen times are kept to the minute: make the device's last sighting an older one.
    Activation.objects.filter(pk=activation.pk).update(last_seen_at=timezone.now() - timedelta(minutes=10))

    response = call(client, "verify", api_key, issued)

    expect(response, global_rsa_key, 200, "License key is valid")
    issued.license.refresh_from_db()
    assert issued.license.validation_count == 1
    activation.refresh_from_db()
    assert activation.last_seen_at == issued.license.last_validated_at


def test_verify_answers_202_for_an_identifier_that_never_activated(client, api_key, issued, global_rsa_key):
    activate(issued, "other.ltd")

    response = call(client, "verify", api_key, issued)

    expect(response, global_rsa_key, 202, "License key is not active for this identifier")
    issued.license.refresh_from_db()
    assert issued.license.validation_count == 0


def test_verify_answers_202_after_the_identifier_was_deactivated(client, api_key, issued, global_rsa_key):
    activate(issued, "domain.ltd")
    call(client, "deactivate", api_key, issued)

    response = call(client, "verify", api_key, issued)

    expect(response, global_rsa_key, 202)


def test_verify_answers_203_when_the_product_is_inactive(client, api_key, issued, product, actor, global_rsa_key):
    activate(issued, "domain.ltd")
    product.is_active = False
    services.save_catalog_record(record=product, actor=actor)

    response = call(client, "verify", api_key, issued)

    expect(response, global_rsa_key, 203, "Product is inactive")


@pytest.mark.parametrize("change", [services.suspend_license, services.revoke_license])
def test_verify_answers_204_for_a_suspended_or_revoked_key(client, api_key, issued, actor, change, product_rsa_key):
    activate(issued, "domain.ltd")
    change(license=issued.license, actor=actor)

    response = call(client, "verify", api_key, issued)

    expect(response, product_rsa_key, 204, "License key is blocked", used="product")


def test_verify_answers_205_for_an_expired_key(client, api_key, issued, actor, global_rsa_key):
    activate(issued, "domain.ltd")
    services.extend_license(license=issued.license, expires_at=timezone.now() - timedelta(days=1), actor=actor)

    response = call(client, "verify", api_key, issued)

    expect(response, global_rsa_key, 205, "License key has expired")


def test_verify_answers_210_for_an_unknown_key_signed_with_the_global_key(
    client, api_key, issued, product_rsa_key, global_rsa_key
):
    response = post(client, "verify", {"api_key": api_key.key, "license_key": "NOPE-NOPE", "identifier": "domain.ltd"})

    expect(response, global_rsa_key, 210, "Invalid license key", used="global")


def test_keys_are_exact_so_another_case_is_an_invalid_key(client, api_key, global_rsa_key):
    make_license(key="Case-Sensitive-Key")

    response = post(
        client, "verify", {"api_key": api_key.key, "license_key": "case-sensitive-key", "identifier": "domain.ltd"}
    )

    expect(response, global_rsa_key, 210)


@pytest.mark.parametrize("license_key", [None, ""])
def test_verify_answers_210_without_a_license_key(client, api_key, license_key, global_rsa_key):
    fields = {"api_key": api_key.key, "identifier": "domain.ltd"}
    if license_key is not None:
        fields["license_key"] = license_key

    response = post(client, "verify", fields)

    expect(response, global_rsa_key, 210, "Invalid license key")


@pytest.mark.parametrize("identifier", [None, "", "   "])
def test_verify_answers_215_without_an_identifier(client, api_key, issued, identifier, global_rsa_key):
    response = call(client, "verify", api_key, issued, identifier=identifier)

    expect(response, global_rsa_key, 215, "Identifier is required")


@pytest.mark.parametrize("endpoint", ["verify", "activate", "deactivate", "get-license-key-details"])
def test_a_215_about_a_known_license_is_signed_with_its_products_key(
    client, api_key, issued, endpoint, product_rsa_key
):
    response = call(client, endpoint, api_key, issued, identifier=None)

    expect(response, product_rsa_key, 215, "Identifier is required", used="product")


# ---------------------------------------------------------------- activate


def test_activate_answers_300_and_binds_the_identifier(client, api_key, issued, global_rsa_key):
    response = call(client, "activate", api_key, issued, meta={"REMOTE_ADDR": "198.51.100.4"})

    expect(response, global_rsa_key, 300, "License key activated")
    activation = Activation.objects.get(license=issued.license)
    assert (activation.fingerprint, activation.ip_address, activation.is_live) == ("domain.ltd", "198.51.100.4", True)
    event = AuditEvent.objects.get(action="activation.created")
    assert (event.actor_kind, event.actor_id, event.ip_address) == ("app", str(api_key.api_key.pk), "198.51.100.4")
    assert event.actor_display == f"app with API key {api_key.api_key}"


def test_an_identifier_read_with_its_line_end_is_measured_without_it(client, api_key, issued, global_rsa_key):
    longest = "x" * services.MAX_FINGERPRINT_LENGTH

    response = call(client, "activate", api_key, issued, identifier=longest + "\n")

    expect(response, global_rsa_key, 300, "License key activated")
    assert Activation.objects.get(license=issued.license).fingerprint == longest


def test_activate_answers_301_for_the_same_identifier_and_takes_no_slot(client, api_key, issued, global_rsa_key):
    call(client, "activate", api_key, issued)

    response = call(client, "activate", api_key, issued)

    expect(response, global_rsa_key, 301, "License key already active")
    assert issued.license.activations.live().count() == 1


def test_activate_answers_302_at_the_limit(client, api_key, issued, product_rsa_key):
    for identifier in ["a.ltd", "b.ltd", "c.ltd"]:
        activate(issued, identifier)

    response = call(client, "activate", api_key, issued)

    expect(response, product_rsa_key, 302, "Activation limit reached", used="product")
    assert issued.license.activations.live().count() == 3


def test_an_active_identifier_reactivates_at_the_limit(client, api_key, issued, global_rsa_key):
    for identifier in ["domain.ltd", "b.ltd", "c.ltd"]:
        activate(issued, identifier)

    expect(call(client, "activate", api_key, issued), global_rsa_key, 301)


def test_activate_answers_205_for_an_expired_key(client, api_key, issued, actor, product_rsa_key):
    services.extend_license(license=issued.license, expires_at=timezone.now() - timedelta(days=1), actor=actor)

    response = call(client, "activate", api_key, issued)

    # The product is known from the key, so its own key signs the refusal too.
    expect(response, product_rsa_key, 205, "License key has expired", used="product")
    assert not Activation.objects.exists()


def test_activate_answers_204_for_a_suspended_key(client, api_key, issued, actor, global_rsa_key):
    services.suspend_license(license=issued.license, actor=actor)

    expect(call(client, "activate", api_key, issued), global_rsa_key, 204, "License key is blocked")
    assert not Activation.objects.exists()


def test_activate_answers_203_for_an_inactive_product(client, api_key, issued, product, actor, global_rsa_key):
    product.is_active = False
    services.save_catalog_record(record=product, actor=actor)

    expect(call(client, "activate", api_key, issued), global_rsa_key, 203, "Product is inactive")


def test_activate_answers_210_for_an_unknown_key(client, api_key, global_rsa_key):
    response = post(client, "activate", {"api_key": api_key.key, "license_key": "NOPE", "identifier": "domain.ltd"})

    expect(response, global_rsa_key, 210, "Invalid license key")


def test_activate_answers_215_without_an_identifier(client, api_key, issued, global_rsa_key):
    expect(call(client, "activate", api_key, issued, identifier=None), global_rsa_key, 215, "Identifier is required")
    assert not Activation.objects.exists()


def test_an_identifier_longer_than_a_fingerprint_is_215(client, api_key, issued, global_rsa_key):
    response = call(client, "activate", api_key, issued, identifier="x" * 256)

    answer = expect(response, global_rsa_key, 215)
    assert "255" in answer["message"]
    assert not Activation.objects.exists()


# ---------------------------------------------------------------- deactivate (the seed's two examples)


def test_deactivate_answers_400_and_frees_the_slot(client, api_key, issued, global_rsa_key):
    activation = activate(issued, "domain.ltd").activation

    response = call(client, "deactivate", api_key, issued)

    # The seed's "License key deactivated" example, signed with the global key.
    expect(response, global_rsa_key, 400, "License key deactivated", used="global")
    activation.refresh_from_db()
    assert activation.deactivated_at is not None
    assert activation.deactivated_by_kind == "app"
    assert issued.license.activations.live().count() == 0


def test_deactivate_again_answers_401_already_inactive(client, api_key, issued, product_rsa_key):
    activate(issued, "domain.ltd")
    call(client, "deactivate", api_key, issued)
    first = Activation.objects.get().deactivated_at

    response = call(client, "deactivate", api_key, issued)

    # The seed's "License key already inactive" example, signed with the product's key.
    expect(response, product_rsa_key, 401, "License key already inactive", used="product")
    assert Activation.objects.get().deactivated_at == first


def test_deactivating_an_identifier_that_never_activated_answers_401(client, api_key, issued, global_rsa_key):
    # Left open by GetKeyManager: "already inactive" is true, and an app treats it as done.
    activate(issued, "other.ltd")

    response = call(client, "deactivate", api_key, issued)

    expect(response, global_rsa_key, 401, "License key already inactive")
    assert issued.license.activations.live().count() == 1


def test_deactivate_answers_210_for_an_unknown_key_and_215_without_an_identifier(
    client, api_key, issued, global_rsa_key
):
    unknown = post(client, "deactivate", {"api_key": api_key.key, "license_key": "NOPE", "identifier": "domain.ltd"})
    no_identifier = call(client, "deactivate", api_key, issued, identifier=None)

    expect(unknown, global_rsa_key, 210, "Invalid license key")
    expect(no_identifier, global_rsa_key, 215, "Identifier is required")


def test_a_suspended_key_can_still_free_its_device(client, api_key, issued, actor, global_rsa_key):
    activate(issued, "domain.ltd")
    services.suspend_license(license=issued.license, actor=actor)

    expect(call(client, "deactivate", api_key, issued), global_rsa_key, 400)


# ---------------------------------------------------------------- get-license-key-details


def test_details_answer_500_with_the_license_key_and_the_product(client, api_key, actor, global_rsa_key):
    plan = make_plan(name="Pro", identifier="pro", max_activations=5)
    expires_at = timezone.now() + timedelta(days=30)
    issued = make_license(plan=plan, expires_at=expires_at, metadata={"seats": 5})
    activation = activate(issued, "domain.ltd").activation
    activate(issued, "other.ltd")

    response = call(client, "get-license-key-details", api_key, issued)

    answer = envelope(response, global_rsa_key)
    assert set(answer) == {"code", "message", "licenseKey", "product", "timestamp"}
    assert (answer["code"], answer["message"]) == (500, "Active license key found")
    assert answer["licenseKey"] == {
        "license_key": issued.key,
        "status": "active",
        "activation_limit": 5,
        "activations": 2,
        "identifier": "domain.ltd",
        "activated_at": int(activation.created_at.timestamp()),
        "created_at": int(issued.license.created_at.timestamp()),
        "expires_at": int(expires_at.timestamp()),
        "plan": {"identifier": "pro", "name": "Pro"},
        "metadata": {"seats": 5},
    }
    product = plan.product
    assert answer["product"] == {"id": product.public_id, "name": product.name, "slug": product.slug}
    issued.license.refresh_from_db()
    assert issued.license.validation_count == 0


def test_details_of_an_unlimited_perpetual_license_without_a_plan_answer_nulls(
    client, api_key, product, global_rsa_key
):
    issued = make_license(product=product, plan=None)
    activate(issued, "domain.ltd")

    answer = envelope(call(client, "get-license-key-details", api_key, issued), global_rsa_key)

    details = answer["licenseKey"]
    assert (details["activation_limit"], details["expires_at"], details["plan"]) == (None, None, None)


def test_details_count_the_last_second_of_9999_exactly(client, api_key, product, global_rsa_key):
    issued = make_license(product=product, plan=None, expires_at=datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC))
    activate(issued, "domain.ltd")

    answer = envelope(call(client, "get-license-key-details", api_key, issued), global_rsa_key)

    assert answer["licenseKey"]["expires_at"] == 253402300799  # 9999-12-31T23:59:59Z, not 10000-01-01


def test_details_answer_202_when_the_identifier_has_no_activation(client, api_key, issued, global_rsa_key):
    activate(issued, "other.ltd")

    response = call(client, "get-license-key-details", api_key, issued)

    expect(response, global_rsa_key, 202, "License key is not active for this identifier")


def test_details_answer_202_after_the_identifier_was_deactivated(client, api_key, issued, global_rsa_key):
    activate(issued, "domain.ltd")
    call(client, "deactivate", api_key, issued)

    expect(call(client, "get-license-key-details", api_key, issued), global_rsa_key, 202)


def test_details_of_a_blocked_key_answer_204_not_active_found(client, api_key, issued, actor, global_rsa_key):
    # Left open by GetKeyManager: "Active license key found" must not be said of a blocked key.
    activate(issued, "domain.ltd")
    services.revoke_license(license=issued.license, actor=actor)

    expect(call(client, "get-license-key-details", api_key, issued), global_rsa_key, 204)


def test_details_answer_210_for_an_unknown_key(client, api_key, global_rsa_key):
    response = post(
        client, "get-license-key-details", {"api_key": api_key.key, "license_key": "NOPE", "identifier": "x"}
    )

    expect(response, global_rsa_key, 210)


# ---------------------------------------------------------------- API keys


@pytest.mark.parametrize("endpoint", ["verify", "activate", "deactivate", "get-license-key-details"])
def test_an_unknown_api_key_is_100_with_http_401(client, issued, endpoint, product_rsa_key, global_rsa_key):
    response = post(client, endpoint, {"api_key": "lsk_unknown", "license_key": issued.key, "identifier": "d"})

    # No product is resolved before the key is accepted: the global key signs.
    expect(response, global_rsa_key, 100, "Invalid API key", status=401, used="global")
    assert not Activation.objects.exists()


def test_a_missing_api_key_is_100(client, issued, global_rsa_key):
    response = post(client, "verify", {"license_key": issued.key, "identifier": "domain.ltd"})

    expect(response, global_rsa_key, 100, status=401)


@pytest.mark.parametrize("ended", ["revoked", "expired"])
def test_a_revoked_or_expired_api_key_is_101_inactive(client, api_key, issued, actor, global_rsa_key, ended):
    if ended == "revoked":
        services.revoke_api_key(api_key=api_key.api_key, actor=actor)
    else:
        ApiKey.objects.filter(pk=api_key.api_key.pk).update(expires_at=timezone.now())

    response = call(client, "verify", api_key, issued)

    expect(response, global_rsa_key, 101, "API key is inactive", status=401)


@pytest.mark.parametrize("endpoint", ["activate", "deactivate"])
def test_a_read_only_api_key_cannot_change_activations(client, read_only_api_key, issued, endpoint, global_rsa_key):
    activate(issued, "domain.ltd")

    response = call(client, endpoint, read_only_api_key, issued, identifier="domain.ltd")

    expect(response, global_rsa_key, 102, "API key has no permission for this endpoint", status=401)
    assert Activation.objects.get().is_live


@pytest.mark.parametrize(("endpoint", "code"), [("verify", 200), ("get-license-key-details", 500)])
def test_a_read_only_api_key_can_read(client, read_only_api_key, issued, endpoint, code):
    activate(issued, "domain.ltd")

    response = call(client, endpoint, read_only_api_key, issued)

    assert response.json()["response"]["code"] == code


def test_the_api_key_may_come_as_a_bearer_header(client, api_key, issued, global_rsa_key):
    response = post(
        client,
        "activate",
        {"license_key": issued.key, "identifier": "domain.ltd"},
        HTTP_AUTHORIZATION=f"Bearer {api_key.key}",
    )

    expect(response, global_rsa_key, 300)


def test_the_api_key_field_is_used_before_the_bearer_header(client, api_key, issued, global_rsa_key):
    response = post(
        client,
        "verify",
        {"api_key": "lsk_unknown", "license_key": issued.key, "identifier": "domain.ltd"},
        HTTP_AUTHORIZATION=f"Bearer {api_key.key}",
    )

    expect(response, global_rsa_key, 100, status=401)


def test_using_an_api_key_notes_when_it_was_last_used(client, api_key, issued):
    call(client, "verify", api_key, issued)

    api_key.api_key.refresh_from_db()
    assert api_key.api_key.last_used_at is not None


# ---------------------------------------------------------------- request formats and bad input


def test_a_json_body_is_read_too(client, api_key, issued, global_rsa_key):
    body = {"api_key": api_key.key, "license_key": issued.key, "identifier": "domain.ltd"}

    response = client.post(BASE + "activate", data=json.dumps(body), content_type="application/json")

    expect(response, global_rsa_key, 300)


def test_a_multipart_body_is_read_too(client, api_key, issued, global_rsa_key):
    response = client.post(
        BASE + "activate", data={"api_key": api_key.key, "license_key": issued.key, "identifier": "domain.ltd"}
    )

    expect(response, global_rsa_key, 300)


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        ("{not json", "application/json", 200, 215),
        ("license_key=x", "text/plain", 200, 215),
        ("--x\r\nbroken", "multipart/form-data", 200, 215),
        # Readable but holding no API key: refused as one.
        ("[1, 2]", "application/json", 401, 100),
        ("a=b", "application/x-www-form-urlencoded; charset=no-such-charset", 401, 100),
        ("--x\r\nbroken", "multipart/form-data; boundary=x", 401, 100),
    ],
)
def test_an_unreadable_body_is_a_signed_answer_never_a_server_error(
    client, body, content_type, status, code, global_rsa_key
):
    response = client.generic("POST", BASE + "verify", data=body.encode(), content_type=content_type)

    expect(response, global_rsa_key, code, status=status)


def test_a_body_over_the_size_cap_is_215(client, api_key, issued, settings, global_rsa_key):
    settings.API_MAX_BODY_BYTES = 100

    response = call(client, "verify", api_key, issued, filler="x" * 200)

    expect(response, global_rsa_key, 215)


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("license_key", 42, 210),
        ("license_key", ["a"], 210),
        ("license_key", "\ud800", 210),
        ("identifier", 42, 215),
        ("identifier", {"a": 1}, 215),
        ("identifier", "\ud800", 215),
        ("identifier", "nul\x00byte", 215),
    ],
)
def test_wrong_json_types_answer_210_or_215(client, api_key, issued, field, value, code, global_rsa_key):
    body = {"api_key": api_key.key, "license_key": issued.key, "identifier": "domain.ltd", field: value}

    response = client.post(BASE + "activate", data=json.dumps(body), content_type="application/json")

    expect(response, global_rsa_key, code)
    assert not Activation.objects.exists()


def test_a_nul_in_a_form_identifier_is_215(client, api_key, issued, global_rsa_key):
    response = call(client, "verify", api_key, issued, identifier="a\x00b")

    expect(response, global_rsa_key, 215)


def test_a_wrong_method_is_405_in_the_envelope(client, global_rsa_key):
    response = client.get(BASE + "verify")

    expect(response, global_rsa_key, 405, status=405)
    assert "POST" in response["Allow"]


def test_an_unknown_path_is_404_in_the_envelope(client, global_rsa_key):
    response = client.post(BASE + "verify/", data="", content_type=FORM)

    expect(response, global_rsa_key, 404, status=404)


def test_a_server_failure_is_a_signed_500_outside_getkeymanagers_codes(
    client, api_key, issued, monkeypatch, global_rsa_key
):
    def broken(**kwargs):
        raise RuntimeError("database gone")

    monkeypatch.setattr(services, "validate_license", broken)

    response = call(client, "verify", api_key, issued)

    expect(response, global_rsa_key, 900, status=500)


def test_answers_ignore_the_accept_header(client, api_key, issued, global_rsa_key):
    response = call(client, "verify", api_key, issued, meta={"HTTP_ACCEPT": "text/html"})

    assert response["Content-Type"] == "application/json"
    envelope(response, global_rsa_key)


def test_a_refusal_the_table_does_not_name_is_still_an_answer(client, api_key, issued, monkeypatch):
    def refuse(**kwargs):
        raise errors.InvalidStatusChange()

    monkeypatch.setattr(services, "validate_license", refuse)

    response = client.post(
        "/compat/getkeymanager/api/v1/verify",
        {"api_key": api_key.key, "license_key": issued.key, "identifier": "domain.ltd"},
    )

    assert response.status_code == 200
    assert response.json()["response"]["code"] == 210
