"""The Polar dialect, through HTTP, as an app built for Polar's public license-key API calls it."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta

import pytest
from django.utils import timezone

from licensing import services
from licensing.models import Activation, License
from tests.factories import activate, make_license, make_plan, make_product

pytestmark = pytest.mark.django_db

ORG = "5f0c3b1e-2d4a-4c8e-9b7f-6a1d2e3f4a5b"
BASE = "/compat/polar/v1/customer-portal/license-keys/"

LICENSE_KEY_FIELDS = {
    "id",
    "created_at",
    "modified_at",
    "organization_id",
    "customer_id",
    "customer",
    "member_id",
    "member",
    "benefit_id",
    "key",
    "display_key",
    "status",
    "limit_activations",
    "usage",
    "limit_usage",
    "validations",
    "last_validated_at",
    "expires_at",
    "subscription_id",
    "subscription",
    "order_id",
    "order",
}
CUSTOMER_FIELDS = {
    "id",
    "created_at",
    "modified_at",
    "metadata",
    "external_id",
    "email",
    "email_verified",
    "type",
    "name",
    "billing_name",
    "billing_address",
    "tax_id",
    "organization_id",
    "deleted_at",
    "first_user_event_at",
    "avatar_url",
}
ACTIVATION_FIELDS = {"id", "license_key_id", "label", "meta", "created_at", "modified_at"}


@pytest.fixture
def org(product, actor):
    """The product carries the organization id its Polar apps hard-code."""
    product.polar_organization_id = uuid.UUID(ORG)
    services.save_catalog_record(record=product, actor=actor)
    return ORG


def call(client, name: str, body, content_type: str = "application/json", **extra):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(BASE + name, data=data, content_type=content_type, **extra)


def is_uuid(value) -> bool:
    return isinstance(value, str) and str(uuid.UUID(value)) == value


def is_datetime(value) -> bool:
    # Polar's (pydantic's) form: ISO 8601 in UTC with a Z.
    return isinstance(value, str) and value.endswith("Z") and datetime.fromisoformat(value).tzinfo is not None


def assert_polar_error(response, status: int, error: str, detail: str) -> None:
    assert response.status_code == status
    assert response.json() == {"error": error, "detail": detail}


def validation_problems(response) -> list[dict]:
    """Polar's 422: RequestValidationError with pydantic's {loc, msg, type} per problem."""
    assert response.status_code == 422
    body = response.json()
    assert set(body) == {"error", "detail"}
    assert body["error"] == "RequestValidationError"
    assert body["detail"]
    for item in body["detail"]:
        assert set(item) == {"loc", "msg", "type"}
        assert item["loc"][0] == "body"
        assert all(isinstance(part, str | int) for part in item["loc"])
        assert isinstance(item["msg"], str)
        assert isinstance(item["type"], str)
    return body["detail"]


def locs(response) -> list[list]:
    return [item["loc"] for item in validation_problems(response)]


def assert_license_key_object(body: dict, issued: services.IssuedLicense) -> None:
    assert set(body) - {"activation"} == LICENSE_KEY_FIELDS
    license = issued.license
    assert body["id"] == str(license.pk)
    assert is_datetime(body["created_at"])
    assert is_datetime(body["modified_at"])
    assert body["organization_id"] == ORG
    assert body["customer_id"] == str(license.customer.public_id)
    assert body["benefit_id"] == ""
    assert body["key"] == issued.key
    assert body["display_key"] == "****-" + issued.key[-6:]
    assert body["status"] == "granted"
    assert body["limit_activations"] == license.max_activations
    assert isinstance(body["usage"], int)
    assert body["limit_usage"] is None or isinstance(body["limit_usage"], int)
    assert isinstance(body["validations"], int)
    assert body["last_validated_at"] is None or is_datetime(body["last_validated_at"])
    assert body["expires_at"] is None or is_datetime(body["expires_at"])
    customer = body["customer"]
    assert set(customer) == CUSTOMER_FIELDS
    assert customer["id"] == body["customer_id"]
    assert (customer["email"], customer["name"]) == ("ada@example.com", "Ada Lovelace")
    assert customer["organization_id"] == ORG
    assert is_datetime(customer["created_at"])
    assert customer["metadata"] == {}
    assert customer["email_verified"] is False
    assert customer["avatar_url"].startswith("https://www.gravatar.com/avatar/")
    assert customer["type"] == "individual"
    assert {name: customer[name] for name in customer if customer[name] is None} == {
        name: None
        for name in ["external_id", "billing_name", "billing_address", "tax_id", "deleted_at", "first_user_event_at"]
    }
    assert [body[name] for name in ["member_id", "member", "subscription_id", "subscription", "order_id", "order"]] == [
        None
    ] * 6


def assert_activation_object(body: dict, issued: services.IssuedLicense) -> None:
    assert set(body) - {"license_key"} == ACTIVATION_FIELDS
    assert is_uuid(body["id"])
    assert body["license_key_id"] == str(issued.license.pk)
    assert isinstance(body["label"], str)
    assert isinstance(body["meta"], dict)
    assert is_datetime(body["created_at"])
    assert body["modified_at"] is None


def activate_call(client, issued, **fields):
    return call(client, "activate", {"key": issued.key, "organization_id": ORG, "label": "Ada's MacBook", **fields})


def validate_call(client, issued, headers: dict | None = None, **fields):
    return call(client, "validate", {"key": issued.key, "organization_id": ORG, **fields}, **(headers or {}))


def deactivate_call(client, issued, activation_id):
    return call(client, "deactivate", {"key": issued.key, "organization_id": ORG, "activation_id": activation_id})


# ---------------------------------------------------------------- validate


def test_validate_answers_the_license_key_and_counts_the_validation(api_client, org, issued):
    response = validate_call(api_client, issued)

    assert response.status_code == 200
    body = response.json()
    assert_license_key_object(body, issued)
    assert body["activation"] is None
    assert body["validations"] == 1
    assert is_datetime(body["last_validated_at"])
    issued.license.refresh_from_db()
    assert issued.license.validation_count == 1
    assert issued.license.last_validated_at is not None


def test_validate_with_an_activation_answers_it(api_client, org, issued):
    activation = activate(issued, name="Ada's MacBook", metadata={"os": "macOS"}).activation

    response = validate_call(api_client, issued, activation_id=str(activation.pk))

    assert response.status_code == 200
    body = response.json()
    assert_license_key_object(body, issued)
    assert_activation_object(body["activation"], issued)
    assert body["activation"]["id"] == str(activation.pk)
    assert (body["activation"]["label"], body["activation"]["meta"]) == ("Ada's MacBook", {"os": "macOS"})


def test_validate_increment_usage_counts_uses(api_client, org, plan, customer):
    issued = make_license(plan=plan, customer=customer, limit_usage=10)

    response = validate_call(api_client, issued, increment_usage=3)

    assert response.status_code == 200
    assert (response.json()["usage"], response.json()["limit_usage"]) == (3, 10)
    issued.license.refresh_from_db()
    assert issued.license.usage == 3


def test_validate_past_the_usage_limit_is_400_and_counts_nothing(api_client, org, plan, customer):
    issued = make_license(plan=plan, customer=customer, limit_usage=5)
    validate_call(api_client, issued, increment_usage=4)

    response = validate_call(api_client, issued, increment_usage=2)

    assert_polar_error(response, 400, "BadRequest", "License key only has 1 more usages.")
    issued.license.refresh_from_db()
    assert (issued.license.usage, issued.license.validation_count) == (4, 1)


@pytest.mark.parametrize("limit_usage", [None, services.MAX_USAGE_LIMIT])
def test_validate_past_the_most_uses_a_license_counts_is_400_and_counts_nothing(
    api_client, org, plan, customer, limit_usage
):
    issued = make_license(plan=plan, customer=customer, limit_usage=limit_usage)
    License.objects.filter(pk=issued.license.pk).update(usage=services.MAX_USAGE_LIMIT - 5)

    refused = validate_call(api_client, issued, increment_usage=2**31 - 1)
    counted = validate_call(api_client, issued, increment_usage=5)

    assert_polar_error(refused, 400, "BadRequest", "License key only has 5 more usages.")
    assert (counted.status_code, counted.json()["usage"]) == (200, services.MAX_USAGE_LIMIT)
    issued.license.refresh_from_db()
    assert issued.license.usage == services.MAX_USAGE_LIMIT


def test_a_key_imported_with_its_polar_usage_has_only_the_rest_left(management_client, org, product):
    imported = management_client.post(
        "/api/v1/licenses",
        {"product": product.pk, "key": "POLAR-KEY-0001", "limit_usage": 100, "usage": 40},
        format="json",
    )
    negative = management_client.post(
        "/api/v1/licenses", {"product": product.pk, "key": "POLAR-KEY-0002", "usage": -1}, format="json"
    )
    issued = services.IssuedLicense(license=License.objects.get(pk=imported.json()["id"]), key="POLAR-KEY-0001")

    response = validate_call(management_client, issued, increment_usage=61)

    assert (imported.status_code, imported.json()["usage"]) == (201, 40)
    assert (negative.status_code, negative.json()["error"]["field"]) == (400, "usage")
    assert_polar_error(response, 400, "BadRequest", "License key only has 60 more usages.")


def test_validate_an_unknown_key_is_404(api_client, org, issued):
    response = call(api_client, "validate", {"key": "NOT-A-KEY", "organization_id": ORG})

    assert_polar_error(response, 404, "ResourceNotFound", "Not found")


@pytest.mark.parametrize("organization_id", [str(uuid.uuid4()), None])
def test_validate_a_key_of_another_organization_is_404(api_client, product, actor, issued, organization_id):
    product.polar_organization_id = organization_id and uuid.UUID(organization_id)
    services.save_catalog_record(record=product, actor=actor)

    response = validate_call(api_client, issued)

    assert_polar_error(response, 404, "ResourceNotFound", "Not found")


@pytest.mark.parametrize("change", ["revoke", "suspend", "deactivate_product"])
def test_validate_a_key_no_longer_usable_is_404_no_longer_active(api_client, org, issued, product, actor, change):
    if change == "revoke":
        services.revoke_license(license=issued.license, actor=actor)
    elif change == "suspend":
        services.suspend_license(license=issued.license, actor=actor)
    else:
        product.is_active = False
        services.save_catalog_record(record=product, actor=actor)

    response = validate_call(api_client, issued)

    assert_polar_error(response, 404, "ResourceNotFound", "License key is no longer active.")


def test_validate_an_expired_key_is_404_expired(api_client, org, plan, customer):
    issued = make_license(plan=plan, customer=customer, expires_at=timezone.now() - timedelta(days=1))

    response = validate_call(api_client, issued)

    assert_polar_error(response, 404, "ResourceNotFound", "License key has expired.")


def test_validate_an_unknown_or_deactivated_activation_is_404(api_client, org, issued, app_actor):
    activation = activate(issued).activation
    services.deactivate_activation(activation=activation, actor=app_actor)

    deactivated = validate_call(api_client, issued, activation_id=str(activation.pk))
    unknown = validate_call(api_client, issued, activation_id=str(uuid.uuid4()))

    assert_polar_error(deactivated, 404, "ResourceNotFound", "Not found")
    assert_polar_error(unknown, 404, "ResourceNotFound", "Not found")


def test_validate_with_other_conditions_than_the_activation_is_404(api_client, org, issued):
    activation_id = activate_call(api_client, issued, conditions={"major_version": 2}).json()["id"]

    same = validate_call(api_client, issued, activation_id=activation_id, conditions={"major_version": 2})
    other = validate_call(api_client, issued, activation_id=activation_id, conditions={"major_version": 3})
    none = validate_call(api_client, issued, activation_id=activation_id)

    assert same.status_code == 200
    assert_polar_error(other, 404, "ResourceNotFound", "License key does not match required conditions")
    assert_polar_error(none, 404, "ResourceNotFound", "License key does not match required conditions")


def test_validate_conditions_are_ignored_for_an_activation_without_them(api_client, org, issued):
    activation = activate(issued).activation

    response = validate_call(api_client, issued, activation_id=str(activation.pk), conditions={"anything": True})

    assert response.status_code == 200


def test_validate_any_benefit_id_does_not_match(api_client, org, issued):
    # This server has no benefits, so no key matches a benefit (and benefit_id is answered "").
    response = validate_call(api_client, issued, benefit_id=str(uuid.uuid4()))

    assert_polar_error(response, 404, "ResourceNotFound", "License key does not match given benefit.")
    issued.license.refresh_from_db()
    assert issued.license.validation_count == 0


def test_validate_the_owners_customer_id_matches_and_another_does_not(api_client, org, issued, other_customer):
    own = validate_call(api_client, issued, customer_id=str(issued.license.customer.public_id))
    other = validate_call(api_client, issued, customer_id=str(other_customer.public_id))

    assert own.status_code == 200
    assert_polar_error(other, 404, "ResourceNotFound", "License key does not match given user.")


def test_validate_matches_a_polar_customer_id_kept_as_the_customers_external_id(api_client, org, issued, actor):
    polar_customer_id = "3d9f1c2b-8a7e-4b6d-9c5f-0e1a2b3c4d5e"
    customer = issued.license.customer
    customer.external_id = polar_customer_id
    services.save_catalog_record(record=customer, actor=actor, fields=["external_id"])

    as_polar_named_it = validate_call(api_client, issued, customer_id=polar_customer_id)
    in_capitals = validate_call(api_client, issued, customer_id=polar_customer_id.upper())

    assert (as_polar_named_it.status_code, in_capitals.status_code) == (200, 200)
    assert as_polar_named_it.json()["customer"]["external_id"] == polar_customer_id


def test_validate_tells_the_keys_state_before_a_benefit_or_customer_mismatch(api_client, org, issued, actor):
    # Polar checks the key's status and expiry first.
    services.revoke_license(license=issued.license, actor=actor)

    response = validate_call(api_client, issued, benefit_id=str(uuid.uuid4()))

    assert_polar_error(response, 404, "ResourceNotFound", "License key is no longer active.")


def test_validate_requires_key_and_organization_id(api_client, org):
    response = call(api_client, "validate", {})

    assert locs(response) == [["body", "key"], ["body", "organization_id"]]
    assert {item["type"] for item in response.json()["detail"]} == {"missing"}
    assert {item["msg"] for item in response.json()["detail"]} == {"Field required"}


@pytest.mark.parametrize(
    ("field", "value", "kind"),
    [
        ("key", 12345, "string_type"),
        ("key", None, "string_type"),
        ("organization_id", "not-a-uuid", "uuid_parsing"),
        ("organization_id", 7, "uuid_type"),
        ("activation_id", "123", "uuid_parsing"),
        ("customer_id", ["x"], "uuid_type"),
        ("increment_usage", -1, "greater_than_equal"),
        ("increment_usage", 1.5, "int_from_float"),
        ("increment_usage", "many", "int_parsing"),
        ("increment_usage", {}, "int_type"),
        ("increment_usage", 2**31, "less_than_equal"),
        ("conditions", [1], "dict_type"),
        ("conditions", None, "dict_type"),
    ],
)
def test_validate_wrong_types_are_422_naming_the_field(api_client, org, issued, field, value, kind):
    response = validate_call(api_client, issued, **{field: value})

    problems = validation_problems(response)
    assert [(item["loc"], item["type"]) for item in problems] == [(["body", field], kind)]


def test_validate_reads_increment_usage_as_pydantic_does(api_client, org, issued):
    # Polar (pydantic) takes "2", 2.0 and true for an integer; an app may send any of them.
    for value in ["2", 2.0, True]:
        assert validate_call(api_client, issued, increment_usage=value).status_code == 200
    issued.license.refresh_from_db()
    assert issued.license.usage == 5


def test_validate_optional_fields_may_be_null(api_client, org, issued):
    response = validate_call(
        api_client, issued, activation_id=None, benefit_id=None, customer_id=None, increment_usage=None
    )

    assert response.status_code == 200


def test_validate_ignores_fields_polar_does_not_know(api_client, org, issued):
    response = validate_call(api_client, issued, fingerprint="abc", nonce="n")

    assert response.status_code == 200


# ---------------------------------------------------------------- activate


def test_activate_answers_200_with_the_activation_and_its_license_key(api_client, org, issued):
    response = activate_call(api_client, issued, meta={"os": "macOS", "cores": 8}, conditions={"major_version": 2})

    assert response.status_code == 200
    body = response.json()
    assert_activation_object(body, issued)
    assert_license_key_object(body["license_key"], issued)
    assert (body["label"], body["meta"]) == ("Ada's MacBook", {"os": "macOS", "cores": 8})
    activation = Activation.objects.get(pk=body["id"])
    assert activation.is_live
    assert (activation.fingerprint, activation.name) == (None, "Ada's MacBook")
    assert activation.conditions == {"major_version": 2}
    assert activation.ip_address == "127.0.0.1"


def test_activate_takes_a_new_activation_on_every_call(api_client, org, issued):
    first = activate_call(api_client, issued)
    second = activate_call(api_client, issued)

    assert first.json()["id"] != second.json()["id"]
    assert issued.license.live_activation_count() == 2


def test_activate_at_the_limit_is_403_limit_reached(api_client, org, issued):
    for _ in range(3):
        assert activate_call(api_client, issued).status_code == 200

    response = activate_call(api_client, issued)

    assert_polar_error(response, 403, "NotPermitted", "License key activation limit already reached")
    assert issued.license.live_activation_count() == 3


def test_activate_an_expired_key_is_403_expired(api_client, org, plan, customer):
    issued = make_license(plan=plan, customer=customer, expires_at=timezone.now() - timedelta(days=1))

    response = activate_call(api_client, issued)

    assert_polar_error(response, 403, "NotPermitted", "License key has expired.")


@pytest.mark.parametrize("change", ["revoke", "suspend", "deactivate_product"])
def test_activate_a_key_no_longer_usable_is_403(api_client, org, issued, product, actor, change):
    if change == "revoke":
        services.revoke_license(license=issued.license, actor=actor)
    elif change == "suspend":
        services.suspend_license(license=issued.license, actor=actor)
    else:
        product.is_active = False
        services.save_catalog_record(record=product, actor=actor)

    response = activate_call(api_client, issued)

    assert_polar_error(
        response, 403, "NotPermitted", "License key is no longer active. This license key can not be activated."
    )


def test_activate_a_key_that_takes_no_activations_is_403(api_client, org, plan, customer):
    # A limit of 0 is what Polar calls a key without activations.
    issued = make_license(plan=plan, customer=customer, max_activations=0)

    response = activate_call(api_client, issued)

    assert_polar_error(
        response,
        403,
        "NotPermitted",
        "This license key does not support activations. Use the /validate endpoint instead to check license validity.",
    )


def test_activate_an_unlimited_key_answers_a_null_limit(api_client, org, plan, customer):
    # Polar's null limit means "no activations"; here null is unlimited, and activating works, so an
    # app that activates keeps working and one that skips activation for a null limit validates.
    issued = make_license(plan=plan, customer=customer, max_activations=None)

    response = activate_call(api_client, issued)

    assert response.status_code == 200
    assert response.json()["license_key"]["limit_activations"] is None


@pytest.mark.parametrize("organization_id", [ORG, str(uuid.uuid4())])
def test_activate_an_unknown_key_or_organization_is_404(api_client, org, issued, organization_id):
    response = call(
        api_client,
        "activate",
        {
            "key": issued.key if organization_id != ORG else "NOT-A-KEY",
            "organization_id": organization_id,
            "label": "x",
        },
    )

    assert_polar_error(response, 404, "ResourceNotFound", "Not found")
    assert issued.license.live_activation_count() == 0


def test_activate_requires_key_organization_id_and_label(api_client, org):
    response = call(api_client, "activate", {"meta": {}})

    assert locs(response) == [["body", "key"], ["body", "organization_id"], ["body", "label"]]


@pytest.mark.parametrize("field", ["meta", "conditions"])
def test_activate_refuses_metadata_beyond_polars_limits(api_client, org, issued, field):
    too_many = {f"k{n}": n for n in range(51)}
    bad_pairs = {"": 1, "k" * 41: 1, "empty": "", "long": "v" * 501, "nested": {"a": 1}}

    many = activate_call(api_client, issued, **{field: too_many})
    bad = activate_call(api_client, issued, **{field: bad_pairs})

    assert validation_problems(many) == [
        {
            "loc": ["body", field],
            "msg": "Dictionary should have at most 50 items after validation, not 51",
            "type": "too_long",
        }
    ]
    problems = validation_problems(bad)
    assert {
        "loc": ["body", field, "", "[key]"],
        "msg": "String should have at least 1 character",
        "type": "string_too_short",
    } in problems
    assert {
        "loc": ["body", field, "k" * 41, "[key]"],
        "msg": "String should have at most 40 characters",
        "type": "string_too_long",
    } in problems
    assert ["body", field, "empty", "constrained-str"] in [item["loc"] for item in problems]
    assert {
        "loc": ["body", field, "long", "constrained-str"],
        "msg": "String should have at most 500 characters",
        "type": "string_too_long",
    } in problems
    assert ["body", field, "nested", "bool"] in [item["loc"] for item in problems]
    assert issued.license.live_activation_count() == 0


def test_activate_refuses_a_label_longer_than_a_device_name_in_pydantics_words(api_client, org, issued):
    response = activate_call(api_client, issued, label="x" * 256)

    assert validation_problems(response) == [
        {"loc": ["body", "label"], "msg": "String should have at most 255 characters", "type": "string_too_long"}
    ]
    assert issued.license.live_activation_count() == 0


def test_activate_takes_50_pairs_of_every_allowed_type(api_client, org, issued):
    meta = {f"k{n}": value for n, value in enumerate(["x" * 500, 1, 1.5, True, False] * 10)}

    response = activate_call(api_client, issued, meta=meta)

    assert response.status_code == 200
    assert response.json()["meta"] == meta


def test_activate_refuses_numbers_json_cannot_hold(api_client, org, issued):
    body = json.dumps({"key": issued.key, "organization_id": ORG, "label": "x", "meta": {"a": float("nan")}})
    assert "NaN" in body

    response = call(api_client, "activate", body)

    assert [(item["loc"], item["type"]) for item in validation_problems(response)] == [
        (["body", "meta", "a"], "finite_number")
    ]


def test_activate_a_label_the_server_cannot_store_is_422_on_label(api_client, org, issued):
    response = activate_call(api_client, issued, label="x" * 300)

    problems = validation_problems(response)
    assert [item["loc"] for item in problems] == [["body", "label"]]


# ---------------------------------------------------------------- deactivate


def test_deactivate_answers_204_and_frees_the_slot(api_client, org, issued):
    activation_id = activate_call(api_client, issued).json()["id"]

    response = deactivate_call(api_client, issued, activation_id)

    assert response.status_code == 204
    assert response.content == b""
    assert Activation.objects.get(pk=activation_id).deactivated_at is not None
    assert issued.license.live_activation_count() == 0


def test_deactivating_again_is_404(api_client, org, issued):
    activation_id = activate_call(api_client, issued).json()["id"]
    deactivate_call(api_client, issued, activation_id)

    response = deactivate_call(api_client, issued, activation_id)

    assert_polar_error(response, 404, "ResourceNotFound", "Not found")


def test_deactivate_an_unknown_activation_or_one_of_another_key_is_404(api_client, org, issued, plan, customer):
    other = make_license(plan=plan, customer=customer)
    others_activation = activate(other).activation

    unknown = deactivate_call(api_client, issued, str(uuid.uuid4()))
    foreign = deactivate_call(api_client, issued, str(others_activation.pk))

    assert_polar_error(unknown, 404, "ResourceNotFound", "Not found")
    assert_polar_error(foreign, 404, "ResourceNotFound", "Not found")
    assert Activation.objects.get(pk=others_activation.pk).is_live


def test_deactivate_with_another_organization_is_404(api_client, org, issued):
    activation = activate(issued).activation

    response = call(
        api_client,
        "deactivate",
        {"key": issued.key, "organization_id": str(uuid.uuid4()), "activation_id": str(activation.pk)},
    )

    assert_polar_error(response, 404, "ResourceNotFound", "Not found")
    assert Activation.objects.get(pk=activation.pk).is_live


def test_deactivate_works_on_a_revoked_key(api_client, org, issued, actor):
    # Polar frees a device whatever the key's state, so a customer can always clean up.
    activation = activate(issued).activation
    services.revoke_license(license=issued.license, actor=actor)

    assert deactivate_call(api_client, issued, str(activation.pk)).status_code == 204


def test_deactivate_requires_every_field(api_client, org):
    response = call(api_client, "deactivate", {"key": "K"})

    assert locs(response) == [["body", "organization_id"], ["body", "activation_id"]]


def test_deactivate_an_activation_id_that_is_no_uuid_is_422(api_client, org, issued):
    response = deactivate_call(api_client, issued, "instance-1")

    assert [(item["loc"], item["type"]) for item in validation_problems(response)] == [
        (["body", "activation_id"], "uuid_parsing")
    ]


# ---------------------------------------------------------------- the request itself


def test_bad_json_is_422(api_client, org):
    response = call(api_client, "validate", '{"key": ')

    assert validation_problems(response) == [{"loc": ["body"], "msg": "JSON decode error", "type": "json_invalid"}]


@pytest.mark.parametrize("body", ["[]", '"key"', "5"])
def test_a_body_that_is_not_an_object_is_422(api_client, org, body):
    response = call(api_client, "activate", body)

    assert [(item["loc"], item["type"]) for item in validation_problems(response)] == [
        (["body"], "model_attributes_type")
    ]


def test_an_empty_body_is_422_body_required(api_client, org):
    response = api_client.post(BASE + "validate")

    assert validation_problems(response) == [{"loc": ["body"], "msg": "Field required", "type": "missing"}]


def test_a_form_encoded_body_is_422(api_client, org, issued):
    response = api_client.post(BASE + "validate", {"key": issued.key, "organization_id": ORG}, format="multipart")

    assert [(item["loc"], item["type"]) for item in validation_problems(response)] == [
        (["body"], "model_attributes_type")
    ]


@pytest.mark.parametrize("content_type", ["", "application/vnd.api+json", "application/json; charset=utf-8"])
def test_json_is_read_without_or_with_any_json_content_type(client, org, issued, content_type):
    # FastAPI reads a body without a Content-Type as JSON; so does this.
    body = json.dumps({"key": issued.key, "organization_id": ORG})

    response = client.generic("POST", BASE + "validate", body, content_type=content_type)

    assert response.status_code == 200


def test_a_trailing_slash_is_answered_too(api_client, org, issued):
    # Polar redirects it to the path without; not every client re-sends a POST body on a redirect.
    response = api_client.post(
        BASE + "validate/", json.dumps({"key": issued.key, "organization_id": ORG}), content_type="application/json"
    )

    assert response.status_code == 200


def test_no_authentication_is_needed_and_any_sent_is_ignored(api_client, org, issued):
    response = validate_call(api_client, issued, headers={"HTTP_AUTHORIZATION": "Bearer polar_oat_something"})

    assert response.status_code == 200


def test_an_organization_id_of_any_uuid_version_is_read(api_client, product, actor, issued):
    # Polar asks for version 4 ids; a vendor may have set another here, and its apps must keep working.
    version_1 = "6ba7b810-9dad-11d1-80b4-00c04fd430c8"
    product.polar_organization_id = uuid.UUID(version_1)
    services.save_catalog_record(record=product, actor=actor)

    response = call(api_client, "validate", {"key": issued.key, "organization_id": version_1})

    assert response.status_code == 200


def test_the_answer_is_json_whatever_accept_says(api_client, org, issued):
    response = validate_call(api_client, issued, headers={"HTTP_ACCEPT": "text/html"})

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"


def test_web_pages_may_call_it_as_polar_lets_them(api_client, org, issued):
    origin = {"HTTP_ORIGIN": "https://app.example.com"}
    preflight = api_client.options(
        BASE + "validate",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="content-type",
        **origin,
    )

    answered = validate_call(api_client, issued, headers=origin)
    refused = call(api_client, "validate", {"key": "NOT-A-KEY", "organization_id": ORG}, **origin)

    assert preflight.status_code == 200
    assert preflight["Access-Control-Allow-Origin"] == "*"
    assert "POST" in preflight["Access-Control-Allow-Methods"].split(", ")
    assert "Content-Type" in preflight["Access-Control-Allow-Headers"].split(", ")
    assert answered["Access-Control-Allow-Origin"] == refused["Access-Control-Allow-Origin"] == "*"


def test_other_methods_are_405_in_polars_shape(api_client, org):
    response = api_client.get(BASE + "validate")

    assert_polar_error(response, 405, "MethodNotAllowed", "Method Not Allowed")


@pytest.mark.parametrize("path", ["/compat/polar/v1/license-keys/validate", "/compat/polar/anything"])
def test_unknown_paths_are_404_in_polars_shape(api_client, path):
    response = api_client.post(path, "{}", content_type="application/json")

    assert_polar_error(response, 404, "ResourceNotFound", "Not found")


def test_a_body_over_the_size_cap_is_413_in_polars_shape(api_client, org, settings):
    settings.API_MAX_BODY_BYTES = 100

    response = call(api_client, "validate", {"key": "K" * 200, "organization_id": ORG})

    assert response.status_code == 413
    assert set(response.json()) == {"error", "detail"}


def test_a_license_without_an_owner_answers_a_null_customer(api_client, org, plan):
    issued = make_license(plan=plan)

    body = validate_call(api_client, issued).json()

    assert (body["customer_id"], body["customer"]) == (None, None)


def test_keys_of_another_product_of_the_same_organization_are_found(api_client, org, actor, customer):
    # A Polar organization sells several products; each product here carries the organization id.
    second = make_product()
    second.polar_organization_id = uuid.UUID(ORG)
    services.save_catalog_record(record=second, actor=actor)
    issued = make_license(plan=make_plan(product=second), customer=customer)

    assert validate_call(api_client, issued).status_code == 200
