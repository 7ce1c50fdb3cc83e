from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest
from django.db import OperationalError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from licensing import errors, lookups, services, tallies
from licensing.models import Activation, AuditEvent, License
from tests.factories import activate, make_license, make_plan

pytestmark = pytest.mark.django_db


def live_count(issued) -> int:
    return Activation.objects.filter(license=issued.license).live().count()


def make_unusable(issued, state: str, actor) -> None:
    if state == "suspended":
        services.suspend_license(license=issued.license, actor=actor)
    elif state == "revoked":
        services.revoke_license(license=issued.license, actor=actor)
    elif state == "expired":
        services.extend_license(license=issued.license, expires_at=timezone.now() - timedelta(seconds=1), actor=actor)
    elif state == "product_inactive":
        product = issued.license.product
        product.is_active = False
        services.save_catalog_record(record=product, actor=actor)


UNUSABLE = [
    ("suspended", errors.LicenseSuspended, "SUSPENDED"),
    ("revoked", errors.LicenseRevoked, "REVOKED"),
    ("expired", errors.LicenseExpired, "EXPIRED"),
    ("product_inactive", errors.ProductInactive, "PRODUCT_INACTIVE"),
]


# ---------------------------------------------------------------- activate
def test_a_device_the_locked_count_missed_is_answered_as_already_active(issued, app_actor, monkeypatch):
    """The live-fingerprint constraint backs up the license lock: a device activated without the
    lock between the count and the insert is answered as the live device, and nothing is written."""
    first = activate(issued, "mac-1")
    events = AuditEvent.objects.count()
    count_live_devices = lookups.live_devices

    def count_missing_the_device(license, *, fingerprint):
        return count_live_devices(license, fingerprint=fingerprint)[0], None

    monkeypatch.setattr(lookups, "live_devices", count_missing_the_device)
    monkeypatch.setattr(lookups, "license_with_device", lambda **kwargs: (issued.license, None))

    result = services.activate_license(license_key=issued.key, fingerprint="mac-1", actor=app_actor)

    assert (result.created, result.activation.pk) == (False, first.activation.pk)
    assert live_count(issued) == 1
    assert AuditEvent.objects.count() == events


def test_activation_binds_a_device_and_is_audited(issued, app_actor):
    result = services.activate_license(
        license_key=issued.key,
        fingerprint="mac-serial-C02XL0",
        name="Ada's MacBook",
        platform="macOS",
        metadata={"os_version": "15.1"},
        actor=app_actor,
    )

    assert result.created
    activation = Activation.objects.get(pk=result.activation.pk)
    assert (activation.fingerprint, activation.name, activation.platform) == (
        "mac-serial-C02XL0",
        "Ada's MacBook",
        "macOS",
    )
    assert activation.metadata == {"os_version": "15.1"}
    assert activation.ip_address == "203.0.113.7"
    assert activation.is_live
    assert activation.last_seen_at == activation.created_at == result.activation.created_at
    event = AuditEvent.objects.get(action="activation.created")
    assert (event.actor_kind, event.license_id, event.target_id) == ("app", issued.license.pk, str(activation.pk))


def test_reactivating_same_device_takes_no_new_slot(issued):
    first = activate(issued, "device-1")

    again = activate(issued, "device-1", name="renamed")

    assert not again.created
    assert again.activation.pk == first.activation.pk
    assert again.activation.name == ""
    assert live_count(issued) == 1
    assert AuditEvent.objects.filter(action="activation.created").count() == 1


def test_activations_without_a_fingerprint_always_take_a_new_slot(issued):
    results = [activate(issued, None) for _ in range(3)]

    assert all(result.created for result in results)
    assert len({result.activation.pk for result in results}) == 3
    assert Activation.objects.get(pk=results[0].activation.pk).fingerprint is None


def test_empty_fingerprint_counts_as_none(issued):
    first, second = activate(issued, ""), activate(issued, "")

    assert first.activation.pk != second.activation.pk


def test_activation_at_the_limit_is_refused_with_the_limit_and_count(issued):
    for fingerprint in ["a", "b", "c"]:
        activate(issued, fingerprint)

    with pytest.raises(errors.ActivationLimitReached) as raised:
        activate(issued, "d")

    assert raised.value.status == 403
    assert raised.value.code == "activation_limit_reached"
    assert raised.value.facts["limit"] == 3
    assert raised.value.facts["used"] == 3
    assert raised.value.facts["license"] == issued.license
    assert live_count(issued) == 3


def test_a_live_device_activating_again_is_seen_without_counting_a_validation(issued):
    device = activate(issued, "device-1").activation
    Activation.objects.filter(pk=device.pk).update(last_seen_at=timezone.now() - timedelta(days=3))

    again = activate(issued, "device-1")

    assert timezone.now() - again.activation.last_seen_at < timedelta(minutes=1)
    assert timezone.now() - Activation.objects.get(pk=device.pk).last_seen_at < timedelta(minutes=1)
    assert License.objects.get(pk=issued.license.pk).validation_count == 0


def test_a_live_device_can_still_reactivate_at_the_limit(issued):
    for fingerprint in ["a", "b", "c"]:
        activate(issued, fingerprint)

    assert not activate(issued, "b").created


def test_unlimited_license_takes_any_number_of_devices(product):
    issued = make_license(plan=make_plan(product=product, max_activations=None))

    for n in range(25):
        activate(issued, f"device-{n}")

    assert live_count(issued) == 25


def test_zero_limit_refuses_every_device(product):
    issued = make_license(plan=make_plan(product=product, max_activations=0))

    with pytest.raises(errors.ActivationLimitReached):
        activate(issued, "device")


def test_unknown_key_cannot_activate(issued):
    with pytest.raises(errors.LicenseNotFound):
        services.activate_license(license_key="NOPE-NOPE", fingerprint="x", actor=services.Actor.app())

    assert Activation.objects.count() == 0


@pytest.mark.parametrize(("state", "error", "code"), UNUSABLE)
def test_unusable_license_cannot_activate(issued, actor, state, error, code):
    make_unusable(issued, state, actor)

    with pytest.raises(error):
        activate(issued, "device")

    assert live_count(issued) == 0


@pytest.mark.parametrize(("state", "error", "code"), UNUSABLE)
def test_a_live_device_of_an_unusable_license_cannot_activate_again(issued, actor, state, error, code):
    activate(issued, "device")
    make_unusable(issued, state, actor)

    with pytest.raises(error):
        activate(issued, "device")


@pytest.mark.parametrize(
    ("field", "arguments"),
    [
        ("fingerprint", {"fingerprint": "f" * 256}),
        ("name", {"fingerprint": "f", "name": "n" * 256}),
        ("platform", {"fingerprint": "f", "platform": "p" * 101}),
        ("name", {"fingerprint": "f", "name": 42}),
        ("metadata", {"fingerprint": "f", "metadata": "text"}),
        ("fingerprint", {"fingerprint": "nul\x00inside"}),
        ("name", {"fingerprint": "f", "name": "nul\x00inside"}),
        ("metadata", {"fingerprint": "f", "metadata": {"os": "nul\x00inside"}}),
        ("metadata", {"fingerprint": "f", "metadata": {"big": "x" * 20_000}}),
        ("metadata", {"fingerprint": "f", "metadata": {"when": object()}}),
        ("ip_address", {"fingerprint": "f", "ip_address": "not-an-ip"}),
    ],
)
def test_bad_activation_input_is_refused_naming_the_field(issued, field, arguments):
    with pytest.raises(errors.InvalidInput) as raised:
        services.activate_license(license_key=issued.key, actor=services.Actor.app(), **arguments)

    assert raised.value.field == field
    assert raised.value.status == 400
    assert Activation.objects.count() == 0


# ---------------------------------------------------------------- deactivate


def test_deactivation_frees_the_slot_and_keeps_the_row(issued, actor):
    for fingerprint in ["a", "b", "c"]:
        activate(issued, fingerprint)
    activation = services.find_activation(license_key=issued.key, fingerprint="b")

    result = services.deactivate_activation(activation=activation, actor=actor)

    assert not result.already_inactive
    row = Activation.objects.get(pk=activation.pk)
    assert row.deactivated_at is not None
    assert (row.deactivated_by_kind, row.deactivated_by) == ("system", "tests")
    assert live_count(issued) == 2
    assert activate(issued, "d").created
    assert AuditEvent.objects.filter(action="activation.deactivated", target_id=str(activation.pk)).count() == 1


def test_deactivating_twice_says_already_inactive_and_keeps_the_first_time(issued, actor):
    activation = activate(issued, "a").activation
    services.deactivate_activation(activation=activation, actor=actor)
    first_time = Activation.objects.get(pk=activation.pk).deactivated_at

    result = services.deactivate_activation(activation=activation, actor=services.Actor.app())

    assert result.already_inactive
    row = Activation.objects.get(pk=activation.pk)
    assert row.deactivated_at == first_time
    assert row.deactivated_by_kind == "system"
    assert AuditEvent.objects.filter(action="activation.deactivated").count() == 1


def test_reactivating_after_deactivation_creates_a_new_activation(issued, actor):
    old = activate(issued, "a").activation
    services.deactivate_activation(activation=old, actor=actor)

    new = activate(issued, "a")

    assert new.created
    assert new.activation.pk != old.pk
    assert live_count(issued) == 1
    assert Activation.objects.filter(license=issued.license, fingerprint="a").count() == 2


def test_find_activation_prefers_the_live_one_for_a_fingerprint(issued, actor):
    services.deactivate_activation(activation=activate(issued, "a").activation, actor=actor)
    live = activate(issued, "a").activation

    assert services.find_activation(license_key=issued.key, fingerprint="a").pk == live.pk
    assert services.find_activation(license_key=issued.key, activation_id=str(live.pk)).pk == live.pk


def test_find_activation_returns_a_deactivated_one_so_a_repeat_can_say_so(issued, actor):
    old = activate(issued, "a").activation
    services.deactivate_activation(activation=old, actor=actor)

    found = services.find_activation(license_key=issued.key, fingerprint="a")

    assert found.pk == old.pk
    assert services.deactivate_activation(activation=found, actor=actor).already_inactive


def test_another_keys_activation_is_not_found(issued, plan):
    other = make_license(plan=plan)
    foreign = activate(other, "theirs").activation

    with pytest.raises(errors.ActivationNotFound) as raised:
        services.find_activation(license_key=issued.key, activation_id=str(foreign.pk))

    assert raised.value.status == 404
    assert raised.value.field == "activation_id"


@pytest.mark.parametrize(
    ("arguments", "error", "field"),
    [
        ({}, errors.InvalidInput, "activation_id"),
        ({"activation_id": "not-a-uuid"}, errors.ActivationNotFound, "activation_id"),
        ({"activation_id": str(uuid.uuid4())}, errors.ActivationNotFound, "activation_id"),
        ({"fingerprint": "never-seen"}, errors.ActivationNotFound, "fingerprint"),
    ],
)
def test_find_activation_refusals(issued, arguments, error, field):
    activate(issued, "a")

    with pytest.raises(error) as raised:
        services.find_activation(license_key=issued.key, **arguments)

    assert raised.value.field == field


def test_find_activation_with_unknown_key(issued):
    with pytest.raises(errors.LicenseNotFound):
        services.find_activation(license_key="UNKNOWN", fingerprint="a")


def test_deactivate_all_frees_every_live_device(issued, actor):
    old = activate(issued, "old").activation
    services.deactivate_activation(activation=old, actor=actor)
    for fingerprint in ["a", "b"]:
        activate(issued, fingerprint)

    freed = services.deactivate_all_activations(license=issued.license, actor=actor)

    assert sorted(activation.fingerprint for activation in freed) == ["a", "b"]
    assert live_count(issued) == 0
    assert AuditEvent.objects.filter(action="activation.deactivated").count() == 3
    assert services.deactivate_all_activations(license=issued.license, actor=actor) == []


@pytest.mark.parametrize(("state", "error", "code"), UNUSABLE)
def test_a_device_can_be_freed_whatever_the_license_state(issued, actor, state, error, code):
    activation = activate(issued, "a").activation
    make_unusable(issued, state, actor)

    assert not services.deactivate_activation(activation=activation, actor=actor).already_inactive


# ---------------------------------------------------------------- validate


def test_valid_license_counts_the_validation_and_device_last_seen(issued):
    activation = activate(issued, "a").activation
    Activation.objects.filter(pk=activation.pk).update(last_seen_at=timezone.now() - timedelta(days=3))

    result = services.validate_license(license_key=issued.key, fingerprint="a")

    assert (result.valid, result.code) == (True, "VALID")
    assert result.license.pk == issued.license.pk
    assert result.activation.pk == activation.pk
    license = License.objects.get(pk=issued.license.pk)
    assert license.validation_count == 1
    assert license.last_validated_at is not None
    assert timezone.now() - Activation.objects.get(pk=activation.pk).last_seen_at < timedelta(minutes=1)


def test_validation_by_activation_id(issued):
    activation = activate(issued, "a").activation

    result = services.validate_license(license_key=issued.key, activation_id=str(activation.pk))

    assert result.code == "VALID"
    assert result.activation.pk == activation.pk


def test_validation_without_a_device_checks_the_license_alone(issued):
    result = services.validate_license(license_key=issued.key)

    assert (result.valid, result.code, result.activation) == (True, "VALID", None)


def test_unknown_key_is_not_found(issued):
    result = services.validate_license(license_key="UNKNOWN-KEY")

    assert (result.valid, result.code, result.license) == (False, "NOT_FOUND", None)
    assert result.detail


@pytest.mark.parametrize(("state", "error", "code"), UNUSABLE)
def test_unusable_license_is_invalid_with_its_code(issued, actor, state, error, code):
    activate(issued, "a")
    make_unusable(issued, state, actor)

    result = services.validate_license(license_key=issued.key, fingerprint="a")

    assert (result.valid, result.code) == (False, code)
    assert result.license.pk == issued.license.pk
    assert License.objects.get(pk=issued.license.pk).validation_count == 0


@pytest.mark.parametrize(
    "device",
    [{"fingerprint": "never-activated"}, {"activation_id": "not-a-uuid"}, {"activation_id": str(uuid.uuid4())}],
)
def test_unknown_device_is_not_activated(issued, device):
    activate(issued, "a")

    result = services.validate_license(license_key=issued.key, **device)

    assert (result.valid, result.code, result.activation) == (False, "NOT_ACTIVATED", None)


def test_deactivated_device_is_not_activated(issued, actor):
    activation = activate(issued, "a").activation
    services.deactivate_activation(activation=activation, actor=actor)

    assert services.validate_license(license_key=issued.key, fingerprint="a").code == "NOT_ACTIVATED"


@pytest.fixture
def tallies_in_the_background(settings):
    """Validation tallies written by the background writer, as in production; stopped afterwards."""

    def start(interval: float) -> None:
        settings.VALIDATION_TALLY_SECONDS = interval

    yield start
    tallies.stop_writer()


def wait_for(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.django_db(transaction=True)
def test_validation_is_one_query_and_its_tally_is_written_by_the_background_writer(issued, tallies_in_the_background):
    activation = activate(issued, "a").activation
    Activation.objects.filter(pk=activation.pk).update(last_seen_at=timezone.now() - timedelta(minutes=5))
    tallies_in_the_background(0.05)

    with CaptureQueriesContext(connection) as queries:
        result = services.validate_license(license_key=issued.key, fingerprint="a")

    # The device with its license and the license's device count, and no lock.
    assert len(queries) == 1
    assert "FOR UPDATE" not in queries[0]["sql"].upper()
    assert wait_for(lambda: License.objects.get(pk=issued.license.pk).validation_count == 1)
    license = License.objects.get(pk=issued.license.pk)
    assert license.last_validated_at == result.license.last_validated_at
    assert Activation.objects.get(pk=activation.pk).last_seen_at == result.license.last_validated_at


@pytest.mark.django_db(transaction=True)
def test_tallies_a_failed_write_could_not_store_are_written_next_time(issued, tallies_in_the_background, monkeypatch):
    activate(issued, "a")
    add_tallies = lookups.add_tallies
    failures = []

    def fail_once(*args):
        if not failures:
            failures.append(True)
            raise OperationalError("the database went away")
        add_tallies(*args)

    monkeypatch.setattr(lookups, "add_tallies", fail_once)
    tallies_in_the_background(0.05)
    for _ in range(2):
        services.validate_license(license_key=issued.key, fingerprint="a")

    assert wait_for(lambda: License.objects.get(pk=issued.license.pk).validation_count == 2)
    assert failures


@pytest.mark.django_db(transaction=True)
def test_stopping_the_writer_writes_the_tallies_it_holds(issued, tallies_in_the_background):
    activate(issued, "a")
    tallies_in_the_background(3600)
    for _ in range(3):
        services.validate_license(license_key=issued.key, fingerprint="a")
    assert License.objects.get(pk=issued.license.pk).validation_count == 0

    tallies.stop_writer()

    assert License.objects.get(pk=issued.license.pk).validation_count == 3


def test_a_device_seen_within_the_minute_is_not_written_again(issued):
    activation = activate(issued, "a").activation
    services.validate_license(license_key=issued.key, fingerprint="a")
    first_seen = Activation.objects.get(pk=activation.pk).last_seen_at

    with CaptureQueriesContext(connection) as queries:
        services.validate_license(license_key=issued.key, fingerprint="a")

    assert Activation.objects.get(pk=activation.pk).last_seen_at == first_seen
    assert not any(query["sql"].startswith('UPDATE "licensing_activation"') for query in queries)
    assert License.objects.get(pk=issued.license.pk).validation_count == 2


@pytest.mark.parametrize("fingerprint", ["laptop", None])
def test_a_customer_id_must_name_the_licenses_owner(issued, customer, other_customer, fingerprint):
    with pytest.raises(errors.LicenseNotFound):
        activate(issued, fingerprint, customer_id=other_customer.reference)
    assert issued.license.live_activation_count() == 0

    result = activate(issued, fingerprint, customer_id=customer.reference)

    assert result.created
    assert issued.license.live_activation_count() == 1


def test_a_live_device_named_with_another_customers_id_is_not_answered(issued, other_customer):
    activate(issued, "laptop")

    with pytest.raises(errors.LicenseNotFound):
        activate(issued, "laptop", customer_id=other_customer.reference)
