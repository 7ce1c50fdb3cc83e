from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from licensing import errors, services
from licensing.models import AuditEvent, Customer, License, Plan, Product, add_months
from tests.factories import activate, make_customer, make_license, make_plan, make_product


def events(action: str) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action))


@pytest.mark.django_db
def test_new_license_takes_the_plans_limit_and_duration(product):
    plan = make_plan(product=product, max_activations=5, duration_unit="year", duration_value=1)
    before = timezone.now()

    license = make_license(plan=plan).license

    license.refresh_from_db()
    assert license.status == License.Status.ACTIVE
    assert license.max_activations == 5
    assert add_months(before, 12) <= license.expires_at <= add_months(timezone.now(), 12)


@pytest.mark.django_db
def test_explicit_limit_and_expiry_override_the_plan(plan):
    expires_at = timezone.now() + timedelta(days=3)

    license = make_license(plan=plan, max_activations=None, expires_at=expires_at).license

    license.refresh_from_db()
    assert license.max_activations is None
    assert license.expires_at == expires_at


@pytest.mark.django_db
def test_perpetual_plan_gives_a_license_that_never_expires(product):
    plan = make_plan(product=product, duration_unit="perpetual", duration_value=None)

    assert make_license(plan=plan).license.expires_at is None


@pytest.mark.django_db
def test_license_without_a_plan_is_unlimited_and_perpetual(product):
    license = make_license(product=product).license

    assert (license.plan, license.max_activations, license.expires_at) == (None, None, None)


@pytest.mark.parametrize(
    ("start", "months", "expected"),
    [
        (datetime(2026, 1, 31, tzinfo=UTC), 1, datetime(2026, 2, 28, tzinfo=UTC)),
        (datetime(2028, 1, 31, tzinfo=UTC), 1, datetime(2028, 2, 29, tzinfo=UTC)),
        (datetime(2026, 11, 15, tzinfo=UTC), 2, datetime(2027, 1, 15, tzinfo=UTC)),
        (datetime(2026, 3, 10, tzinfo=UTC), 24, datetime(2028, 3, 10, tzinfo=UTC)),
    ],
)
def test_monthly_durations_land_on_the_same_day_or_the_months_last(start, months, expected):
    assert add_months(start, months) == expected


def test_plan_expiry_in_days():
    plan = Plan(duration_unit="day", duration_value=14)
    start = datetime(2026, 1, 1, tzinfo=UTC)

    assert plan.expiry_from(start) == start + timedelta(days=14)


@pytest.mark.django_db
def test_creating_a_license_is_audited_without_its_key(issued):
    (event,) = events("license.created")

    assert event.license_id == issued.license.pk
    assert event.actor_kind == "system"
    assert event.changes["max_activations"] == [None, 3]
    assert issued.key not in str(event.changes)


@pytest.mark.django_db
def test_plan_of_another_product_is_refused(plan):
    with pytest.raises(errors.InvalidInput) as raised:
        make_license(product=make_product(), plan=plan)

    assert raised.value.field == "plan"


@pytest.mark.django_db
@pytest.mark.parametrize("bad_limit", [-1, "3", 2.5, True])
def test_activation_limit_must_be_a_whole_number(plan, bad_limit):
    with pytest.raises(errors.InvalidInput) as raised:
        make_license(plan=plan, max_activations=bad_limit)

    assert raised.value.field == "max_activations"


@pytest.mark.django_db
def test_metadata_must_be_an_object(plan):
    with pytest.raises(errors.InvalidInput) as raised:
        make_license(plan=plan, metadata=["not", "an", "object"])

    assert raised.value.field == "metadata"


@pytest.mark.django_db
def test_metadata_is_measured_in_bytes_of_utf_8(plan):
    ascii_note = {"note": "x" * 16_000}
    assert make_license(plan=plan, metadata=ascii_note).license.metadata == ascii_note

    with pytest.raises(errors.InvalidInput, match=f"at most {services.MAX_METADATA_BYTES} bytes") as raised:
        make_license(plan=plan, metadata={"note": "€" * 6_000})  # 6,000 characters, 18,000 bytes

    assert raised.value.field == "metadata"


@pytest.mark.django_db
def test_suspend_and_reinstate(issued, actor):
    services.suspend_license(license=issued.license, actor=actor)
    assert License.objects.get(pk=issued.license.pk).status == "suspended"

    services.reinstate_license(license=issued.license, actor=actor)

    assert License.objects.get(pk=issued.license.pk).status == "active"
    assert events("license.suspended")[0].changes == {"status": ["active", "suspended"]}
    assert events("license.reinstated")[0].changes == {"status": ["suspended", "active"]}


@pytest.mark.django_db
def test_suspending_twice_changes_nothing_more(issued, actor):
    services.suspend_license(license=issued.license, actor=actor)
    services.suspend_license(license=issued.license, actor=actor)

    assert len(events("license.suspended")) == 1


@pytest.mark.django_db
@pytest.mark.parametrize("change", [services.reinstate_license, services.suspend_license])
def test_a_revoked_license_stays_revoked(issued, actor, change):
    services.revoke_license(license=issued.license, actor=actor)

    with pytest.raises(errors.InvalidStatusChange):
        change(license=issued.license, actor=actor)

    assert License.objects.get(pk=issued.license.pk).status == "revoked"


@pytest.mark.django_db
def test_reinstating_an_active_license_changes_nothing(issued, actor):
    services.reinstate_license(license=issued.license, actor=actor)

    assert events("license.reinstated") == []


@pytest.mark.django_db
def test_extending_by_days_counts_from_the_current_expiry(plan, actor):
    expires_at = timezone.now() + timedelta(days=10)
    license = make_license(plan=plan, expires_at=expires_at).license

    services.extend_license(license=license, days=30, actor=actor)

    license.refresh_from_db()
    assert license.expires_at == expires_at + timedelta(days=30)
    before, after = (parse_datetime(value) for value in events("license.extended")[0].changes["expires_at"])
    assert after - before == timedelta(days=30)


@pytest.mark.django_db
def test_extending_a_lapsed_license_counts_from_now(plan, actor):
    license = make_license(plan=plan, expires_at=timezone.now() - timedelta(days=100)).license
    before = timezone.now()

    services.extend_license(license=license, days=30, actor=actor)

    license.refresh_from_db()
    assert before + timedelta(days=30) <= license.expires_at <= timezone.now() + timedelta(days=30)
    assert not license.is_expired


@pytest.mark.django_db
def test_extending_to_a_date_or_to_never(issued, actor):
    new_expiry = timezone.now() + timedelta(days=400)
    services.extend_license(license=issued.license, expires_at=new_expiry, actor=actor)
    assert License.objects.get(pk=issued.license.pk).expires_at == new_expiry

    services.extend_license(license=issued.license, expires_at=None, actor=actor)

    assert License.objects.get(pk=issued.license.pk).expires_at is None


@pytest.mark.django_db
def test_an_earlier_expiry_is_audited_as_shortened_not_extended(issued, actor):
    expires_at = timezone.now() + timedelta(days=30)
    services.extend_license(license=issued.license, expires_at=expires_at, actor=actor)
    services.extend_license(license=issued.license, expires_at=expires_at - timedelta(days=10), actor=actor)
    services.extend_license(license=issued.license, expires_at=None, actor=actor)

    expiry_events = AuditEvent.objects.filter(action__startswith="license.e").order_by("id")
    assert list(expiry_events.values_list("action", flat=True)) == [
        "license.expiry_shortened",
        "license.expiry_shortened",
        "license.extended",
    ]


@pytest.mark.django_db
def test_a_perpetual_license_cannot_be_extended_by_days(product, actor):
    license = make_license(product=product).license

    with pytest.raises(errors.InvalidInput) as raised:
        services.extend_license(license=license, days=30, actor=actor)

    assert raised.value.field == "days"


@pytest.mark.django_db
@pytest.mark.parametrize("arguments", [{}, {"days": 3, "expires_at": None}, {"days": 0}, {"days": -5}])
def test_extending_needs_exactly_one_of_a_date_or_a_positive_number_of_days(issued, actor, arguments):
    with pytest.raises(errors.InvalidInput):
        services.extend_license(license=issued.license, actor=actor, **arguments)

    assert events("license.extended") == []


@pytest.mark.django_db
def test_lowering_the_limit_keeps_live_devices_but_refuses_new_ones(issued, actor):
    for fingerprint in ["a", "b", "c"]:
        activate(issued, fingerprint)

    services.change_activation_limit(license=issued.license, max_activations=1, actor=actor)

    assert issued.license.activations.live().count() == 3
    with pytest.raises(errors.ActivationLimitReached) as raised:
        activate(issued, "d")
    assert raised.value.facts["limit"] == 1
    assert raised.value.facts["used"] == 3
    assert events("license.limit_changed")[0].changes == {"max_activations": [3, 1]}


@pytest.mark.django_db
def test_raising_the_limit_to_unlimited(issued, actor):
    services.change_activation_limit(license=issued.license, max_activations=None, actor=actor)

    for n in range(5):
        activate(issued, f"device-{n}")
    assert issued.license.activations.live().count() == 5


@pytest.mark.django_db
def test_changing_owner_and_metadata_is_audited(issued, other_customer, actor):
    services.update_license_details(license=issued.license, customer=other_customer, metadata={"seats": 4}, actor=actor)

    license = License.objects.get(pk=issued.license.pk)
    assert license.customer == other_customer
    assert license.metadata == {"seats": 4}
    (event,) = events("license.changed")
    assert event.changes["customer"][1] == other_customer.pk


@pytest.mark.django_db
def test_saving_a_catalog_record_audits_only_real_changes(actor):
    product = make_product(name="Old name")
    product.name = "New name"
    services.save_catalog_record(record=product, actor=actor)
    services.save_catalog_record(record=product, actor=actor)

    (event,) = events("product.changed")
    assert event.changes == {"name": ["Old name", "New name"]}
    assert len(events("product.created")) == 1


@pytest.mark.django_db
def test_saving_named_fields_keeps_what_others_changed_since_the_record_was_read(actor):
    product = make_product(name="Old name")
    read_earlier = Product.objects.get(pk=product.pk)
    product.is_active = False
    services.save_catalog_record(record=product, actor=actor)

    read_earlier.name = "New name"
    services.save_catalog_record(record=read_earlier, actor=actor, fields={"name"})

    product.refresh_from_db()
    assert (product.name, product.is_active) == ("New name", False)
    assert read_earlier.is_active is False
    changes = AuditEvent.objects.filter(action="product.changed").order_by("id").values_list("changes", flat=True)
    assert list(changes) == [{"is_active": [True, False]}, {"name": ["Old name", "New name"]}]


@pytest.mark.django_db
def test_a_unique_value_taken_between_the_check_and_the_save_is_refused_naming_the_field(actor, monkeypatch):
    make_product(slug="taken")
    check = services._check_model_rules
    # The first check runs as if just before another request stored the same slug.
    checks = iter([lambda record: None])
    monkeypatch.setattr(services, "_check_model_rules", lambda record: next(checks, check)(record))

    with pytest.raises(errors.DuplicateRecord) as refused:
        services.save_catalog_record(record=Product(name="Second", slug="taken"), actor=actor)

    assert (refused.value.field, refused.value.message) == ("slug", "Product with this Slug already exists.")
    assert Product.objects.filter(slug="taken").count() == 1


@pytest.mark.django_db
def test_product_public_id_is_generated_and_settable():
    generated = make_product()
    imported = make_product(public_id="prod_8f2KxQw9LmNpRtY7uVzA3b")

    assert len(generated.public_id) == 36
    imported.refresh_from_db()
    assert imported.public_id == "prod_8f2KxQw9LmNpRtY7uVzA3b"


@pytest.mark.django_db
def test_customer_email_is_unique_ignoring_case(customer):
    with pytest.raises(errors.DuplicateRecord) as raised:
        make_customer(email="ADA@Example.com")

    assert raised.value.message == "A customer with this e-mail already exists."
    assert Customer.objects.count() == 1


@pytest.mark.django_db
def test_a_duplicate_with_bad_input_beside_it_is_bad_input_first(customer, actor):
    with pytest.raises(errors.InvalidInput) as raised:
        services.save_catalog_record(record=Customer(email="ADA@example.com", name="x" * 201), actor=actor)

    assert set(raised.value.facts["errors"]) == {"email", "name"}
    assert Customer.objects.count() == 1


@pytest.mark.django_db
def test_the_database_itself_refuses_a_duplicate_customer_email(customer):
    with pytest.raises(IntegrityError), transaction.atomic():
        Customer.objects.create(email="ADA@Example.com")


@pytest.mark.django_db
@pytest.mark.parametrize(("unit", "value"), [("month", None), ("day", 0), ("perpetual", 3)])
def test_plan_duration_must_match_its_unit(product, unit, value):
    with pytest.raises(errors.InvalidInput):
        make_plan(product=product, duration_unit=unit, duration_value=value)

    with pytest.raises(IntegrityError), transaction.atomic():
        Plan.objects.create(product=product, name="Bad", identifier="bad", duration_unit=unit, duration_value=value)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("build", "field"),
    [
        (lambda: make_product(slug="not a slug"), "slug"),
        (lambda: make_customer(email="not-an-email"), "email"),
        (lambda: make_plan(identifier=""), "identifier"),
    ],
)
def test_catalog_records_are_validated_naming_the_field(build, field):
    with pytest.raises(errors.InvalidInput) as raised:
        build()

    assert raised.value.field == field


@pytest.mark.django_db
def test_deleting_a_catalog_record_is_audited(actor):
    customer = make_customer(email="gone@example.com")

    services.delete_catalog_record(record=customer, actor=actor)

    assert not Customer.objects.filter(email="gone@example.com").exists()
    (event,) = events("customer.deleted")
    assert event.target_display == f"{customer.name} <gone@example.com>"
    assert event.changes["email"] == ["gone@example.com", None]
    assert event.changes["name"] == [customer.name, None]


@pytest.mark.django_db
def test_a_product_with_plans_is_kept_and_the_refusal_says_why(plan, actor):
    with pytest.raises(errors.RecordInUse) as refused:
        services.delete_catalog_record(record=plan.product, actor=actor)

    assert refused.value.message == "Plans refer to this product, so it cannot be deleted."
    assert Product.objects.filter(pk=plan.product.pk).exists()
    assert not events("product.deleted")


@pytest.mark.django_db
def test_the_refusal_to_delete_a_product_names_everything_that_refers_to_it(plan, actor):
    make_license(plan=plan)
    services.create_rsa_key(product=plan.product, actor=actor)

    with pytest.raises(errors.RecordInUse) as refused:
        services.delete_catalog_record(record=plan.product, actor=actor)

    assert refused.value.message == (
        "Licenses, plans and RSA keys (GetKeyManager) refer to this product, so it cannot be deleted."
    )


@pytest.mark.django_db
def test_a_key_stored_by_a_concurrent_request_is_a_duplicate_not_a_crash(plan, monkeypatch):
    make_license(plan=plan, key="RACED-KEY-0001")
    # As if the other request inserted the key after this one checked for it.
    monkeypatch.setattr(services, "check_new_license", lambda **kwargs: None)

    with pytest.raises(errors.DuplicateLicenseKey):
        make_license(plan=plan, key="RACED-KEY-0001")

    assert License.objects.count() == 1


@pytest.mark.django_db
def test_a_plan_with_licenses_cannot_move_to_another_product(issued, actor):
    plan = issued.license.plan
    plan.product = make_product()

    with pytest.raises(errors.InvalidInput) as raised:
        services.save_catalog_record(record=plan, actor=actor)

    assert raised.value.field == "product"
    plan.refresh_from_db()
    assert plan.product == issued.license.product


@pytest.mark.django_db
def test_a_plan_without_licenses_can_move(plan, actor):
    other = make_product()
    plan.product = other

    services.save_catalog_record(record=plan, actor=actor)

    plan.refresh_from_db()
    assert plan.product == other


@pytest.mark.django_db
def test_external_ids_are_unique_with_a_clear_message():
    make_customer(external_id="cus_ada")

    with pytest.raises(errors.DuplicateRecord) as raised:
        make_customer(external_id="cus_ada")

    assert raised.value.message == "Another customer already has this external id."
    assert make_customer(external_id="").external_id == ""
    assert make_customer(external_id="").external_id == ""


@pytest.mark.parametrize(
    ("unit", "value", "shown"),
    [("perpetual", None, "perpetual"), ("day", 1, "1 day"), ("month", 6, "6 months"), ("year", 1, "1 year")],
)
def test_plan_duration_reads_naturally(unit, value, shown):
    assert Plan(duration_unit=unit, duration_value=value).duration_display == shown


@pytest.mark.django_db
def test_a_customer_made_by_a_concurrent_request_is_reused_not_refused(actor, monkeypatch):
    made_meanwhile = make_customer(email="new@example.com")
    real_filter = Customer.objects.filter
    calls = []

    def filter_missing_the_first_time(*args, **kwargs):
        # The first look-up runs before the concurrent request commits, so it finds nobody.
        calls.append(kwargs)
        return Customer.objects.none() if len(calls) == 1 else real_filter(*args, **kwargs)

    monkeypatch.setattr(Customer.objects, "filter", filter_missing_the_first_time)

    customer = services.find_or_create_customer(email="NEW@example.com", actor=actor)

    assert customer == made_meanwhile
    assert Customer.objects.count() == 1


@pytest.mark.django_db
def test_a_malformed_email_for_a_new_customer_is_still_refused(actor):
    with pytest.raises(errors.InvalidInput) as raised:
        services.find_or_create_customer(email="not-an-address", actor=actor)

    assert raised.value.field == "email"


@pytest.mark.django_db
def test_moving_a_license_to_another_plan_brings_its_limit_and_keeps_its_expiry(issued, product, actor):
    team = make_plan(product=product, name="Team", identifier="team", max_activations=10)
    expires_at = issued.license.expires_at

    license = services.change_license_plan(license=issued.license, plan=team, actor=actor)
    services.change_license_plan(license=license, plan=team, actor=actor)

    license.refresh_from_db()
    assert (license.plan, license.max_activations, license.expires_at) == (team, 10, expires_at)
    (event,) = events("license.plan_changed")
    assert event.changes == {"plan": [issued.license.plan_id, team.pk], "max_activations": [3, 10]}


@pytest.mark.django_db
def test_a_limit_given_with_the_new_plan_wins_in_one_change(issued, product, actor):
    team = make_plan(product=product, name="Team", identifier="team", max_activations=10)

    license = services.update_license(license=issued.license, plan=team, max_activations=3, actor=actor)

    assert (license.plan, license.max_activations) == (team, 3)
    (event,) = events("license.plan_changed")
    assert event.changes == {"plan": [issued.license.plan_id, team.pk]}
    assert not events("license.limit_changed")


@pytest.mark.django_db
def test_naming_the_plan_a_license_is_on_moves_nothing_and_keeps_a_limit_given_with_it(issued, actor):
    services.change_activation_limit(license=issued.license, max_activations=7, actor=actor)

    kept = services.update_license(license=issued.license, plan=issued.license.plan, actor=actor)
    changed = services.update_license(license=issued.license, plan=issued.license.plan, max_activations=5, actor=actor)

    assert (kept.max_activations, changed.max_activations) == (7, 5)
    assert not events("license.plan_changed")


@pytest.mark.django_db
def test_a_license_cannot_move_to_another_products_plan(issued, actor):
    elsewhere = make_plan(product=make_product(name="Other", slug="other"))

    with pytest.raises(errors.InvalidInput) as refused:
        services.change_license_plan(license=issued.license, plan=elsewhere, actor=actor)

    assert (refused.value.field, refused.value.message) == ("plan", "This plan belongs to another product.")
    assert License.objects.get(pk=issued.license.pk).plan == issued.license.plan
    assert not events("license.plan_changed")
