"""The activation limit is the product: it must hold when many devices activate at the same moment."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import connection, transaction

from licensing import errors, services
from licensing.models import Activation, Customer, License, Plan, SigningKey, SignInLink
from tests.factories import SYSTEM, make_customer, make_license, make_plan, make_product

pytestmark = pytest.mark.django_db(transaction=True)


def run_at_once(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Run work(0..count-1) in as many threads, released together; return each result or exception."""
    barrier = threading.Barrier(count)
    outcomes: list[Any] = [None] * count

    def run(index: int) -> None:
        try:
            barrier.wait()
            outcomes[index] = work(index)
        except Exception as error:  # noqa: BLE001 - every outcome is inspected by the test
            outcomes[index] = error
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    return outcomes


def outcome_kinds(outcomes: list[Any]) -> Counter:
    return Counter(type(outcome).__name__ for outcome in outcomes)


def test_activation_storm_on_distinct_devices_stops_exactly_at_the_limit():
    issued = make_license(plan=make_plan(max_activations=3))

    outcomes = run_at_once(
        50,
        lambda n: services.activate_license(
            license_key=issued.key, fingerprint=f"device-{n}", actor=services.Actor.app()
        ),
    )

    assert outcome_kinds(outcomes) == {"ActivationResult": 3, "ActivationLimitReached": 47}
    assert Activation.objects.filter(license=issued.license).live().count() == 3
    refusal = next(outcome for outcome in outcomes if isinstance(outcome, errors.ActivationLimitReached))
    assert (refusal.facts["limit"], refusal.facts["used"]) == (3, 3)


def test_storm_of_one_device_reactivating_leaves_one_live_activation():
    issued = make_license(plan=make_plan(max_activations=3))

    outcomes = run_at_once(
        20,
        lambda n: services.activate_license(
            license_key=issued.key, fingerprint="same-device", actor=services.Actor.app()
        ),
    )

    assert outcome_kinds(outcomes) == {"ActivationResult": 20}
    assert sum(outcome.created for outcome in outcomes) == 1
    assert len({outcome.activation.pk for outcome in outcomes}) == 1
    assert Activation.objects.filter(license=issued.license).live().count() == 1


def test_validations_and_deactivations_during_a_storm_keep_counts_exact():
    issued = make_license(plan=make_plan(max_activations=5))
    for n in range(5):
        services.activate_license(license_key=issued.key, fingerprint=f"old-{n}", actor=services.Actor.app())

    def work(n: int) -> Any:
        if n < 5:
            activation = services.find_activation(license_key=issued.key, fingerprint=f"old-{n}")
            return services.deactivate_activation(activation=activation, actor=services.Actor.app())
        if n < 25:
            return services.validate_license(license_key=issued.key)
        return services.activate_license(license_key=issued.key, fingerprint=f"new-{n}", actor=services.Actor.app())

    outcomes = run_at_once(45, work)

    kinds = outcome_kinds(outcomes)
    assert set(kinds) <= {"DeactivationResult", "ValidationResult", "ActivationResult", "ActivationLimitReached"}
    assert kinds["DeactivationResult"] == 5
    assert kinds["ValidationResult"] == 20
    # Five slots were freed while the new devices queued: the storm must have filled them, and no more.
    assert kinds["ActivationResult"] >= 1
    assert issued.license.activations.live().count() == kinds["ActivationResult"] <= 5
    issued.license.refresh_from_db()
    assert issued.license.validation_count == 20


def test_deactivating_all_while_devices_activate_never_passes_the_limit():
    issued = make_license(plan=make_plan(max_activations=3))
    for n in range(3):
        services.activate_license(license_key=issued.key, fingerprint=f"old-{n}", actor=services.Actor.app())

    def work(n: int) -> Any:
        if n == 0:
            return services.deactivate_all_activations(license=issued.license, actor=services.Actor.system())
        return services.activate_license(license_key=issued.key, fingerprint=f"new-{n}", actor=services.Actor.app())

    outcomes = run_at_once(30, work)

    assert isinstance(outcomes[0], list)
    assert len(outcomes[0]) >= 3
    assert set(outcome_kinds(outcomes[1:])) <= {"ActivationResult", "ActivationLimitReached"}
    assert issued.license.activations.live().count() == outcome_kinds(outcomes[1:])["ActivationResult"] - (
        len(outcomes[0]) - 3
    )
    assert issued.license.activations.live().count() <= 3


def test_concurrent_uses_never_pass_the_usage_limit():
    issued = make_license(plan=make_plan(max_activations=None), limit_usage=10)

    outcomes = run_at_once(25, lambda n: services.validate_license(license_key=issued.key, increment_usage=1))

    assert Counter(outcome.code for outcome in outcomes) == {"VALID": 10, "USAGE_LIMIT_REACHED": 15}
    issued.license.refresh_from_db()
    assert issued.license.usage == 10


def test_processes_answering_at_once_on_a_new_server_make_one_signing_key_between_them():
    def first_answer(_n):
        services.forget_cached_keys()  # each thread stands for a process with its own cache
        return services.current_signing_key().kid

    outcomes = run_at_once(12, first_answer)

    assert SigningKey.objects.count() == 1
    assert set(outcomes) == {SigningKey.objects.get().kid}


# Catalog changes racing the licenses that refer to them: one side waits for the other on the
# PostgreSQL row locks, then sees what it did. (SQLite runs one writing transaction at a time.)
postgresql_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks are PostgreSQL's")
LOCK_WAIT_SECONDS = 10


def in_thread(work: Callable[[], Any]) -> Future:
    """Start work in a thread of its own (its own database connection); its outcome comes in the future."""
    outcome: Future = Future()

    def run() -> None:
        try:
            outcome.set_result(work())
        except Exception as error:  # noqa: BLE001 - the test inspects the outcome
            outcome.set_exception(error)
        finally:
            connection.close()

    threading.Thread(target=run, daemon=True).start()
    return outcome


@contextmanager
def left_open(work: Callable[[], Any]) -> Iterator[None]:
    """Do work in a transaction of another thread, and commit it only when the block ends."""
    done, commit = threading.Event(), threading.Event()

    def run() -> None:
        with transaction.atomic():
            try:
                work()
            finally:
                done.set()
            commit.wait(LOCK_WAIT_SECONDS * 3)

    outcome = in_thread(run)
    assert done.wait(LOCK_WAIT_SECONDS)
    try:
        yield
    finally:
        commit.set()
        outcome.result(LOCK_WAIT_SECONDS)


def wait_until_a_session_waits_for_a_lock() -> None:
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0]:
                return
            time.sleep(0.02)
    pytest.fail(f"No session waited for a row lock within {LOCK_WAIT_SECONDS} s")


@postgresql_only
def test_a_license_issued_on_a_plan_moving_to_another_product_is_refused():
    plan = make_plan()
    elsewhere = make_product(name="Elsewhere", slug="elsewhere")

    def move() -> None:
        moving = Plan.objects.get(pk=plan.pk)
        moving.product = elsewhere
        services.save_catalog_record(record=moving, actor=SYSTEM)

    with left_open(move):
        issuing = in_thread(lambda: services.create_license(product=plan.product, plan=plan, actor=SYSTEM))
        wait_until_a_session_waits_for_a_lock()

    with pytest.raises(errors.InvalidInput) as refused:
        issuing.result(LOCK_WAIT_SECONDS)
    assert (refused.value.field, refused.value.message) == ("plan", "This plan belongs to another product.")
    assert not License.objects.filter(plan=plan).exists()


@postgresql_only
def test_a_license_issued_for_an_e_mail_whose_customer_is_being_deleted_gets_a_new_customer():
    plan = make_plan()
    customer = make_customer(email="leaving@example.com")

    with left_open(lambda: services.delete_catalog_record(record=customer, actor=SYSTEM)):
        issuing = in_thread(
            lambda: services.create_license(
                product=plan.product, plan=plan, customer_email="leaving@example.com", actor=SYSTEM
            )
        )
        wait_until_a_session_waits_for_a_lock()

    license = issuing.result(LOCK_WAIT_SECONDS).license
    assert license.customer.email == "leaving@example.com"
    assert license.customer.pk != customer.pk
    assert list(Customer.objects.filter(email="leaving@example.com")) == [license.customer]


@postgresql_only
def test_deleting_a_customer_while_a_license_is_issued_to_them_is_refused():
    plan = make_plan()
    customer = make_customer(email="staying@example.com")

    with left_open(lambda: services.create_license(product=plan.product, plan=plan, customer=customer, actor=SYSTEM)):
        deleting = in_thread(lambda: services.delete_catalog_record(record=customer, actor=SYSTEM))
        wait_until_a_session_waits_for_a_lock()

    with pytest.raises(errors.RecordInUse):
        deleting.result(LOCK_WAIT_SECONDS)
    assert Customer.objects.get(pk=customer.pk).licenses.count() == 1


@postgresql_only
def test_a_license_issued_while_its_plan_changes_takes_the_plans_new_defaults():
    plan = make_plan(max_activations=5)

    def shrink() -> None:
        changing = Plan.objects.get(pk=plan.pk)
        changing.max_activations = 2
        services.save_catalog_record(record=changing, actor=SYSTEM)

    with left_open(shrink):
        issuing = in_thread(lambda: services.create_license(product=plan.product, plan=plan, actor=SYSTEM))
        wait_until_a_session_waits_for_a_lock()

    assert issuing.result(LOCK_WAIT_SECONDS).license.max_activations == 2


@postgresql_only
def test_sign_in_links_asked_for_at_once_stop_at_the_per_address_limit():
    """Each request counted the recent links, then stored its own: ten at once all counted none
    stored yet and mailed a customer up to ten links where three are allowed."""
    customer = make_customer(email="flooded@example.com")

    outcomes = run_at_once(
        10,
        lambda n: services.request_sign_in_link(email=customer.email, ip_address=f"198.51.100.{n + 1}"),
    )

    assert outcome_kinds(outcomes) == {"SignInRequest": services.SIGN_IN_REQUESTS_PER_EMAIL, "TooManyRequests": 7}
    assert SignInLink.objects.filter(customer=customer).count() == services.SIGN_IN_REQUESTS_PER_EMAIL
