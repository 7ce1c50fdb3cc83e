"""The Kelviq dialect, through HTTP, as an app built against Kelviq's license API calls it."""

from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from licensing import services
from licensing.models import Activation, ApiKey, AuditEvent, License
from tests.factories import activate, make_license

pytestmark = pytest.mark.django_db

BASE = "/compat/kelviq/api/v1"

ACTIVATION_KEYS = {"instanceId", "activatedAt", "expiresOn", "license"}
LICENSE_KEYS = {
    "id",
    "licenseKey",
    "activatedOn",
    "expiresOn",
    "activationUsage",
    "activationLimit",
    "enabled",
    "customer",
    "plan",
    "subscription",
}
CUSTOMER_KEYS = {"customerId", "name", "email"}
PLAN_KEYS = {"identifier", "name", "description", "version", "isLatest", "product"}
PRODUCT_KEYS = {"id", "identifier", "name", "taxCode", "createdOn", "modifiedOn"}
VALIDATION_KEYS = {"valid", "code", "detail", "metadata", "license"}


def post(client, name: str, body, **extra):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(f"{BASE}/license/{name}/", data=data, content_type="application/json", **extra)


def is_datetime(value) -> bool:
    """Kelviq's documented form: UTC to the second with a Z, which every ISO 8601 decoder reads."""
    return isinstance(value, str) and re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", value) is not None


def to_the_second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0)


def is_uuid(value) -> bool:
    return isinstance(value, str) and str(uuid.UUID(value)) == value


def assert_license_details(details: dict, issued: services.IssuedLicense) -> None:
    """The exact LicenseDetails shape, with the types Kelviq documents."""
    assert set(details) == LICENSE_KEYS
    assert is_uuid(details["id"]) and details["id"] == str(issued.license.pk)
    assert details["licenseKey"] == issued.key
    assert details["activatedOn"] is None or is_datetime(details["activatedOn"])
    assert details["expiresOn"] is None or is_datetime(details["expiresOn"])
    assert type(details["activationUsage"]) is int
    assert type(details["activationLimit"]) is int
    assert type(details["enabled"]) is bool
    assert details["subscription"] is None
    if details["customer"] is not None:
        assert set(details["customer"]) == CUSTOMER_KEYS
        assert all(isinstance(value, str) for value in details["customer"].values())
    assert set(details["plan"]) == PLAN_KEYS
    product = details["plan"]["product"]
    assert set(product) == PRODUCT_KEYS
    assert product["id"] == issued.license.product.public_id
    assert is_datetime(product["createdOn"]) and is_datetime(product["modifiedOn"])


def make_unusable(issued: services.IssuedLicense, change: str, actor: services.Actor) -> None:
    if change == "suspend":
        services.suspend_license(license=issued.license, actor=actor)
    elif change == "revoke":
        services.revoke_license(license=issued.license, actor=actor)
    elif change == "expire":
        services.extend_license(license=issued.license, expires_at=timezone.now() - timedelta(days=1), actor=actor)
    else:
        product = issued.license.product
        product.is_active = False
        services.save_catalog_record(record=product, actor=actor)


@pytest.fixture
def kelviq(api_client, api_key):
    """An app holding a server API key, as Kelviq's apps do."""
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key.key}")
    return api_client


@pytest.fixture
def instance(issued):
    return activate(issued, name="Ada's MacBook", metadata={"os": "macOS", "arch": "arm64"}).activation


# ---------------------------------------------------------------- activate


def test_activation_answers_201_with_the_new_instance_and_the_license_details(kelviq, issued, customer, api_key):
    response = post(
        kelviq,
        "activate",
        {
            "licenseKey": issued.key,
            "customerId": customer.reference,
            "instanceName": "Geo's Workstation",
            "metadata": {"os": "macOS", "version": "14.2"},
        },
    )

    assert response.status_code == 201
    body = response.json()
    assert set(body) == ACTIVATION_KEYS
    assert is_uuid(body["instanceId"])
    assert is_datetime(body["activatedAt"])
    assert body["expiresOn"] is None  # the plan is perpetual
    details = body["license"]
    assert_license_details(details, issued)
    assert (details["activationUsage"], details["activationLimit"], details["enabled"]) == (1, 3, True)
    assert details["activatedOn"] == body["activatedAt"]
    assert details["customer"] == {
        "customerId": customer.public_id.hex,
        "name": "Ada Lovelace",
        "email": customer.email,
    }
    plan = details["plan"]
    assert (plan["identifier"], plan["name"], plan["description"]) == ("personal", "Personal", "")
    assert (plan["version"], plan["isLatest"]) == (1, True)
    assert (plan["product"]["identifier"], plan["product"]["name"]) == ("photon", "Photon Editor")
    assert plan["product"]["taxCode"] == ""
    activation = Activation.objects.get(pk=body["instanceId"])
    assert (activation.name, activation.fingerprint, activation.is_live) == ("Geo's Workstation", None, True)
    assert activation.metadata == {"os": "macOS", "version": "14.2"}
    assert activation.ip_address == "127.0.0.1"
    event = AuditEvent.objects.get(action="activation.created", target_id=str(activation.pk))
    assert (event.actor_kind, event.actor_id, event.ip_address) == ("app", str(api_key.api_key.pk), "127.0.0.1")


def test_every_activation_is_a_new_instance(kelviq, issued):
    first = post(kelviq, "activate", {"licenseKey": issued.key, "instanceName": "Laptop"})
    second = post(kelviq, "activate", {"licenseKey": issued.key, "instanceName": "Laptop"})

    assert (first.status_code, second.status_code) == (201, 201)
    assert first.json()["instanceId"] != second.json()["instanceId"]
    assert second.json()["license"]["activationUsage"] == 2
    assert second.json()["license"]["activatedOn"] == first.json()["activatedAt"]
    assert issued.license.live_activation_count() == 2


def test_activation_expiry_is_the_licenses(kelviq, plan, customer):
    expires_at = timezone.now() + timedelta(days=30)
    issued = make_license(plan=plan, customer=customer, expires_at=expires_at)

    body = post(kelviq, "activate", {"licenseKey": issued.key}).json()

    assert datetime.fromisoformat(body["expiresOn"]) == to_the_second(expires_at)
    assert body["license"]["expiresOn"] == body["expiresOn"]


def test_customer_id_may_be_the_billing_systems_id(kelviq, issued, customer, actor):
    customer.external_id = "cfa95cf8c8d24e8b9d3d2d1ada98a94d"
    services.save_catalog_record(record=customer, actor=actor)

    response = post(kelviq, "activate", {"licenseKey": issued.key, "customerId": "cfa95cf8c8d24e8b9d3d2d1ada98a94d"})

    assert response.status_code == 201
    assert response.json()["license"]["customer"]["customerId"] == "cfa95cf8c8d24e8b9d3d2d1ada98a94d"


@pytest.mark.parametrize("customer_id", ["", None])
def test_blank_or_null_customer_id_is_not_checked(kelviq, issued, customer_id):
    # Open in Kelviq's documents; an app with no customer id at hand sends either, and must still activate.
    response = post(kelviq, "activate", {"licenseKey": issued.key, "customerId": customer_id})

    assert response.status_code == 201


def test_another_customers_id_answers_as_an_unknown_key(kelviq, issued, other_customer):
    response = post(kelviq, "activate", {"licenseKey": issued.key, "customerId": other_customer.reference})

    assert response.status_code == 404
    assert response.json() == {"error": "Invalid license key or customer ID."}
    assert issued.license.live_activation_count() == 0


def test_a_customer_id_never_matches_a_license_without_a_customer(kelviq, plan):
    issued = make_license(plan=plan)

    response = post(kelviq, "activate", {"licenseKey": issued.key, "customerId": "cfa95cf8c8d24e8b9d3d2d1ada98a94d"})

    assert response.status_code == 404
    assert response.json() == {"error": "Invalid license key or customer ID."}


def test_activating_an_unknown_key_is_404(kelviq, issued):
    response = post(kelviq, "activate", {"licenseKey": "LIC-A8D5F89E-B46B-472C-9BED-66EE2545B85E"})

    assert response.status_code == 404
    assert response.json() == {"error": "Invalid license key or customer ID."}


def test_activation_without_a_license_key_is_a_field_error(kelviq, issued):
    response = post(kelviq, "activate", {"instanceName": "Laptop"})

    assert response.status_code == 400
    assert response.json() == {"licenseKey": ["This field is required."]}


def test_activating_an_expired_license_is_403(kelviq, plan, customer):
    issued = make_license(plan=plan, customer=customer, expires_at=timezone.now() - timedelta(days=1))

    response = post(kelviq, "activate", {"licenseKey": issued.key})

    assert response.status_code == 403
    assert response.json() == {"error": "This license has expired."}


def test_activation_at_the_limit_is_403_with_the_count(kelviq, plan, customer):
    issued = make_license(plan=plan, customer=customer, max_activations=10)
    for _ in range(10):
        activate(issued)

    response = post(kelviq, "activate", {"licenseKey": issued.key})

    assert response.status_code == 403
    assert response.json() == {"error": "Activation limit reached (10/10)."}
    assert issued.license.live_activation_count() == 10


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("suspend", "This license is suspended."),
        ("revoke", "This license has been revoked."),
        ("deactivate_product", "This product is no longer available."),
    ],
)
def test_a_license_that_may_not_be_used_refuses_activation_with_403(kelviq, issued, actor, change, message):
    make_unusable(issued, change, actor)

    response = post(kelviq, "activate", {"licenseKey": issued.key})

    assert response.status_code == 403
    assert response.json() == {"error": message}
    assert issued.license.live_activation_count() == 0


def test_a_failure_while_activating_is_kelviqs_500(kelviq, issued, monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(services, "activate_license", broken)

    response = post(kelviq, "activate", {"licenseKey": issued.key})

    assert response.status_code == 500
    assert response.json() == {"error": "An error occurred during activation processing."}


def test_an_unlimited_license_shows_the_largest_limit(kelviq, plan, customer):
    # Kelviq's activationLimit is a non-null integer; see UNLIMITED_ACTIVATION_LIMIT for why not null, 0 or -1.
    issued = make_license(plan=plan, customer=customer, max_activations=None)

    details = post(kelviq, "activate", {"licenseKey": issued.key}).json()["license"]

    assert details["activationLimit"] == 2_147_483_647
    assert details["activationUsage"] < details["activationLimit"]


def test_a_license_without_plan_or_customer_keeps_its_product(kelviq, product):
    issued = make_license(product=product)

    response = post(kelviq, "activate", {"licenseKey": issued.key})

    assert response.status_code == 201
    details = response.json()["license"]
    assert_license_details(details, issued)
    assert details["customer"] is None
    plan = details["plan"]
    assert plan["identifier"] == ""
    assert [plan[name] for name in ("name", "description", "version", "isLatest")] == [None] * 4
    assert plan["product"]["id"] == product.public_id


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        ({"licenseKey": True}, {"licenseKey": ["Not a valid string."]}),
        ({"licenseKey": ""}, {"licenseKey": ["This field may not be blank."]}),
        ({"metadata": ["os"]}, {"metadata": ['Expected a dictionary of items but got type "list".']}),
        ({"metadata": {"a": "\x00"}}, {"metadata": ["Metadata must not contain NUL characters."]}),
        ({"instanceName": "x" * 256}, {"instanceName": ["Ensure this field has no more than 255 characters."]}),
        ({"instanceName": "a\x00b"}, {"instanceName": ["Null characters are not allowed."]}),
        ({"instanceName": "\ud800"}, {"instanceName": ["Surrogate characters are not allowed: U+D800."]}),
    ],
)
def test_bad_activation_input_is_a_drf_field_error(kelviq, issued, fields, errors):
    response = post(kelviq, "activate", {"licenseKey": issued.key, **fields})

    assert response.status_code == 400
    assert response.json() == errors
    assert issued.license.live_activation_count() == 0


def test_a_body_that_is_not_an_object_is_a_drf_error(kelviq):
    response = post(kelviq, "activate", ["licenseKey"])

    assert response.status_code == 400
    assert response.json() == {"non_field_errors": ["Invalid data. Expected a dictionary, but got list."]}


# ---------------------------------------------------------------- validate


def test_validating_an_instance_answers_200_with_its_metadata_and_counts_it(kelviq, issued, instance):
    # Last-seen times are kept to the minute: make the instance's last sighting an older one.
    seen_before = timezone.now() - timedelta(minutes=10)
    Activation.objects.filter(pk=instance.pk).update(last_seen_at=seen_before)

    response = post(kelviq, "validate", {"licenseKey": issued.key, "instanceId": str(instance.pk)})

    assert response.status_code == 200
    body = response.json()
    assert set(body) == VALIDATION_KEYS
    assert (body["valid"], body["code"], body["detail"]) == (True, "VALID", "Instance ID valid for this license.")
    assert body["metadata"] == {"os": "macOS", "arch": "arm64"}
    assert_license_details(body["license"], issued)
    assert body["license"]["activationUsage"] == 1
    instance.refresh_from_db()
    issued.license.refresh_from_db()
    assert instance.last_seen_at > seen_before
    assert issued.license.validation_count == 1


def test_validating_a_key_alone_checks_the_license(kelviq, issued):
    response = post(kelviq, "validate", {"licenseKey": issued.key})

    assert response.status_code == 200
    body = response.json()
    assert (body["valid"], body["code"], body["detail"]) == (True, "VALID", "License key is valid.")
    assert body["metadata"] == {}
    assert body["license"]["activatedOn"] is None


def test_validation_shows_the_first_activation_and_reads_it_with_the_license(kelviq, issued):
    first = activate(issued, fingerprint="old-laptop").activation
    activate(issued, fingerprint="new-laptop")
    first_activated_at = timezone.now() - timedelta(days=40)
    Activation.objects.filter(pk=first.pk).update(created_at=first_activated_at)
    services.deactivate_activation(activation=first, actor=services.Actor.system("test"))
    post(kelviq, "validate", {"licenseKey": issued.key})  # the API key's last use is noted once a minute

    with CaptureQueriesContext(connection) as queries:
        response = post(kelviq, "validate", {"licenseKey": issued.key})

    assert response.status_code == 200
    assert datetime.fromisoformat(response.json()["license"]["activatedOn"]) == to_the_second(first_activated_at)
    reads = [query["sql"] for query in queries.captured_queries if query["sql"].startswith("SELECT")]
    assert len(reads) == 2  # the API key, then the license with everything the answer shows


@pytest.mark.parametrize("instance_id", ["", None])
def test_a_blank_or_null_instance_id_validates_the_key_alone(kelviq, issued, instance_id):
    response = post(kelviq, "validate", {"licenseKey": issued.key, "instanceId": instance_id})

    assert response.status_code == 200
    assert response.json()["code"] == "VALID"


def test_validating_an_unknown_key_is_404_invalid_key(kelviq, issued):
    response = post(kelviq, "validate", {"licenseKey": "KLVQ-PRO-1234-ABCD-9999", "instanceId": str(uuid.uuid4())})

    assert response.status_code == 404
    body = response.json()
    assert set(body) == VALIDATION_KEYS
    assert (body["valid"], body["code"], body["license"], body["metadata"]) == (False, "INVALID_KEY", None, {})
    assert isinstance(body["detail"], str)


@pytest.mark.parametrize(
    "instance_id",
    [
        str(uuid.uuid4()),
        # Kelviq's own example id, not a valid UUID: an id this server never issued is not found, not a 400.
        "8f3e2b1a-5c6d-4e9f-8a0b-1c2d3e4f5g6h",
    ],
)
def test_validating_an_unknown_instance_is_404_instance_not_found(kelviq, issued, instance, instance_id):
    response = post(kelviq, "validate", {"licenseKey": issued.key, "instanceId": instance_id})

    assert response.status_code == 404
    body = response.json()
    assert set(body) == VALIDATION_KEYS
    assert (body["valid"], body["code"], body["metadata"]) == (False, "INSTANCE_NOT_FOUND", {})
    assert_license_details(body["license"], issued)


def test_a_deactivated_instance_is_not_found(kelviq, issued, instance):
    services.deactivate_activation(activation=instance, actor=services.Actor.system())

    response = post(kelviq, "validate", {"licenseKey": issued.key, "instanceId": str(instance.pk)})

    assert response.status_code == 404
    assert response.json()["code"] == "INSTANCE_NOT_FOUND"


def test_another_licenses_instance_is_not_found(kelviq, issued, plan, customer):
    other = make_license(plan=plan, customer=customer)
    foreign = activate(other).activation

    response = post(kelviq, "validate", {"licenseKey": issued.key, "instanceId": str(foreign.pk)})

    assert response.status_code == 404
    assert response.json()["code"] == "INSTANCE_NOT_FOUND"


@pytest.mark.parametrize(
    ("change", "code", "detail"),
    [
        ("suspend", "SUSPENDED", "This license is suspended."),
        ("revoke", "REVOKED", "This license has been revoked."),
        ("expire", "EXPIRED", "This license has expired."),
        ("deactivate_product", "PRODUCT_INACTIVE", "This product is no longer available."),
    ],
)
def test_a_license_that_may_not_be_used_validates_as_404_with_its_code(
    kelviq, issued, instance, actor, change, code, detail
):
    # Kelviq documents only 200 and 404 here: a license that exists but may not be used is a 404
    # (an app that checks only the status fails closed) with a code that says why.
    make_unusable(issued, change, actor)

    response = post(kelviq, "validate", {"licenseKey": issued.key, "instanceId": str(instance.pk)})

    assert response.status_code == 404
    body = response.json()
    assert set(body) == VALIDATION_KEYS
    assert (body["valid"], body["code"], body["detail"]) == (False, code, detail)
    assert body["metadata"] == {"os": "macOS", "arch": "arm64"}
    assert body["license"]["enabled"] is (change in {"expire", "deactivate_product"})
    issued.license.refresh_from_db()
    assert issued.license.validation_count == 0


def test_validation_without_a_license_key_is_a_field_error(kelviq):
    response = post(kelviq, "validate", {"instanceId": str(uuid.uuid4())})

    assert response.status_code == 400
    assert response.json() == {"licenseKey": ["This field is required."]}


def test_a_read_only_api_key_may_validate_but_not_activate_or_deactivate(api_client, read_only_api_key, issued):
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {read_only_api_key.key}")
    instance = activate(issued).activation

    validation = post(api_client, "validate", {"licenseKey": issued.key, "instanceId": str(instance.pk)})
    activation = post(api_client, "activate", {"licenseKey": issued.key})
    deactivation = post(api_client, "deactivate", {"licenseKey": issued.key, "instanceId": str(instance.pk)})

    assert validation.status_code == 200
    assert (activation.status_code, activation.json()) == (403, {"detail": "This API key is read-only."})
    assert (deactivation.status_code, deactivation.json()) == (403, {"detail": "This API key is read-only."})
    assert issued.license.live_activation_count() == 1


# ---------------------------------------------------------------- deactivate


def test_deactivation_answers_200_and_frees_the_slot(kelviq, issued, instance):
    response = post(kelviq, "deactivate", {"licenseKey": issued.key, "instanceId": str(instance.pk)})

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"message", "deactivatedAt"}
    assert body["message"] == "License instance deactivated successfully."
    assert is_datetime(body["deactivatedAt"])
    instance.refresh_from_db()
    assert datetime.fromisoformat(body["deactivatedAt"]) == to_the_second(instance.deactivated_at)
    assert instance.deactivated_by_kind == "app"
    assert issued.license.live_activation_count() == 0


def test_deactivating_an_already_deactivated_instance_is_404(kelviq, issued, instance):
    first = post(kelviq, "deactivate", {"licenseKey": issued.key, "instanceId": str(instance.pk)})
    deactivated_at = Activation.objects.get(pk=instance.pk).deactivated_at

    again = post(kelviq, "deactivate", {"licenseKey": issued.key, "instanceId": str(instance.pk)})

    assert first.status_code == 200
    assert again.status_code == 404
    assert again.json() == {"error": "Invalid license key or instance ID."}
    assert Activation.objects.get(pk=instance.pk).deactivated_at == deactivated_at


@pytest.mark.parametrize("case", ["unknown key", "unknown instance", "not a uuid", "other license's instance"])
def test_deactivating_an_unknown_pair_is_404(kelviq, issued, instance, plan, customer, case):
    key, instance_id = issued.key, str(instance.pk)
    if case == "unknown key":
        key = "KLVQ-PRO-1234-ABCD-9999"
    elif case == "unknown instance":
        instance_id = str(uuid.uuid4())
    elif case == "not a uuid":
        instance_id = "8f3e2b1a-5c6d-4e9f-8a0b-1c2d3e4f5g6h"
    else:
        key = make_license(plan=plan, customer=customer).key

    response = post(kelviq, "deactivate", {"licenseKey": key, "instanceId": instance_id})

    assert response.status_code == 404
    assert response.json() == {"error": "Invalid license key or instance ID."}
    instance.refresh_from_db()
    assert instance.is_live


def test_deactivation_without_fields_is_a_field_error_for_each(kelviq):
    response = post(kelviq, "deactivate", {})

    assert response.status_code == 400
    assert response.json() == {"licenseKey": ["This field is required."], "instanceId": ["This field is required."]}


# ---------------------------------------------------------------- authentication and protocol


@pytest.mark.parametrize("name", ["activate", "validate", "deactivate"])
@pytest.mark.parametrize(
    ("authorization", "detail"),
    [
        (None, "Authentication credentials were not provided."),
        ("Bearer not-a-key", "The API key is not valid, has been revoked or has expired."),
        ("Token abc", "Authentication credentials were not provided."),
    ],
)
def test_calls_without_a_live_api_key_are_drf_401(api_client, issued, name, authorization, detail):
    if authorization:
        api_client.credentials(HTTP_AUTHORIZATION=authorization)

    response = post(api_client, name, {"licenseKey": issued.key, "instanceId": str(uuid.uuid4())})

    assert response.status_code == 401
    assert response.json() == {"detail": detail}
    assert response["WWW-Authenticate"] == "Bearer"
    assert issued.license.live_activation_count() == 0


@pytest.mark.parametrize("ended", ["revoked", "expired"])
def test_a_revoked_or_expired_api_key_is_401(kelviq, api_key, issued, ended):
    if ended == "revoked":
        services.revoke_api_key(api_key=api_key.api_key, actor=services.Actor.system())
    else:
        ApiKey.objects.filter(pk=api_key.api_key.pk).update(expires_at=timezone.now())

    response = post(kelviq, "activate", {"licenseKey": issued.key})

    assert response.status_code == 401
    assert response.json() == {"detail": "The API key is not valid, has been revoked or has expired."}


def test_malformed_json_is_a_drf_400(kelviq):
    response = post(kelviq, "activate", '{"licenseKey": ')

    assert response.status_code == 400
    assert response.json() == {"detail": "The request body is not valid JSON."}


def test_a_form_body_is_415(kelviq, issued):
    response = kelviq.post(
        f"{BASE}/license/activate/", data="licenseKey=x", content_type="application/x-www-form-urlencoded"
    )

    assert response.status_code == 415
    assert set(response.json()) == {"detail"}


def test_a_body_over_the_size_cap_is_413(kelviq, issued, settings):
    settings.API_MAX_BODY_BYTES = 100

    response = post(kelviq, "activate", {"licenseKey": issued.key, "instanceName": "x" * 200})

    assert response.status_code == 413
    assert set(response.json()) == {"detail"}


def test_get_is_405(kelviq):
    response = kelviq.get(f"{BASE}/license/validate/")

    assert response.status_code == 405
    assert response.json() == {"detail": 'Method "GET" not allowed.'}


@pytest.mark.parametrize("path", ["/license/renew/", "/license/", "/anything"])
def test_unknown_paths_are_drf_404(kelviq, path):
    response = kelviq.post(f"{BASE}{path}", data="{}", content_type="application/json")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


def test_kelviqs_own_sdks_snake_case_fields_work_as_camel_case_ones(kelviq, issued, customer):
    """Kelviq's Python and Node SDKs send `license_key`, `instance_name`..., its documentation `licenseKey`."""
    activated = post(
        kelviq,
        "activate",
        {
            "license_key": issued.key,
            "customer_id": customer.reference,
            "instance_name": "Build agent",
            "metadata": {"os_version": "14.1"},
        },
    )
    instance_id = activated.json()["instanceId"]
    validated = post(kelviq, "validate", {"license_key": issued.key, "instance_id": instance_id})
    deactivated = post(kelviq, "deactivate", {"license_key": issued.key, "instance_id": instance_id})

    assert [activated.status_code, validated.status_code, deactivated.status_code] == [201, 200, 200]
    activation = Activation.objects.get(pk=instance_id)
    assert (activation.name, activation.metadata) == ("Build agent", {"os_version": "14.1"})
    assert activation.deactivated_at is not None
    assert validated.json()["metadata"] == {"os_version": "14.1"}


def test_a_field_sent_in_both_cases_is_taken_in_camel_case(kelviq, issued):
    response = post(kelviq, "validate", {"license_key": "NO-SUCH-KEY", "licenseKey": issued.key})

    assert (response.status_code, response.json()["valid"]) == (200, True)


def test_paths_work_without_the_trailing_slash(kelviq, issued):
    # A POST redirected to add the slash would lose its body; answering both is what apps survive.
    response = kelviq.post(
        f"{BASE}/license/activate", data=json.dumps({"licenseKey": issued.key}), content_type="application/json"
    )

    assert response.status_code == 201


def test_the_license_key_is_exact(kelviq, issued):
    response = post(kelviq, "validate", {"licenseKey": issued.key.lower()})

    assert response.status_code == 404
    assert response.json()["code"] == "INVALID_KEY"
    assert License.objects.get(pk=issued.license.pk).validation_count == 0


@pytest.mark.parametrize(
    ("content_type", "status", "body_keys"),
    [
        # The JSON parser reads UTF-8 whatever charset is named, so the key is simply unknown.
        ("application/json; charset=no-such-charset", 404, {"error"}),
        ("application/x-www-form-urlencoded; charset=no-such-charset", 415, {"detail"}),
    ],
)
def test_an_unknown_charset_is_never_a_500(kelviq, content_type, status, body_keys):
    response = kelviq.post(f"{BASE}/license/activate/", data=b'{"licenseKey": "x"}', content_type=content_type)

    assert response.status_code == status
    assert set(response.json()) == body_keys


def test_a_format_kelviq_does_not_offer_is_406(kelviq, issued):
    response = kelviq.post(f"{BASE}/license/validate/?format=xml", data={"licenseKey": issued.key}, format="json")

    assert response.status_code == 406
    assert "format" in json.dumps(response.json())
