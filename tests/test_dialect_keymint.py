"""Keymint's license API, as an app or a billing system built for Keymint calls it, both generations."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from licensing import services
from licensing.models import Activation, ApiKey, AuditEvent, Customer, License, add_months
from tests.factories import activate, make_customer, make_license

pytestmark = pytest.mark.django_db

BASE = "/compat/keymint"
PRODUCT_ID = "prod_9f8e7d6c5b4a39281706f5"
HOST = "a1:b2:c3:d4:e5:f6-hashed-uuid-or-other-id"

# The two generations of Keymint's API: legacy paths answer snake_case, current ones camelCase.
PATHS = {
    "legacy": {
        "activate": "activate-key",
        "deactivate": "deactivate-key",
        "create": "create-key",
        "block": "block-key",
        "unblock": "unblock-key",
    },
    "current": {
        "activate": "key/activate",
        "deactivate": "key/deactivate",
        "create": "key",
        "block": "key/block",
        "unblock": "key/unblock",
    },
}
INVALID_TOKEN = {"message": "Invalid access token", "code": 1}
MISSING = {"message": "Missing required params", "code": 1}
INVALID_KEY = {"message": "Invalid license key", "code": 1}
DEVICE_NOT_FOUND = {"message": "Device not found", "code": 1}
NO_SCOPE = {"message": "Insufficient permissions for this operation", "code": 1}


def types(value):
    """The shape of a body: each key with the type of its value, nested objects and lists included."""
    if isinstance(value, dict):
        return {name: types(item) for name, item in value.items()}
    if isinstance(value, list):
        return [types(item) for item in value]
    return type(value)


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.capitalize() for word in rest)


def is_iso(value: str) -> bool:
    return value.endswith("Z") and datetime.fromisoformat(value).tzinfo is not None


@pytest.fixture
def product(product, actor):
    product.public_id = PRODUCT_ID
    services.save_catalog_record(record=product, actor=actor)
    return product


@pytest.fixture
def client(api_client, api_key):
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key.key}")
    return api_client


@pytest.fixture
def read_only_client(api_client, read_only_api_key):
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {read_only_api_key.key}")
    return api_client


@pytest.fixture(params=["legacy", "current"])
def generation(request):
    return request.param


@pytest.fixture
def paths(generation):
    return PATHS[generation]


def call(client, path: str, body=None, **kwargs):
    return client.post(f"{BASE}/{path}", body, format="json", **kwargs)


def key_body(issued, **extra):
    return {"productId": PRODUCT_ID, "licenseKey": issued.key, **extra}


def get_key(client, generation: str, product_id: str, license_key: str):
    if generation == "legacy":
        return call(client, "get-key", {"productId": product_id, "licenseKey": license_key})
    return client.get(f"{BASE}/key", {"productId": product_id, "licenseKey": license_key})


def live_count(issued) -> int:
    return Activation.objects.filter(license=issued.license).live().count()


# ---------------------------------------------------------------- activate (also how apps check a key)


def test_activate_answers_license_valid_with_the_licensee(client, paths, generation, issued, actor):
    expires_at = datetime(2095, 12, 31, 23, 59, 59, 123456, tzinfo=UTC)
    services.extend_license(license=issued.license, expires_at=expires_at, actor=actor)
    services.update_license_details(license=issued.license, metadata={"max_seats": 5}, actor=actor)

    response = call(client, paths["activate"], key_body(issued, hostId=HOST, deviceTag="Dev Workstation"))

    assert response.status_code == 200
    body = response.json()
    name = str if generation == "legacy" else camel
    assert body == {
        "code": 0,
        "message": "License valid",
        name("licensee_name"): "Ada Lovelace",
        name("licensee_email"): "ada@example.com",
        # What Keymint's SDK tells apps to keep, and what it reads beside it.
        name("expiration_date"): "2095-12-31T23:59:59.123Z",
        "metadata": {"max_seats": 5},
        name("version_id"): None,
        "version": None,
        name("allowed_hosts"): None,
    }
    activation = Activation.objects.get(license=issued.license)
    assert (activation.fingerprint, activation.name, activation.ip_address) == (HOST, "Dev Workstation", "127.0.0.1")


def test_activation_is_audited_as_the_app_naming_its_api_key(client, issued, api_key):
    call(client, "activate-key", key_body(issued, hostId=HOST))
    call(client, "block-key", key_body(issued))

    activated = AuditEvent.objects.get(action="activation.created")
    blocked = AuditEvent.objects.get(action="license.suspended")
    assert (activated.actor_kind, activated.actor_id) == ("app", str(api_key.api_key.pk))
    # Blocking a key is the vendor's own system acting, as through the management API.
    assert (blocked.actor_kind, blocked.actor_id) == ("api_key", str(api_key.api_key.pk))


def test_reactivating_the_same_host_takes_no_new_slot_and_counts_a_check(client, paths, issued):
    first = call(client, paths["activate"], key_body(issued, hostId=HOST))
    again = call(client, paths["activate"], key_body(issued, hostId=HOST))

    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert live_count(issued) == 1
    issued.license.refresh_from_db()
    assert issued.license.validation_count == 1
    assert issued.license.last_validated_at is not None


def test_a_live_host_checks_its_key_even_at_the_limit(client, issued):
    for host in ("one", "two", HOST):
        activate(issued, host)

    response = call(client, "key/activate", key_body(issued, hostId=HOST))

    assert response.status_code == 200
    assert live_count(issued) == 3


def test_activating_without_a_host_id_takes_a_new_slot_each_time(client, issued):
    # Keymint's SDKs say so: without a stable hostId every activation is a new machine.
    for _ in range(2):
        assert call(client, "activate-key", key_body(issued)).status_code == 200

    assert live_count(issued) == 2
    assert set(Activation.objects.filter(license=issued.license).values_list("fingerprint", flat=True)) == {None}


def test_activation_limit_reached(client, paths, issued):
    for host in ("one", "two", "three"):
        activate(issued, host)

    response = call(client, paths["activate"], key_body(issued, hostId=HOST))

    assert response.status_code == 403
    assert response.json() == {"message": "Activation limit reached", "code": 2}
    assert live_count(issued) == 3


def test_a_license_without_customer_has_no_licensee(client, plan):
    issued = make_license(plan=plan)

    response = call(client, "activate-key", key_body(issued, hostId=HOST))

    body = response.json()
    assert [body[field] for field in ("code", "message", "licensee_name", "licensee_email")] == [
        0,
        "License valid",
        None,
        None,
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"productId": PRODUCT_ID, "licenseKey": "xxxxx-xxxxx-xxxxx-xxxxx"},
        {"productId": "your_product_id_123456789", "licenseKey": None},
    ],
    ids=["unknown key", "unknown product"],
)
def test_activate_unknown_key_or_product_is_invalid_license_key(client, paths, issued, body):
    if body["licenseKey"] is None:
        body = {**body, "licenseKey": issued.key}

    response = call(client, paths["activate"], body)

    assert response.status_code == 404
    assert response.json() == INVALID_KEY


def test_a_key_of_another_product_is_invalid_license_key(client, paths):
    other = make_license()

    response = call(client, paths["activate"], key_body(other, hostId=HOST))

    assert response.status_code == 404
    assert response.json() == INVALID_KEY
    assert not Activation.objects.filter(license=other.license).exists()


@pytest.mark.parametrize(
    ("change", "status", "expected"),
    [
        ("expire", 403, {"message": "License expired", "code": 2}),
        ("suspend", 403, {"message": "License blocked", "code": 2}),
        ("revoke", 403, {"message": "License revoked", "code": 2}),
        ("deactivate_product", 404, INVALID_KEY),
    ],
)
def test_a_key_that_cannot_be_used_is_refused_even_for_a_live_host(
    client, paths, issued, actor, change, status, expected
):
    activate(issued, HOST)
    license = issued.license
    if change == "expire":
        services.extend_license(license=license, expires_at=timezone.now() - timedelta(days=1), actor=actor)
    elif change == "suspend":
        services.suspend_license(license=license, actor=actor)
    elif change == "revoke":
        services.revoke_license(license=license, actor=actor)
    else:
        license.product.is_active = False
        services.save_catalog_record(record=license.product, actor=actor)

    for host in (HOST, "new-host"):
        response = call(client, paths["activate"], key_body(issued, hostId=host))

        assert response.status_code == status
        assert response.json() == expected
    assert live_count(issued) == 1


@pytest.mark.parametrize(
    "body",
    [{}, {"productId": PRODUCT_ID}, {"licenseKey": "K"}, {"productId": "", "licenseKey": "K"}, {"productId": None}],
)
def test_activate_without_product_or_key_is_missing_required_params(client, paths, body):
    response = call(client, paths["activate"], body)

    assert response.status_code == 400
    assert response.json() == MISSING


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"productId": 123}, "productId must be a string"),
        ({"licenseKey": ["K"]}, "licenseKey must be a string"),
        ({"hostId": ""}, "hostId must not be empty"),
        ({"hostId": "h" * 65}, "hostId must be at most 64 characters"),
        ({"hostId": "bad\x00host"}, "hostId must be valid text"),
        ({"hostId": "\ud800"}, "hostId must be valid text"),
        ({"deviceTag": 5}, "deviceTag must be a string"),
        ({"deviceTag": "t" * 256}, "deviceTag must be at most 255 characters"),
        ({"licenseKey": "k" * 257}, "licenseKey must be at most 256 characters"),
    ],
)
def test_activate_bad_input_is_code_1(client, issued, extra, message):
    response = call(client, "key/activate", key_body(issued, **{"hostId": HOST, **extra}))

    assert response.status_code == 400
    assert response.json() == {"message": message, "code": 1}
    assert live_count(issued) == 0


def test_an_empty_device_tag_names_no_tag(client, issued):
    response = call(client, "key/activate", key_body(issued, hostId=HOST, deviceTag=""))

    assert response.status_code == 200
    assert issued.license.activations.live().get().name == ""


@pytest.mark.parametrize("body", [[1, 2], "text", 5])
def test_a_body_that_is_no_json_object_is_code_1(client, paths, body):
    response = call(client, paths["activate"], body)

    assert response.status_code == 400
    assert response.json() == {"message": "The request body must be a JSON object", "code": 1}


def test_malformed_json_is_code_1(client):
    response = client.post(f"{BASE}/activate-key", '{"productId": ', content_type="application/json")

    assert response.status_code == 400
    assert response.json() == {"message": "The request body is not valid JSON.", "code": 1}


def test_a_form_body_is_415_in_keymint_shape(client, issued):
    response = client.post(f"{BASE}/activate-key", {"productId": PRODUCT_ID, "licenseKey": issued.key})

    assert response.status_code == 415
    assert types(response.json()) == {"message": str, "code": int}
    assert response.json()["code"] == 1


def test_a_body_too_large_is_413_in_keymint_shape(client, issued, settings):
    settings.API_MAX_BODY_BYTES = 200

    response = call(client, "activate-key", key_body(issued, deviceTag="x" * 300))

    assert response.status_code == 413
    assert response.json() == {"message": "The request body must be at most 200 bytes.", "code": 1}


# ---------------------------------------------------------------- the access token


@pytest.mark.parametrize("header", [None, "Bearer lsk_wrong", "Bearer", "Bearer a b", "Token x", "Bearer \xe9"])
def test_a_missing_or_invalid_token_is_401(api_client, api_key, paths, issued, header):
    if header:
        api_client.credentials(HTTP_AUTHORIZATION=header)

    response = call(api_client, paths["activate"], key_body(issued, hostId=HOST))

    assert response.status_code == 401
    assert response.json() == INVALID_TOKEN
    assert response["WWW-Authenticate"] == "Bearer"
    assert live_count(issued) == 0


def test_a_revoked_or_expired_api_key_or_a_license_key_is_no_token(api_client, api_key, issued, actor):
    services.revoke_api_key(api_key=api_key.api_key, actor=actor)
    lapsed = services.create_api_key(name="lapsed", actor=actor, expires_at=timezone.now() + timedelta(days=1))
    ApiKey.objects.filter(pk=lapsed.api_key.pk).update(expires_at=timezone.now())
    for token in (api_key.key, lapsed.key, issued.key):
        api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")

        response = get_key(api_client, "current", PRODUCT_ID, issued.key)

        assert response.status_code == 401
        assert response.json() == INVALID_TOKEN


def test_a_read_only_key_reads_but_changes_nothing(read_only_client, generation, paths, issued):
    activate(issued, HOST)

    assert get_key(read_only_client, generation, PRODUCT_ID, issued.key).status_code == 200
    for operation in ["activate", "deactivate"]:
        response = call(read_only_client, paths[operation], key_body(issued, hostId="another-host-id-0001"))
        assert (response.status_code, response.json()) == (401, NO_SCOPE)
    freeing_all = call(read_only_client, paths["deactivate"], key_body(issued))
    assert (freeing_all.status_code, freeing_all.json()) == (401, NO_SCOPE)
    assert issued.license.activations.live().count() == 1


@pytest.mark.parametrize("operation", ["create", "block", "unblock"])
def test_a_read_only_key_cannot_create_or_block(read_only_client, paths, issued, operation):
    body = {"productId": PRODUCT_ID} if operation == "create" else key_body(issued)

    response = call(read_only_client, paths[operation], body)

    assert response.status_code == 401
    assert response.json() == NO_SCOPE
    assert License.objects.count() == 1
    assert License.objects.get().status == License.Status.ACTIVE


# ---------------------------------------------------------------- deactivate (the seed document)


def test_deactivate_a_device_frees_its_slot(client, paths, generation, issued):
    activate(issued, HOST)
    activate(issued, "another-unique-device-identifier")

    response = call(client, paths["deactivate"], key_body(issued, hostId=HOST))

    assert response.status_code == 200
    name = str if generation == "legacy" else camel
    assert response.json() == {"message": "Device deactivated", "code": 0, name("devices_removed"): 1}
    assert list(Activation.objects.filter(license=issued.license).live().values_list("fingerprint", flat=True)) == [
        "another-unique-device-identifier"
    ]


def test_deactivate_without_host_id_frees_every_device(client, paths, generation, issued):
    for host in ("one", "two", HOST):
        activate(issued, host)

    response = call(client, paths["deactivate"], key_body(issued))

    assert response.status_code == 200
    name = str if generation == "legacy" else camel
    assert response.json() == {"message": "All devices deactivated", "code": 0, name("devices_removed"): 3}
    assert live_count(issued) == 0
    assert Activation.objects.filter(license=issued.license).count() == 3


@pytest.mark.parametrize("host_id", [None, HOST, "never-seen"])
def test_deactivating_a_key_with_no_live_device_is_license_not_activated(client, paths, issued, host_id):
    activate(issued, HOST)
    call(client, paths["deactivate"], key_body(issued))
    body = key_body(issued) if host_id is None else key_body(issued, hostId=host_id)

    response = call(client, paths["deactivate"], body)

    assert response.status_code == 403
    assert response.json() == {"message": "License not activated", "code": 2}


@pytest.mark.parametrize("host_id", ["never-seen", HOST])
def test_deactivating_a_device_the_key_does_not_have_is_device_not_found(client, paths, issued, host_id):
    # HOST was freed before: Keymint drops a freed device from the key, so a repeat does not find it.
    activate(issued, HOST)
    activate(issued, "still-live")
    call(client, paths["deactivate"], key_body(issued, hostId=HOST))

    response = call(client, paths["deactivate"], key_body(issued, hostId=host_id))

    assert response.status_code == 404
    assert response.json() == DEVICE_NOT_FOUND
    assert live_count(issued) == 1


def test_deactivate_a_key_of_another_product_or_no_key_is_device_not_found(client, paths):
    """Keymint's deactivate has one not-found answer: "productId, licenseKey, or specific hostId
    (if provided) not found" is 404 Device not found."""
    other = make_license()
    activate(other, HOST)

    of_another_product = call(client, paths["deactivate"], key_body(other, hostId=HOST))
    unknown = call(client, paths["deactivate"], {"productId": PRODUCT_ID, "licenseKey": "NO-SUCH-KEY"})

    assert (of_another_product.status_code, of_another_product.json()) == (404, DEVICE_NOT_FOUND)
    assert (unknown.status_code, unknown.json()) == (404, DEVICE_NOT_FOUND)
    assert live_count(other) == 1


def test_deactivate_missing_params(client, paths, issued):
    response = call(client, paths["deactivate"], {"productId": PRODUCT_ID, "hostId": HOST})

    assert response.status_code == 400
    assert response.json() == MISSING


def test_deactivate_with_an_empty_host_id_frees_nothing(client, issued):
    activate(issued, HOST)

    response = call(client, "deactivate-key", key_body(issued, hostId=""))

    assert response.status_code == 400
    assert live_count(issued) == 1


def test_deactivate_with_an_invalid_token(api_client, issued):
    response = call(api_client, "deactivate-key", key_body(issued))

    assert response.status_code == 401
    assert response.json() == INVALID_TOKEN


def test_a_server_failure_is_server_error(client, paths, issued, monkeypatch):
    def fail(**kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(services, "deactivate_all_activations", fail)

    response = call(client, paths["deactivate"], key_body(issued))

    assert response.status_code == 500
    assert response.json() == {"message": "Server error", "code": 1}


# ---------------------------------------------------------------- get


def test_get_key_answers_the_license_its_devices_and_its_customer(client, generation, issued, actor):
    expires_at = datetime(2095, 12, 31, 23, 59, 59, 123456, tzinfo=UTC)
    services.extend_license(license=issued.license, expires_at=expires_at, actor=actor)
    services.update_license_details(license=issued.license, metadata={"seat_tier": "pro_plus"}, actor=actor)
    activate(issued, HOST, name="Dev Workstation", ip_address="192.168.1.100")
    activate(issued, "another-unique-device-identifier")
    activate(issued, "freed-device")
    services.deactivate_activation(
        activation=Activation.objects.get(fingerprint="freed-device"), actor=services.Actor.app()
    )

    response = get_key(client, generation, PRODUCT_ID, issued.key)

    assert response.status_code == 200
    body = response.json()
    device_shape = {"host_id": str, "device_tag": str, "ip_address": str, "activation_time": str}
    license_shape = {
        "id": str,
        "key": str,
        "product_id": str,
        "max_activations": int,
        "activations": int,
        "devices": [device_shape, {**device_shape, "device_tag": type(None), "ip_address": type(None)}],
        "activated": bool,
        "expiration_date": str,
        "metadata": {"seat_tier": str},
        "version_id": type(None),
        "version": type(None),
        "allowed_hosts": type(None),
    }
    customer_shape = {"id": str, "name": str, "email": str, "active": bool}
    expected = {"code": int, "data": {"license": license_shape, "customer": customer_shape}}
    if generation == "current":
        expected = {
            "code": int,
            "data": {
                "license": {
                    "id": str,
                    "key": str,
                    "productId": str,
                    "maxActivations": int,
                    "activations": int,
                    "devices": [
                        {"hostId": str, "deviceTag": str, "ipAddress": str, "activationTime": str},
                        {"hostId": str, "deviceTag": type(None), "ipAddress": type(None), "activationTime": str},
                    ],
                    "activated": bool,
                    "expirationDate": str,
                    "metadata": {"seat_tier": str},
                    "versionId": type(None),
                    "version": type(None),
                    "allowedHosts": type(None),
                },
                "customer": customer_shape,
            },
        }
    assert types(body) == expected
    name = str if generation == "legacy" else camel
    license = body["data"]["license"]
    assert [license[name(field)] for field in ("id", "key", "product_id", "max_activations", "activations")] == [
        str(issued.license.id),
        issued.key,
        PRODUCT_ID,
        3,
        2,
    ]
    first = license["devices"][0]
    assert [first[name(field)] for field in ("host_id", "device_tag", "ip_address")] == [
        HOST,
        "Dev Workstation",
        "192.168.1.100",
    ]
    assert all(is_iso(device[name("activation_time")]) for device in license["devices"])
    assert license["activated"] is True
    assert license[name("expiration_date")] == "2095-12-31T23:59:59.123Z"
    assert license["metadata"] == {"seat_tier": "pro_plus"}
    customer = issued.license.customer
    assert body["code"] == 0
    assert body["data"]["customer"] == {
        "id": customer.public_id.hex,
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "active": True,
    }


def test_get_key_of_an_unlimited_perpetual_blocked_key_without_customer(client, product, actor):
    issued = make_license(product=product, max_activations=None, expires_at=None)
    services.suspend_license(license=issued.license, actor=actor)

    body = get_key(client, "current", PRODUCT_ID, issued.key).json()

    license = body["data"]["license"]
    assert (license["maxActivations"], license["expirationDate"], license["activated"]) == (None, None, False)
    assert (license["activations"], license["devices"]) == (0, [])
    assert body["data"]["customer"] is None


def test_get_key_customer_id_is_the_billing_systems_id_when_there_is_one(client, product):
    issued = make_license(product=product, customer=make_customer(external_id="cust_abc123"))

    body = get_key(client, "legacy", PRODUCT_ID, issued.key).json()

    assert body["data"]["customer"]["id"] == "cust_abc123"


@pytest.mark.parametrize(("product_id", "license_key"), [(PRODUCT_ID, "xxxxx-xxxxx-xxxxx-xxxxx"), ("prod_other", None)])
def test_get_key_unknown_is_invalid_license_key(client, generation, issued, product_id, license_key):
    response = get_key(client, generation, product_id, license_key or issued.key)

    assert response.status_code == 404
    assert response.json() == INVALID_KEY


def test_get_key_takes_the_key_from_the_header_keymints_sdk_sends(client, issued):
    by_header = client.get(f"{BASE}/key", {"productId": PRODUCT_ID}, HTTP_X_LICENSE_KEY=issued.key)
    by_query = client.get(f"{BASE}/key", {"productId": PRODUCT_ID, "licenseKey": issued.key})

    assert by_header.status_code == 200
    assert by_header.json() == by_query.json()
    assert by_header.json()["data"]["license"]["key"] == issued.key


def test_get_key_missing_params(client):
    assert client.get(f"{BASE}/key", {"productId": PRODUCT_ID}).json() == MISSING
    assert client.get(f"{BASE}/key").status_code == 400
    assert call(client, "get-key", {"licenseKey": "K"}).json() == MISSING


def test_get_key_with_an_invalid_token(api_client, issued):
    response = api_client.get(f"{BASE}/key", {"productId": PRODUCT_ID, "licenseKey": issued.key})

    assert response.status_code == 401
    assert response.json() == INVALID_TOKEN


# ---------------------------------------------------------------- create


def test_create_a_simple_key(client, paths, product):
    body = {"productId": PRODUCT_ID, "maxActivations": "3", "expiryDate": "2030-06-30T23:59:59Z"}

    response = call(client, paths["create"], body)

    assert response.status_code == 200
    assert types(response.json()) == {"code": int, "key": str}
    key = response.json()["key"]
    assert response.json()["code"] == 0
    license = services.get_license_by_key(key)
    assert (license.product, license.plan, license.customer) == (product, None, None)
    assert license.max_activations == 3
    assert license.expires_at == datetime(2030, 6, 30, 23, 59, 59, tzinfo=UTC)
    activated = call(client, "key/activate", {"productId": PRODUCT_ID, "licenseKey": key, "hostId": HOST})
    assert activated.json()["licenseeName"] is None


def test_create_retried_with_its_idempotency_key_gives_the_same_key_once(client, paths, product):
    body = {"productId": PRODUCT_ID, "maxActivations": "3"}

    first = call(client, paths["create"], body, HTTP_IDEMPOTENCY_KEY="order-1042")
    retry = call(client, paths["create"], body, HTTP_IDEMPOTENCY_KEY="order-1042")
    other = call(client, paths["create"], {**body, "maxActivations": "5"}, HTTP_IDEMPOTENCY_KEY="order-1042")

    assert (first.status_code, retry.status_code) == (200, 200)
    assert retry.json() == first.json()
    assert retry["Idempotent-Replayed"] == "true"
    assert License.objects.filter(product=product).count() == 1
    assert AuditEvent.objects.filter(action="license.created").count() == 1
    assert other.status_code == 409
    assert other.json()["code"] == 2


def test_create_without_limit_or_expiry_is_unlimited_for_one_month(client, paths, product):
    before = timezone.now()
    response = call(client, paths["create"], {"productId": PRODUCT_ID})
    after = timezone.now()

    license = services.get_license_by_key(response.json()["key"])
    assert license.max_activations is None
    assert add_months(before, 1) <= license.expires_at <= add_months(after, 1)


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ({"maxActivations": 5, "expiryDate": "2030-01-31"}, (5, datetime(2030, 1, 31, tzinfo=UTC))),
        (
            {"maxActivations": None, "expiryDate": "2030-01-31T12:00:00+02:00"},
            (None, datetime(2030, 1, 31, 10, tzinfo=UTC)),
        ),
        ({"maxActivations": "0", "expiryDate": None}, (0, None)),
        ({"maxActivations": "0000000000003", "expiryDate": None}, (3, None)),
    ],
)
def test_create_takes_a_numeric_limit_a_date_or_an_offset_and_null(client, product, sent, stored):
    response = call(client, "key", {"productId": PRODUCT_ID, **sent})

    assert response.status_code == 200
    license = services.get_license_by_key(response.json()["key"])
    assert license.max_activations == stored[0]
    if stored[1] is not None:
        assert license.expires_at == stored[1]
    else:
        assert license.expires_at > timezone.now() + timedelta(days=27)


def test_create_for_a_new_customer(client, paths, product):
    body = {"productId": PRODUCT_ID, "newCustomer": {"name": "John Doe", "email": "john.doe.new@example.com"}}

    response = call(client, paths["create"], body)

    assert response.status_code == 200
    license = services.get_license_by_key(response.json()["key"])
    assert (license.customer.name, license.customer.email) == ("John Doe", "john.doe.new@example.com")


def test_create_for_a_new_customer_whose_email_exists_uses_that_customer(client, product, customer):
    # Keymint answers 409; a billing system re-selling to a returning customer is better served by the key.
    body = {"productId": PRODUCT_ID, "newCustomer": {"name": "Someone Else", "email": "ADA@example.com"}}

    response = call(client, "create-key", body)

    assert response.status_code == 200
    assert services.get_license_by_key(response.json()["key"]).customer == customer
    assert Customer.objects.count() == 1
    customer.refresh_from_db()
    assert customer.name == "Ada Lovelace"


@pytest.mark.parametrize("by", ["external_id", "public_id"])
def test_create_for_an_existing_customer_by_its_id(client, paths, product, by):
    customer = make_customer(external_id="cust_abc123" if by == "external_id" else "")
    reference = customer.reference
    assert reference == ("cust_abc123" if by == "external_id" else customer.public_id.hex)

    response = call(client, paths["create"], {"productId": PRODUCT_ID, "customerId": reference})

    assert response.status_code == 200
    assert services.get_license_by_key(response.json()["key"]).customer == customer


def test_a_customer_with_a_billing_id_is_also_found_by_its_public_id(client, product):
    customer = make_customer(external_id="cust_abc123")

    response = call(client, "key", {"productId": PRODUCT_ID, "customerId": customer.public_id.hex})

    assert response.status_code == 200
    assert services.get_license_by_key(response.json()["key"]).customer == customer


def test_create_for_an_unknown_customer_is_404_code_1(client, paths, product):
    response = call(client, paths["create"], {"productId": PRODUCT_ID, "customerId": "cust_abc123"})

    assert response.status_code == 404
    assert response.json() == {"message": "Customer with ID cust_abc123 not found", "code": 1}
    assert License.objects.count() == 0


@pytest.mark.parametrize("product_id", ["prod_unknown_0000000000000", "inactive"])
def test_create_for_an_unknown_or_inactive_product(client, paths, product, actor, product_id):
    if product_id == "inactive":
        product.is_active, product_id = False, PRODUCT_ID
        services.save_catalog_record(record=product, actor=actor)

    response = call(client, paths["create"], {"productId": product_id})

    assert response.status_code == 404
    assert response.json() == {"message": "Product not found or inactive", "code": 1}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"maxActivations": "five"}, 'maxActivations must be a whole number, such as "5"'),
        ({"maxActivations": "-1"}, 'maxActivations must be a whole number, such as "5"'),
        ({"maxActivations": True}, 'maxActivations must be a whole number, such as "5"'),
        ({"maxActivations": "9" * 5000}, "maxActivations: The activation limit must be a whole number from 0"),
        ({"maxActivations": "1" + "0" * 12}, "maxActivations: The activation limit must be a whole number from 0"),
        ({"maxActivations": -1}, "maxActivations: The activation limit must be a whole number from 0 to 2147483647"),
        ({"maxActivations": "99999999999"}, "maxActivations: The activation limit must be a whole number from 0"),
        ({"expiryDate": "next tuesday"}, "expiryDate must be an ISO 8601 date-time, such as 2025-06-30T23:59:59Z"),
        ({"expiryDate": 1735689599}, "expiryDate must be an ISO 8601 date-time, such as 2025-06-30T23:59:59Z"),
        ({"expiryDate": "9999-12-31T23:00:00-05:00"}, "expiryDate must be from 0001-01-01T00:00:00Z to 9999-12-31"),
        ({"expiryDate": "0001-01-01T00:00:00+01:00"}, "expiryDate must be from 0001-01-01T00:00:00Z to 9999-12-31"),
        ({"customerId": "c", "newCustomer": {"email": "a@example.com"}}, "Send customerId or newCustomer, not both"),
        ({"customerId": 7}, "customerId must be a string"),
        ({"newCustomer": "john@example.com"}, "newCustomer must be an object with name and email"),
        ({"newCustomer": {"name": "John Doe"}}, "newCustomer.email is required"),
        ({"newCustomer": {"email": ["x"]}}, "newCustomer.email must be a string"),
        ({"newCustomer": {"email": "not-an-email"}}, "newCustomer.email: Enter a valid email address."),
        ({"newCustomer": {"email": "a@example.com", "name": "n" * 201}}, "newCustomer.name must be at most 200"),
    ],
)
def test_create_bad_input_is_code_1(client, product, extra, message):
    response = call(client, "create-key", {"productId": PRODUCT_ID, **extra})

    assert response.status_code == 400
    assert response.json()["message"].startswith(message)
    assert types(response.json()) == {"message": str, "code": int}
    assert response.json()["code"] == 1
    assert License.objects.count() == Customer.objects.count() == 0


def test_create_missing_product_id(client, paths, product):
    response = call(client, paths["create"], {"maxActivations": "3"})

    assert response.status_code == 400
    assert response.json() == MISSING


def test_create_with_an_invalid_token(api_client, paths, product):
    response = call(api_client, paths["create"], {"productId": PRODUCT_ID})

    assert response.status_code == 401
    assert response.json() == INVALID_TOKEN


# ---------------------------------------------------------------- block and unblock


def test_block_then_unblock_a_key(client, paths, issued):
    activate(issued, HOST)

    blocked = call(client, paths["block"], key_body(issued))

    assert blocked.status_code == 200
    assert blocked.json() == {"message": "Key blocked", "code": 0}
    issued.license.refresh_from_db()
    assert issued.license.status == License.Status.SUSPENDED
    assert call(client, paths["activate"], key_body(issued, hostId=HOST)).json() == {
        "message": "License blocked",
        "code": 2,
    }

    unblocked = call(client, paths["unblock"], key_body(issued))

    assert unblocked.status_code == 200
    assert unblocked.json() == {"message": "Key unblocked", "code": 0}
    issued.license.refresh_from_db()
    assert issued.license.status == License.Status.ACTIVE
    assert call(client, paths["activate"], key_body(issued, hostId=HOST)).status_code == 200


def test_blocking_twice_or_unblocking_an_active_key_succeeds(client, issued):
    assert call(client, "key/unblock", key_body(issued)).json() == {"message": "Key unblocked", "code": 0}
    assert call(client, "key/block", key_body(issued)).status_code == 200
    assert call(client, "key/block", key_body(issued)).json() == {"message": "Key blocked", "code": 0}


@pytest.mark.parametrize("operation", ["block", "unblock"])
def test_a_revoked_key_cannot_be_blocked_or_unblocked(client, paths, issued, actor, operation):
    services.revoke_license(license=issued.license, actor=actor)

    response = call(client, paths[operation], key_body(issued))

    assert response.status_code == 409
    assert types(response.json()) == {"message": str, "code": int}
    assert response.json()["code"] == 2
    issued.license.refresh_from_db()
    assert issued.license.status == License.Status.REVOKED


@pytest.mark.parametrize("operation", ["block", "unblock"])
def test_block_errors(client, paths, operation):
    other = make_license()

    unknown = call(client, paths[operation], key_body(other))
    missing = call(client, paths[operation], {"productId": PRODUCT_ID})
    unauthorized = call(APIClient(), paths[operation], key_body(other))

    assert (unknown.status_code, unknown.json()) == (404, INVALID_KEY)
    assert (missing.status_code, missing.json()) == (400, MISSING)
    assert (unauthorized.status_code, unauthorized.json()) == (401, INVALID_TOKEN)
    other.license.refresh_from_db()
    assert other.license.status == License.Status.ACTIVE


# ---------------------------------------------------------------- paths and methods


@pytest.mark.parametrize(
    "path", ["nope", "activate-key/", "key/activate/", "key/", "", "v1/activate-key", "key/checkout"]
)
def test_unknown_paths_are_404_in_keymint_shape(client, path):
    response = call(client, path, {})

    assert response.status_code == 404
    assert response.json() == {"message": "Not found", "code": 1}


@pytest.mark.parametrize("path", ["activate-key", "key/deactivate", "get-key", "key/block"])
def test_a_wrong_method_is_405_in_keymint_shape(client, path):
    for response in (client.get(f"{BASE}/{path}"), client.options(f"{BASE}/{path}"), client.delete(f"{BASE}/key")):
        assert response.status_code == 405
        assert response.json() == {"message": "Method not allowed", "code": 1}


def test_answers_are_json_whatever_the_client_accepts(client, issued):
    response = call(client, "activate-key", key_body(issued, hostId=HOST), HTTP_ACCEPT="text/html")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"


def test_the_dialect_stays_out_of_the_servers_own_openapi_schema():
    out = io.StringIO()

    call_command("spectacular", stdout=out)

    assert "/compat/keymint" not in out.getvalue()


def test_the_same_key_is_found_through_both_generations(client, issued):
    legacy = get_key(client, "legacy", PRODUCT_ID, issued.key).json()["data"]["license"]
    current = get_key(client, "current", PRODUCT_ID, issued.key).json()["data"]["license"]

    assert legacy["id"] == current["id"] == str(issued.license.id)
    assert uuid.UUID(legacy["id"])
    assert legacy["product_id"] == current["productId"] == PRODUCT_ID
