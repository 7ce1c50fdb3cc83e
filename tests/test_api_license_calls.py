"""The app-facing calls of the native API, through HTTP, as an app makes them."""

from __future__ import annotations

import base64
import codecs
import hashlib
import json
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from license_verifier import VerificationError, public_keys_from_signing_keys, verify_license_file, verify_response

from licensing import errors, services
from licensing.models import Activation, AuditEvent, License, SigningKey
from tests.factories import activate, make_license, make_plan, nested

pytestmark = pytest.mark.django_db


def call(client, name: str, body, **extra):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(f"/api/v1/licenses/{name}", data=data, content_type="application/json", **extra)


def published_keys(client):
    return public_keys_from_signing_keys(client.get("/api/v1/signing-keys").content)


def verified(client, response, nonce=None) -> dict:
    return verify_response(
        response.content, response["X-License-Signature"], published_keys(client), expected_nonce=nonce
    )


def error(response) -> dict:
    return response.json()["error"]


def test_an_answer_kept_for_offline_use_is_trusted_for_the_grace_period_the_app_chooses(api_client, issued):
    activate(issued, "this-device")
    response = call(api_client, "validate", {"key": issued.key, "fingerprint": "this-device", "nonce": "n-1"})
    keys, signature = published_keys(api_client), response["X-License-Signature"]
    week = timedelta(days=7)

    kept = verify_response(response.content, signature, keys, max_age=week, now=timezone.now() + timedelta(days=6))

    assert kept["valid"] is True
    with pytest.raises(VerificationError, match="older than 7 days"):
        verify_response(response.content, signature, keys, max_age=week, now=timezone.now() + timedelta(days=8))


# ---------------------------------------------------------------- activate


def test_activation_answers_201_with_the_activation_and_the_license(api_client, issued):
    response = call(
        api_client,
        "activate",
        {"key": issued.key, "fingerprint": "mac-C02XL0GHJG5J", "name": "Ada's MacBook", "platform": "macOS"},
    )

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"created", "activation", "license", "meta"}
    assert body["created"] is True
    assert body["activation"]["fingerprint"] == "mac-C02XL0GHJG5J"
    assert body["activation"]["name"] == "Ada's MacBook"
    assert Activation.objects.get(pk=body["activation"]["id"]).is_live
    license = body["license"]
    assert license["id"] == str(issued.license.pk)
    assert (license["status"], license["max_activations"]) == ("active", 3)
    assert (license["activations_used"], license["activations_remaining"]) == (1, 2)
    assert license["product"]["name"] == "Photon Editor"
    assert license["plan"]["identifier"] == "personal"
    assert "key" not in license


def test_reactivating_the_same_device_answers_200_and_takes_no_slot(api_client, issued):
    first = call(api_client, "activate", {"key": issued.key, "fingerprint": "device-1"})

    again = call(api_client, "activate", {"key": issued.key, "fingerprint": "device-1"})

    assert again.status_code == 200
    assert again.json()["created"] is False
    assert again.json()["activation"]["id"] == first.json()["activation"]["id"]
    assert again.json()["license"]["activations_used"] == 1


def test_at_the_limit_the_answer_lists_the_devices_with_masked_fingerprints(api_client, issued):
    for fingerprint in ["serial-AAAA-1111", "serial-BBBB-2222", "serial-CCCC-3333"]:
        activate(issued, fingerprint, name=fingerprint[-4:])

    response = call(api_client, "activate", {"key": issued.key, "fingerprint": "serial-DDDD-4444"})

    assert response.status_code == 403
    body = error(response)
    assert (body["code"], body["limit"], body["used"]) == ("activation_limit_reached", 3, 3)
    assert [device["name"] for device in body["devices"]] == ["1111", "2222", "3333"]
    assert [device["fingerprint"] for device in body["devices"]] == ["…1111", "…2222", "…3333"]
    assert set(body["devices"][0]) == {"id", "name", "platform", "fingerprint", "created_at", "last_seen_at"}
    assert "serial-AAAA" not in response.content.decode()
    assert issued.license.activations.live().count() == 3
    assert body["portal_url"] is None


def test_at_the_limit_the_answer_says_where_the_customer_frees_a_device(api_client, issued, settings):
    settings.PUBLIC_URL = "https://licenses.example.com"
    activate(issued, "a")
    activate(issued, "b")
    activate(issued, "c")

    response = call(api_client, "activate", {"key": issued.key, "fingerprint": "d"})

    assert error(response)["portal_url"] == "https://licenses.example.com/portal/"


@pytest.mark.parametrize(
    ("state", "status", "code"),
    [
        ("unknown", 404, "license_not_found"),
        ("suspended", 403, "license_suspended"),
        ("revoked", 403, "license_revoked"),
        ("expired", 403, "license_expired"),
        ("product_inactive", 403, "product_inactive"),
    ],
)
def test_activation_refusals(api_client, issued, actor, state, status, code):
    key = issued.key
    if state == "unknown":
        key = "NO-SUCH-KEY"
    elif state == "suspended":
        services.suspend_license(license=issued.license, actor=actor)
    elif state == "revoked":
        services.revoke_license(license=issued.license, actor=actor)
    elif state == "expired":
        services.extend_license(license=issued.license, expires_at=timezone.now() - timedelta(minutes=1), actor=actor)
    else:
        product = issued.license.product
        product.is_active = False
        services.save_catalog_record(record=product, actor=actor)

    response = call(api_client, "activate", {"key": key, "fingerprint": "device"})

    assert response.status_code == status
    assert error(response)["code"] == code
    assert error(response)["message"]
    assert Activation.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"fingerprint": "device"}, "key"),
        ({"key": "K"}, "fingerprint"),
        ({"key": 12345, "fingerprint": "device"}, "key"),
        ({"key": "K", "fingerprint": ["a", "b"]}, "fingerprint"),
        ({"key": "K", "fingerprint": "device", "name": True}, "name"),
        ({"key": "K", "fingerprint": "device", "metadata": "not an object"}, "metadata"),
        ({"key": "K", "fingerprint": "device", "metadata": {"a": "nul\u0000"}}, "metadata"),
        ({"key": "K", "fingerprint": "device", "metadata": nested(services.MAX_METADATA_NESTING + 1)}, "metadata"),
        ({"key": "K", "fingerprint": "f" * 256}, "fingerprint"),
        ({"key": "K", "fingerprint": "device", "hostId": "x"}, "hostId"),
        ({"key": "K", "fingerprint": "nul\u0000inside"}, "fingerprint"),
    ],
)
def test_bad_activation_input_is_400_naming_the_field(api_client, issued, body, field):
    response = call(api_client, "activate", body)

    assert response.status_code == 400
    assert error(response)["code"] == "invalid_input"
    assert error(response)["field"] == field
    assert Activation.objects.count() == 0


@pytest.mark.parametrize("body", ["{not json", "[1, 2]", '"text"', "null", ""])
def test_a_body_that_is_not_a_json_object_is_400(api_client, body):
    response = call(api_client, "activate", body)

    assert response.status_code == 400
    assert error(response)["code"] in {"malformed_request", "invalid_input"}


def test_behind_a_proxy_the_audit_trail_records_the_forwarded_client_address(api_client, issued, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}

    call(api_client, "activate", {"key": issued.key, "fingerprint": "pc"}, HTTP_X_FORWARDED_FOR="203.0.113.7")
    call(api_client, "deactivate", {"key": issued.key, "fingerprint": "pc"}, HTTP_X_FORWARDED_FOR="not an address")

    activation = Activation.objects.get()
    events = dict(AuditEvent.objects.values_list("action", "ip_address"))
    assert (activation.ip_address, events["activation.created"]) == ("203.0.113.7", "203.0.113.7")
    # A header that holds no address is not recorded: the connection's address is.
    assert events["activation.deactivated"] == "127.0.0.1"


@pytest.mark.parametrize(
    ("forwarded", "recorded"),
    [
        ("198.51.100.4:55123", "198.51.100.4"),
        ("[2001:db8::7]:443", "2001:db8::7"),
        ("client-said, 2001:db8::8", "2001:db8::8"),
        # An IPv4 client of a dual-stack proxy is its IPv4 address, not one of many in ::/64.
        ("::ffff:198.51.100.9", "198.51.100.9"),
        ("", "127.0.0.1"),
    ],
)
def test_a_forwarded_address_with_a_port_or_none_is_read_as_an_address(
    api_client, issued, settings, forwarded, recorded
):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}

    call(api_client, "activate", {"key": issued.key, "fingerprint": "pc"}, HTTP_X_FORWARDED_FOR=forwarded)

    assert Activation.objects.get().ip_address == recorded


def test_a_body_that_starts_with_a_utf8_byte_order_mark_is_read(api_client, issued):
    body = codecs.BOM_UTF8 + json.dumps({"key": issued.key, "fingerprint": "windows-pc"}).encode()

    response = call(api_client, "activate", body)

    assert response.status_code == 201
    assert response.json()["activation"]["fingerprint"] == "windows-pc"


def test_a_null_body_says_no_data_was_sent(api_client):
    response = call(api_client, "validate", "null")

    assert response.status_code == 400
    assert error(response)["message"] == "No data provided"
    assert "field" not in error(response)


def test_a_huge_body_is_413(api_client, issued):
    response = call(api_client, "activate", {"key": issued.key, "fingerprint": "x", "name": "n" * 100_000})

    assert response.status_code == 413
    assert error(response)["code"] == "request_too_large"


def test_a_non_json_content_type_is_415(api_client, issued):
    response = api_client.post("/api/v1/licenses/activate", data=f"key={issued.key}", content_type="text/plain")

    assert response.status_code == 415
    assert error(response)["code"] == "unsupported_media_type"


def test_get_on_a_license_call_is_405(api_client):
    response = api_client.get("/api/v1/licenses/activate")

    assert response.status_code == 405
    assert error(response)["code"] == "method_not_allowed"


# ---------------------------------------------------------------- validate


def test_validating_an_activated_device(api_client, issued):
    activation = activate(issued, "device-1").activation

    response = call(api_client, "validate", {"key": issued.key, "fingerprint": "device-1"})

    assert response.status_code == 200
    body = response.json()
    assert (body["valid"], body["code"]) == (True, "VALID")
    assert body["activation"]["id"] == str(activation.pk)
    assert body["license"]["activations_used"] == 1
    assert License.objects.get(pk=issued.license.pk).validation_count == 1


def test_validating_by_activation_id(api_client, issued):
    activation = activate(issued, "device-1").activation

    response = call(api_client, "validate", {"key": issued.key, "activation_id": str(activation.pk)})

    assert response.json()["code"] == "VALID"


@pytest.mark.parametrize(
    ("extra", "code"),
    [({"fingerprint": "never-seen"}, "NOT_ACTIVATED"), ({"activation_id": str(uuid.uuid4())}, "NOT_ACTIVATED")],
)
def test_an_unknown_device_is_200_not_activated(api_client, issued, extra, code):
    response = call(api_client, "validate", {"key": issued.key, **extra})

    assert response.status_code == 200
    assert (response.json()["valid"], response.json()["code"]) == (False, code)
    assert response.json()["activation"] is None


def test_a_suspended_license_validates_200_invalid(api_client, issued, actor):
    services.suspend_license(license=issued.license, actor=actor)

    response = call(api_client, "validate", {"key": issued.key})

    assert response.status_code == 200
    assert (response.json()["valid"], response.json()["code"]) == (False, "SUSPENDED")
    assert response.json()["license"]["status"] == "suspended"


def test_an_unknown_key_is_404_not_found(api_client):
    response = call(api_client, "validate", {"key": "NO-SUCH-KEY"})

    assert response.status_code == 404
    body = response.json()
    assert (body["valid"], body["code"], body["license"]) == (False, "NOT_FOUND", None)


def test_a_malformed_activation_id_is_400(api_client, issued):
    response = call(api_client, "validate", {"key": issued.key, "activation_id": "not-a-uuid"})

    assert response.status_code == 400
    assert error(response)["field"] == "activation_id"


# ---------------------------------------------------------------- deactivate


def test_deactivating_by_id_then_again(api_client, issued):
    activation = activate(issued, "device-1").activation

    first = call(api_client, "deactivate", {"key": issued.key, "activation_id": str(activation.pk)})
    again = call(api_client, "deactivate", {"key": issued.key, "activation_id": str(activation.pk)})

    assert first.status_code == again.status_code == 200
    assert first.json()["already_inactive"] is False
    assert first.json()["activation"]["deactivated_at"] is not None
    assert first.json()["license"]["activations_used"] == 0
    assert again.json()["already_inactive"] is True
    assert again.json()["detail"] == "This device was already inactive."
    assert again.json()["activation"]["deactivated_at"] == first.json()["activation"]["deactivated_at"]
    validated = call(api_client, "validate", {"key": issued.key, "fingerprint": "device-1"}).json()
    assert (validated["code"], validated["detail"]) == (
        "NOT_ACTIVATED",
        "This device is not activated on this license, or was deactivated: activate it again to use it.",
    )


def test_deactivating_by_fingerprint(api_client, issued):
    activate(issued, "device-1")

    response = call(api_client, "deactivate", {"key": issued.key, "fingerprint": "device-1"})

    assert response.status_code == 200
    assert issued.license.activations.live().count() == 0
    event = AuditEvent.objects.get(action="activation.deactivated")
    assert (event.actor_kind, event.ip_address) == ("app", "127.0.0.1")


def test_another_keys_activation_is_404(api_client, issued, plan):
    other = make_license(plan=plan)
    theirs = activate(other, "theirs").activation

    response = call(api_client, "deactivate", {"key": issued.key, "activation_id": str(theirs.pk)})

    assert response.status_code == 404
    assert error(response)["code"] == "activation_not_found"
    assert Activation.objects.get(pk=theirs.pk).is_live


def test_deactivate_needs_an_activation_id_or_a_fingerprint(api_client, issued):
    response = call(api_client, "deactivate", {"key": issued.key})

    assert response.status_code == 400
    assert error(response)["field"] == "activation_id"


# ---------------------------------------------------------------- signatures


def test_every_answer_is_signed_and_verifies_with_the_published_key(api_client, issued):
    answers = [
        call(api_client, "activate", {"key": issued.key, "fingerprint": "d", "nonce": "n-1"}),
        call(api_client, "validate", {"key": issued.key, "nonce": "n-2"}),
        call(api_client, "validate", {"key": "UNKNOWN", "nonce": "n-3"}),
        call(api_client, "activate", {"key": "UNKNOWN", "fingerprint": "d", "nonce": "n-4"}),
        call(api_client, "activate", {"fingerprint": "d", "nonce": "n-5"}),
    ]

    for number, response in enumerate(answers, start=1):
        assert verified(api_client, response, nonce=f"n-{number}")["meta"]["nonce"] == f"n-{number}"


def test_every_answer_names_the_call_it_answers_inside_the_signature(api_client, issued):
    answers = {
        "activate": call(api_client, "activate", {"key": issued.key, "fingerprint": "d"}),
        "validate": call(api_client, "validate", {"key": issued.key, "fingerprint": "d"}),
        "checkout": call(api_client, "checkout", {"key": issued.key, "fingerprint": "d"}),
        "deactivate": call(api_client, "deactivate", {"key": issued.key, "fingerprint": "d"}),
    }
    refused = call(api_client, "validate", {"key": "UNKNOWN"})

    for name, response in answers.items():
        assert response.status_code in (200, 201)
        assert verified(api_client, response)["meta"]["call"] == name
    assert (refused.status_code, verified(api_client, refused)["meta"]["call"]) == (404, "validate")


def test_a_deactivate_answer_sent_back_for_a_validate_fails_the_call_check(api_client, issued):
    """A proxy keeps the app's validate nonce but deactivates the device with it: the signed answer
    names the device and carries the nonce, and has no `valid` to read; it is no validate answer."""
    call(api_client, "activate", {"key": issued.key, "fingerprint": "this-device"})
    issued.license.status = License.Status.SUSPENDED
    issued.license.save()

    response = call(api_client, "deactivate", {"key": issued.key, "fingerprint": "this-device", "nonce": "n-1"})
    keys = published_keys(api_client)
    signature = response["X-License-Signature"]

    assert response.status_code == 200
    verify_response(response.content, signature, keys, expected_nonce="n-1", fingerprint="this-device")
    with pytest.raises(VerificationError, match="another call \\('deactivate'\\), not 'validate'"):
        verify_response(
            response.content,
            signature,
            keys,
            expected_nonce="n-1",
            expected_call="validate",
            fingerprint="this-device",
        )


def test_an_answer_with_another_valid_key_fails_the_key_check(api_client, issued, plan):
    """A proxy keeps the app's nonce and fingerprint but sends another key it holds (a cheaper plan,
    another product): the signed answer is a VALID one about that other license."""
    other = make_license(plan=plan)
    sent = {"fingerprint": "this-device", "nonce": "n-1"}
    call(api_client, "activate", {"key": other.key, "fingerprint": "this-device"})

    response = call(api_client, "validate", {"key": other.key, **sent})
    keys = published_keys(api_client)
    checks = {"expected_nonce": "n-1", "expected_call": "validate", "fingerprint": "this-device"}

    assert response.json()["valid"] is True
    assert response.json()["meta"]["key_sha256"] == hashlib.sha256(other.key.encode()).hexdigest()
    with pytest.raises(VerificationError, match="another license key"):
        verify_response(response.content, response["X-License-Signature"], keys, license_key=issued.key, **checks)
    verify_response(response.content, response["X-License-Signature"], keys, license_key=other.key, **checks)


def test_an_answer_to_a_body_without_a_key_names_none(api_client):
    response = call(api_client, "validate", {"fingerprint": "d"})

    assert response.status_code == 400
    assert response.json()["meta"]["key_sha256"] is None


def test_one_changed_byte_breaks_the_signature(api_client, issued):
    response = call(api_client, "validate", {"key": issued.key})
    tampered = response.content.replace(b'"valid":true', b'"valid":trUe')

    with pytest.raises(VerificationError):
        verify_response(tampered, response["X-License-Signature"], published_keys(api_client))


def test_a_replayed_answer_is_detected_by_its_nonce(api_client, issued):
    response = call(api_client, "validate", {"key": issued.key, "nonce": "first-request"})

    with pytest.raises(VerificationError):
        verified(api_client, response, nonce="second-request")


@pytest.mark.parametrize("sent", [{"fingerprint": "activated-device"}, {}])
def test_an_answer_about_another_device_fails_the_device_check(api_client, issued, sent):
    """A proxy keeps the app's nonce but sends an activated device's fingerprint, or none: the
    server signs a VALID answer, and the verifier refuses it for the device that asked."""
    call(api_client, "activate", {"key": issued.key, "fingerprint": "activated-device"})
    response = call(api_client, "validate", {"key": issued.key, "nonce": "n-1", **sent})
    keys = published_keys(api_client)

    assert response.json()["valid"] is True
    with pytest.raises(VerificationError, match="another device, or none"):
        verify_response(
            response.content, response["X-License-Signature"], keys, expected_nonce="n-1", fingerprint="new-device"
        )
    if sent:
        verify_response(
            response.content,
            response["X-License-Signature"],
            keys,
            expected_nonce="n-1",
            fingerprint="activated-device",
        )


def test_a_key_scheduled_to_sign_later_is_published_at_once_and_signs_when_its_time_comes(api_client, issued, actor):
    signing_now = services.current_signing_key()
    next_key = services.create_signing_key(actor=actor, signs_from=timezone.now() + timedelta(days=30))

    before = call(api_client, "validate", {"key": issued.key})
    listing = {key["kid"]: key for key in api_client.get("/api/v1/signing-keys").json()["keys"]}
    # Thirty days later (the key's time has come; each process re-reads its key within 30 s).
    SigningKey.objects.filter(pk=next_key.pk).update(signs_from=timezone.now())
    services.forget_cached_keys()
    after = call(api_client, "validate", {"key": issued.key})

    assert f'keyid="{signing_now.kid}"' in before["X-License-Signature"]
    assert (listing[next_key.kid]["active"], listing[signing_now.kid]["active"]) == (False, True)
    assert listing[next_key.kid]["signs_from"] == next_key.signs_from.isoformat().replace("+00:00", "Z")
    assert f'keyid="{next_key.kid}"' in after["X-License-Signature"]
    # An app that shipped with the key list fetched before the switch verifies both answers.
    shipped = {kid: entry["public_key"] for kid, entry in listing.items()}
    for answer in (before, after):
        verify_response(answer.content, answer["X-License-Signature"], shipped)


def test_a_checkout_answer_names_the_device_so_a_file_for_another_cannot_pass(api_client, issued):
    call(api_client, "activate", {"key": issued.key, "fingerprint": "activated-device"})

    response = call(api_client, "checkout", {"key": issued.key, "fingerprint": "activated-device", "nonce": "n-1"})
    keys = published_keys(api_client)

    assert response.json()["activation"]["fingerprint"] == "activated-device"
    with pytest.raises(VerificationError, match="another device, or none"):
        verify_response(response.content, response["X-License-Signature"], keys, fingerprint="new-device")


def test_a_key_cannot_be_scheduled_while_no_key_signs(actor):
    with pytest.raises(errors.InvalidInput) as refused:
        services.create_signing_key(actor=actor, signs_from=timezone.now() + timedelta(days=30))

    assert "No key signs now" in refused.value.message
    assert not SigningKey.objects.exists()


def test_a_signing_key_cannot_be_scheduled_in_the_past(actor):
    with pytest.raises(errors.InvalidInput) as refused:
        services.create_signing_key(actor=actor, signs_from=timezone.now() - timedelta(hours=1))

    assert refused.value.field == "signs_from"
    assert SigningKey.objects.count() == 0


def test_meta_carries_the_server_time(api_client, issued):
    before = timezone.now()

    meta = call(api_client, "validate", {"key": issued.key}).json()["meta"]

    assert meta["nonce"] is None
    assert before.isoformat()[:16] <= meta["server_time"][:16]


def test_rotation_signs_with_the_new_key_and_keeps_the_old_one_published(api_client, issued, actor):
    old_answer = call(api_client, "validate", {"key": issued.key})
    old_kid = services.current_signing_key().kid
    new_key = services.create_signing_key(actor=actor, replace=True)

    new_answer = call(api_client, "validate", {"key": issued.key})
    listing = api_client.get("/api/v1/signing-keys").json()["keys"]

    assert f'keyid="{new_key.kid}"' in new_answer["X-License-Signature"]
    assert {key["kid"]: key["active"] for key in listing} == {new_key.kid: True, old_kid: False}
    assert all(key["public_key"].startswith("-----BEGIN PUBLIC KEY-----") for key in listing)
    assert "PRIVATE" not in api_client.get("/api/v1/signing-keys").content.decode()
    verified(api_client, old_answer)
    verified(api_client, new_answer)


def test_a_retired_key_is_no_longer_published(api_client, issued, actor):
    old_answer = call(api_client, "validate", {"key": issued.key})
    services.retire_signing_key(signing_key=services.current_signing_key(), actor=actor)

    new_answer = call(api_client, "validate", {"key": issued.key})

    with pytest.raises(VerificationError):
        verified(api_client, old_answer)
    verified(api_client, new_answer)


# ---------------------------------------------------------------- offline license files


def test_checkout_gives_a_file_the_shipped_verifier_accepts(api_client, issued):
    activation = activate(issued, "device-1").activation

    response = call(api_client, "checkout", {"key": issued.key, "fingerprint": "device-1", "ttl": 7 * 86400})

    assert response.status_code == 200
    body = verified(api_client, response)
    assert body["license_file"].startswith("-----BEGIN LICENSE FILE-----\n")
    assert body["license_file"].rstrip().endswith("-----END LICENSE FILE-----")
    payload = verify_license_file(body["license_file"], published_keys(api_client))
    assert payload["license"]["id"] == str(issued.license.pk)
    assert payload["activation"]["id"] == str(activation.pk)
    assert (payload["kid"], payload["alg"]) == (body["kid"], "ed25519")
    assert payload["expires_at"] == body["expires_at"]
    assert AuditEvent.objects.filter(action="activation.checked_out", target_id=str(activation.pk)).exists()


def test_a_tampered_or_expired_license_file_is_refused(api_client, issued):
    activate(issued, "device-1")
    text = call(api_client, "checkout", {"key": issued.key, "fingerprint": "device-1", "ttl": 3600}).json()[
        "license_file"
    ]
    keys = published_keys(api_client)
    document = json.loads(base64.b64decode("".join(text.splitlines()[1:-1])))
    payload = json.loads(base64.b64decode(document["enc"]))
    payload["expires_at"] = "2099-01-01T00:00:00Z"
    document["enc"] = base64.b64encode(json.dumps(payload).encode()).decode()
    forged = "\n".join(
        [
            "-----BEGIN LICENSE FILE-----",
            base64.b64encode(json.dumps(document).encode()).decode(),
            "-----END LICENSE FILE-----",
        ]
    )

    with pytest.raises(VerificationError, match="signature"):
        verify_license_file(forged, keys)
    with pytest.raises(VerificationError):
        verify_license_file(text, keys, now=timezone.now() + timedelta(hours=2))
    assert verify_license_file(text, keys)["activation"]["fingerprint"] == "device-1"


def test_checkout_defaults_to_30_days_and_never_outlives_the_license(api_client, plan):
    issued = make_license(plan=plan, expires_at=timezone.now() + timedelta(days=3))
    activate(issued, "device-1")
    unlimited = make_license(plan=make_plan(max_activations=None), expires_at=None)
    activate(unlimited, "device-1")

    capped = call(api_client, "checkout", {"key": issued.key, "fingerprint": "device-1"}).json()
    default = call(api_client, "checkout", {"key": unlimited.key, "fingerprint": "device-1"}).json()

    assert capped["expires_at"] == issued.license.expires_at.isoformat().replace("+00:00", "Z")
    issued_at = timezone.datetime.fromisoformat(default["issued_at"])
    assert timezone.datetime.fromisoformat(default["expires_at"]) - issued_at == timedelta(days=30)


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"fingerprint": "never-activated"}, 404, "fingerprint"),
        ({"fingerprint": "device-1", "ttl": 10}, 400, "ttl"),
        ({"fingerprint": "device-1", "ttl": 10 * 365 * 86400}, 400, "ttl"),
        ({"fingerprint": "device-1", "ttl": "3600"}, 400, "ttl"),
    ],
)
def test_checkout_refusals(api_client, issued, body, status, field):
    activate(issued, "device-1")

    response = call(api_client, "checkout", {"key": issued.key, **body})

    assert response.status_code == status
    assert error(response)["field"] == field


def test_a_suspended_license_gets_no_offline_file(api_client, issued, actor):
    activate(issued, "device-1")
    services.suspend_license(license=issued.license, actor=actor)

    response = call(api_client, "checkout", {"key": issued.key, "fingerprint": "device-1"})

    assert response.status_code == 403
    assert error(response)["code"] == "license_suspended"


def test_a_deeply_nested_body_is_400_not_a_crash(api_client):
    response = call(api_client, "validate", "[" * 5000 + "]" * 5000)

    assert response.status_code == 400
    assert error(response)["code"] == "malformed_request"
    assert response["X-License-Signature"]


def test_an_offline_file_names_its_device(api_client, issued):
    activate(issued, "device-1")
    text = call(api_client, "checkout", {"key": issued.key, "fingerprint": "device-1"}).json()["license_file"]

    assert verify_license_file(text, published_keys(api_client), fingerprint="device-1")
    with pytest.raises(VerificationError):
        verify_license_file(text, published_keys(api_client), fingerprint="device-2")


def test_an_offline_file_names_the_key_it_is_for_so_a_file_for_another_key_cannot_pass(api_client, plan, issued):
    other = make_license(plan=plan)
    for each in (issued, other):
        activate(each, "device-1")
    keys = published_keys(api_client)

    mine = call(api_client, "checkout", {"key": issued.key, "fingerprint": "device-1"}).json()["license_file"]
    theirs = call(api_client, "checkout", {"key": other.key, "fingerprint": "device-1"}).json()["license_file"]

    payload = verify_license_file(mine, keys, fingerprint="device-1", license_key=issued.key)
    with pytest.raises(VerificationError, match="another license key"):
        verify_license_file(theirs, keys, fingerprint="device-1", license_key=issued.key)
    assert issued.key not in json.dumps(payload)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"fingerprint": "x", "nonce": "\ud800"}, "nonce"),
        ({"fingerprint": "x", "metadata": {"a": "\ud800"}}, "metadata"),
        ({"fingerprint": "x", "metadata": {"\udc00": 1}}, "metadata"),
        ({"fingerprint": "\ud800"}, "fingerprint"),
    ],
)
def test_unencodable_text_is_400_and_stores_nothing(api_client, issued, body, field):
    raw = json.dumps({"key": issued.key, **body})

    response = call(api_client, "activate", raw)

    assert response.status_code == 400
    assert error(response)["field"] == field
    assert response.json()["meta"]["nonce"] is None
    assert Activation.objects.count() == 0


@pytest.mark.parametrize("ttl", [10**20, -(10**20), 2**63])
def test_an_enormous_ttl_is_400(api_client, issued, ttl):
    activate(issued, "device-1")

    response = call(api_client, "checkout", {"key": issued.key, "fingerprint": "device-1", "ttl": ttl})

    assert response.status_code == 400
    assert error(response)["field"] == "ttl"


@pytest.mark.parametrize("charset", ["base64", "rot13", "no-such-charset"])
def test_an_odd_charset_never_crashes(api_client, issued, charset):
    response = api_client.generic(
        "POST",
        "/api/v1/licenses/validate",
        data=json.dumps({"key": issued.key}).encode(),
        content_type=f"application/json; charset={charset}",
    )

    assert response.status_code in {200, 400}
    assert response["X-License-Signature"]


def test_an_activation_id_must_be_a_uuid_string(api_client, issued):
    response = call(api_client, "validate", {"key": issued.key, "activation_id": 5})

    assert response.status_code == 400
    assert error(response)["field"] == "activation_id"


def test_an_unexpected_failure_is_still_a_signed_json_answer(api_client, issued, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("database on fire")

    monkeypatch.setattr(services, "validate_license", broken)

    response = call(api_client, "validate", {"key": issued.key, "nonce": "n-500"})

    assert response.status_code == 500
    assert error(response)["code"] == "server_error"
    assert "fire" not in response.content.decode()
    assert verified(api_client, response, nonce="n-500")


# ---------------------------------------------------------------- content negotiation


@pytest.mark.parametrize("accept", [None, "*/*", "application/json", "application/json, text/plain;q=0.5"])
def test_license_calls_answer_json_to_clients_that_take_it(client, issued, accept):
    extra = {"HTTP_ACCEPT": accept} if accept else {}

    response = call(client, "validate", {"key": issued.key}, **extra)

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert verified(client, response)["valid"] is True


@pytest.mark.parametrize(("accept", "path"), [("application/xml", "validate"), (None, "validate?format=xml")])
def test_license_calls_refuse_clients_that_take_no_json(client, issued, accept, path):
    extra = {"HTTP_ACCEPT": accept} if accept else {}

    response = call(client, path, {"key": issued.key}, **extra)

    assert response.status_code == 406
    assert response.json()["error"]["code"] == "not_acceptable"
