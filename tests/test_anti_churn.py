"""The plan's anti-churn policy: device changes per window, and a cooldown before a freed slot is reused."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core import mail
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format

from licensing import errors, services
from licensing.models import Activation, AuditEvent, License
from tests.factories import activate, make_customer, make_license, make_plan

pytestmark = pytest.mark.django_db


@pytest.fixture
def customer():
    return make_customer(email="ada@example.com", name="Ada")


@pytest.fixture
def churny(customer):
    """A license whose plan allows 2 device changes a month, with 3 live devices."""
    issued = make_license(plan=make_plan(max_activations=3, max_deactivations=2), customer=customer)
    for name in ["a", "b", "c"]:
        activate(issued, name)
    return issued


def deactivate(issued, fingerprint, actor):
    activation = services.find_activation(license_key=issued.key, fingerprint=fingerprint)
    return services.deactivate_activation(activation=activation, actor=actor)


def sign_in(client, customer) -> None:
    client.post(reverse("portal:sign-in"), {"email": customer.email})
    client.post(mail.outbox[-1].body.split("testserver", 1)[1].split()[0])


def license_with_a_slot_cooling_down(customer, actor, *, max_activations: int = 1, fingerprint: str = "a"):
    """A license of a plan with an hour's slot cooldown, whose device `fingerprint` an app just freed."""
    issued = make_license(plan=make_plan(max_activations=max_activations, slot_cooldown_minutes=60), customer=customer)
    activate(issued, fingerprint)
    deactivate(issued, fingerprint, actor)
    return issued


def test_a_device_imported_from_the_old_server_is_not_held_up_by_a_slot_cooling_down(customer, app_actor):
    issued = license_with_a_slot_cooling_down(customer, app_actor)

    with pytest.raises(errors.SlotCoolingDown):
        activate(issued, "new")
    imported = services.import_activation(license=issued.license, fingerprint="old", actor=services.Actor.system())

    assert list(issued.license.activations.live()) == [imported]


def test_apps_get_the_plans_number_of_device_changes_then_a_refusal(churny, app_actor):
    deactivate(churny, "a", app_actor)
    deactivate(churny, "b", app_actor)

    with pytest.raises(errors.DeactivationLimitReached) as raised:
        deactivate(churny, "c", app_actor)

    assert (raised.value.status, raised.value.facts["limit"], raised.value.facts["window_days"]) == (403, 2, 30)
    assert Activation.objects.get(license=churny.license, fingerprint="c").is_live
    refusal = AuditEvent.objects.get(action="activation.deactivation_refused")
    assert refusal.actor_kind == "app"
    assert services.device_changes(churny.license).remaining == 0


def test_changes_older_than_the_window_no_longer_count(churny, app_actor):
    deactivate(churny, "a", app_actor)
    deactivate(churny, "b", app_actor)
    Activation.objects.filter(license=churny.license).exclude(deactivated_at=None).update(
        deactivated_at=timezone.now() - timedelta(days=31)
    )

    assert not deactivate(churny, "c", app_actor).already_inactive
    assert services.device_changes(churny.license).remaining == 1


def test_staff_are_never_limited(churny, app_actor, staff_user):
    deactivate(churny, "a", app_actor)
    deactivate(churny, "b", app_actor)

    assert not deactivate(churny, "c", services.Actor.staff(staff_user)).already_inactive


def test_apps_calling_a_dialect_with_an_api_key_count_as_apps(api_client, churny):
    key = services.create_api_key(name="shipped in the app", apps_only=True, actor=services.Actor.system()).key

    def deactivate_through_getkeymanager(identifier):
        body = {"api_key": key, "license_key": churny.key, "identifier": identifier}
        return api_client.post("/compat/getkeymanager/api/v1/deactivate", body).json()["response"]["code"]

    assert [deactivate_through_getkeymanager(name) for name in ["a", "b", "c"]] == [400, 400, 150]
    freed = Activation.objects.filter(license=churny.license, deactivated_at__isnull=False)
    assert set(freed.values_list("deactivated_by_kind", flat=True)) == {"app"}


def test_the_vendors_own_systems_are_never_limited(management_client, churny):
    devices = Activation.objects.filter(license=churny.license).order_by("fingerprint")
    base = f"/api/v1/licenses/{churny.license.pk}/activations"

    statuses = [management_client.post(f"{base}/{device.pk}/deactivate").status_code for device in devices]

    assert statuses == [200, 200, 200]
    assert services.device_changes(churny.license).remaining == 2


def test_deactivating_all_needs_enough_changes_left(churny, customer):
    with pytest.raises(errors.DeactivationLimitReached) as refused:
        services.deactivate_all_activations(license=churny.license, actor=services.Actor.customer(customer))

    assert refused.value.message == (
        "Freeing 3 devices takes 3 device changes, and 2 are left for now: free the devices no longer used "
        "one at a time."
    )
    assert churny.license.activations.live().count() == 3
    assert AuditEvent.objects.filter(action="activation.deactivation_refused").count() == 1


def test_a_freed_slot_cools_down_before_reuse(customer, app_actor):
    issued = make_license(plan=make_plan(max_activations=2, slot_cooldown_minutes=60), customer=customer)
    activate(issued, "a")
    activate(issued, "b")
    deactivate(issued, "a", app_actor)

    with pytest.raises(errors.SlotCoolingDown) as raised:
        activate(issued, "new")

    assert raised.value.facts["available_at"] > timezone.now() + timedelta(minutes=59)
    opens = services.minute_after(raised.value.facts["available_at"])
    assert f"its slot takes a new device from {opens:%Y-%m-%d %H:%M} UTC" in raised.value.message
    assert AuditEvent.objects.filter(action="activation.refused").count() == 1
    Activation.objects.filter(fingerprint="a").update(deactivated_at=timezone.now() - timedelta(minutes=61))
    assert activate(issued, "new").created


def test_validate_counts_a_cooling_slot_as_not_remaining_until_it_cools(api_client, customer, app_actor):
    issued = make_license(plan=make_plan(max_activations=3, slot_cooldown_minutes=60), customer=customer)
    activate(issued, "a")
    activate(issued, "b")
    deactivate(issued, "a", app_actor)

    def remaining():
        response = api_client.post("/api/v1/licenses/validate", {"key": issued.key}, format="json")
        return response.json()["license"]["activations_remaining"]

    assert remaining() == 1
    assert activate(issued, "c").created
    assert remaining() == 0
    Activation.objects.filter(fingerprint="a").update(deactivated_at=timezone.now() - timedelta(minutes=61))
    assert remaining() == 1


def test_the_native_api_refuses_with_its_code(api_client, churny):
    for fingerprint in ["a", "b"]:
        api_client.post("/api/v1/licenses/deactivate", {"key": churny.key, "fingerprint": fingerprint}, format="json")

    response = api_client.post("/api/v1/licenses/deactivate", {"key": churny.key, "fingerprint": "c"}, format="json")

    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "deactivation_limit_reached"
    assert (error["limit"], error["window_days"], error["remaining"]) == (2, 30, 0)
    first_change = Activation.objects.get(license=churny.license, fingerprint="a").deactivated_at
    assert error["available_at"] == (first_change + timedelta(days=30)).isoformat().replace("+00:00", "Z")


def test_getkeymanager_answers_its_access_denied_code(api_client, churny, app_actor):
    key = services.create_api_key(name="apps", actor=services.Actor.system()).key
    deactivate(churny, "a", app_actor)
    deactivate(churny, "b", app_actor)

    response = api_client.post(
        "/compat/getkeymanager/api/v1/deactivate", {"api_key": key, "license_key": churny.key, "identifier": "c"}
    )

    assert response.status_code == 403
    assert response.json()["response"]["code"] == 150


def test_the_admin_license_page_says_how_many_device_changes_are_left_and_when_the_next_comes_back(
    staff_client, churny, app_actor, issued
):
    page_url = reverse("admin:licensing_license_change", args=[churny.license.pk])
    fresh = staff_client.get(page_url).content.decode()
    deactivate(churny, "a", app_actor)
    deactivate(churny, "b", app_actor)
    used_up = staff_client.get(page_url).content.decode()
    unlimited = staff_client.get(reverse("admin:licensing_license_change", args=[issued.license.pk])).content.decode()

    assert "2 of 2 left to apps and the customer (a deactivation counts for 30 days)</div>" in fresh
    first_change = Activation.objects.get(license=churny.license, fingerprint="a").deactivated_at
    back_at = date_format(services.minute_after(first_change + timedelta(days=30)), "j F Y, H:i T")
    assert (
        "0 of 2 left to apps and the customer (a deactivation counts for 30 days); the next comes back on "
        f"{back_at}</div>"
    ) in used_up
    assert '<div class="readonly">not limited</div>' in unlimited


def test_the_portal_says_a_deactivation_counts_for_1_day_not_1_days(client, customer):
    issued = make_license(
        plan=make_plan(max_activations=3, max_deactivations=2, deactivation_window_days=1), customer=customer
    )
    sign_in(client, customer)

    page = client.get(reverse("portal:license", args=[issued.license.pk])).content.decode()

    assert "2 of 2 left; a deactivation counts for 1 day</dd>" in page


def test_a_refusal_with_no_change_left_always_says_when_the_next_comes_back(churny, app_actor, monkeypatch):
    deactivate(churny, "a", app_actor)
    deactivate(churny, "b", app_actor)
    first_change = Activation.objects.get(license=churny.license, fingerprint="a").deactivated_at
    window_end = first_change + timedelta(days=30)
    # The clock moves past the first change's window right after it is first read: a second read of
    # the changes made would find one left, and give "none left" with no time.
    clock = iter([window_end])
    monkeypatch.setattr(timezone, "now", lambda: next(clock, window_end + timedelta(milliseconds=1)))

    refusal = services.deactivation_refusal(churny.license, actor=app_actor, count=1)

    assert (refusal.code, refusal.facts["remaining"]) == ("deactivation_limit_reached", 0)
    assert refusal.facts["available_at"] == window_end


def test_the_portal_shows_changes_left_and_refuses_clearly(client, churny, customer, app_actor):
    sign_in(client, customer)
    page = client.get(reverse("portal:license", args=[churny.license.pk])).content.decode()
    assert "2 of 2 left; a deactivation counts for 30 days" in page
    deactivate(churny, "a", app_actor)
    deactivate(churny, "b", app_actor)
    page = client.get(reverse("portal:license", args=[churny.license.pk])).content.decode()
    assert "0 of 2 left; a deactivation counts for 30 days" in page
    activation = Activation.objects.get(license=churny.license, fingerprint="c")

    response = client.post(reverse("portal:deactivate-device", args=[churny.license.pk, activation.pk]), follow=True)

    assert response.status_code == 200
    assert "no device changes left for now" in response.content.decode()
    assert Activation.objects.get(pk=activation.pk).is_live


def test_a_device_freed_with_the_last_change_and_opened_again_has_nothing_to_do_not_a_refusal(
    client, churny, customer, app_actor
):
    sign_in(client, customer)
    deactivate(churny, "a", app_actor)
    device = Activation.objects.get(license=churny.license, fingerprint="b")
    url = reverse("portal:deactivate-device", args=[churny.license.pk, device.pk])
    client.post(url)

    again = client.get(url).content.decode()

    assert "<h1>Nothing to deactivate</h1>" in again
    assert "b is already deactivated: there is nothing to do." in again
    assert "Contact support" not in again


def test_the_portal_offers_no_deactivation_it_would_refuse_and_says_when_a_change_comes_back(
    client, churny, customer, app_actor, settings
):
    settings.SUPPORT_URL = "https://support.example.com/"
    sign_in(client, customer)
    deactivate(churny, "a", app_actor)
    deactivate(churny, "b", app_actor)
    first_change = Activation.objects.get(license=churny.license, fingerprint="a").deactivated_at
    device = Activation.objects.get(license=churny.license, fingerprint="c")
    back_at = services.minute_after(first_change + timedelta(days=30))

    page = client.get(reverse("portal:license", args=[churny.license.pk])).content.decode()
    confirmation = client.get(reverse("portal:deactivate-device", args=[churny.license.pk, device.pk]))

    assert f"the next comes back on {date_format(back_at, 'j F Y, H:i T')}" in page
    assert reverse("portal:deactivate-device", args=[churny.license.pk, device.pk]) not in page
    assert reverse("portal:deactivate-all", args=[churny.license.pk]) not in page
    assert '<a href="https://support.example.com/">Contact support</a> to move a device.' in page
    # A confirmation reached by its address says so at once, with no button to press in vain.
    assert "no device changes left for now" in confirmation.content.decode()
    assert "<h1>Not enough device changes left</h1>" in confirmation.content.decode()
    assert "Yes, deactivate it" not in confirmation.content.decode()
    assert Activation.objects.get(pk=device.pk).is_live


def test_with_the_limit_lowered_below_the_changes_made_a_change_comes_back_when_enough_stop_counting(
    churny, app_actor, actor
):
    deactivate(churny, "a", app_actor)
    deactivate(churny, "b", app_actor)
    second_change = Activation.objects.get(license=churny.license, fingerprint="b").deactivated_at
    plan = churny.license.plan

    plan.max_deactivations = 1
    services.save_catalog_record(record=plan, actor=actor)
    lowered = services.device_changes(License.objects.get(pk=churny.license.pk)).back_at
    plan.max_deactivations = 0
    services.save_catalog_record(record=plan, actor=actor)
    none_allowed = services.device_changes(License.objects.get(pk=churny.license.pk)).back_at

    assert lowered == second_change + timedelta(days=30)
    assert none_allowed is None


def test_freeing_all_at_once_says_before_the_confirmation_that_too_few_changes_are_left(client, churny, customer):
    sign_in(client, customer)
    page = client.get(reverse("portal:license", args=[churny.license.pk])).content.decode()

    confirmation = client.get(reverse("portal:deactivate-all", args=[churny.license.pk])).content.decode()

    assert reverse("portal:deactivate-all", args=[churny.license.pk]) in page
    assert (
        "takes 3 device changes, and 2 are left for now: free the devices no longer used one at a time" in confirmation
    )
    assert "Yes, deactivate all devices" not in confirmation


def test_the_portal_says_when_a_freed_slot_takes_a_new_device(client, customer, app_actor):
    issued = license_with_a_slot_cooling_down(customer, app_actor, max_activations=2)
    freed_at = Activation.objects.get(fingerprint="a").deactivated_at
    sign_in(client, customer)

    page = client.get(reverse("portal:license", args=[issued.license.pk])).content.decode()

    # Rounded up to the minute: a person trying at the minute shown is let in.
    reopens = timezone.localtime(freed_at.replace(second=0, microsecond=0) + timedelta(minutes=61))
    assert f"1 freed slot is cooling down: it takes a new device from {date_format(reopens, 'j F Y, H:i T')}" in page


def test_the_portals_list_says_a_freed_slot_is_cooling_down_beside_the_slots_in_use(client, customer, app_actor):
    license_with_a_slot_cooling_down(customer, app_actor)
    freed_at = Activation.objects.get(fingerprint="a").deactivated_at
    sign_in(client, customer)

    page = client.get(reverse("portal:licenses")).content.decode()

    reopens = timezone.localtime(services.minute_after(freed_at + timedelta(minutes=60)))
    assert "0 of 1 slot in use" in page
    assert f"1 freed slot is cooling down: it takes a new device from {date_format(reopens, 'j F Y, H:i T')}" in page


def test_the_portals_list_reads_every_licenses_cooling_slots_in_one_query(client, customer, app_actor):
    license_with_a_slot_cooling_down(customer, app_actor, fingerprint="a")
    sign_in(client, customer)
    with CaptureQueriesContext(connection) as one:
        client.get(reverse("portal:licenses"))
    license_with_a_slot_cooling_down(customer, app_actor, fingerprint="b")
    license_with_a_slot_cooling_down(customer, app_actor, fingerprint="c")

    with CaptureQueriesContext(connection) as three:
        page = client.get(reverse("portal:licenses")).content.decode()

    assert page.count("1 freed slot is cooling down") == 3
    assert len(three) == len(one)


def test_the_portals_list_tells_of_no_cooling_slot_on_a_license_that_cannot_be_used(client, customer, app_actor):
    issued = license_with_a_slot_cooling_down(customer, app_actor)
    services.suspend_license(license=issued.license, actor=app_actor)
    sign_in(client, customer)

    page = client.get(reverse("portal:licenses")).content.decode()

    assert "Suspended" in page
    assert "cooling down" not in page


def test_a_device_freed_in_the_portal_says_when_its_slot_takes_a_new_one(client, customer):
    issued = make_license(plan=make_plan(max_activations=2, slot_cooldown_minutes=60), customer=customer)
    activation = activate(issued, "a", name="Old laptop").activation
    activate(issued, "b")
    sign_in(client, customer)

    response = client.post(reverse("portal:deactivate-device", args=[issued.license.pk, activation.pk]), follow=True)

    freed_at = Activation.objects.get(pk=activation.pk).deactivated_at
    reopens = timezone.localtime(services.minute_after(freed_at + timedelta(minutes=60)))
    assert (
        f"Old laptop deactivated. 1 of 2 slots in use. A freed slot takes a new device from "
        f"{date_format(reopens, 'j F Y, H:i T')}."
    ) in response.content.decode()


def test_a_device_freed_in_the_portal_beside_a_free_slot_tells_of_no_wait(client, customer):
    issued = make_license(plan=make_plan(max_activations=2, slot_cooldown_minutes=60), customer=customer)
    activation = activate(issued, "a", name="Old laptop").activation
    sign_in(client, customer)

    response = client.post(reverse("portal:deactivate-device", args=[issued.license.pk, activation.pk]), follow=True)

    assert "Old laptop deactivated. 0 of 2 slots in use." in response.content.decode()
    assert "A freed slot takes a new device" not in response.content.decode()


def test_the_device_that_freed_a_slot_may_come_back_to_it(customer, app_actor):
    issued = license_with_a_slot_cooling_down(customer, app_actor)

    assert activate(issued, "a").created
    deactivate(issued, "a", app_actor)
    with pytest.raises(errors.SlotCoolingDown):
        activate(issued, "b")


def test_a_device_that_came_back_holds_one_slot_not_a_cooling_one_too(customer, app_actor):
    issued = make_license(plan=make_plan(max_activations=2, slot_cooldown_minutes=60), customer=customer)
    activate(issued, "a")
    activate(issued, "b")
    deactivate(issued, "a", app_actor)
    activate(issued, "a")
    deactivate(issued, "a", app_actor)
    activate(issued, "a")
    deactivate(issued, "b", app_actor)

    # b freed its own slot; a's two departures are behind it, since a is live again.
    assert activate(issued, "b").created
    deactivate(issued, "b", app_actor)
    with pytest.raises(errors.SlotCoolingDown):
        activate(issued, "c")


def test_a_device_that_left_twice_cools_one_slot(customer, app_actor):
    issued = make_license(plan=make_plan(max_activations=2, slot_cooldown_minutes=60), customer=customer)
    activate(issued, "a")
    deactivate(issued, "a", app_actor)
    activate(issued, "a")
    deactivate(issued, "a", app_actor)

    assert activate(issued, "b").created
    with pytest.raises(errors.SlotCoolingDown):
        activate(issued, "c")


def test_an_unlimited_license_has_no_limit_of_device_changes(customer, app_actor):
    issued = make_license(plan=make_plan(max_activations=None, max_deactivations=1), customer=customer)
    for name in ["a", "b"]:
        activate(issued, name)

    deactivate(issued, "a", app_actor)
    deactivate(issued, "b", app_actor)

    assert services.device_changes(issued.license).remaining is None
    assert not Activation.objects.filter(license=issued.license, deactivated_at=None).exists()


def test_refusals_stay_out_of_the_device_history(churny, app_actor):
    deactivate(churny, "a", app_actor)
    deactivate(churny, "b", app_actor)
    with pytest.raises(errors.DeactivationLimitReached):
        deactivate(churny, "c", app_actor)

    actions = {event.action for event in services.device_history(churny.license)}

    assert actions == {"activation.created", "activation.deactivated"}
