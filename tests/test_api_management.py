"""The management API, as the vendor's billing system and scripts use it."""

from __future__ import annotations

import io
import logging
import re
import uuid
from datetime import UTC, datetime, timedelta

import jsonschema
import pytest
import yaml
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime
from drf_spectacular.generators import SchemaGenerator

from licensing import errors, keys, services
from licensing.api.exceptions import api_exception_handler
from licensing.api.schema import BuiltOnceSchemaGenerator
from licensing.models import Activation, ApiKey, AuditEvent, Customer, License, Plan, Product, SigningKey
from tests.factories import activate, make_customer, make_license, make_plan, make_product

pytestmark = pytest.mark.django_db


MINUTE = timedelta(minutes=1)


def error(response) -> dict:
    return response.json()["error"]


# ---------------------------------------------------------------- authentication


def test_no_api_key_is_401(api_client, issued):
    response = api_client.get("/api/v1/licenses")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert error(response)["code"] == "unauthorized"


@pytest.mark.parametrize("header", ["Bearer lsk_wrong", "Bearer", "Bearer a b", "Token whatever"])
def test_a_wrong_api_key_is_401(api_client, api_key, header):
    api_client.credentials(HTTP_AUTHORIZATION=header)

    assert api_client.get("/api/v1/licenses").status_code == 401


def test_a_revoked_key_stops_working_at_once(management_client, api_key, actor):
    assert management_client.get("/api/v1/licenses").status_code == 200

    services.revoke_api_key(api_key=api_key.api_key, actor=actor)

    assert management_client.get("/api/v1/licenses").status_code == 401


def test_a_key_works_until_it_expires(api_client, actor, caplog):
    issued = services.create_api_key(name="billing", actor=actor, expires_at=timezone.now() + timedelta(days=90))
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.key}")
    assert api_client.get("/api/v1/licenses").status_code == 200
    last_used = ApiKey.objects.get(pk=issued.api_key.pk).last_used_at

    # Ninety days later.
    ApiKey.objects.filter(pk=issued.api_key.pk).update(expires_at=timezone.now(), last_used_at=last_used - MINUTE)
    caplog.set_level(logging.WARNING, logger="licensing.api.authentication")
    response = api_client.get("/api/v1/licenses")

    assert response.status_code == 401
    assert error(response)["message"] == "The API key is not valid, has been revoked or has expired."
    # Staff can tell which system still sends it; its last use stays the last it was let in.
    assert f"Refused API key {issued.api_key} (revoked or expired) from 127.0.0.1" in caplog.text
    assert ApiKey.objects.get(pk=issued.api_key.pk).last_used_at == last_used - MINUTE
    created = AuditEvent.objects.get(action="api_key.created")
    stored_expiry = parse_datetime(created.changes["expires_at"][1])
    assert abs(stored_expiry - issued.api_key.expires_at) < timedelta(milliseconds=1)


def test_a_key_for_apps_takes_no_expiry(actor):
    with pytest.raises(errors.InvalidInput, match="A key for apps does not expire") as refused:
        services.create_api_key(
            name="photon app", apps_only=True, actor=actor, expires_at=timezone.now() + timedelta(days=90)
        )

    assert refused.value.field == "expires_at"
    assert not ApiKey.objects.exists()


def test_a_key_cannot_be_made_already_expired(actor):
    with pytest.raises(errors.InvalidInput, match="An API key's expiry must be in the future.") as refused:
        services.create_api_key(name="billing", actor=actor, expires_at=timezone.now() - timedelta(minutes=1))

    assert refused.value.field == "expires_at"
    assert not ApiKey.objects.exists()


def test_a_read_only_key_reads_but_cannot_write(api_client, read_only_api_key, issued):
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {read_only_api_key.key}")

    assert api_client.get(f"/api/v1/licenses/{issued.license.pk}").status_code == 200
    response = api_client.post(f"/api/v1/licenses/{issued.license.pk}/suspend")

    assert response.status_code == 403
    assert error(response) == {"code": "forbidden", "message": "This API key is read-only."}
    assert License.objects.get(pk=issued.license.pk).status == "active"


def test_an_api_key_is_no_license_key_and_a_license_key_no_api_key(api_client, api_key, issued):
    as_license = api_client.post("/api/v1/licenses/validate", {"key": api_key.key}, format="json")
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.key}")

    assert as_license.status_code == 404
    assert api_client.get("/api/v1/licenses").status_code == 401


def test_api_keys_are_stored_as_digests_and_note_their_last_use(management_client, api_key):
    stored = ApiKey.objects.get(pk=api_key.api_key.pk)
    assert stored.key_digest == keys.digest_api_key(api_key.key)
    assert api_key.key not in str(ApiKey.objects.values().get(pk=stored.pk))
    assert api_key.key.startswith(stored.prefix)
    assert len(api_key.key) >= len("lsk_") + 32

    management_client.get("/api/v1/products")

    assert ApiKey.objects.get(pk=stored.pk).last_used_at is not None


def test_create_api_key_command_prints_only_the_key_on_its_last_line():
    out, err = io.StringIO(), io.StringIO()

    call_command("create_api_key", "--name", "billing", "--read-only", stdout=out, stderr=err)

    key = out.getvalue().strip().splitlines()[-1]
    api_key = services.authenticate_api_key(key)
    assert api_key is not None
    assert (api_key.name, api_key.read_only, api_key.apps_only) == ("billing", True, False)
    assert "not shown again" in err.getvalue()


def test_create_api_key_command_makes_a_key_for_apps():
    out, err = io.StringIO(), io.StringIO()

    call_command("create_api_key", "--name", "photon app", "--apps-only", stdout=out, stderr=err)

    api_key = services.authenticate_api_key(out.getvalue().strip().splitlines()[-1])
    assert (api_key.name, api_key.read_only, api_key.apps_only) == ("photon app", False, True)
    assert "for apps' license calls only" in err.getvalue()


def test_create_api_key_command_makes_a_key_that_expires():
    out, err = io.StringIO(), io.StringIO()

    call_command("create_api_key", "--name", "billing", "--expires-in-days", "90", stdout=out, stderr=err)

    api_key = services.authenticate_api_key(out.getvalue().strip().splitlines()[-1])
    assert timedelta(days=89, hours=23) < api_key.expires_at - timezone.now() <= timedelta(days=90)
    assert f"working until {api_key.expires_at:%Y-%m-%d %H:%M} UTC" in err.getvalue()
    with pytest.raises(CommandError, match="--expires-in-days takes 1 to 3653 days."):
        call_command("create_api_key", "--name", "billing", "--expires-in-days", "0", stderr=io.StringIO())
    assert ApiKey.objects.count() == 1


def test_create_signing_key_command_prints_the_public_key():
    out = io.StringIO()

    call_command("create_signing_key", stdout=out)

    assert "-----BEGIN PUBLIC KEY-----" in out.getvalue()
    assert "PRIVATE" not in out.getvalue()
    assert services.current_signing_key().kid in out.getvalue()


def test_create_signing_key_command_replaces_the_key_that_signs_only_when_asked():
    signing_now = services.current_signing_key()

    with pytest.raises(CommandError, match=f"--replace: Key {signing_now.kid} signs answers now"):
        call_command("create_signing_key", stdout=io.StringIO())
    with pytest.raises(CommandError, match="give one"):
        call_command("create_signing_key", "--replace", "--if-none", stdout=io.StringIO())
    call_command("create_signing_key", "--replace", stdout=io.StringIO())

    services.forget_cached_keys()
    assert services.current_signing_key() != signing_now
    assert SigningKey.objects.count() == 2


def test_a_signing_key_taking_over_within_a_day_must_be_asked_for_too(actor):
    signing_now = services.current_signing_key()
    in_an_hour = timezone.now() + timedelta(hours=1)

    with pytest.raises(errors.InvalidInput, match="or within a day"):
        services.create_signing_key(actor=actor, signs_from=in_an_hour)
    scheduled = services.create_signing_key(actor=actor, signs_from=in_an_hour, replace=True)

    assert list(SigningKey.objects.order_by("created_at")) == [signing_now, scheduled]


def test_create_signing_key_command_schedules_a_key_for_a_later_date():
    signing_now = services.current_signing_key()
    out = io.StringIO()

    call_command("create_signing_key", "--signs-from", "2099-01-15", stdout=out)

    scheduled = SigningKey.objects.exclude(pk=signing_now.pk).get()
    assert scheduled.signs_from == datetime(2099, 1, 15, tzinfo=UTC)
    assert f"{scheduled.kid}, published now; it signs from 2099-01-15T00:00:00+00:00" in out.getvalue()
    assert services.signing_key_now() == signing_now
    assert scheduled in services.published_signing_keys()


def test_create_signing_key_if_none_makes_the_first_key_only():
    first, second = io.StringIO(), io.StringIO()

    call_command("create_signing_key", "--if-none", stdout=first)
    call_command("create_signing_key", "--if-none", stdout=second)

    signing_key = SigningKey.objects.get()
    assert f"Created signing key {signing_key.kid}" in first.getvalue()
    assert second.getvalue() == f"Signing key {signing_key.kid} signs; no new key made.\n"


@pytest.mark.parametrize(("value", "message"), [("soon", "not an ISO 8601"), ("2001-01-01", "already past")])
def test_create_signing_key_command_refuses_a_bad_or_past_date(value, message):
    with pytest.raises(CommandError, match=message):
        call_command("create_signing_key", "--signs-from", value, stdout=io.StringIO())

    assert not SigningKey.objects.exists()


# ---------------------------------------------------------------- catalog


def test_create_and_update_a_product_with_an_imported_id(management_client):
    response = management_client.post(
        "/api/v1/products",
        {"name": "Nova", "slug": "nova", "public_id": "kmp_2b7f0c9a41d84e6fa3c1b9"},
        format="json",
    )
    assert response.status_code == 201
    product_id = response.json()["id"]

    updated = management_client.patch(f"/api/v1/products/{product_id}", {"is_active": False}, format="json")

    assert updated.status_code == 200
    assert updated.json()["public_id"] == "kmp_2b7f0c9a41d84e6fa3c1b9"
    assert updated.json()["is_active"] is False
    actions = list(AuditEvent.objects.filter(actor_kind="api_key").values_list("action", flat=True))
    assert sorted(actions) == ["product.changed", "product.created"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "Nova"}, "slug"),
        ({"name": "Nova", "slug": "not a slug"}, "slug"),
        ({"slug": "nova"}, "name"),
        # DRF's UUID field would store false as the nil UUID and 12345 as ...3039.
        ({"name": "Nova", "slug": "nova", "polar_organization_id": False}, "polar_organization_id"),
        ({"name": "Nova", "slug": "nova", "polar_organization_id": 12345}, "polar_organization_id"),
    ],
)
def test_bad_product_input_names_the_field(management_client, body, field):
    response = management_client.post("/api/v1/products", body, format="json")

    assert response.status_code == 400
    assert error(response)["field"] == field
    assert not Product.objects.exists()


def test_plans_list_and_create(management_client, product):
    response = management_client.post(
        "/api/v1/plans",
        {
            "product": product.pk,
            "name": "Pro",
            "identifier": "pro",
            "max_activations": 5,
            "duration_unit": "month",
            "duration_value": 1,
        },
        format="json",
    )

    assert response.status_code == 201
    assert management_client.get("/api/v1/plans").json()["results"][0]["identifier"] == "pro"


NO_DURATION = "A perpetual plan has no duration; any other needs a duration of 1 or more."
AT_MOST_100_YEARS = "A plan lasts at most 100 years (36500 days, 1200 months); choose perpetual."


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"duration_unit": "month"}, NO_DURATION),
        ({"duration_unit": "year", "duration_value": 0}, NO_DURATION),
        ({"duration_unit": "perpetual", "duration_value": 2}, NO_DURATION),
        # Past 100 years a plan is perpetual in all but name, and issuing from it would fail.
        ({"duration_unit": "year", "duration_value": 101}, AT_MOST_100_YEARS),
        ({"duration_unit": "month", "duration_value": 1201}, AT_MOST_100_YEARS),
        ({"duration_unit": "day", "duration_value": 36501}, AT_MOST_100_YEARS),
    ],
)
def test_a_plan_duration_that_breaks_the_rule_is_400_naming_it(management_client, product, body, message):
    response = management_client.post(
        "/api/v1/plans", {"product": product.pk, "name": "Pro", "identifier": "pro", **body}, format="json"
    )

    assert response.status_code == 400
    assert error(response)["field"] == "duration_value"
    assert error(response)["message"] == message
    assert not Plan.objects.filter(identifier="pro").exists()


def test_a_plan_of_100_years_issues_licenses(management_client, product):
    plan = management_client.post(
        "/api/v1/plans",
        {
            "product": product.pk,
            "name": "Lifetime",
            "identifier": "lifetime",
            "duration_unit": "year",
            "duration_value": 100,
        },
        format="json",
    )
    license = management_client.post(
        "/api/v1/licenses", {"product": product.pk, "plan": plan.json()["id"]}, format="json"
    )

    assert (plan.status_code, license.status_code) == (201, 201)


@pytest.mark.parametrize("field", ["slug", "public_id"])
def test_a_product_slug_or_public_id_taken_is_409_naming_it(management_client, product, field):
    taken = {"name": "Another", "slug": "another", field: getattr(product, field)}

    created = management_client.post("/api/v1/products", taken, format="json")
    other = management_client.post("/api/v1/products", {"name": "Third", "slug": "third"}, format="json").json()
    changed = management_client.patch(
        f"/api/v1/products/{other['id']}", {field: getattr(product, field)}, format="json"
    )

    for response in (created, changed):
        assert response.status_code == 409
        assert (error(response)["code"], error(response)["field"]) == ("duplicate_record", field)
    assert Product.objects.filter(**{field: getattr(product, field)}).count() == 1


def test_a_malformed_slug_is_still_400(management_client):
    response = management_client.post("/api/v1/products", {"name": "Bad", "slug": "not a slug"}, format="json")

    assert (response.status_code, error(response)["field"]) == (400, "slug")


def test_a_plan_identifier_taken_in_the_product_is_409_naming_it(management_client, plan):
    other = management_client.post(
        "/api/v1/plans", {"product": plan.product_id, "name": "Team", "identifier": "team"}, format="json"
    ).json()

    response = management_client.patch(f"/api/v1/plans/{other['id']}", {"identifier": "personal"}, format="json")

    assert response.status_code == 409
    assert (error(response)["code"], error(response)["field"]) == ("duplicate_record", "identifier")
    assert error(response)["message"] == "This product already has a plan with this identifier."
    assert Plan.objects.get(pk=other["id"]).identifier == "team"


def test_a_plans_anti_churn_policy_is_set_and_read_through_the_api(management_client, product):
    body = {"max_deactivations": 2, "deactivation_window_days": 7, "slot_cooldown_minutes": 60}
    created = management_client.post(
        "/api/v1/plans", {"product": product.pk, "name": "Pro", "identifier": "pro", **body}, format="json"
    )
    window_too_short = management_client.patch(
        f"/api/v1/plans/{created.json()['id']}", {"deactivation_window_days": 0}, format="json"
    )

    assert created.status_code == 201
    assert {name: created.json()[name] for name in body} == body
    plan = Plan.objects.get(identifier="pro")
    assert (plan.max_deactivations, plan.deactivation_window_days, plan.slot_cooldown_minutes) == (2, 7, 60)
    assert (window_too_short.status_code, error(window_too_short)["field"]) == (400, "deactivation_window_days")


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/api/v1/plans?product=", "product"),
        ("/api/v1/customers?email=", "email"),
        ("/api/v1/customers?external_id=", "external_id"),
        ("/api/v1/licenses?customer_email=", "customer_email"),
        ("/api/v1/licenses?status=", "status"),
        ("/api/v1/licenses?expired=", "expired"),
        ("/api/v1/licenses?expired=null", "expired"),
        ("/api/v1/licenses/{license}/activations?live=", "live"),
    ],
)
def test_a_blank_filter_is_400_not_every_record(management_client, issued, path, field):
    response = management_client.get(path.format(license=issued.license.pk))

    assert response.status_code == 400
    assert error(response)["field"] == field


def test_plans_filter_by_product(management_client, plan):
    other_product = make_product(name="Other", slug="other")
    make_plan(product=other_product, name="Other plan", identifier="other")

    mine = management_client.get("/api/v1/plans", {"product": plan.product_id}).json()
    none = management_client.get("/api/v1/plans", {"product": 999}).json()
    bad = management_client.get("/api/v1/plans", {"product": "abc"})

    assert [found["id"] for found in mine["results"]] == [plan.pk]
    assert none["count"] == 0
    assert (bad.status_code, error(bad)["field"]) == (400, "product")


def test_customers_filter_by_email_in_any_case_or_external_id(management_client, customer, other_customer):
    other_customer.external_id = "cus_grace"
    other_customer.save()

    by_email = management_client.get("/api/v1/customers", {"email": "ADA@example.com"}).json()
    by_external_id = management_client.get("/api/v1/customers", {"external_id": "cus_grace"}).json()
    bad = management_client.get("/api/v1/customers", {"email": "not-an-address"})

    assert [found["id"] for found in by_email["results"]] == [customer.pk]
    assert [found["id"] for found in by_external_id["results"]] == [other_customer.pk]
    assert (bad.status_code, error(bad)["field"]) == (400, "email")


def test_customers_changed_since_a_syncs_last_run_are_listed(management_client, customer, other_customer, actor):
    Customer.objects.update(updated_at=timezone.now() - timedelta(days=2))
    last_run = timezone.now() - timedelta(days=1)
    other_customer.name = "Grace Brewster Hopper"
    services.save_catalog_record(record=other_customer, actor=actor, fields=["name"])

    response = management_client.get("/api/v1/customers", {"updated_since": last_run.isoformat()})

    assert [found["email"] for found in response.json()["results"]] == ["grace@example.com"]


def test_a_customer_update_taking_two_ids_names_both_fields(management_client, customer, other_customer):
    other_customer.external_id = "cus_grace"
    other_customer.save()

    response = management_client.put(
        f"/api/v1/customers/{customer.pk}", {"email": "GRACE@example.com", "external_id": "cus_grace"}, format="json"
    )

    assert response.status_code == 409
    assert set(error(response)["errors"]) == {"email", "external_id"}


def test_a_customer_external_id_taken_is_409_naming_it(management_client):
    management_client.post("/api/v1/customers", {"email": "a@example.com", "external_id": "cus_1"}, format="json")

    response = management_client.post(
        "/api/v1/customers", {"email": "b@example.com", "external_id": "cus_1"}, format="json"
    )

    # A billing system retrying a create that went through tells this apart from bad input.
    assert response.status_code == 409
    assert (error(response)["code"], error(response)["field"]) == ("duplicate_record", "external_id")
    assert error(response)["message"] == "Another customer already has this external id."


def test_customer_email_is_unique_ignoring_case(management_client, customer):
    response = management_client.post("/api/v1/customers", {"email": "ADA@example.com"}, format="json")

    assert response.status_code == 409
    assert (error(response)["code"], error(response)["field"]) == ("duplicate_record", "email")
    assert error(response)["message"] == "A customer with this e-mail already exists."
    assert Customer.objects.count() == 1


@pytest.mark.parametrize(
    ("method", "path", "message"),
    [
        ("get", "/api/v1/products/999", "There is no product with this id."),
        ("patch", "/api/v1/plans/999", "There is no plan with this id."),
        ("get", "/api/v1/customers/999", "There is no customer with this id."),
        ("get", f"/api/v1/licenses/{uuid.UUID(int=0)}", "There is no license with this id."),
        ("patch", f"/api/v1/licenses/{uuid.UUID(int=0)}", "There is no license with this id."),
        ("post", f"/api/v1/licenses/{uuid.UUID(int=0)}/suspend", "There is no license with this id."),
        ("post", f"/api/v1/licenses/{uuid.UUID(int=0)}/extend", "There is no license with this id."),
        ("get", f"/api/v1/licenses/{uuid.UUID(int=0)}/activations", "There is no license with this id."),
        ("post", f"/api/v1/licenses/{uuid.UUID(int=0)}/activations", "There is no license with this id."),
        (
            "post",
            f"/api/v1/licenses/{uuid.UUID(int=0)}/activations/{uuid.UUID(int=1)}/deactivate",
            "There is no license with this id.",
        ),
    ],
)
def test_unknown_ids_are_404_naming_the_record(management_client, method, path, message):
    response = getattr(management_client, method)(path, {}, format="json")

    assert response.status_code == 404
    assert error(response) == {"code": "not_found", "message": message}


def test_a_customer_product_or_plan_nothing_refers_to_is_deleted(management_client, plan):
    customer = make_customer(email="test-order@example.com")
    spare_plan = make_plan(product=plan.product, identifier="spare")
    spare_product = make_product(slug="spare")

    answers = [
        management_client.delete(path)
        for path in (
            f"/api/v1/customers/{customer.pk}",
            f"/api/v1/plans/{spare_plan.pk}",
            f"/api/v1/products/{spare_product.pk}",
        )
    ]

    assert [answer.status_code for answer in answers] == [204, 204, 204]
    assert not Customer.objects.filter(pk=customer.pk).exists()
    assert not Plan.objects.filter(pk=spare_plan.pk).exists()
    assert not Product.objects.filter(pk=spare_product.pk).exists()
    deleted = AuditEvent.objects.get(action="customer.deleted")
    assert (deleted.actor_kind, deleted.changes["email"]) == ("api_key", ["test-order@example.com", None])
    assert management_client.delete(f"/api/v1/customers/{customer.pk}").status_code == 404


def test_a_record_licenses_or_plans_refer_to_is_409_and_stays(management_client, issued, customer, plan):
    answers = {
        path: management_client.delete(path)
        for path in (
            f"/api/v1/customers/{customer.pk}",
            f"/api/v1/plans/{plan.pk}",
            f"/api/v1/products/{plan.product_id}",
        )
    }

    assert {path: (answer.status_code, error(answer)["code"]) for path, answer in answers.items()} == {
        path: (409, "record_in_use") for path in answers
    }
    assert error(answers[f"/api/v1/customers/{customer.pk}"])["message"] == (
        "Licenses refer to this customer, so it cannot be deleted."
    )
    assert Customer.objects.filter(pk=customer.pk).exists()
    assert Plan.objects.filter(pk=plan.pk).exists()
    assert not AuditEvent.objects.filter(action__endswith=".deleted").exists()


def test_a_read_only_key_deletes_nothing(api_client, read_only_api_key):
    customer = make_customer(email="test-order@example.com")
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {read_only_api_key.key}")

    response = api_client.delete(f"/api/v1/customers/{customer.pk}")

    assert (response.status_code, error(response)["message"]) == (403, "This API key is read-only.")
    assert Customer.objects.filter(pk=customer.pk).exists()


# ---------------------------------------------------------------- licenses


def test_every_page_of_the_license_list_counts_its_licenses_devices(management_client, plan):
    older, newer = make_license(plan=plan), make_license(plan=plan)
    activate(older, "a")
    activate(older, "b")
    services.deactivate_activation(activation=activate(newer, "c").activation, actor=services.Actor.system())

    pages = [management_client.get("/api/v1/licenses", {"page_size": 1, "page": n}).json() for n in (1, 2)]

    assert [(page["results"][0]["id"], page["results"][0]["activations_used"]) for page in pages] == [
        (str(newer.license.pk), 0),
        (str(older.license.pk), 2),
    ]


def test_issue_a_license_for_a_new_customer_with_a_generated_key(management_client, plan):
    response = management_client.post(
        "/api/v1/licenses",
        {"product": plan.product.pk, "plan": plan.pk, "customer_email": "new@example.com", "customer_name": "New"},
        format="json",
    )

    assert response.status_code == 201
    body = response.json()
    assert services.get_license_by_key(body["key"]).pk.hex == body["id"].replace("-", "")
    assert (body["max_activations"], body["activations_used"], body["status"]) == (3, 0, "active")
    assert body["customer"]["email"] == "new@example.com"
    assert Customer.objects.get(email="new@example.com").name == "New"
    event = AuditEvent.objects.get(action="license.created")
    assert event.actor_kind == "api_key"
    assert event.actor_display.startswith("billing (lsk_")


def test_issuing_reuses_an_existing_customer_ignoring_case(management_client, plan, customer):
    response = management_client.post(
        "/api/v1/licenses", {"product": plan.product.pk, "customer_email": "ADA@EXAMPLE.COM"}, format="json"
    )

    assert response.json()["customer"]["id"] == customer.pk
    assert Customer.objects.count() == 1


def test_a_customer_found_without_a_name_takes_the_one_given_and_keeps_a_name_it_has(management_client, plan):
    nameless = make_customer(email="nameless@example.com", name="")
    named = make_customer(email="named@example.com", name="Ada")

    for email in ("nameless@example.com", "named@example.com"):
        body = {"product": plan.product.pk, "customer_email": email, "customer_name": "From the order"}
        assert management_client.post("/api/v1/licenses", body, format="json").status_code == 201

    assert Customer.objects.get(pk=nameless.pk).name == "From the order"
    assert Customer.objects.get(pk=named.pk).name == "Ada"
    assert AuditEvent.objects.filter(action="customer.changed", target_id=str(nameless.pk)).count() == 1


def test_issue_with_an_imported_key_no_limit_and_no_expiry(management_client, plan):
    response = management_client.post(
        "/api/v1/licenses",
        {
            "product": plan.product.pk,
            "plan": plan.pk,
            "key": "KM-IMPORTED-0001",
            "max_activations": None,
            "expires_at": None,
        },
        format="json",
    )

    assert response.status_code == 201
    license = services.get_license_by_key("KM-IMPORTED-0001")
    assert (license.max_activations, license.expires_at) == (None, None)
    assert response.json()["key"] == "KM-IMPORTED-0001"


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        ({"key": "TAKEN-KEY-0001"}, 409, "key"),
        ({"plan": "other"}, 400, "plan"),
        ({"max_activations": -1}, 400, "max_activations"),
        ({"max_activations": "3"}, 400, "max_activations"),
        ({"expires_at": "next tuesday"}, 400, "expires_at"),
        ({"customer_email": "not-an-email"}, 400, "customer_email"),
        ({"metadata": [1, 2]}, 400, "metadata"),
        ({"product": 999999}, 400, "product"),
        ({"seats": 5}, 400, "seats"),
    ],
)
def test_issuing_refusals_name_the_field(management_client, plan, body, status, field):
    make_license(plan=plan, key="TAKEN-KEY-0001")
    other_plan = make_plan()
    data = {"product": plan.product.pk, **body}
    if data.get("plan") == "other":
        data["plan"] = other_plan.pk

    response = management_client.post("/api/v1/licenses", data, format="json")

    assert response.status_code == status
    assert error(response)["field"] == field
    assert License.objects.count() == 1


@pytest.mark.parametrize("wrong", [lambda pk: pk + 0.5, str, lambda pk: True], ids=["fraction", "text", "boolean"])
def test_a_record_id_must_be_a_whole_number(management_client, plan, wrong):
    # DRF would read product 1.5 as product 1.
    license = management_client.post("/api/v1/licenses", {"product": wrong(plan.product.pk)}, format="json")
    on_plan = management_client.post(
        "/api/v1/licenses", {"product": plan.product.pk, "plan": wrong(plan.pk)}, format="json"
    )
    new_plan = management_client.post(
        "/api/v1/plans", {"product": wrong(plan.product.pk), "name": "Team", "identifier": "team"}, format="json"
    )

    answers = [(answer.status_code, error(answer)["field"]) for answer in (license, on_plan, new_plan)]
    assert answers == [(400, "product"), (400, "plan"), (400, "product")]
    assert (License.objects.count(), Plan.objects.count()) == (0, 1)


def test_only_create_and_retrieve_show_the_full_key(management_client, issued):
    listing = management_client.get("/api/v1/licenses")
    detail = management_client.get(f"/api/v1/licenses/{issued.license.pk}")

    assert issued.key not in listing.content.decode()
    assert listing.json()["results"][0]["masked_key"] == issued.license.masked_key
    assert detail.json()["key"] == issued.key


def test_list_licenses_filters_and_pages(management_client, plan, customer, actor):
    mine = make_license(plan=plan, customer=customer).license
    suspended = make_license(plan=plan).license
    services.suspend_license(license=suspended, actor=actor)
    other_product = make_license(plan=make_plan()).license

    def ids(**params):
        return [item["id"] for item in management_client.get("/api/v1/licenses", params).json()["results"]]

    assert ids(customer_email="ADA@example.com") == [str(mine.pk)]
    assert ids(status="suspended") == [str(suspended.pk)]
    assert set(ids(product=plan.product.pk)) == {str(mine.pk), str(suspended.pk)}
    assert str(other_product.pk) not in ids(product=plan.product.pk)
    first_page = management_client.get("/api/v1/licenses", {"page_size": 2}).json()
    assert (first_page["count"], len(first_page["results"])) == (3, 2)
    assert first_page["next"]


def test_a_refusal_by_the_services_lists_its_field_in_errors_as_a_serializers_does(management_client, plan):
    other_product = make_product(name="Other", slug="other")

    response = management_client.post("/api/v1/licenses", {"product": other_product.pk, "plan": plan.pk}, format="json")

    assert response.status_code == 400
    assert error(response) == {
        "code": "invalid_input",
        "message": "This plan belongs to another product.",
        "field": "plan",
        "errors": {"plan": ["This plan belongs to another product."]},
    }
    assert not License.objects.exists()


@pytest.mark.parametrize(
    ("refusal", "listed"),
    [
        (errors.InvalidInput("Refused as a whole."), {"non_field_errors": ["Refused as a whole."]}),
        (
            errors.InvalidInput("Refused as a whole.", errors={"__all__": ["Refused as a whole."]}),
            {"non_field_errors": ["Refused as a whole."]},
        ),
    ],
)
def test_a_refusal_of_no_one_field_is_listed_under_the_serializers_key(refusal, listed):
    response = api_exception_handler(refusal, {})

    assert (response.status_code, response.data["error"]["errors"]) == (400, listed)


def test_a_bad_filter_is_400(management_client):
    response = management_client.get("/api/v1/licenses", {"status": "sleeping"})

    assert response.status_code == 400
    assert error(response)["field"] == "status"


@pytest.mark.parametrize(
    ("path", "query", "message"),
    [
        (
            "/api/v1/licenses",
            "ordering=-created_at",
            "This list has no such filter; it filters by customer, customer_email, customer_external_id, expired, "
            "plan, product, status, updated_since.",
        ),
        ("/api/v1/licenses", "status=active&status=revoked", "Give this once."),
        ("/api/v1/licenses", "page_size=5&page_size=500", "Give this once."),
        ("/api/v1/products", "slug=photon", "This list has no such filter; it filters by nothing."),
        ("/api/v1/plans", "identifier=personal", "This list has no such filter; it filters by product."),
        (
            "/api/v1/customers",
            "name=Ada",
            "This list has no such filter; it filters by email, external_id, updated_since.",
        ),
        (
            "/api/v1/licenses/{license}/activations",
            "fingerprint=a",
            "This list has no such filter; it filters by live.",
        ),
    ],
)
def test_a_filter_a_list_does_not_have_is_400_not_ignored(management_client, issued, path, query, message):
    response = management_client.get(f"{path.format(license=issued.license.pk)}?{query}&page=1&page_size=10")

    assert response.status_code == 400
    assert (error(response)["field"], error(response)["message"]) == (query.split("=")[0], message)


def test_support_finds_a_license_by_its_whole_key_with_a_read_only_key(api_client, read_only_api_key, issued):
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {read_only_api_key.key}")
    find = "/api/v1/licenses/find"

    found = api_client.post(find, {"key": issued.key}, format="json")
    spaced = api_client.post(find, {"key": f" {issued.key}"}, format="json")
    missing = api_client.post(find, {}, format="json")

    assert found.status_code == 200
    assert (found.json()["id"], found.json()["key"]) == (str(issued.license.pk), issued.key)
    assert (spaced.status_code, error(spaced)["code"]) == (404, "license_not_found")
    assert (missing.status_code, error(missing)["field"]) == (400, "key")
    assert api_client.post("/api/v1/licenses", {"product": issued.license.product_id}, format="json").status_code == 403


def test_a_key_made_for_apps_cannot_find_licenses_by_key(api_client, issued):
    apps_key = services.create_api_key(name="photon app", apps_only=True, actor=services.Actor.system()).key
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {apps_key}")

    response = api_client.post("/api/v1/licenses/find", {"key": issued.key}, format="json")

    assert response.status_code == 403
    assert "key" not in response.json()


def test_licenses_filter_by_plan_owner_billing_id_and_last_change(management_client, plan, customer, actor):
    customer.external_id = "cus_123"
    services.save_catalog_record(record=customer, actor=actor)
    other_plan = make_plan(product=plan.product, identifier="team")
    mine = make_license(plan=plan, customer=customer).license
    theirs = make_license(plan=other_plan).license
    since = timezone.now()
    services.change_activation_limit(license=theirs, max_activations=9, actor=actor)

    def ids(**query):
        response = management_client.get("/api/v1/licenses", query)
        assert response.status_code == 200, response.json()
        return [license["id"] for license in response.json()["results"]]

    assert ids(plan=other_plan.pk) == [str(theirs.pk)]
    assert ids(customer=customer.pk) == ids(customer_external_id="cus_123") == [str(mine.pk)]
    assert ids(updated_since=since.isoformat()) == [str(theirs.pk)]


def test_licenses_changed_since_include_those_whose_owner_changed(management_client, plan, customer, actor):
    owned = make_license(plan=plan, customer=customer).license
    make_license(plan=plan, customer=make_customer(email="other@example.com"))
    since = timezone.now()
    customer.email = "ada.new@example.com"
    services.save_catalog_record(record=customer, actor=actor, fields=["email"])

    response = management_client.get("/api/v1/licenses", {"updated_since": since.isoformat()})

    assert [(item["id"], item["customer"]["email"]) for item in response.json()["results"]] == [
        (str(owned.pk), "ada.new@example.com")
    ]


def test_lists_still_take_drfs_format_parameter(management_client, issued):
    assert management_client.get("/api/v1/licenses?format=json").status_code == 200


def test_a_licenses_devices_filter_by_live_or_deactivated(management_client, issued):
    live = activate(issued, "live-device").activation
    gone = activate(issued, "gone-device").activation
    services.deactivate_activation(activation=gone, actor=services.Actor.system())
    devices = f"/api/v1/licenses/{issued.license.pk}/activations"

    def ids(query):
        return [device["id"] for device in management_client.get(devices + query).json()["results"]]

    assert (ids("?live=true"), ids("?live=false"), len(ids(""))) == ([str(live.pk)], [str(gone.pk)], 2)


def test_patch_changes_owner_limit_expiry_and_metadata(management_client, issued):
    new_expiry = (timezone.now() + timedelta(days=90)).replace(microsecond=0)

    response = management_client.patch(
        f"/api/v1/licenses/{issued.license.pk}",
        {
            "customer_email": "grace@example.com",
            "max_activations": 10,
            "expires_at": new_expiry.isoformat(),
            "metadata": {"seats": 10},
        },
        format="json",
    )

    assert response.status_code == 200
    license = License.objects.get(pk=issued.license.pk)
    assert (license.customer.email, license.max_activations, license.expires_at, license.metadata) == (
        "grace@example.com",
        10,
        new_expiry,
        {"seats": 10},
    )
    actions = set(AuditEvent.objects.filter(actor_kind="api_key").values_list("action", flat=True))
    assert {"license.changed", "license.limit_changed", "license.expiry_shortened"} <= actions


def test_patch_moves_a_license_to_another_plan_of_its_product(management_client, issued, product):
    team = make_plan(product=product, name="Team", identifier="team", max_activations=10)
    elsewhere = make_plan(product=make_product(name="Other", slug="other"))
    url = f"/api/v1/licenses/{issued.license.pk}"

    moved = management_client.patch(url, {"plan": team.pk}, format="json")
    refused = management_client.patch(url, {"plan": elsewhere.pk}, format="json")
    to_none = management_client.patch(url, {"plan": None}, format="json")

    assert moved.status_code == 200
    assert (moved.json()["plan"], moved.json()["max_activations"]) == (team.pk, 10)
    assert (refused.status_code, error(refused)["field"]) == (400, "plan")
    assert (to_none.status_code, error(to_none)["field"]) == (400, "plan")
    assert License.objects.get(pk=issued.license.pk).plan == team


def test_patch_with_one_bad_field_changes_nothing(management_client, issued):
    response = management_client.patch(
        f"/api/v1/licenses/{issued.license.pk}", {"max_activations": 10, "metadata": "oops"}, format="json"
    )

    assert response.status_code == 400
    assert License.objects.get(pk=issued.license.pk).max_activations == 3


def test_suspend_reinstate_revoke_and_extend(management_client, plan):
    expires_at = timezone.now() + timedelta(days=5)
    license = make_license(plan=plan, expires_at=expires_at).license
    base = f"/api/v1/licenses/{license.pk}"

    assert management_client.post(f"{base}/suspend").json()["status"] == "suspended"
    assert management_client.post(f"{base}/reinstate").json()["status"] == "active"
    extended = management_client.post(f"{base}/extend", {"days": 30}, format="json")
    assert extended.status_code == 200
    assert License.objects.get(pk=license.pk).expires_at == expires_at + timedelta(days=30)
    assert management_client.post(f"{base}/revoke").json()["status"] == "revoked"

    refused = management_client.post(f"{base}/reinstate")

    assert refused.status_code == 409
    assert error(refused)["code"] == "invalid_status_change"


@pytest.mark.parametrize(
    ("path", "method", "body", "field"),
    [
        ("/extend", "post", {"days": 30}, "days"),
        ("", "patch", {"expires_at": "2095-01-31T09:00:00Z"}, "expires_at"),
        ("", "patch", {"max_activations": 10}, "max_activations"),
        ("", "patch", {"limit_usage": 100}, "limit_usage"),
        ("", "patch", {"plan": "team"}, "plan"),
        ("", "patch", {"metadata": {"refund": "R-1"}, "max_activations": 10}, "max_activations"),
    ],
)
def test_a_revoked_licenses_terms_do_not_change(management_client, issued, product, actor, path, method, body, field):
    if body.get("plan") == "team":
        body = {"plan": make_plan(product=product, name="Team", identifier="team", max_activations=10).pk}
    license = services.revoke_license(license=issued.license, actor=actor)
    events = AuditEvent.objects.count()

    response = getattr(management_client, method)(f"/api/v1/licenses/{license.pk}{path}", body, format="json")

    assert response.status_code == 409
    assert (error(response)["code"], error(response)["field"]) == ("license_revoked", field)
    stored = License.objects.get(pk=license.pk)
    assert (stored.expires_at, stored.max_activations, stored.limit_usage, stored.plan_id, stored.metadata) == (
        license.expires_at,
        license.max_activations,
        license.limit_usage,
        license.plan_id,
        license.metadata,
    )
    assert AuditEvent.objects.count() == events


def test_a_revoked_licenses_owner_and_metadata_still_change(management_client, issued, actor):
    license = services.revoke_license(license=issued.license, actor=actor)

    response = management_client.patch(
        f"/api/v1/licenses/{license.pk}",
        # Sending its terms back as they are is no change.
        {"metadata": {"refund": "R-1"}, "customer_email": "grace@example.com", "max_activations": 3},
        format="json",
    )

    assert response.status_code == 200
    stored = License.objects.get(pk=license.pk)
    assert (stored.metadata, stored.customer.email, stored.status) == (
        {"refund": "R-1"},
        "grace@example.com",
        "revoked",
    )


def test_extend_by_calendar_months(management_client, plan):
    # Far ahead: a lapsed license would be extended from today instead.
    license = make_license(plan=plan, expires_at=datetime(2095, 1, 31, 9, tzinfo=UTC)).license

    response = management_client.post(f"/api/v1/licenses/{license.pk}/extend", {"months": 13}, format="json")

    assert response.status_code == 200
    # January 31st and 13 months: February has no 31st, so its last day.
    assert License.objects.get(pk=license.pk).expires_at == datetime(2096, 2, 29, 9, tzinfo=UTC)


@pytest.mark.parametrize("months", [120_000, 10**15])
def test_extending_by_months_past_the_calendar_is_400(management_client, plan, months):
    license = make_license(plan=plan, expires_at=datetime(2027, 1, 31, 9, tzinfo=UTC)).license

    response = management_client.post(f"/api/v1/licenses/{license.pk}/extend", {"months": months}, format="json")

    assert (response.status_code, error(response)["field"]) == (400, "months")


@pytest.mark.parametrize(
    "body", [{}, {"days": 0}, {"days": 3, "expires_at": None}, {"days": "3"}, {"days": 3, "months": 1}, {"months": 0}]
)
def test_extend_needs_days_or_a_date(management_client, issued, body):
    response = management_client.post(f"/api/v1/licenses/{issued.license.pk}/extend", body, format="json")

    assert response.status_code == 400
    assert error(response)["field"] in {"days", "months"}


def test_list_and_deactivate_a_licenses_devices(management_client, issued, actor):
    old = activate(issued, "old").activation
    services.deactivate_activation(activation=old, actor=actor)
    live = activate(issued, "live").activation
    base = f"/api/v1/licenses/{issued.license.pk}/activations"

    listing = management_client.get(base).json()["results"]
    response = management_client.post(f"{base}/{live.pk}/deactivate")

    assert {item["fingerprint"]: item["deactivated_at"] is None for item in listing} == {"old": False, "live": True}
    again = management_client.post(f"{base}/{live.pk}/deactivate")

    assert response.status_code == 200
    assert (response.json()["deactivated_by_kind"], response.json()["already_inactive"]) == ("api_key", False)
    assert issued.license.activations.live().count() == 0
    assert (again.status_code, again.json()["already_inactive"]) == (200, True)
    assert again.json()["deactivated_at"] == response.json()["deactivated_at"]


def test_support_frees_every_device_of_a_license_in_one_call(management_client, issued, plan, actor):
    freed_before = activate(issued, "old").activation
    services.deactivate_activation(activation=freed_before, actor=actor)
    laptop, desktop = (activate(issued, name).activation for name in ["laptop", "desktop"])
    theirs = activate(make_license(plan=plan), "theirs").activation
    path = f"/api/v1/licenses/{issued.license.pk}/activations/deactivate"

    response = management_client.post(path)
    again = management_client.post(path)

    assert response.status_code == 200
    freed = response.json()["deactivated"]
    assert {device["id"] for device in freed} == {str(laptop.pk), str(desktop.pk)}
    assert {device["deactivated_by_kind"] for device in freed} == {"api_key"}
    assert issued.license.activations.live().count() == 0
    assert Activation.objects.get(pk=theirs.pk).is_live
    assert AuditEvent.objects.filter(action="activation.deactivated", actor_kind="api_key").count() == 2
    assert (again.status_code, again.json()) == (200, {"deactivated": []})


def test_freeing_every_device_takes_a_read_write_key_made_for_the_vendors_systems(
    api_client, read_only_api_key, issued, actor
):
    activate(issued, "laptop")
    path = f"/api/v1/licenses/{issued.license.pk}/activations/deactivate"
    apps_key = services.create_api_key(name="photon app", apps_only=True, actor=actor).key

    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {read_only_api_key.key}")
    read_only = api_client.post(path)
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {apps_key}")
    for_apps = api_client.post(path)

    assert (read_only.status_code, error(read_only)["message"]) == (403, "This API key is read-only.")
    assert for_apps.status_code == 403
    assert issued.license.activations.live().count() == 1


def test_freeing_every_device_of_no_license_is_404(management_client):
    response = management_client.post(f"/api/v1/licenses/{uuid.uuid4()}/activations/deactivate")

    assert (response.status_code, error(response)["code"]) == (404, "not_found")


def test_freeing_every_device_refuses_a_body(management_client, issued):
    activate(issued, "laptop")

    response = management_client.post(
        f"/api/v1/licenses/{issued.license.pk}/activations/deactivate", {"fingerprint": "laptop"}, format="json"
    )

    assert (response.status_code, error(response)["field"]) == (400, "fingerprint")
    assert issued.license.activations.live().count() == 1


def test_a_device_of_another_license_is_404(management_client, issued, plan):
    theirs = activate(make_license(plan=plan), "theirs").activation

    response = management_client.post(f"/api/v1/licenses/{issued.license.pk}/activations/{theirs.pk}/deactivate")

    assert response.status_code == 404
    assert error(response)["message"] == "This license has no activation with this id."
    assert Activation.objects.get(pk=theirs.pk).is_live


# ---------------------------------------------------------------- devices brought over from another server

POLAR_ACTIVATION_ID = "9b4e2a57-3c1d-4f8e-a6b2-7d5c0e1f2a3b"


def import_device(client, license: License, **body):
    return client.post(f"/api/v1/licenses/{license.pk}/activations", body, format="json")


def test_an_imported_device_keeps_its_id_and_history(management_client, api_key, issued):
    activated_at = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)

    response = import_device(
        management_client,
        issued.license,
        id=POLAR_ACTIVATION_ID,
        name="Studio Mac",
        metadata={"os": "macOS"},
        conditions={"major_version": 4},
        created_at=activated_at.isoformat(),
    )

    assert response.status_code == 201
    body = response.json()
    assert (body["id"], body["fingerprint"], body["name"], body["conditions"]) == (
        POLAR_ACTIVATION_ID,
        None,
        "Studio Mac",
        {"major_version": 4},
    )
    # Last seen when activated, until the app's next call here: a device left unused looks it.
    assert (body["created_at"], body["last_seen_at"], body["deactivated_at"]) == (
        "2025-03-04T05:06:07Z",
        "2025-03-04T05:06:07Z",
        None,
    )
    stored = Activation.objects.get(pk=POLAR_ACTIVATION_ID)
    assert (stored.license_id, stored.is_live, stored.created_at) == (issued.license.pk, True, activated_at)
    event = AuditEvent.objects.get(target_id=POLAR_ACTIVATION_ID)
    assert (event.action, event.actor_kind, event.actor_id, event.license_id) == (
        "activation.imported",
        "api_key",
        str(api_key.api_key.pk),
        issued.license.pk,
    )
    assert (event.changes["created_at"], event.changes["conditions"], event.changes["name"]) == (
        [None, "2025-03-04T05:06:07Z"],
        [None, {"major_version": 4}],
        [None, "Studio Mac"],
    )
    listed = management_client.get(f"/api/v1/licenses/{issued.license.pk}/activations").json()["results"]
    assert [device["id"] for device in listed] == [POLAR_ACTIVATION_ID]


def test_an_imported_device_keeps_when_the_old_server_last_heard_from_it(management_client, issued):
    response = import_device(
        management_client, issued.license, created_at="2025-03-04T05:06:07Z", last_seen_at="2026-11-01T09:00:00+01:00"
    )

    assert response.status_code == 201
    assert response.json()["last_seen_at"] == "2026-11-01T08:00:00Z"


def test_importing_conditions_that_are_no_object_says_so_in_their_name(management_client, issued):
    response = import_device(management_client, issued.license, conditions="v4")

    assert (error(response)["field"], error(response)["message"]) == ("conditions", "Conditions must be a JSON object.")


def test_an_imported_device_answers_the_native_validate_by_its_id(management_client, api_client, issued):
    import_device(management_client, issued.license, id=POLAR_ACTIVATION_ID, fingerprint="studio-mac")

    response = api_client.post(
        "/api/v1/licenses/validate", {"key": issued.key, "activation_id": POLAR_ACTIVATION_ID}, format="json"
    )

    assert response.status_code == 200
    assert (response.json()["valid"], response.json()["activation"]["fingerprint"]) == (True, "studio-mac")


def test_an_imported_device_takes_a_slot_and_the_limit_holds(management_client, issued):
    for number in range(3):
        assert import_device(management_client, issued.license, fingerprint=f"device-{number}").status_code == 201

    response = import_device(management_client, issued.license, id=POLAR_ACTIVATION_ID, fingerprint="device-4")

    assert response.status_code == 403
    assert error(response)["code"] == "activation_limit_reached"
    assert issued.license.activations.count() == 3
    assert not AuditEvent.objects.filter(target_id=POLAR_ACTIVATION_ID).exists()
    again = services.activate_license(license_key=issued.key, fingerprint="device-0", actor=services.Actor.app())
    assert again.created is False


@pytest.mark.parametrize("deactivated", [False, True])
def test_an_imported_id_that_is_taken_is_409_naming_it(management_client, issued, plan, actor, deactivated):
    theirs = activate(make_license(plan=plan), "theirs").activation
    if deactivated:
        services.deactivate_activation(activation=theirs, actor=actor)

    response = import_device(management_client, issued.license, id=str(theirs.pk), fingerprint="mine")

    assert response.status_code == 409
    assert (error(response)["code"], error(response)["field"]) == ("duplicate_activation", "id")
    assert not issued.license.activations.exists()
    assert Activation.objects.get(pk=theirs.pk).license_id != issued.license.pk


def test_an_import_retried_with_its_idempotency_key_gets_the_first_answer(management_client, issued):
    path = f"/api/v1/licenses/{issued.license.pk}/activations"
    body = {"id": POLAR_ACTIVATION_ID, "name": "Studio Mac"}

    first = management_client.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY="import-1")
    retried = management_client.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY="import-1")

    assert (first.status_code, retried.status_code, retried["Idempotent-Replayed"]) == (201, 201, "true")
    assert retried.json() == first.json()
    assert issued.license.activations.count() == 1


def test_importing_a_fingerprint_already_live_on_the_license_is_409_naming_it(management_client, issued):
    live = activate(issued, "studio-mac").activation

    response = import_device(management_client, issued.license, id=POLAR_ACTIVATION_ID, fingerprint=" studio-mac\n")

    assert response.status_code == 409
    assert error(response)["field"] == "fingerprint"
    assert str(live.pk) in error(response)["message"]
    assert list(issued.license.activations.values_list("pk", flat=True)) == [live.pk]


@pytest.mark.parametrize("state", ["suspended", "revoked", "expired"])
def test_an_imported_device_of_a_license_not_in_use_is_kept_as_the_old_server_had_it(
    management_client, issued, actor, state
):
    if state == "expired":
        License.objects.filter(pk=issued.license.pk).update(expires_at=timezone.now() - timedelta(days=1))
    else:
        change = {"suspended": services.suspend_license, "revoked": services.revoke_license}[state]
        change(license=issued.license, actor=actor)

    response = import_device(management_client, issued.license, id=POLAR_ACTIVATION_ID)

    assert response.status_code == 201
    assert Activation.objects.get(pk=POLAR_ACTIVATION_ID).is_live


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"id": "8f3e2b1a-5c6d-4e9f-8a0b-1c2d3e4f5g6h"}, "id"),
        ({"id": 42}, "id"),
        ({"created_at": "2999-01-01T00:00:00Z"}, "created_at"),
        ({"created_at": "1969-12-31T23:59:59Z"}, "created_at"),
        ({"created_at": None}, "created_at"),
        ({"last_seen_at": "2999-01-01T00:00:00Z"}, "last_seen_at"),
        ({"created_at": "2025-03-04T05:06:07Z", "last_seen_at": "2025-03-04T05:06:06Z"}, "last_seen_at"),
        ({"created_at": "yesterday"}, "created_at"),
        ({"metadata": ["os"]}, "metadata"),
        ({"conditions": "v4"}, "conditions"),
        ({"fingerprint": "x" * 256}, "fingerprint"),
        ({"fingerprint": "a\x00b"}, "fingerprint"),
        ({"label": "Studio Mac"}, "label"),
    ],
)
def test_an_import_with_bad_input_is_400_naming_the_field(management_client, issued, body, field):
    response = import_device(management_client, issued.license, **body)

    assert response.status_code == 400
    assert error(response)["field"] == field
    assert not Activation.objects.exists()


def test_only_a_read_write_management_key_imports_devices(api_client, read_only_api_key, issued):
    apps_key = services.create_api_key(name="photon app", apps_only=True, actor=services.Actor.system()).key
    answers = []
    for key in (read_only_api_key.key, apps_key):
        api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
        answers.append(import_device(api_client, issued.license, id=POLAR_ACTIVATION_ID).status_code)

    assert answers == [403, 403]
    assert not Activation.objects.exists()


# ---------------------------------------------------------------- secrets stay out of logs


def test_no_key_or_secret_appears_in_logs(api_client, management_client, api_key, issued, caplog):
    caplog.set_level(logging.DEBUG)
    activate(issued, "device-1")

    api_client.post("/api/v1/licenses/activate", {"key": issued.key, "fingerprint": "x" * 300}, format="json")
    api_client.post("/api/v1/licenses/validate", {"key": issued.key + "-wrong"}, format="json")
    management_client.get(f"/api/v1/licenses/{issued.license.pk}")
    management_client.post("/api/v1/licenses", {"product": 999}, format="json")
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key.key}x")
    api_client.get("/api/v1/licenses")

    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert caplog.records
    assert issued.key not in logged
    assert api_key.key not in logged


def test_schema_validates_and_docs_need_no_cdn(client):
    out = io.StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", stdout=out)

    docs = client.get("/api/docs/")

    assert "/api/v1/licenses/activate" in out.getvalue()
    assert docs.status_code == 200
    page = docs.content.decode()
    assert "drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in page
    # Every script and stylesheet from this server: none from another host (a CDN). The page's CSRF
    # token is random text, so a bare "cdn" in it proves nothing either way.
    assert re.findall(r'(?:src|href)="((?:https?:)?//[^"]*)"', page) == []
    assert client.get("/api/schema/").status_code == 200


@pytest.mark.parametrize("query", ["version=%0d", "version=%00", "format=json&version=2", "lang=%00", "lang=x%0dy"])
def test_the_schema_ignores_a_version_or_language_it_does_not_have(client, query):
    response = client.get(f"/api/schema/?{query}")

    assert response.status_code == 200
    assert response["Content-Disposition"] in (
        'inline; filename="Licensing server API.yaml"',
        'inline; filename="Licensing server API.json"',
    )


def test_the_schema_is_built_once_and_served_alike_in_every_format(client, monkeypatch):
    builds = []
    build = SchemaGenerator.get_schema
    monkeypatch.setattr(
        SchemaGenerator, "get_schema", lambda *args, **kwargs: builds.append(1) or build(*args, **kwargs)
    )
    monkeypatch.setattr(BuiltOnceSchemaGenerator, "built", {})

    as_json = client.get("/api/schema/?format=json").json()
    as_yaml = yaml.safe_load(client.get("/api/schema/").content)
    other_languages = [client.get(f"/api/schema/?format=json&lang={lang}").json() for lang in ("de", "zz1", "zz2")]

    assert as_json == as_yaml
    assert "/api/v1/licenses/validate" in as_json["paths"]
    assert other_languages == [as_json] * 3
    assert len(builds) == 1


def openapi(client) -> dict:
    return client.get("/api/schema/?format=json").json()


def test_schema_documents_the_refusals_every_operation_can_answer(client):
    paths = openapi(client)["paths"]

    assert {"401", "403", "404"} <= set(paths["/api/v1/products/{id}"]["get"]["responses"])
    assert {"400", "401", "403", "404"} <= set(paths["/api/v1/licenses"]["get"]["responses"])
    assert {"400", "401", "403", "413", "415"} <= set(paths["/api/v1/plans"]["post"]["responses"])
    # Found by the schema fuzz: the anti-churn refusal answered a 403 the schema did not list.
    assert {"400", "403", "404", "413", "415", "429"} <= set(paths["/api/v1/licenses/deactivate"]["post"]["responses"])
    assert "401" not in paths["/api/v1/licenses/validate"]["post"]["responses"]
    guarded = paths["/api/v1/licenses"]["get"]["responses"]["429"]["description"]
    assert guarded == "This address sent too many unknown, revoked or expired API keys; see Retry-After."
    assert all("406" in operation["responses"] for path in paths.values() for operation in path.values())
    issue = next(each for each in paths["/api/v1/licenses"]["post"]["parameters"] if each["name"] == "Idempotency-Key")
    assert issue["schema"] == {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7E]+$"}


def test_schema_documents_the_headers_and_error_codes_a_client_acts_on(client):
    document = openapi(client)
    issue = document["paths"]["/api/v1/licenses"]["post"]["responses"]
    deactivate = document["paths"]["/api/v1/licenses/deactivate"]["post"]["responses"]
    codes = document["components"]["schemas"]["ErrorDetail"]["properties"]["code"]["description"]

    assert "Idempotent-Replayed" in issue["201"]["headers"]
    assert "Retry-After" in deactivate["429"]["headers"]
    assert "Retry-After" not in deactivate["200"].get("headers", {})
    for code in ["activation_limit_reached", "rate_limited", "idempotency_key_reused", "invalid_input", "not_found"]:
        assert code in codes
    assert "sign_in_link_invalid" not in codes


def test_schema_gives_license_call_refusals_their_signed_meta(client):
    schema = openapi(client)
    activate = schema["paths"]["/api/v1/licenses/activate"]["post"]["responses"]
    components = schema["components"]["schemas"]

    def fields(answer) -> set[str]:
        name = answer["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        return set(components[name]["properties"])

    for status in ("400", "403", "404", "413", "415", "429"):
        assert fields(activate[status]) == {"error", "meta"}, status
    assert "call" in components["Meta"]["required"]
    assert fields(schema["paths"]["/api/v1/plans"]["post"]["responses"]["400"]) == {"error"}


def test_schema_gives_list_filters_and_page_bounds_to_listing_only(client):
    """Found by the schema fuzz: issuing a license documented the list's filters, which it ignores,
    and pages of 0 were in the schema but refused."""
    licenses = openapi(client)["paths"]["/api/v1/licenses"]
    listing = {parameter["name"]: parameter["schema"] for parameter in licenses["get"]["parameters"]}

    assert {"product", "customer_email", "status", "expired", "page", "page_size"} <= set(listing)
    assert (listing["page"]["minimum"], listing["page_size"]["minimum"]) == (1, 1)
    assert [parameter["name"] for parameter in licenses["post"]["parameters"]] == ["Idempotency-Key"]


def test_the_schema_is_the_same_on_every_database(client):
    """SQLite's integer columns are 64-bit, PostgreSQL's 32: a field bounded only by its column gave
    generated clients a bigint on one and a number on the other."""
    plan = openapi(client)["components"]["schemas"]["Plan"]["properties"]

    assert (plan["duration_value"]["maximum"], plan["duration_value"].get("format")) == (2_147_483_647, None)


def schema_errors(schema: dict, path: str, method: str, answer) -> list[str]:
    """What a strict JSON Schema validator finds wrong with an answer, against the schema's own."""
    documented = schema["paths"][path][method]["responses"][str(answer.status_code)]
    root = {**documented["content"]["application/json"]["schema"], "components": schema["components"]}
    return [error.message for error in jsonschema.Draft202012Validator(root).iter_errors(answer.json())]


def test_an_ownerless_license_and_an_active_device_render_as_the_schema_says(client, management_client, product):
    # Fuzz findings, and then a generated client's strict validator: the schema refused null for the
    # owner, "" for who deactivated, and (OpenAPI 3.0's nullable beside a $ref) every null object.
    schema = openapi(client)
    created = management_client.post("/api/v1/licenses", {"product": product.pk}, format="json")
    license_id = created.json()["id"]
    activate(services.IssuedLicense(License.objects.get(pk=license_id), created.json()["key"]), "laptop")
    listed = management_client.get("/api/v1/licenses")
    devices = management_client.get(f"/api/v1/licenses/{license_id}/activations")
    validated = client.post("/api/v1/licenses/validate", {"key": "NO-SUCH-KEY"}, content_type="application/json")

    assert (created.json()["customer"], devices.json()["results"][0]["deactivated_by_kind"]) == (None, "")
    assert (listed.json()["next"], validated.json()["license"]) == (None, None)
    assert schema_errors(schema, "/api/v1/licenses", "post", created) == []
    assert schema_errors(schema, "/api/v1/licenses", "get", listed) == []
    assert schema_errors(schema, "/api/v1/licenses/{id}/activations", "get", devices) == []
    assert schema_errors(schema, "/api/v1/licenses/validate", "post", validated) == []


def test_refusals_carry_the_facts_the_schema_documents(client):
    schema = openapi(client)
    issued = make_license(plan=make_plan(max_activations=1))
    activate(issued, "laptop", name="Laptop")

    refused = client.post(
        "/api/v1/licenses/activate", {"key": issued.key, "fingerprint": "phone"}, content_type="application/json"
    )

    assert refused.status_code == 403
    facts = refused.json()["error"]
    assert (facts["limit"], facts["used"], [device["name"] for device in facts["devices"]]) == (1, 1, ["Laptop"])
    documented = schema["components"]["schemas"]["ErrorDetail"]["properties"]
    assert {"limit", "used", "devices", "errors", "retry_after", "available_at"} <= set(documented)
    assert schema_errors(schema, "/api/v1/licenses/activate", "post", refused) == []


def test_operations_are_not_described_by_how_the_code_works(client):
    """A generated-client trial: 17 operations read "Authenticated by API key, never one made for
    apps…", and every request body "A field the serializer does not take is an error…"."""
    schema = openapi(client)
    descriptions = [
        operation.get("description", "") for path in schema["paths"].values() for operation in path.values()
    ]

    assert not [text for text in descriptions if text.startswith(("Authenticated by API key", "A list whose"))]
    assert "description" not in schema["components"]["schemas"]["ProductRequest"]


def test_schema_refuses_unknown_fields_as_the_api_does(client, management_client):
    request = openapi(client)["components"]["schemas"]["ProductRequest"]

    response = management_client.post("/api/v1/products", {"name": "X", "slug": "x", "colour": "red"}, format="json")

    assert request["additionalProperties"] is False
    assert response.status_code == 400
    assert response.json()["error"]["field"] == "colour"


def test_products_and_customers_can_be_listed(management_client, product):
    make_product()
    make_customer()

    assert management_client.get("/api/v1/products").json()["count"] == 2
    assert management_client.get("/api/v1/customers").json()["count"] == 1


UUID_IN_PATH = uuid.uuid4()


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/api/v1/licenses/99999", "There is no license with this id: license ids are UUIDs in lower case."),
        (
            "/api/v1/licenses/not-a-uuid/suspend",
            "There is no license with this id: license ids are UUIDs in lower case.",
        ),
        ("/api/v1/customers/abc", "There is no customer with this id: customer ids are whole numbers."),
        ("/api/v1/products/1.5", "There is no product with this id: product ids are whole numbers."),
        (
            f"/api/v1/licenses/{uuid.uuid4()}/activations/7/deactivate",
            "There is no activation with this id: activation ids are UUIDs in lower case.",
        ),
        ("/api/v2/anything", "There is no such API endpoint."),
        (
            "/api/v1/licenses/validate/",
            "There is no such API endpoint: paths end without a slash (/api/v1/licenses/validate).",
        ),
        ("/api/v1/licenses/", "There is no such API endpoint: paths end without a slash (/api/v1/licenses)."),
        (
            f"/api/v1/licenses/{UUID_IN_PATH}/activations/",
            f"There is no such API endpoint: paths end without a slash (/api/v1/licenses/{UUID_IN_PATH}/activations).",
        ),
        ("/api/v1/frobnicate/", "There is no such API endpoint."),
        (
            f"/api/v1/licenses/{str(uuid.uuid4()).upper()}",
            "There is no license with this id: license ids are UUIDs in lower case.",
        ),
        (f"/api/v1/licenses/{uuid.uuid4()}/frobnicate", "There is no such API endpoint."),
        ("/api/v1/products/1/frobnicate", "There is no such API endpoint."),
    ],
)
def test_unknown_paths_answer_json_404(management_client, path, message):
    response = management_client.get(path)

    assert response.status_code == 404
    assert error(response) == {"code": "not_found", "message": message}


@pytest.mark.parametrize("path", ["/api", "/compat"])
def test_a_post_to_a_bare_prefix_is_json_404_not_a_redirect(client, settings, path):
    settings.DEBUG = True  # Django's slash redirect then fails on a POST, rather than answering 301

    response = client.post(path, "{}", content_type="application/json")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(("value", "status"), [(5.0, 200), (5.5, 400), (True, 400), ("5", 400)])
def test_a_whole_number_may_be_written_with_a_decimal_point_as_json_schema_allows(
    management_client, issued, value, status
):
    response = management_client.patch(
        f"/api/v1/licenses/{issued.license.pk}", {"max_activations": value}, format="json"
    )

    assert response.status_code == status
    expected = 5 if status == 200 else issued.license.max_activations
    assert License.objects.get(pk=issued.license.pk).max_activations == expected


@pytest.mark.parametrize("days", [3_000_000, 99_999_999])
def test_extending_past_the_calendar_is_400(management_client, issued, days):
    response = management_client.post(f"/api/v1/licenses/{issued.license.pk}/extend", {"days": days}, format="json")

    assert response.status_code == 400
    assert error(response)["field"] == "days"


def test_extending_from_the_last_possible_expiry_is_400(management_client, issued):
    management_client.patch(
        f"/api/v1/licenses/{issued.license.pk}", {"expires_at": "9999-12-31T23:59:59Z"}, format="json"
    )

    response = management_client.post(f"/api/v1/licenses/{issued.license.pk}/extend", {"days": 1}, format="json")

    assert response.status_code == 400


def test_actions_refuse_a_body_they_do_not_take(management_client, issued):
    response = management_client.post(f"/api/v1/licenses/{issued.license.pk}/suspend", {"note": "x"}, format="json")

    assert response.status_code == 400
    assert error(response)["field"] == "note"
    assert License.objects.get(pk=issued.license.pk).status == "active"


def test_a_status_change_keeps_its_reason_in_the_audit_trail(management_client, issued):
    base = f"/api/v1/licenses/{issued.license.pk}"

    suspended = management_client.post(f"{base}/suspend", {"reason": "Invoice 1042 unpaid"}, format="json")
    reinstated = management_client.post(f"{base}/reinstate")
    too_long = management_client.post(f"{base}/revoke", {"reason": "x" * 501}, format="json")

    assert (suspended.status_code, reinstated.status_code) == (200, 200)
    assert (too_long.status_code, error(too_long)["field"]) == (400, "reason")
    assert License.objects.get(pk=issued.license.pk).status == "active"
    trail = management_client.get(f"/api/v1/audit-events?license={issued.license.pk}").json()["results"]
    changes = {event["action"]: event["changes"] for event in trail}
    assert changes["license.suspended"] == {"status": ["active", "suspended"], "reason": "Invoice 1042 unpaid"}
    assert changes["license.reinstated"] == {"status": ["suspended", "active"]}


@pytest.mark.parametrize("reason", ["   ", None])
def test_a_reason_of_spaces_only_or_null_is_no_reason(management_client, issued, reason):
    response = management_client.post(
        f"/api/v1/licenses/{issued.license.pk}/suspend", {"reason": reason}, format="json"
    )

    assert response.status_code == 200
    assert AuditEvent.objects.get(action="license.suspended").changes == {"status": ["active", "suspended"]}


@pytest.fixture(params=["customer", "customer_external_id"])
def owner_by_id(request, customer) -> dict:
    """The fixture's customer, named as a billing system may: by its id here, or by the billing's own."""
    customer.external_id = "cus_ada"
    customer.save()
    return {request.param: {"customer": customer.pk, "customer_external_id": "cus_ada"}[request.param]}


def test_a_customer_named_by_id_keeps_its_name(management_client, plan, owner_by_id):

    response = management_client.post(
        "/api/v1/licenses",
        {"product": plan.product.pk, **owner_by_id, "customer_name": "Someone Else"},
        format="json",
    )

    assert response.status_code == 400
    assert error(response)["field"] == "customer_name"
    assert error(response)["message"] == (
        "A customer named by its id keeps its own name: customer_name goes with customer_email."
    )
    assert not License.objects.exists()


def test_a_license_is_issued_to_a_customer_named_by_id_or_billing_id(management_client, plan, customer, owner_by_id):

    response = management_client.post(
        "/api/v1/licenses", {"product": plan.product.pk, "plan": plan.pk, **owner_by_id}, format="json"
    )

    assert response.status_code == 201
    assert response.json()["customer"]["id"] == customer.pk
    assert License.objects.get(pk=response.json()["id"]).customer == customer
    assert Customer.objects.count() == 1


@pytest.mark.parametrize(
    ("owner", "message"),
    [
        ({"customer_external_id": "cus_nobody"}, "There is no customer with this external id."),
        ({"customer": 999999}, "There is no customer with this id."),
        (
            {"customer": "the fixture's", "customer_email": "ada@example.com"},
            "Name the owner once: by customer or by customer_email.",
        ),
    ],
)
def test_an_owner_named_wrongly_or_twice_issues_nothing(management_client, plan, customer, owner, message):
    customer.external_id = "cus_ada"
    customer.save()
    if owner.get("customer") == "the fixture's":
        owner = {**owner, "customer": customer.pk}

    response = management_client.post("/api/v1/licenses", {"product": plan.product.pk, **owner}, format="json")

    assert response.status_code == 400
    assert error(response)["message"] == message
    assert error(response)["field"] in owner
    assert not License.objects.exists()


def issue_to(client, plan, **owner):
    return client.post("/api/v1/licenses", {"product": plan.product.pk, **owner}, format="json")


def test_a_new_billing_customer_gets_a_license_in_one_call(management_client, plan):
    owner = {"customer_email": "new@example.com", "customer_external_id": "cus_new", "customer_name": "New"}

    first = issue_to(management_client, plan, **owner)
    second = issue_to(management_client, plan, **owner)

    assert (first.status_code, second.status_code) == (201, 201)
    customer = Customer.objects.get()
    assert (customer.email, customer.external_id, customer.name) == ("new@example.com", "cus_new", "New")
    assert first.json()["customer"]["id"] == second.json()["customer"]["id"] == customer.pk


def test_the_billing_id_finds_its_customer_whatever_the_e_mail_says(management_client, plan, customer):
    customer.external_id = "cus_ada"
    customer.save()

    response = issue_to(management_client, plan, customer_email="ada.new@example.com", customer_external_id="cus_ada")

    assert response.json()["customer"]["id"] == customer.pk
    assert Customer.objects.count() == 1
    assert Customer.objects.get().email == customer.email


def test_a_customer_found_by_e_mail_takes_the_billing_id_it_lacks(management_client, plan, customer):
    response = issue_to(management_client, plan, customer_email=customer.email, customer_external_id="cus_ada")

    assert response.status_code == 201
    assert Customer.objects.get(pk=customer.pk).external_id == "cus_ada"
    assert AuditEvent.objects.get(action="customer.changed").changes == {"external_id": ["", "cus_ada"]}


def test_a_license_moves_to_a_new_billing_customer_in_one_call(management_client, issued):
    response = management_client.patch(
        f"/api/v1/licenses/{issued.license.pk}",
        {"customer_email": "buyer@example.com", "customer_external_id": "cus_buyer", "customer_name": "Buyer"},
        format="json",
    )

    assert response.status_code == 200
    owner = License.objects.get(pk=issued.license.pk).customer
    assert (owner.email, owner.external_id, owner.name) == ("buyer@example.com", "cus_buyer", "Buyer")


def test_a_customer_found_by_e_mail_with_another_billing_id_is_409(management_client, plan, customer):
    customer.external_id = "cus_ada"
    customer.save()

    response = issue_to(management_client, plan, customer_email=customer.email, customer_external_id="cus_other")

    assert response.status_code == 409
    assert (error(response)["code"], error(response)["field"]) == ("duplicate_record", "customer_external_id")
    assert not License.objects.exists()
    assert Customer.objects.get(pk=customer.pk).external_id == "cus_ada"


def test_a_licenses_owner_changes_to_a_customer_named_by_billing_id(management_client, issued, other_customer):
    other_customer.external_id = "cus_grace"
    other_customer.save()

    response = management_client.patch(
        f"/api/v1/licenses/{issued.license.pk}", {"customer_external_id": "cus_grace"}, format="json"
    )

    assert response.status_code == 200
    assert response.json()["customer"]["email"] == "grace@example.com"
    assert License.objects.get(pk=issued.license.pk).customer == other_customer


def test_a_license_moved_to_a_new_e_mail_names_the_customer_made_for_it(management_client, issued, customer):
    path = f"/api/v1/licenses/{issued.license.pk}"

    moved = management_client.patch(
        path, {"customer_email": "new.owner@example.com", "customer_name": "New Owner"}, format="json"
    )
    nameless = management_client.patch(path, {"customer_name": "Someone"}, format="json")
    by_id = management_client.patch(path, {"customer": customer.pk, "customer_name": "Someone"}, format="json")

    assert moved.status_code == 200
    assert moved.json()["customer"]["name"] == "New Owner"
    assert Customer.objects.get(email="new.owner@example.com").name == "New Owner"
    assert (nameless.status_code, error(nameless)["field"]) == (400, "customer_email")
    assert (by_id.status_code, error(by_id)["field"]) == (400, "customer_name")
    assert License.objects.get(pk=issued.license.pk).customer.email == "new.owner@example.com"


def test_customer_name_needs_customer_email(management_client, plan):
    response = management_client.post(
        "/api/v1/licenses", {"product": plan.product.pk, "customer_name": "Nameless"}, format="json"
    )

    assert response.status_code == 400
    assert error(response)["field"] == "customer_email"


def test_list_expired_licenses(management_client, plan):
    expired = make_license(plan=plan, expires_at=timezone.now() - timedelta(days=1)).license
    current = make_license(plan=plan).license
    perpetual = make_license(product=plan.product).license

    def ids(expired_filter):
        response = management_client.get("/api/v1/licenses", {"expired": expired_filter})
        return {item["id"] for item in response.json()["results"]}

    assert ids("true") == {str(expired.pk)}
    assert ids("false") == {str(current.pk), str(perpetual.pk)}


@pytest.mark.parametrize("limit", [10**30, 2**31])
def test_an_activation_limit_beyond_the_database_is_400(management_client, issued, plan, limit):
    created = management_client.post(
        "/api/v1/licenses", {"product": plan.product.pk, "max_activations": limit}, format="json"
    )
    patched = management_client.patch(
        f"/api/v1/licenses/{issued.license.pk}", {"max_activations": limit}, format="json"
    )
    plan_response = management_client.patch(f"/api/v1/plans/{plan.pk}", {"max_activations": limit}, format="json")

    assert (created.status_code, patched.status_code, plan_response.status_code) == (400, 400, 400)
    assert error(created)["field"] == error(patched)["field"] == error(plan_response)["field"] == "max_activations"


def test_a_huge_product_filter_is_400(management_client):
    response = management_client.get("/api/v1/licenses", {"product": "9" * 30})

    assert response.status_code == 400
    assert error(response)["field"] == "product"


@pytest.mark.parametrize(
    "extra", [{"plan": "other"}, {"key": "TAKEN-KEY-0001"}, {"metadata": "oops"}], ids=["plan", "key", "metadata"]
)
def test_a_refused_license_leaves_no_new_customer_behind(management_client, plan, extra):
    make_license(plan=plan, key="TAKEN-KEY-0001")
    data = {"product": plan.product.pk, "customer_email": "orphan@example.com", **extra}
    if data.get("plan") == "other":
        data["plan"] = make_plan().pk

    response = management_client.post("/api/v1/licenses", data, format="json")

    assert response.status_code in {400, 409}
    assert not Customer.objects.filter(email="orphan@example.com").exists()
    assert not AuditEvent.objects.filter(action="customer.created", actor_kind="api_key").exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": 42, "slug": "nova"}, "name"),
        ({"name": "Nova", "slug": "nova", "is_active": "yes"}, "is_active"),
        ({"name": "Nova", "slug": "nova", "id": 7}, "id"),
        ({"name": "Nova", "slug": "nova", "colour": "red"}, "colour"),
    ],
)
def test_catalog_input_is_strict(management_client, body, field):
    response = management_client.post("/api/v1/products", body, format="json")

    assert response.status_code == 400
    assert error(response)["field"] == field
    assert not Product.objects.exists()


def test_no_license_can_be_issued_for_an_inactive_product(management_client, plan, actor):
    product = plan.product
    product.is_active = False
    services.save_catalog_record(record=product, actor=actor)

    response = management_client.post("/api/v1/licenses", {"product": product.pk}, format="json")

    assert response.status_code == 403
    assert (error(response)["code"], error(response)["field"]) == ("product_inactive", "product")
    assert License.objects.count() == 0


@pytest.mark.parametrize("path", ["/compat/polar", "/compat/kelviq/api/v1", "/compat/getkeymanager/x", "/compat/nope"])
def test_stray_compat_paths_answer_json_404(api_client, path):
    response = api_client.post(path, {}, format="json")

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"


def test_a_refused_api_key_is_logged_without_the_key(api_client, caplog):
    caplog.set_level(logging.WARNING, logger="licensing.api.authentication")
    api_client.credentials(HTTP_AUTHORIZATION="Bearer lsk_guessed-secret-value-0123456789")

    api_client.get("/api/v1/licenses")

    assert "Refused API key starting 'lsk_' from 127.0.0.1" in caplog.text
    assert "guessed-secret-value" not in caplog.text


def test_a_refused_key_shaped_as_this_servers_is_logged_by_what_the_admin_shows_of_keys(api_client, caplog):
    # Such as a key left under the secret before a rotation: staff find it in the admin's list.
    key = keys.generate_api_key()
    caplog.set_level(logging.WARNING, logger="licensing.api.authentication")
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")

    api_client.get("/api/v1/licenses")

    assert f"Refused API key starting '{key[:12]}' from 127.0.0.1" in caplog.text
    assert key[12:] not in caplog.text


@pytest.mark.parametrize("page", ["abc", "0", "-1", "1.5"])
def test_a_page_that_is_no_whole_number_is_a_field_error(management_client, page):
    response = management_client.get("/api/v1/licenses", {"page": page})

    assert response.status_code == 400
    assert error(response)["field"] == "page"


def test_a_page_past_the_last_is_not_found(management_client, issued):
    past_the_last = management_client.get("/api/v1/licenses", {"page": str(10**20)})

    assert management_client.get("/api/v1/licenses", {"page": "last"}).status_code == 200
    assert management_client.get("/api/v1/licenses", {"page": "2"}).status_code == 404
    assert past_the_last.status_code == 404
    assert error(past_the_last)["message"] == f"There is no page {10**20}: the list ends before it."


@pytest.mark.parametrize("page_size", ["abc", "0", "-5", "2.5", ""])
def test_a_page_size_that_is_no_whole_number_is_a_field_error(management_client, issued, page_size):
    response = management_client.get("/api/v1/licenses", {"page_size": page_size})

    assert response.status_code == 400
    assert error(response)["field"] == "page_size"
    assert "200" in error(response)["message"]


def test_a_page_size_above_the_most_is_not_an_error(management_client, issued):
    response = management_client.get("/api/v1/licenses", {"page_size": "100000"})

    assert response.status_code == 200
    assert response.json()["count"] == len(response.json()["results"]) == 1


def test_a_format_the_api_does_not_offer_is_406_not_a_missing_endpoint(management_client, issued):
    response = management_client.get("/api/v1/licenses", {"format": "xml"})

    assert response.status_code == 406
    assert "format" in error(response)["message"]


def test_a_body_past_djangos_own_upload_limit_is_a_json_413(management_client, settings):
    # Django refuses such a body before DRF's parser; its answer was an HTML "Bad Request (400)" page.
    settings.API_MAX_BODY_BYTES, settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 500, 1_000

    response = management_client.post(
        "/api/v1/customers", {"email": "ada@example.com", "name": "x" * 2_000}, format="json"
    )

    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert not Customer.objects.exists()


# ---------------------------------------------------------------- audit trail


def test_the_audit_trail_lists_every_change_oldest_first_as_the_schema_says(client, management_client, api_key, issued):
    schema = openapi(client)
    device = activate(issued, "laptop", name="Laptop").activation
    management_client.post(f"/api/v1/licenses/{issued.license.pk}/suspend", format="json")

    response = management_client.get("/api/v1/audit-events")

    assert response.status_code == 200
    events = response.json()["results"]
    assert [event["action"] for event in events][-3:] == ["license.created", "activation.created", "license.suspended"]
    created, activated, suspended = events[-3:]
    assert (activated["target_type"], activated["target_id"], activated["license"]) == (
        "licensing.activation",
        str(device.pk),
        str(issued.license.pk),
    )
    assert activated["changes"]["fingerprint"] == [None, "laptop"]
    assert suspended["actor_kind"] == "api_key"
    assert suspended["actor_display"].startswith(f"{api_key.api_key.name} (lsk_")
    assert issued.key not in response.content.decode() and api_key.key not in response.content.decode()
    assert schema_errors(schema, "/api/v1/audit-events", "get", response) == []


def test_the_audit_trail_filters_by_license_action_and_time(management_client, plan, actor):
    first = make_license(plan=plan).license
    second = make_license(plan=plan).license
    services.suspend_license(license=second, actor=actor)
    AuditEvent.objects.filter(license=first).update(created_at=timezone.now() - timedelta(days=2))

    def actions(**filters):
        response = management_client.get("/api/v1/audit-events", filters)
        return [(event["license"], event["action"]) for event in response.json()["results"]]

    since = (timezone.now() - timedelta(days=1)).isoformat()
    assert actions(license=str(first.pk)) == [(str(first.pk), "license.created")]
    assert actions(action="license.suspended") == [(str(second.pk), "license.suspended")]
    assert actions(since=since, license=str(second.pk)) == [
        (str(second.pk), "license.created"),
        (str(second.pk), "license.suspended"),
    ]
    assert (str(first.pk), "license.created") not in actions(since=since)


@pytest.mark.parametrize("query", ["license=", "license=12", "since=yesterday", "action=", "who=staff"])
def test_a_bad_audit_trail_filter_is_400_naming_it(management_client, query):
    response = management_client.get(f"/api/v1/audit-events?{query}")

    assert response.status_code == 400
    assert error(response)["field"] == query.split("=")[0]


def test_the_audit_trail_is_for_keys_of_the_vendors_systems_and_shows_no_staff_matters(
    api_client, read_only_api_key, issued, staff_client
):
    staff_client.post(
        reverse("admin:auth_user_add"),
        {"username": "newhire", "password1": "a-long-test-password", "password2": "a-long-test-password"},
    )
    services.activate_license(
        license_key=issued.key, fingerprint="laptop", actor=services.Actor.app(ip_address="203.0.113.9")
    )
    staff_client.post(
        reverse("admin:licensing_license_changelist"),
        {"action": "suspend", "_selected_action": [str(issued.license.pk)]},
    )
    apps_key = services.create_api_key(name="photon app", apps_only=True, actor=services.Actor.system()).key

    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {apps_key}")
    refused = api_client.get("/api/v1/audit-events")
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {read_only_api_key.key}")
    listed = api_client.get("/api/v1/audit-events")

    assert AuditEvent.objects.filter(action__in=["user.created", "api_key.created", "signing_key.created"]).count() >= 3
    assert AuditEvent.objects.get(action="license.suspended").ip_address == "127.0.0.1"
    assert refused.status_code == 403
    assert listed.status_code == 200
    events = {event["action"]: event for event in listed.json()["results"]}
    assert not {"user.created", "api_key.created", "signing_key.created"} & set(events)
    assert (events["license.suspended"]["actor_kind"], events["license.suspended"]["ip_address"]) == ("staff", None)
    assert events["activation.created"]["ip_address"] == "203.0.113.9"
