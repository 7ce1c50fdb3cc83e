"""The activation limit is the product: it must hold when many devices activate at the same moment."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from licensing import errors, lookups, services
from licensing.models import (
    Activation,
    AuditEvent,
    Customer,
    License,
    Plan,
    Product,
    RsaKey,
    SigningKey,
    SignInLink,
)
from portal.views import start_session
from tests.factories import SYSTEM, activate, make_customer, make_license, make_plan, make_product

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


def test_devices_imported_while_others_activate_stop_exactly_at_the_limit():
    issued = make_license(plan=make_plan(max_activations=3))

    def import_or_activate(n: int) -> Any:
        if n % 5:
            return services.import_activation(license=issued.license, fingerprint=f"imported-{n}", actor=SYSTEM)
        return services.activate_license(license_key=issued.key, fingerprint=f"device-{n}", actor=services.Actor.app())

    outcomes = run_at_once(50, import_or_activate)

    assert outcome_kinds(outcomes)["ActivationLimitReached"] == 47
    assert Activation.objects.filter(license=issued.license).live().count() == 3


def test_one_old_id_imported_at_once_into_two_licenses_is_stored_once():
    plan = make_plan()
    licenses = [make_license(plan=plan).license for _ in range(2)]
    old_id = "9b4e2a57-3c1d-4f8e-a6b2-7d5c0e1f2a3b"

    outcomes = run_at_once(
        10, lambda n: services.import_activation(license=licenses[n % 2], activation_id=old_id, actor=SYSTEM)
    )

    assert outcome_kinds(outcomes) == {"Activation": 1, "DuplicateActivation": 9}
    assert {outcome.field for outcome in outcomes if isinstance(outcome, errors.DuplicateActivation)} == {"id"}
    assert Activation.objects.filter(pk=old_id).count() == 1


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
    # Each use is answered with the count its own update made, never another call's.
    assert sorted(outcome.license.usage for outcome in outcomes if outcome.valid) == list(range(1, 11))


def test_processes_answering_at_once_on_a_new_server_make_one_signing_key_between_them():
    def first_answer(_n):
        services.forget_cached_keys()  # each thread stands for a process with its own cache
        return services.current_signing_key().kid

    outcomes = run_at_once(12, first_answer)

    assert SigningKey.objects.count() == 1
    assert set(outcomes) == {SigningKey.objects.get().kid}


def test_processes_answering_their_first_getkeymanager_calls_at_once_make_one_rsa_key_between_them():
    def first_answer(_n):
        services.forget_cached_keys()
        return services.rsa_key_for(None).pk

    outcomes = run_at_once(8, first_answer)

    assert RsaKey.objects.count() == 1
    assert set(outcomes) == {RsaKey.objects.get().pk}


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


def wait_until_a_session_waits_for_a_lock(sessions: int = 1) -> None:
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0] >= sessions:
                return
            time.sleep(0.02)
    pytest.fail(f"Fewer than {sessions} sessions waited for a row lock within {LOCK_WAIT_SECONDS} s")


@postgresql_only
def test_freeing_all_devices_while_the_tally_writer_moves_their_last_seen_times_waits_instead_of_deadlocking():
    issued = make_license(plan=make_plan(max_activations=3))
    older, newer = sorted((activate(issued, name).activation for name in ("a", "b")), key=lambda device: device.pk)
    # The writer takes devices in id order; the device with the lower id is made the older one,
    # which listing newest first would take last.
    Activation.objects.filter(pk=older.pk).update(created_at=timezone.now() - timedelta(hours=2))
    seen = timezone.now() + timedelta(minutes=5)

    # Devices seen on re-activation, with no validation of their license in the same write: the
    # writer locks no license first. Another transaction holds the older device for a moment, so
    # the writer waits on it while freeing all devices starts: each then wants what the other holds,
    # unless both take devices in one order.
    with left_open(lambda: Activation.objects.select_for_update().get(pk=older.pk)):
        tally = in_thread(lambda: lookups.add_tallies({}, {older.pk: seen, newer.pk: seen}))
        wait_until_a_session_waits_for_a_lock()
        freeing = in_thread(lambda: services.deactivate_all_activations(license=issued.license, actor=SYSTEM))
        wait_until_a_session_waits_for_a_lock(sessions=2)

    tally.result(LOCK_WAIT_SECONDS)
    freed = freeing.result(LOCK_WAIT_SECONDS)
    assert {device.pk for device in freed} == {older.pk, newer.pk}
    assert not issued.license.activations.live().exists()
    assert set(Activation.objects.values_list("last_seen_at", flat=True)) == {seen}


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
def test_a_billing_id_for_a_customer_being_deleted_goes_to_a_new_customer_with_it():
    plan = make_plan()
    customer = make_customer(email="leaving@example.com", external_id="")

    with left_open(lambda: services.delete_catalog_record(record=customer, actor=SYSTEM)):
        issuing = in_thread(
            lambda: services.create_license(
                product=plan.product,
                plan=plan,
                customer_email="leaving@example.com",
                customer_external_id="cus_leaving",
                actor=SYSTEM,
            )
        )
        wait_until_a_session_waits_for_a_lock()

    license = issuing.result(LOCK_WAIT_SECONDS).license
    assert (license.customer.email, license.customer.external_id) == ("leaving@example.com", "cus_leaving")
    assert license.customer.pk != customer.pk


def test_orders_arriving_at_once_for_a_nameless_customer_name_it_once():
    plan = make_plan()
    customer = make_customer(email="nameless@example.com", name="")

    outcomes = run_at_once(
        12,
        lambda n: services.create_license(
            product=plan.product, plan=plan, customer_email=customer.email, customer_name=f"Name {n}", actor=SYSTEM
        ),
    )

    assert outcome_kinds(outcomes) == {"IssuedLicense": 12}
    customer.refresh_from_db()
    assert customer.name.startswith("Name ")
    renamed = AuditEvent.objects.filter(action="customer.changed", target_id=str(customer.pk))
    assert [event.changes["name"] for event in renamed] == [["", customer.name]]


def test_orders_arriving_at_once_for_a_new_billing_customer_make_one_customer_with_its_id():
    plan = make_plan()
    existing = make_customer(email="known@example.com", external_id="")

    outcomes = run_at_once(
        12,
        lambda n: services.create_license(
            product=plan.product,
            plan=plan,
            # Half for a customer no one has made yet, half for one known by e-mail without the id.
            customer_email="new@example.com" if n % 2 else existing.email,
            customer_external_id="cus_new" if n % 2 else "cus_known",
            actor=SYSTEM,
        ),
    )

    assert outcome_kinds(outcomes) == {"IssuedLicense": 12}
    new = Customer.objects.get(email="new@example.com")
    assert new.external_id == "cus_new"
    assert Customer.objects.get(pk=existing.pk).external_id == "cus_known"
    assert Customer.objects.count() == 2
    assert {outcome.license.customer_id for outcome in outcomes} == {new.pk, existing.pk}


def test_the_same_api_key_imported_at_once_is_stored_once_and_refused_by_name():
    shipped = "gkm_live_5f2b8c1d9e7a4036b1c2d3e4f5a6b7c8"

    outcomes = run_at_once(8, lambda n: services.create_api_key(name=f"app {n}", actor=SYSTEM, key=shipped))

    assert outcome_kinds(outcomes) == {"IssuedApiKey": 1, "InvalidInput": 7}
    assert {outcome.field for outcome in outcomes if isinstance(outcome, errors.InvalidInput)} == {"key"}
    assert AuditEvent.objects.filter(action="api_key.created").count() == 1


@postgresql_only
def test_a_license_naming_a_nameless_customer_being_deleted_gets_a_new_named_customer():
    plan = make_plan()
    customer = make_customer(email="leaving@example.com", name="")

    with left_open(lambda: services.delete_catalog_record(record=customer, actor=SYSTEM)):
        issuing = in_thread(
            lambda: services.create_license(
                product=plan.product, plan=plan, customer_email=customer.email, customer_name="Ada", actor=SYSTEM
            )
        )
        wait_until_a_session_waits_for_a_lock()

    owner = issuing.result(LOCK_WAIT_SECONDS).license.customer
    assert (owner.email, owner.name) == ("leaving@example.com", "Ada")
    assert owner.pk != customer.pk


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


@postgresql_only
def test_sign_in_links_asked_for_at_once_from_one_network_stop_at_the_per_ip_limit():
    customers = [make_customer(email=f"customer-{n}@example.com") for n in range(15)]

    outcomes = run_at_once(
        15, lambda n: services.request_sign_in_link(email=customers[n].email, ip_address="198.51.100.7")
    )

    limit = services.SIGN_IN_REQUESTS_PER_IP
    assert outcome_kinds(outcomes) == {"SignInRequest": limit, "TooManyRequests": 15 - limit}
    assert SignInLink.objects.count() == limit


@postgresql_only
def test_an_admin_save_that_waited_for_another_change_does_not_undo_it(staff_user):
    issued = make_license(plan=make_plan(max_activations=3))
    staff = Client()
    staff.force_login(staff_user)
    url = reverse("admin:licensing_license_change", args=[issued.license.pk])
    opened_version = re.search(r'name="opened_version" value="([^"]+)"', staff.get(url).content.decode()).group(1)
    form = {
        "plan": issued.license.plan_id,
        "max_activations": "4",
        "metadata": "{}",
        "activations-TOTAL_FORMS": "0",
        "activations-INITIAL_FORMS": "0",
        "opened_version": opened_version,
    }

    # The billing system's change is under way when staff save: their page passed its check.
    with left_open(
        lambda: services.update_license(
            license=License.objects.get(pk=issued.license.pk), max_activations=5, actor=SYSTEM
        )
    ):
        saving = in_thread(lambda: staff.post(url, form))
        wait_until_a_session_waits_for_a_lock()

    assert saving.result(LOCK_WAIT_SECONDS).status_code == 302
    assert License.objects.get(pk=issued.license.pk).max_activations == 5
    assert "was changed by someone else after you opened this page" in staff.get(url).content.decode()
    assert not AuditEvent.objects.filter(action="license.changed", actor_kind="staff").exists()


@postgresql_only
def test_a_product_change_made_while_another_field_is_patched_stays():
    product = make_product(name="Photon")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {services.create_api_key(name='billing', actor=SYSTEM).key}")

    def retire() -> None:
        changing = Product.objects.get(pk=product.pk)
        changing.is_active = False
        services.save_catalog_record(record=changing, actor=SYSTEM)

    with left_open(retire):
        renaming = in_thread(lambda: api.patch(f"/api/v1/products/{product.pk}", {"name": "Photon 2"}, format="json"))
        wait_until_a_session_waits_for_a_lock()

    response = renaming.result(LOCK_WAIT_SECONDS)
    assert response.status_code == 200
    assert (response.json()["name"], response.json()["is_active"]) == ("Photon 2", False)
    product.refresh_from_db()
    assert (product.name, product.is_active) == ("Photon 2", False)
    changes = AuditEvent.objects.filter(action="product.changed").order_by("id").values_list("changes", flat=True)
    assert list(changes) == [{"is_active": [True, False]}, {"name": ["Photon", "Photon 2"]}]


def portal_client(customer: Customer) -> Client:
    client = Client()
    session = client.session
    start_session(session, customer)
    session.save()
    return client


@postgresql_only
@pytest.mark.parametrize("page", ["deactivate-all", "deactivate-device"])
def test_a_customer_cannot_free_the_devices_of_a_license_moved_to_another_customer_meanwhile(page):
    former, new_owner = make_customer(email="former@example.com"), make_customer(email="new@example.com")
    issued = make_license(plan=make_plan(), customer=former)
    devices = [activate(issued, f"device-{n}").activation for n in range(2)]
    args = [issued.license.pk] if page == "deactivate-all" else [issued.license.pk, devices[0].pk]
    client = portal_client(former)

    with left_open(lambda: services.update_license_details(license=issued.license, customer=new_owner, actor=SYSTEM)):
        posting = in_thread(lambda: client.post(reverse(f"portal:{page}", args=args)))
        wait_until_a_session_waits_for_a_lock()

    assert posting.result(LOCK_WAIT_SECONDS).status_code == 404
    assert issued.license.activations.live().count() == 2
    assert not AuditEvent.objects.filter(action="activation.deactivated").exists()


@postgresql_only
def test_a_customer_gets_no_offline_file_for_a_license_moved_to_another_customer_meanwhile():
    former, new_owner = make_customer(email="former@example.com"), make_customer(email="new@example.com")
    issued = make_license(plan=make_plan(), customer=former)
    device = activate(issued, "device-1").activation
    client = portal_client(former)

    with left_open(lambda: services.update_license(license=issued.license, customer=new_owner, actor=SYSTEM)):
        posting = in_thread(lambda: client.post(reverse("portal:license-file", args=[issued.license.pk, device.pk])))
        wait_until_a_session_waits_for_a_lock()

    response = posting.result(LOCK_WAIT_SECONDS)
    assert response.status_code == 302
    assert "Content-Disposition" not in response
    assert not AuditEvent.objects.filter(action="activation.checked_out").exists()


@postgresql_only
@pytest.mark.parametrize("change", ["deactivate the device", "revoke the license"])
def test_no_offline_file_is_issued_for_a_device_deactivated_or_a_license_revoked_meanwhile(change):
    issued = make_license(plan=make_plan())
    activation = activate(issued, "device-1").activation
    changes = {
        "deactivate the device": lambda: services.deactivate_activation(activation=activation, actor=SYSTEM),
        "revoke the license": lambda: services.revoke_license(license=issued.license, actor=SYSTEM),
    }

    with left_open(changes[change]):
        checking_out = in_thread(
            lambda: services.checkout_license(license_key=issued.key, fingerprint="device-1", actor=SYSTEM)
        )
        wait_until_a_session_waits_for_a_lock()

    with pytest.raises(errors.LicensingError):
        checking_out.result(LOCK_WAIT_SECONDS)
    assert not AuditEvent.objects.filter(action="activation.checked_out").exists()


@postgresql_only
def test_a_license_locked_after_its_owner_changed_comes_with_its_new_owner():
    """PostgreSQL re-reads a locked row after the wait, but not the rows joined to it: the same change
    made twice at once was recorded twice, the second time as a change from the new owner to itself."""
    former, new_owner = make_customer(email="former@example.com"), make_customer(email="new@example.com")
    issued = make_license(plan=make_plan(), customer=former)

    def move():
        return services.update_license(license=issued.license, customer_email=new_owner.email, actor=SYSTEM)

    with left_open(move):
        moving_again = in_thread(move)
        wait_until_a_session_waits_for_a_lock()

    assert moving_again.result(LOCK_WAIT_SECONDS).customer == new_owner
    changes = AuditEvent.objects.filter(action="license.changed").values_list("changes", flat=True)
    assert list(changes) == [{"customer": [former.pk, new_owner.pk]}]


@postgresql_only
def test_an_activation_waiting_for_a_plan_change_follows_the_new_plans_rules():
    issued = make_license(plan=make_plan(max_activations=3))
    strict = make_plan(product=issued.license.product, identifier="strict", max_activations=3, slot_cooldown_minutes=60)
    activate(issued, "a")
    services.deactivate_activation(activation=Activation.objects.get(fingerprint="a"), actor=services.Actor.app())
    activate(issued, "b")
    activate(issued, "c")

    with left_open(lambda: services.change_license_plan(license=issued.license, plan=strict, actor=SYSTEM)):
        activating = in_thread(lambda: activate(issued, "d"))
        wait_until_a_session_waits_for_a_lock()

    with pytest.raises(errors.SlotCoolingDown):
        activating.result(LOCK_WAIT_SECONDS)


@postgresql_only
def test_an_activation_waiting_for_the_license_is_refused_once_its_product_is_withdrawn_meanwhile():
    """PostgreSQL gives a row it waited to lock as it is now, but the rows joined to it as they were
    when the statement began: the product was read as still active, and a new device was let in."""
    issued = make_license(plan=make_plan(max_activations=3))
    product = issued.license.product

    with left_open(lambda: activate(issued, "a")):
        activating = in_thread(lambda: activate(issued, "b"))
        wait_until_a_session_waits_for_a_lock()
        product.is_active = False
        services.save_catalog_record(record=product, actor=SYSTEM)

    with pytest.raises(errors.ProductInactive):
        activating.result(LOCK_WAIT_SECONDS)
    assert list(issued.license.activations.values_list("fingerprint", flat=True)) == ["a"]


@postgresql_only
def test_a_deactivation_waiting_for_the_license_follows_a_device_change_limit_set_meanwhile():
    plan = make_plan(max_activations=3)
    issued = make_license(plan=plan)
    device = activate(issued, "b").activation

    with left_open(lambda: activate(issued, "a")):
        deactivating = in_thread(lambda: services.deactivate_activation(activation=device, actor=services.Actor.app()))
        wait_until_a_session_waits_for_a_lock()
        plan.max_deactivations = 0
        services.save_catalog_record(record=plan, actor=SYSTEM)

    with pytest.raises(errors.DeactivationLimitReached):
        deactivating.result(LOCK_WAIT_SECONDS)
    assert Activation.objects.get(pk=device.pk).is_live


@postgresql_only
def test_a_license_moved_to_another_plan_between_the_lock_statements_start_and_its_lock_comes_with_that_plan(
    monkeypatch,
):
    """No one holds the row, so the lock is taken without waiting; but a change committed after the
    statement began is the row it locks, joined to the plan of before (or, the join failing, none)."""
    issued = make_license(plan=make_plan(max_activations=3))
    strict = make_plan(product=issued.license.product, identifier="strict", max_deactivations=0)
    select = lookups._select

    def slowed(**shape: Any) -> str:
        statement = select(**shape)
        # Only the call under test is slowed: the plan change locks the license too.
        if shape.get("skip_locked") and threading.current_thread() is not threading.main_thread():
            statement = statement.replace(" FOR NO KEY UPDATE", " AND pg_sleep(0.5) IS NOT NULL FOR NO KEY UPDATE")
        return statement

    monkeypatch.setattr(lookups, "_select", slowed)

    def lock() -> License:
        with transaction.atomic():
            return lookups.locked_license(license_id=issued.license.pk)

    locking = in_thread(lock)
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'")
            if cursor.fetchone()[0]:
                break
            time.sleep(0.02)
        else:
            pytest.fail("The lock statement never began")
    services.change_license_plan(license=issued.license, plan=strict, actor=SYSTEM)

    locked = locking.result(LOCK_WAIT_SECONDS)
    assert locked.plan_id == strict.pk
    assert locked.plan == strict
