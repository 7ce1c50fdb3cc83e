from __future__ import annotations

import importlib
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.contrib.admin.models import DELETION, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.staticfiles import finders
from django.core import mail
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import escape

from licensing import errors, services
from licensing.admin import CustomerAdmin, FirstRowsFormSet, LicenseAdmin
from licensing.models import Activation, ApiKey, AuditEvent, Customer, License, Plan, Product, SigningKey
from tests.factories import activate, make_customer, make_license, make_plan, make_product, nested

pytestmark = pytest.mark.django_db

MODELS = ["product", "plan", "customer", "license", "activation", "auditevent", "signingkey", "apikey"]


@pytest.fixture
def world(issued, actor):
    """One of everything, so every admin page has something to show."""
    activation = activate(issued, "ada-mac", name="Ada's MacBook").activation
    services.deactivate_activation(activation=activate(issued, "old-pc").activation, actor=actor)
    return {
        "product": issued.license.product,
        "plan": issued.license.plan,
        "customer": issued.license.customer,
        "license": issued.license,
        "activation": activation,
        "auditevent": AuditEvent.objects.first(),
        "signingkey": services.current_signing_key(),
        "apikey": services.create_api_key(name="billing", actor=actor).api_key,
    }


def changelist(model: str) -> str:
    return reverse(f"admin:licensing_{model}_changelist")


@pytest.fixture
def viewer_client(client):
    """A staff member who may view licenses and their devices, and change nothing."""
    viewer = get_user_model().objects.create_user("viewer", password="a-long-test-password", is_staff=True)
    viewer.user_permissions.add(
        Permission.objects.get(codename="view_license"), Permission.objects.get(codename="view_activation")
    )
    client.force_login(viewer)
    return client


def change_url(obj) -> str:
    return reverse(f"admin:licensing_{obj._meta.model_name}_change", args=[obj.pk])


def action(client, model: str, name: str, objects, **extra):
    data = {"action": name, "_selected_action": [str(obj.pk) for obj in objects], **extra}
    return client.post(changelist(model), data, follow=True)


def page_messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


class _FormFields(HTMLParser):
    """The fields a browser would send from one form of a page, as they stand when it is opened."""

    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id, self.inside, self.fields = form_id, False, {}
        self.textarea: str | None = None
        self.select: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.inside = attrs.get("id") == self.form_id
        if not self.inside or "name" not in attrs and tag != "option":
            return
        if tag == "input" and attrs.get("type") not in ("submit", "button", "file"):
            if attrs.get("type") not in ("checkbox", "radio") or "checked" in attrs:
                self.fields[attrs["name"]] = attrs.get("value", "on" if attrs.get("type") == "checkbox" else "")
        elif tag == "textarea":
            self.textarea = attrs["name"]
            self.fields[self.textarea] = ""
        elif tag == "select":
            self.select = attrs["name"]
        elif tag == "option" and self.select and ("selected" in attrs or self.select not in self.fields):
            self.fields[self.select] = attrs.get("value", "")

    def handle_endtag(self, tag):
        if tag == "form":
            self.inside = False
        elif tag == "textarea":
            self.textarea = None
        elif tag == "select":
            self.select = None

    def handle_data(self, data):
        if self.textarea:
            self.fields[self.textarea] += data.removeprefix("\n") if not self.fields[self.textarea] else data


def opened_page(client, record) -> dict[str, str]:
    """What the record's change page sends back when saved as it was opened."""
    reader = _FormFields(f"{record._meta.model_name}_form")
    reader.feed(client.get(change_url(record)).content.decode())
    return reader.fields


# ---------------------------------------------------------------- pages and access


@pytest.mark.parametrize("model", MODELS)
def test_every_list_and_change_page_renders_for_staff(staff_client, world, model):
    assert staff_client.get(changelist(model)).status_code == 200
    assert staff_client.get(change_url(world[model])).status_code == 200


def test_the_admin_shows_times_with_their_zone(staff_client, issued):
    created_at = timezone.localtime(License.objects.get(pk=issued.license.pk).created_at)

    page = staff_client.get(change_url(issued.license)).content.decode()

    assert f'<div class="readonly">{date_format(created_at, "N j, Y, P")} UTC</div>' in page


def test_the_admin_names_the_product_and_view_site_opens_the_customer_portal(staff_client):
    page = staff_client.get(reverse("admin:index")).content.decode()

    assert "<title>Site administration | License server</title>" in page
    assert f'<a href="{reverse("portal:sign-in")}">View site</a>' in page


@pytest.mark.parametrize("model", ["product", "plan", "customer", "license"])
def test_add_pages_render_for_staff(staff_client, model):
    assert staff_client.get(reverse(f"admin:licensing_{model}_add")).status_code == 200


@pytest.mark.parametrize("model", MODELS)
def test_non_staff_and_anonymous_users_are_refused(client, world, model):
    assert client.get(changelist(model)).status_code == 302
    customer_user = get_user_model().objects.create_user("ada", "ada@example.com", "a-long-test-password")
    client.force_login(customer_user)

    response = client.get(changelist(model))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_staff_without_permissions_cannot_open_licenses(client, world):
    clerk = get_user_model().objects.create_user("clerk", password="a-long-test-password", is_staff=True)
    client.force_login(clerk)

    assert client.get(changelist("license")).status_code == 403


@pytest.mark.parametrize("model", MODELS)
def test_list_pages_make_the_same_number_of_queries_however_many_rows(staff_client, world, model, actor):
    def count_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            assert staff_client.get(changelist(model)).status_code == 200
        return len(queries)

    few = count_queries()
    for n in range(6):
        services.create_signing_key(actor=actor, replace=True)
        services.create_api_key(name=f"key {n}", actor=actor)
        plan = make_plan(max_activations=None)
        issued = make_license(plan=plan, customer=make_customer())
        activate(issued, f"device-{n}")
        services.suspend_license(license=issued.license, actor=actor)

    assert count_queries() == few


# ---------------------------------------------------------------- licenses


def test_staff_create_a_license_with_a_generated_key_and_see_it(staff_client, plan, customer):
    response = staff_client.post(
        reverse("admin:licensing_license_add"),
        {"product": plan.product.pk, "plan": plan.pk, "customer": customer.pk, "metadata": "{}"},
        follow=True,
    )

    license = License.objects.get()
    key = re.search(r"Its key is (\S+)", " ".join(page_messages(response))).group(1)
    assert services.get_license_by_key(key) == license
    assert license.max_activations == 3
    assert license.expires_at is None
    event = AuditEvent.objects.get(action="license.created")
    assert (event.actor_kind, event.actor_display) == ("staff", "staff")
    assert key in staff_client.get(change_url(license)).content.decode()


def test_staff_create_a_license_by_its_plan_alone(staff_client, plan, customer):
    response = staff_client.post(
        reverse("admin:licensing_license_add"), {"plan": plan.pk, "customer": customer.pk, "metadata": "{}"}
    )

    assert response.status_code == 302
    assert (License.objects.get().product, License.objects.get().plan) == (plan.product, plan)


def test_a_license_with_neither_product_nor_plan_is_refused_on_the_product(staff_client, customer):
    response = staff_client.post(reverse("admin:licensing_license_add"), {"customer": customer.pk, "metadata": "{}"})

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {"product": ["Choose a product, or a plan of it."]}
    assert not License.objects.exists()


def test_staff_import_a_license_with_its_existing_key(staff_client, plan):
    staff_client.post(
        reverse("admin:licensing_license_add"),
        {
            "product": plan.product.pk,
            "plan": plan.pk,
            "key": "GKM-IMPORTED-2024-0001",
            "max_activations": "7",
            "metadata": "{}",
        },
    )

    license = services.get_license_by_key("GKM-IMPORTED-2024-0001")
    assert license.max_activations == 7


def test_staff_issue_a_lifetime_license_on_a_plan_with_a_limit_and_a_duration(staff_client, product):
    yearly = make_plan(product=product, identifier="yearly", duration_unit="year", duration_value=1)
    form = {"product": product.pk, "plan": yearly.pk, "metadata": "{}", "unlimited_devices": "on"}

    staff_client.post(reverse("admin:licensing_license_add"), {**form, "key": "LIFETIME-1", "never_expires": "on"})
    staff_client.post(reverse("admin:licensing_license_add"), {**form, "key": "YEARLY-1"})
    refused = staff_client.post(
        reverse("admin:licensing_license_add"),
        {**form, "key": "BOTH-1", "never_expires": "on", "expires_at_0": "2030-01-01", "expires_at_1": "00:00:00"},
    )

    lifetime, yearly_one = (services.get_license_by_key(key) for key in ("LIFETIME-1", "YEARLY-1"))
    assert (lifetime.max_activations, lifetime.expires_at) == (None, None)
    assert yearly_one.max_activations is None
    assert yearly_one.expires_at is not None
    assert "Leave Expires at empty, or untick this." in refused.content.decode()
    assert not License.objects.filter(key_suffix="BOTH-1").exists()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"key": "DUPLICATE-KEY-1"}, "A license with this key already exists."),
        ({"key": " spaced "}, "printable characters"),
        ({"plan": "other"}, "This plan belongs to another product."),
    ],
)
def test_license_add_form_shows_service_refusals(staff_client, plan, data, message):
    make_license(plan=plan, key="DUPLICATE-KEY-1")
    other_plan = make_plan()
    form = {"product": plan.product.pk, "plan": plan.pk, "metadata": "{}", **data}
    if form["plan"] == "other":
        form["plan"] = other_plan.pk

    response = staff_client.post(reverse("admin:licensing_license_add"), form)

    assert response.status_code == 200
    assert message in response.content.decode()
    assert License.objects.count() == 1


def test_editing_a_license_goes_through_the_services(staff_client, issued, other_customer):
    new_expiry = timezone.now() + timedelta(days=90)
    response = staff_client.post(
        change_url(issued.license),
        {
            "customer": other_customer.pk,
            "plan": issued.license.plan_id,
            "max_activations": "5",
            "expires_at_0": new_expiry.strftime("%Y-%m-%d"),
            "expires_at_1": "12:00:00",
            "metadata": '{"seats": 5}',
            "activations-TOTAL_FORMS": "0",
            "activations-INITIAL_FORMS": "0",
            **opened(issued.license),
        },
    )

    assert response.status_code == 302
    license = License.objects.get(pk=issued.license.pk)
    assert (license.customer, license.max_activations, license.metadata) == (other_customer, 5, {"seats": 5})
    assert license.expires_at.date() == new_expiry.date()
    actions = set(AuditEvent.objects.filter(actor_kind="staff", license=license).values_list("action", flat=True))
    assert actions == {"license.changed", "license.limit_changed", "license.expiry_shortened"}


def test_a_revoked_licenses_page_changes_its_owner_and_metadata_not_its_terms(staff_client, issued, actor):
    license = services.revoke_license(license=issued.license, actor=actor)
    page = staff_client.get(change_url(license)).content.decode()

    response = staff_client.post(
        change_url(license),
        {
            "customer": "",
            "metadata": '{"refund": "R-1"}',
            "activations-TOTAL_FORMS": "0",
            "activations-INITIAL_FORMS": "0",
            **opened(license),
        },
    )

    for term in ["plan", "max_activations", "expires_at_0", "limit_usage"]:
        assert f'name="{term}"' not in page
    assert "Revoked for good: its plan, device limit, expiry and usage limit no longer change." in page
    assert 'name="metadata"' in page
    assert response.status_code == 302
    stored = License.objects.get(pk=license.pk)
    assert (stored.customer, stored.metadata) == (None, {"refund": "R-1"})
    assert (stored.max_activations, stored.expires_at) == (license.max_activations, license.expires_at)


def test_extending_a_revoked_license_is_refused_and_said(staff_client, plan, actor):
    expires_at = timezone.now() + timedelta(days=5)
    active, revoked = (make_license(plan=plan, expires_at=expires_at).license for _ in range(2))
    services.revoke_license(license=revoked, actor=actor)

    response = action(staff_client, "license", "extend", [active, revoked], days="30")

    assert License.objects.get(pk=active.pk).expires_at == expires_at + timedelta(days=30)
    assert License.objects.get(pk=revoked.pk).expires_at == expires_at
    assert page_messages(response) == [
        f"{revoked.masked_key}: A revoked license's terms (plan, limits, expiry) cannot change: issue a new "
        "license instead.",
        "1 license extended.",
        f"{active.masked_key} now expires on {expiry_text(expires_at + timedelta(days=30))}.",
    ]


def test_licenses_an_action_refuses_alike_are_told_in_one_line(staff_client, plan):
    licenses = [make_license(plan=plan, expires_at=timezone.now() + timedelta(days=5)).license for _ in range(5)]

    response = action(staff_client, "license", "extend", licenses, days="99999", unit="years")

    (said,) = page_messages(response)
    named, _, reason = said.partition(" and 2 more: ")
    assert reason == "That would expire past the year 9999."
    assert len(set(named.split(", ")) & {license.masked_key for license in licenses}) == 3


def opened(record) -> dict[str, str]:
    """What a page opened now sends back: the record's last change when it was opened."""
    return {"opened_version": type(record).objects.get(pk=record.pk).updated_at.isoformat()}


def test_a_page_opened_before_another_change_cannot_undo_it(staff_client, issued, customer, actor):
    page = staff_client.get(change_url(issued.license)).content.decode()
    opened_version = re.search(r'name="opened_version" value="([^"]+)"', page).group(1)
    # Meanwhile the billing system records the seats bought.
    services.update_license(license=License.objects.get(pk=issued.license.pk), metadata={"seats": 9}, actor=actor)

    response = staff_client.post(
        change_url(issued.license),
        {
            "customer": customer.pk,
            "plan": issued.license.plan_id,
            "max_activations": "7",
            "metadata": "{}",
            "activations-TOTAL_FORMS": "0",
            "activations-INITIAL_FORMS": "0",
            "opened_version": opened_version,
        },
    )

    assert response.status_code == 200
    assert "This license was changed by someone else after you opened this page" in response.content.decode()
    license = License.objects.get(pk=issued.license.pk)
    assert (license.metadata, license.max_activations) == ({"seats": 9}, issued.license.max_activations)


def test_staff_move_a_license_to_another_plan_and_are_warned_of_devices_over_its_limit(
    staff_client, issued, customer, product
):
    solo = make_plan(product=product, name="Solo", identifier="solo", max_activations=1)
    elsewhere = make_plan(product=make_product(name="Other", slug="other"))
    activate(issued, "a")
    activate(issued, "b")
    form = {
        "customer": customer.pk,
        "max_activations": "3",
        "metadata": "{}",
        "activations-TOTAL_FORMS": "0",
        "activations-INITIAL_FORMS": "0",
    }

    refused = staff_client.post(change_url(issued.license), {**form, **opened(issued.license), "plan": elsewhere.pk})
    assert License.objects.get(pk=issued.license.pk).plan == issued.license.plan
    moved = staff_client.post(
        change_url(issued.license), {**form, **opened(issued.license), "plan": solo.pk}, follow=True
    )

    assert "Choose a plan of this license&#x27;s product, Photon Editor." in refused.content.decode()
    license = License.objects.get(pk=issued.license.pk)
    assert (license.plan, license.max_activations) == (solo, 1)
    assert "2 devices are in use, more than the new limit of 1." in " ".join(page_messages(moved))


def test_a_percent_sign_in_the_product_name_does_not_break_the_plan_refusal(staff_client, customer):
    product = make_product(name="100% Off Tool", slug="off")
    issued = make_license(plan=make_plan(product=product), customer=customer)
    form = {
        "customer": customer.pk,
        "plan": make_plan().pk,
        "max_activations": "3",
        "metadata": "{}",
        "activations-TOTAL_FORMS": "0",
        "activations-INITIAL_FORMS": "0",
    }

    response = staff_client.post(change_url(issued.license), {**form, **opened(issued.license)})

    assert response.status_code == 200
    assert "Choose a plan of this license&#x27;s product, 100% Off Tool." in response.content.decode()


def test_a_product_page_opened_before_another_change_cannot_undo_it(staff_client, actor):
    product = make_product(name="Photon")
    page = staff_client.get(change_url(product)).content.decode()
    opened_version = re.search(r'name="opened_version" value="([^"]+)"', page).group(1)
    retiring = Product.objects.get(pk=product.pk)
    retiring.is_active = False
    services.save_catalog_record(record=retiring, actor=actor)
    form = {"name": "Photon 2", "slug": product.slug, "public_id": product.public_id, "is_active": "on"}

    stale = staff_client.post(change_url(product), {**form, "opened_version": opened_version})
    fresh = staff_client.post(change_url(product), {**form, **opened(product)})

    assert "This product was changed by someone else after you opened this page" in stale.content.decode()
    assert fresh.status_code == 302
    product.refresh_from_db()
    assert (product.name, product.is_active) == ("Photon 2", True)
    assert AuditEvent.objects.filter(action="product.changed").count() == 2


def test_a_page_opened_before_the_license_was_revoked_is_refused_not_saved_without_its_new_limit(
    staff_client, issued, actor
):
    page = opened_page(staff_client, issued.license)
    services.revoke_license(license=issued.license, actor=actor)

    refused = staff_client.post(change_url(issued.license), {**page, "max_activations": "8", "metadata": '{"a": 1}'})
    saved = staff_client.post(change_url(issued.license), {**page, "metadata": '{"refund": "R-1"}'})

    assert refused.status_code == 200
    assert (
        "Since you opened this page, this license&#x27;s activation limit can no longer be changed: nothing was "
        "saved. Open it again to see why."
    ) in refused.content.decode()
    assert saved.status_code == 302
    stored = License.objects.get(pk=issued.license.pk)
    assert (stored.max_activations, stored.metadata) == (3, {"refund": "R-1"})


def test_saving_a_plan_says_which_changes_reach_the_licenses_already_issued(staff_client, plan, customer, actor):
    issued = [make_license(plan=plan, customer=customer) for _ in range(2)]
    make_license(plan=plan, customer=customer, max_activations=None)
    services.revoke_license(license=make_license(plan=plan, customer=customer).license, actor=actor)
    unused = make_plan(product=plan.product, identifier="unused")

    limit = staff_client.post(
        change_url(plan), {**opened_page(staff_client, plan), "max_activations": "1"}, follow=True
    )
    rules = staff_client.post(
        change_url(plan), {**opened_page(staff_client, plan), "max_deactivations": "2"}, follow=True
    )
    quiet = staff_client.post(
        change_url(unused), {**opened_page(staff_client, unused), "max_activations": "1"}, follow=True
    )

    assert (
        "The 4 licenses already on this plan keep their device limit and expiry; the new ones apply to licenses "
        "issued on it from now on (the limit also to those moved onto it)."
    ) in page_messages(limit)
    # Not the unlimited license, which has no slot to move, nor the revoked one.
    assert "The device-change rules apply at once to the 2 licenses on this plan with a device limit." in (
        page_messages(rules)
    )
    assert not [message for message in page_messages(quiet) if "on this plan" in message]
    assert {License.objects.get(pk=each.license.pk).max_activations for each in issued} == {3}


def test_a_plan_page_opened_before_its_first_license_was_issued_cannot_move_it_to_another_product(
    staff_client, plan, customer
):
    elsewhere = make_product(name="Elsewhere", slug="elsewhere")
    page = opened_page(staff_client, plan)
    make_license(plan=plan, customer=customer)

    refused = staff_client.post(change_url(plan), {**page, "product": elsewhere.pk})
    saved = staff_client.post(change_url(plan), {**page, "max_deactivations": "2"})

    assert "this plan&#x27;s product can no longer be changed: nothing was saved." in refused.content.decode()
    assert saved.status_code == 302
    stored = Plan.objects.get(pk=plan.pk)
    assert (stored.product_id, stored.max_deactivations) == (plan.product_id, 2)


def test_two_pages_open_at_once_changing_different_fields_both_save(staff_client, issued, actor):
    first, second = opened_page(staff_client, issued.license), opened_page(staff_client, issued.license)

    saved_first = staff_client.post(change_url(issued.license), {**first, "max_activations": "7"})
    saved_second = staff_client.post(change_url(issued.license), {**second, "limit_usage": "100"})

    assert (saved_first.status_code, saved_second.status_code) == (302, 302)
    license = License.objects.get(pk=issued.license.pk)
    assert (license.max_activations, license.limit_usage) == (7, 100)


def test_a_page_changing_a_field_someone_changed_since_is_refused_naming_it(staff_client, issued, actor):
    page = opened_page(staff_client, issued.license)
    services.update_license(license=License.objects.get(pk=issued.license.pk), max_activations=9, actor=actor)

    response = staff_client.post(change_url(issued.license), {**page, "max_activations": "7", "limit_usage": "5"})

    assert response.status_code == 200
    assert "Someone else changed activation limit of this license after you opened this page" in (
        response.content.decode()
    )
    license = License.objects.get(pk=issued.license.pk)
    assert (license.max_activations, license.limit_usage) == (9, None)


def test_two_pages_setting_the_same_value_both_save(staff_client, issued):
    first, second = opened_page(staff_client, issued.license), opened_page(staff_client, issued.license)

    staff_client.post(change_url(issued.license), {**first, "max_activations": "7"})
    response = staff_client.post(change_url(issued.license), {**second, "max_activations": "7"})

    assert response.status_code == 302
    assert License.objects.get(pk=issued.license.pk).max_activations == 7


def test_saving_an_unchanged_page_after_someone_elses_change_keeps_it(staff_client, issued, actor):
    page = opened_page(staff_client, issued.license)
    services.suspend_license(license=issued.license, actor=actor)
    services.update_license(license=License.objects.get(pk=issued.license.pk), metadata={"seats": 3}, actor=actor)

    response = staff_client.post(change_url(issued.license), page)

    assert response.status_code == 302
    license = License.objects.get(pk=issued.license.pk)
    assert (license.status, license.metadata) == ("suspended", {"seats": 3})


def test_two_customer_pages_open_at_once_changing_different_fields_both_save(staff_client, customer):
    first, second = opened_page(staff_client, customer), opened_page(staff_client, customer)

    staff_client.post(change_url(customer), {**first, "name": "Ada King"})
    response = staff_client.post(change_url(customer), {**second, "external_id": "cus_42"})

    assert response.status_code == 302
    customer.refresh_from_db()
    assert (customer.name, customer.external_id) == ("Ada King", "cus_42")


def test_the_service_refuses_a_save_from_a_page_opened_before_a_change_committed_since(actor):
    """The page's own check runs before the save; the service checks again with the row locked."""
    product = make_product(name="Photon")
    opened_at = product.updated_at
    Product.objects.filter(pk=product.pk).update(updated_at=opened_at + timedelta(seconds=1))
    renamed = Product.objects.get(pk=product.pk)
    renamed.name = "Photon 2"

    with pytest.raises(errors.ChangedMeanwhile, match="This product was changed by someone else"):
        services.save_catalog_record(record=renamed, actor=actor, fields=["name"], unchanged_since=opened_at)

    assert Product.objects.get(pk=product.pk).name == "Photon"


def test_withdrawing_a_product_says_how_many_licenses_stop_working(staff_client, plan, actor):
    make_license(plan=plan)
    make_license(plan=plan)
    services.revoke_license(license=make_license(plan=plan).license, actor=actor)
    make_license(plan=plan, expires_at=timezone.now() - timedelta(days=1))
    product = plan.product
    form = {"name": product.name, "slug": product.slug, "public_id": product.public_id, **opened(product)}

    response = staff_client.post(change_url(product), form, follow=True)

    assert Product.objects.get(pk=product.pk).is_active is False
    assert "2 active licenses of this product stop activating and validating" in " ".join(page_messages(response))


def test_a_limit_below_the_devices_in_use_is_saved_with_a_warning(staff_client, issued, customer):
    activate(issued, "a")
    activate(issued, "b")
    form = {
        "customer": customer.pk,
        "plan": issued.license.plan_id,
        "max_activations": "1",
        "metadata": "{}",
        "activations-TOTAL_FORMS": "0",
        "activations-INITIAL_FORMS": "0",
        **opened(issued.license),
    }

    response = staff_client.post(change_url(issued.license), form, follow=True)

    assert License.objects.get(pk=issued.license.pk).max_activations == 1
    assert (
        "2 devices are in use, more than the new limit of 1. They keep working; new activations are refused "
        "until enough of them are deactivated."
    ) in page_messages(response)
    assert issued.license.activations.live().count() == 2


def test_metadata_stored_under_an_earlier_rule_does_not_stop_the_page_saving_the_rest(staff_client, issued, customer):
    # 6,000 characters, 18,000 bytes: within the limit when it was counted in characters.
    metadata = {"note": "€" * 6_000}
    License.objects.filter(pk=issued.license.pk).update(metadata=metadata)
    form = {
        "customer": customer.pk,
        "plan": issued.license.plan_id,
        "max_activations": "4",
        "metadata": json.dumps(metadata),
        # The page sends the value it showed too (Django's hidden initial, for a field with a default).
        "initial-metadata": json.dumps(metadata),
        "activations-TOTAL_FORMS": "0",
        "activations-INITIAL_FORMS": "0",
        **opened(issued.license),
    }

    response = staff_client.post(change_url(issued.license), form)

    assert response.status_code == 302
    assert License.objects.get(pk=issued.license.pk).max_activations == 4
    assert License.objects.get(pk=issued.license.pk).metadata == metadata


@pytest.mark.parametrize("quoted", [lambda key: key[-6:], lambda key: key[-11:], lambda key: "…" + key[-8:]])
def test_search_licenses_by_as_much_of_the_key_as_a_customer_quotes(staff_client, issued, plan, quoted):
    make_license(plan=plan)

    response = staff_client.get(changelist("license"), {"q": quoted(issued.key)})

    assert list(response.context["cl"].result_list) == [issued.license]


@pytest.mark.parametrize("quoted", [str, lambda device_id: f" {str(device_id).upper()}"])
def test_search_finds_a_device_by_the_id_its_app_holds(staff_client, issued, quoted):
    nameless = services.import_activation(license=issued.license, actor=services.Actor.system())
    activate(issued, "another")

    response = staff_client.get(changelist("activation"), {"q": quoted(nameless.pk)})

    assert list(response.context["cl"].result_list) == [nameless]


@pytest.mark.parametrize("quoted", ["UNLIMITED", "DEMO-UNLIMITED", "IMITED"])
def test_search_finds_a_short_imported_key_by_as_much_of_it_as_is_quoted(staff_client, plan, quoted):
    """A 14-character key keeps only its last 4 characters in clear ("…ITED"), so comparing the
    last 6 of the search found nothing."""
    short = make_license(plan=plan, key="DEMO-UNLIMITED").license
    make_license(plan=plan)

    response = staff_client.get(changelist("license"), {"q": quoted})

    assert list(response.context["cl"].result_list) == [short]


def test_the_list_marks_an_active_license_past_its_expiry(staff_client, plan):
    expired = make_license(plan=plan, expires_at=timezone.now() - timedelta(days=1)).license

    rows = staff_client.get(changelist("license")).content.decode()

    assert f"{expired.masked_key}</a></th>" in rows
    assert '<td class="field-state">active, expired</td>' in rows


def test_the_lists_row_reads_the_state_first_in_columns_that_wrap(staff_client, plan, customer):
    expires_at = datetime(2031, 5, 17, 23, 30, tzinfo=UTC)
    license = make_license(plan=plan, customer=customer, expires_at=expires_at).license

    rows = staff_client.get(changelist("license")).content.decode()

    # Django keeps a relation's or a date-time's column on one line ("nowrap"): with the customer as
    # "name <e-mail>" and plan as "product · plan", the state was off-screen at 1280 px.
    assert (
        f"{license.masked_key}</a></th>"
        '<td class="field-state">active</td>'
        '<td class="field-product_name">Photon Editor</td>'
        '<td class="field-plan_name">Personal</td>'
        '<td class="field-customer_email">ada@example.com</td>'
        '<td class="field-devices_used">0 / 3</td>'
        '<td class="field-expiry">May 17, 2031</td>'
    ) in rows
    assert "nowrap" not in rows


def test_the_license_list_counts_each_rows_devices_in_one_query_for_the_page(staff_client, plan):
    def shown():
        with CaptureQueriesContext(connection) as queries:
            rows = staff_client.get(changelist("license")).content.decode()
        return rows, len(queries)

    busy = make_license(plan=plan)
    for name in ("a", "b"):
        activate(busy, name)
    services.deactivate_activation(activation=activate(busy, "c").activation, actor=services.Actor.system())
    rows, queries_for_one = shown()
    for _ in range(4):
        activate(make_license(plan=plan), "d")
    more_rows, queries_for_five = shown()

    assert rows.count('<td class="field-devices_used">2 / 3</td>') == 1
    assert more_rows.count('<td class="field-devices_used">1 / 3</td>') == 4
    assert queries_for_five == queries_for_one


def test_a_license_with_many_devices_shows_the_first_live_ones_and_links_to_the_rest(
    staff_client, customer, monkeypatch
):
    monkeypatch.setattr(FirstRowsFormSet, "shown", 2)
    issued = make_license(plan=make_plan(max_activations=None), customer=customer)
    for name in ("One", "Two"):
        activate(issued, name.lower(), name=name)
    # The newest, but no longer live: after the live ones.
    gone = activate(issued, "gone", name="Gone").activation
    services.deactivate_activation(activation=gone, actor=services.Actor.system())

    page = staff_client.get(change_url(issued.license)).content.decode()
    everything = staff_client.get(changelist("activation"), {"license": issued.license.pk})

    assert 'aria-label="Deactivate One">' in page
    assert 'aria-label="Deactivate Two">' in page
    assert ">Gone<" not in page
    assert "The first 2 of 3 devices, live ones first." in page
    assert f'href="{changelist("activation")}?license={issued.license.pk}"' in page
    assert set(everything.context["cl"].result_list) == set(Activation.objects.filter(license=issued.license))
    # The list says whose devices it shows.
    assert f"{issued.license.masked_key} · {customer.email}" in everything.content.decode()


def test_a_license_page_with_more_devices_than_it_shows_saves(staff_client, plan, monkeypatch):
    monkeypatch.setattr(FirstRowsFormSet, "shown", 1)
    issued = make_license(plan=plan)
    for name in ("one", "two"):
        activate(issued, name)
    form = {**opened_page(staff_client, issued.license), "metadata": '{"seat": "A"}'}
    assert form["activations-TOTAL_FORMS"] == "1"

    response = staff_client.post(change_url(issued.license), form)

    assert response.status_code == 302
    assert License.objects.get(pk=issued.license.pk).metadata == {"seat": "A"}
    assert issued.license.activations.live().count() == 2


def test_a_customers_page_lists_their_licenses_newest_first_and_links_to_the_rest(staff_client, customer, monkeypatch):
    monkeypatch.setattr(FirstRowsFormSet, "shown", 2)
    plan = make_plan(name="Team", max_activations=5)
    oldest, suspended, newest = (make_license(plan=plan, customer=customer).license for _ in range(3))
    services.suspend_license(license=suspended, actor=services.Actor.system())
    someone_elses = make_license(plan=plan, customer=make_customer(email="someone@example.com")).license

    page = staff_client.get(change_url(customer)).content.decode()

    assert oldest.masked_key not in page
    assert someone_elses.masked_key not in page
    assert page.index(newest.masked_key) < page.index(suspended.masked_key)
    assert f'href="{change_url(newest)}" class="inlineviewlink">View</a>' in page
    assert re.search(r'<td class="field-state">\s*<p>suspended</p>', page)
    assert "The newest 2 of 3 licenses." in page
    assert f'href="{changelist("license")}?customer={customer.pk}">All of this customer\'s licenses</a>' in page


def test_staff_who_may_not_view_licenses_see_none_on_a_customers_page(client, issued, customer):
    clerk = get_user_model().objects.create_user("clerk", password="a-long-test-password", is_staff=True)
    clerk.user_permissions.add(*Permission.objects.filter(codename="view_customer"))
    client.force_login(clerk)

    page = client.get(change_url(customer))

    assert page.status_code == 200
    assert issued.license.masked_key not in page.content.decode()


def test_a_license_with_few_devices_shows_them_all_without_a_link(staff_client, issued):
    activate(issued, "one", name="One")

    page = staff_client.get(change_url(issued.license)).content.decode()

    assert 'aria-label="Deactivate One">' in page
    assert "The first" not in page


def test_the_plan_filter_names_its_choice_of_licenses_without_a_plan(staff_client, plan, product):
    with_plan = make_license(plan=plan).license
    planless = make_license(plan=None, product=product, max_activations=2).license

    page = staff_client.get(changelist("license")).content.decode()
    listed = staff_client.get(changelist("license"), {"plan__isnull": "True"}).context["cl"].result_list

    assert '<a href="?plan__isnull=True">No plan</a>' in page
    assert list(listed) == [planless] and with_plan not in listed


def test_the_page_of_an_active_license_past_its_expiry_says_so(staff_client, plan):
    expired = make_license(plan=plan, expires_at=timezone.now() - timedelta(days=1)).license

    page = staff_client.get(change_url(expired)).content.decode()

    assert re.search(r'<div class="readonly">active, expired</div>', page)


def test_the_list_marks_an_active_license_of_an_inactive_product(staff_client, plan, actor):
    license = make_license(plan=plan).license
    plan.product.is_active = False
    services.save_catalog_record(record=plan.product, actor=actor, fields=["is_active"])

    rows = staff_client.get(changelist("license")).content.decode()

    assert f"{license.masked_key}</a></th>" in rows
    assert '<td class="field-state">active, product inactive</td>' in rows


def test_the_list_marks_an_expired_license_of_an_inactive_product_as_expired_as_its_apps_are_told(
    staff_client, plan, actor
):
    license = make_license(plan=plan, expires_at=timezone.now() - timedelta(days=1)).license
    plan.product.is_active = False
    services.save_catalog_record(record=plan.product, actor=actor, fields=["is_active"])

    rows = staff_client.get(changelist("license")).content.decode()

    assert services.license_problem(license).code == "license_expired"
    assert '<td class="field-state">active, expired</td>' in rows


def test_a_device_is_freed_from_the_license_page_after_a_confirmation(staff_client, issued):
    activation = activate(issued, "dead-laptop", name="Dead laptop").activation
    deactivate_url = reverse("admin:licensing_license_deactivate_device", args=[issued.license.pk, activation.pk])

    assert f'href="{deactivate_url}"' in staff_client.get(change_url(issued.license)).content.decode()
    confirmation = staff_client.get(deactivate_url).content.decode()
    assert Activation.objects.get(pk=activation.pk).is_live
    response = staff_client.post(deactivate_url, follow=True)
    again = staff_client.post(deactivate_url, follow=True)

    assert "Dead laptop stops using license" in confirmation
    assert "if an offline license file was downloaded for it, when that file expires" in confirmation
    # A 255-character name with no spaces widened the page to 2,338 px.
    assert 'href="/static/admin/licensing/page.css"' in confirmation
    assert "overflow-wrap: anywhere;" in Path(finders.find("admin/licensing/page.css")).read_text()
    assert response.redirect_chain == [(change_url(issued.license), 302)]
    assert page_messages(response) == ["1 device deactivated."]
    assert page_messages(again) == ["No live device to deactivate: nothing changed."]
    assert not Activation.objects.get(pk=activation.pk).is_live
    event = AuditEvent.objects.get(action="activation.deactivated")
    assert (event.actor_kind, event.license_id) == ("staff", issued.license.pk)


def test_a_device_of_another_license_cannot_be_freed_through_this_one(staff_client, issued, plan):
    theirs = activate(make_license(plan=plan), "theirs").activation
    url = reverse("admin:licensing_license_deactivate_device", args=[issued.license.pk, theirs.pk])

    assert staff_client.post(url).status_code == 404
    assert Activation.objects.get(pk=theirs.pk).is_live


def test_staff_who_may_only_view_get_no_deactivate_button(viewer_client, issued):
    activation = activate(issued, "viewed-device").activation
    url = reverse("admin:licensing_license_deactivate_device", args=[issued.license.pk, activation.pk])

    page = viewer_client.get(change_url(issued.license)).content.decode()
    assert "viewed-device" in page
    assert url not in page
    assert viewer_client.post(url).status_code == 403
    assert Activation.objects.get(pk=activation.pk).is_live


def test_a_customers_licenses_are_one_click_from_the_customer(staff_client, issued, customer, plan):
    make_license(plan=plan, customer=make_customer(email="someone@example.com"))
    make_license(plan=plan, customer=customer)
    link = f'<a href="{changelist("license")}?customer={customer.pk}">2</a>'

    assert link in staff_client.get(changelist("customer")).content.decode()
    assert link in staff_client.get(change_url(customer)).content.decode()
    listed = staff_client.get(changelist("license"), {"customer": customer.pk}).context["cl"].result_list
    assert {license.customer for license in listed} == {customer}
    assert len(listed) == 2


def test_license_page_shows_usage_and_live_and_past_devices(staff_client, world):
    page = staff_client.get(change_url(world["license"])).content.decode()

    assert "1 / 3" in page
    assert "Ada&#x27;s MacBook" in page
    assert "old-pc" in page


@pytest.mark.parametrize("search", ["ada@example.com", "Lovelace"])
def test_search_licenses_by_customer(staff_client, issued, plan, search):
    make_license(plan=plan, customer=make_customer(email="someone@example.com", name="Someone Else"))

    response = staff_client.get(changelist("license"), {"q": search})

    assert list(response.context["cl"].result_list) == [issued.license]


def test_find_a_license_by_its_full_key_without_putting_it_in_a_url(staff_client, issued, plan):
    make_license(plan=plan)
    find_url = reverse("admin:licensing_license_find")
    assert find_url in staff_client.get(changelist("license")).content.decode()
    assert staff_client.get(find_url).status_code == 200

    response = staff_client.post(find_url, {"key": issued.key})

    assert response.status_code == 302
    assert response["Location"] == change_url(issued.license)
    assert issued.key not in response["Location"]


def test_finding_an_unknown_key_says_so(staff_client, issued):
    response = staff_client.post(reverse("admin:licensing_license_find"), {"key": issued.key.lower()})

    assert response.status_code == 200
    assert "No license has this key. Keys are case-sensitive: check capitals." in response.content.decode()


def test_a_key_pasted_with_spaces_is_found_with_a_warning_that_apps_must_not_send_them(staff_client, issued):
    response = staff_client.post(reverse("admin:licensing_license_find"), {"key": f" {issued.key}\n"}, follow=True)

    assert response.redirect_chain == [(change_url(issued.license), 302)]
    assert (
        "The key was typed with spaces or line breaks around it. Apps must send it without them: with them it is an "
        "unknown key."
    ) in page_messages(response)


def test_the_history_button_opens_the_licenses_audit_trail(staff_client, issued, actor):
    services.suspend_license(license=issued.license, actor=actor)
    history = reverse("admin:licensing_license_history", args=[issued.license.pk])

    response = staff_client.get(history, follow=True)

    assert response.redirect_chain == [(f"{changelist('auditevent')}?license={issued.license.pk}", 302)]
    assert "license.suspended" in [event.action for event in response.context["cl"].result_list]
    # The page says whose trail it is, and how to see every license's.
    page = response.content.decode()
    assert f"{issued.license.masked_key} · {issued.license.customer.email}" in page
    assert 'href="?"' in page


@pytest.mark.parametrize(
    ("model", "record"), [("customer", "customer"), ("product", "product"), ("apikey", "api_key"), ("user", "user")]
)
def test_every_records_history_button_opens_its_audit_trail(staff_client, issued, actor, model, record):
    records = {
        "customer": issued.license.customer,
        "product": issued.license.product,
        "api_key": services.create_api_key(name="billing", actor=actor).api_key,
        "user": get_user_model().objects.get(username="staff"),
    }
    target = records[record]
    app = "auth" if model == "user" else "licensing"

    response = staff_client.get(reverse(f"admin:{app}_{model}_history", args=[target.pk]), follow=True)

    events = response.context["cl"].result_list
    assert events and {(event.target_type, event.target_id) for event in events} == {
        (target._meta.label_lower, str(target.pk))
    }
    # The page says whose trail it is.
    assert escape(str(target)) in response.content.decode()


def test_an_events_history_opens_its_records_trail_and_names_its_actor_plainly(staff_client, issued):
    activate(issued, "laptop")
    event = AuditEvent.objects.get(action="activation.created")

    response = staff_client.get(reverse("admin:licensing_auditevent_history", args=[event.pk]), follow=True)

    assert [(each.target_type, each.target_id) for each in response.context["cl"].result_list] == [
        ("licensing.activation", event.target_id)
    ]
    assert '<td class="field-actor">app</td>' in response.content.decode()
    assert '<td class="field-record">laptop</td>' in response.content.decode()


def test_an_events_page_shows_what_changed_with_records_by_name(staff_client, issued, other_customer, actor):
    services.update_license(license=issued.license, customer=other_customer, metadata={"seats": 5}, actor=actor)
    event = AuditEvent.objects.get(action="license.changed")

    page = staff_client.get(change_url(event)).content.decode()

    assert (
        f"<tr><td>customer</td><td>{escape(str(issued.license.customer))}</td><td>{escape(str(other_customer))}</td></tr>"
        in page
    )
    assert "<tr><td>metadata</td><td>{}</td><td>{&quot;seats&quot;: 5}</td></tr>" in page


def test_an_audit_trail_search_finds_an_id_whole_not_inside_others(staff_client):
    wanted = make_customer(email="a@example.com", name="a")
    # An id that holds the wanted one, whatever number the database gave it.
    make_customer(id=int(f"{wanted.pk}1"), email="b@example.com", name="b")

    response = staff_client.get(changelist("auditevent"), {"q": str(wanted.pk)})

    customers = [
        event.target_id for event in response.context["cl"].result_list if event.target_type == "licensing.customer"
    ]
    assert customers == [str(wanted.pk)]


@pytest.mark.parametrize("value", ["not-a-license-id", str(uuid.uuid4())])
def test_an_audit_trail_for_no_license_is_empty_not_an_error(staff_client, issued, value):
    response = staff_client.get(changelist("auditevent"), {"license": value})

    # Not Django's "?e=1" redirect for a bad filter: the list, with nothing in it.
    assert response.status_code == 200
    assert list(response.context["cl"].result_list) == []
    assert "no such license" in response.content.decode()


def test_an_admin_form_sent_without_its_csrf_check_leads_back_to_the_admin(staff_user):
    browser = Client(enforce_csrf_checks=True)

    response = browser.post(reverse("admin:login"), {"username": "staff", "password": "anything"})

    page = response.content.decode()
    assert response.status_code == 403
    assert "<h1>This page has expired</h1>" in page
    assert "Nothing was done" in page
    assert f'<a href="{reverse("admin:index")}">Back to the admin</a>' in page
    assert "Your licenses" not in page


def test_find_by_key_needs_license_permission(client, issued):
    clerk = get_user_model().objects.create_user("clerk", password="a-long-test-password", is_staff=True)
    client.force_login(clerk)

    response = client.post(reverse("admin:licensing_license_find"), {"key": issued.key})

    assert response.status_code == 403
    assert "You may not open this page" in response.content.decode()
    assert f'<a href="{reverse("admin:index")}">Back to the admin</a>' in response.content.decode()


def test_pages_offer_no_delete_beside_a_record_they_refer_to(staff_client, issued):
    license_page = staff_client.get(change_url(issued.license)).content.decode()
    plan_page = staff_client.get(reverse("admin:licensing_plan_add")).content.decode()

    assert 'id="change_id_customer"' in license_page
    assert 'id="delete_id_customer"' not in license_page
    assert 'id="change_id_product"' in plan_page
    assert 'id="delete_id_product"' not in plan_page


def test_staff_read_only_the_trail_of_records_they_may_view(client, world):
    support = get_user_model().objects.create_user("support", password="a-long-test-password", is_staff=True)
    support.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_license", "view_activation", "view_auditevent"])
    )
    client.force_login(support)
    api_key_event = AuditEvent.objects.get(action="api_key.created")

    listed = client.get(changelist("auditevent")).context["cl"]
    opened = client.get(change_url(api_key_event))
    api_keys_trail = client.get(changelist("auditevent"), {"record": f"licensing.apikey:{api_key_event.target_id}"})

    assert {event.target_type for event in listed.result_list} == {"licensing.license", "licensing.activation"}
    # Not even the key's name, which the trail's filter would show for the record it was opened for.
    assert api_key_event.target_display not in api_keys_trail.content.decode()
    assert "no such record" in api_keys_trail.content.decode()
    record_types = next(spec for spec in listed.filter_specs if spec.parameter_name == "target_type")
    assert sorted(value for value, _ in record_types.lookup_choices) == ["licensing.activation", "licensing.license"]
    assert opened.status_code == 302
    assert AuditEvent.objects.filter(target_type="licensing.apikey").exists()


def test_staff_who_may_not_view_licenses_read_no_owner_in_the_trails_license_filter(client, issued):
    devices_only = get_user_model().objects.create_user("devices", password="a-long-test-password", is_staff=True)
    devices_only.user_permissions.add(*Permission.objects.filter(codename__in=["view_activation", "view_auditevent"]))
    client.force_login(devices_only)
    activate(issued, "device-1")

    trail = client.get(changelist("auditevent"), {"license": str(issued.license.pk)}).content.decode()

    assert "device-1" in trail
    assert issued.license.customer.email not in trail


@pytest.mark.parametrize(
    "query",
    [
        "auditevent/?record=licensing.product:%00",
        "auditevent/?target_type=%00",
        "auditevent/?action=%00",
        "auditevent/?actor_kind__exact=%00",
        "license/?status__exact=%00",
        "plan/?duration_unit__exact=%00",
        "activation/?platform=%00",
        "auditevent/?created_at__year=9999",
        "auditevent/?created_at__year=9999&created_at__month=12&created_at__day=31",
        "auditevent/?created_at__year=9223372036854775808",
        "auditevent/?created_at__year=2026&created_at__month=99999999999999999999",
        "auditevent/?created_at__year=2026&created_at__month=%00",
        "license/?created_at__year=99999",
        "license/?expires_at__year=-5",
        "license/?expires_at__iso_year=99999",
        "customer/?created_at__year=99999",
        "activation/?last_seen_at__year=99999",
        "apikey/?expires_at__year=99999",
        "signingkey/?signs_from__year=99999",
        "license/?expires_at=tomorrow",
    ],
)
def test_a_list_filter_no_page_sends_is_refused_as_django_refuses_an_unknown_one(staff_client, world, query):
    response = staff_client.get(f"/admin/licensing/{query}", follow=True)

    assert response.redirect_chain == [(f"/admin/licensing/{query.partition('?')[0]}?e=1", 302)]
    assert response.status_code == 200


def test_staff_who_may_not_read_the_trail_get_no_link_to_it_and_are_told_where_the_history_is(
    viewer_client, staff_user, issued
):
    page = viewer_client.get(change_url(issued.license)).content.decode()
    history = viewer_client.get(reverse("admin:licensing_license_history", args=[issued.license.pk]), follow=True)
    superuser = Client()
    superuser.force_login(staff_user)

    assert "Every change to this license" in superuser.get(change_url(issued.license)).content.decode()
    assert "Every change to this license" not in page
    assert history.redirect_chain == [(change_url(issued.license), 302)]
    assert page_messages(history) == [
        "The changes to this license are in the audit trail, which your account may not view."
    ]


def test_a_history_button_with_a_nul_for_an_id_leads_to_no_error(staff_client):
    response = staff_client.get("/admin/licensing/product/%00/history/", follow=True)

    assert response.status_code == 200


def test_the_audit_trail_drills_down_to_a_day(staff_client, world):
    today = timezone.now()
    query = {"created_at__year": today.year, "created_at__month": today.month, "created_at__day": today.day}

    response = staff_client.get(changelist("auditevent"), query)

    assert response.status_code == 200
    assert len(response.context["cl"].result_list) == AuditEvent.objects.count()


SUPPORT_PERMISSIONS = importlib.import_module(
    "licensing.migrations.0020_revoke_permission_and_support_group"
).SUPPORT_PERMISSIONS


@pytest.fixture
def support_client(client):
    """A member of a group with the Support group's permissions, as migration 0020 makes it."""
    support = Group.objects.create(name="Support desk")
    support.permissions.set(
        Permission.objects.filter(content_type__app_label="licensing", codename__in=SUPPORT_PERMISSIONS)
    )
    member = get_user_model().objects.create_user("sam", password="a-long-test-password", is_staff=True)
    member.groups.add(support)
    client.force_login(member)
    return client


def test_support_handle_a_customers_license_and_devices_but_cannot_revoke(support_client, plan, customer):
    issued = make_license(plan=plan, customer=customer, expires_at=timezone.now() + timedelta(days=3))
    device = activate(issued, "old-laptop").activation
    page = support_client.get(change_url(issued.license)).content.decode()

    suspended = action(support_client, "license", "suspend", [issued.license])
    extended = action(support_client, "license", "extend", [issued.license], days="14")
    freed = action(support_client, "activation", "deactivate", [device])
    revoke = action(support_client, "license", "revoke", [issued.license], confirmed="yes")
    added = support_client.post(
        reverse("admin:licensing_license_add"), {"plan": plan.pk, "customer": customer.pk, "metadata": "{}"}
    )
    plans = support_client.get(
        reverse("admin:autocomplete"),
        {"app_label": "licensing", "model_name": "license", "field_name": "plan", "term": ""},
    )

    assert '<option value="suspend">Suspend this license</option>' in page
    assert '<option value="revoke">' not in page
    assert page_messages(suspended) == ["1 license suspended."]
    assert "1 license extended." in page_messages(extended)
    assert page_messages(freed) == ["1 device deactivated."]
    assert page_messages(revoke) == ["No action selected."]
    assert License.objects.get(pk=issued.license.pk).status == "suspended"
    assert added.status_code == 302
    assert plans.status_code == 200
    assert support_client.get(changelist("apikey")).status_code == 403
    assert support_client.get(changelist("signingkey")).status_code == 403
    assert support_client.get(reverse("admin:auth_user_changelist")).status_code == 403


def test_staff_who_may_revoke_revoke(client, issued):
    lead = get_user_model().objects.create_user("lead", password="a-long-test-password", is_staff=True)
    lead.user_permissions.add(*Permission.objects.filter(codename__in=["view_license", "revoke_license"]))
    client.force_login(lead)

    action(client, "license", "revoke", [issued.license], confirmed="yes")

    assert License.objects.get(pk=issued.license.pk).status == "revoked"


def test_filter_expired_licenses(staff_client, plan):
    expired = make_license(plan=plan, expires_at=timezone.now() - timedelta(days=1)).license
    make_license(plan=plan, expires_at=timezone.now() + timedelta(days=1))
    make_license(plan=plan, expires_at=None)

    response = staff_client.get(changelist("license"), {"expiry": "expired"})

    assert list(response.context["cl"].result_list) == [expired]


def test_filter_licenses_expiring_within_days(staff_client, plan):
    now = timezone.now()
    this_week = make_license(plan=plan, expires_at=now + timedelta(days=6)).license
    this_month = make_license(plan=plan, expires_at=now + timedelta(days=29)).license
    make_license(plan=plan, expires_at=now + timedelta(days=31))
    make_license(plan=plan, expires_at=now - timedelta(days=1))
    make_license(plan=plan, expires_at=None)

    within_7 = staff_client.get(changelist("license"), {"expiry": "7d"}).context["cl"].result_list
    within_30 = staff_client.get(changelist("license"), {"expiry": "30d"}).context["cl"].result_list

    assert list(within_7) == [this_week]
    assert set(within_30) == {this_week, this_month}


def test_suspend_reinstate_and_revoke_actions(staff_client, issued):
    response = action(staff_client, "license", "suspend", [issued.license])
    assert License.objects.get(pk=issued.license.pk).status == "suspended"
    assert "1 license suspended." in page_messages(response)

    action(staff_client, "license", "reinstate", [issued.license])
    assert License.objects.get(pk=issued.license.pk).status == "active"

    action(staff_client, "license", "revoke", [issued.license], confirmed="yes")
    assert License.objects.get(pk=issued.license.pk).status == "revoked"

    response = action(staff_client, "license", "reinstate", [issued.license])
    assert License.objects.get(pk=issued.license.pk).status == "revoked"
    assert any("cannot become active" in message for message in page_messages(response))
    staff_actions = AuditEvent.objects.filter(actor_kind="staff", license=issued.license).values_list(
        "action", flat=True
    )
    assert sorted(staff_actions) == ["license.reinstated", "license.revoked", "license.suspended"]


def test_staff_say_why_a_license_changed_status_and_its_page_tells_the_next_one(staff_client, issued):
    fresh = staff_client.get(change_url(issued.license)).content.decode()

    action(staff_client, "license", "suspend", [issued.license], reason="  Chargeback CB-77  ")
    suspended = staff_client.get(change_url(issued.license)).content.decode()
    confirmation = action(staff_client, "license", "revoke", [issued.license], reason="Fraud").content.decode()
    action(staff_client, "license", "revoke", [issued.license], confirmed="yes", reason="Fraud confirmed")
    revoked = staff_client.get(change_url(issued.license)).content.decode()

    assert "never: active since it was issued" in fresh
    assert re.search(r'<div class="readonly">\d+ \w+ \d{4}, \d\d:\d\d \w+, by staff: Chargeback CB-77</div>', suspended)
    assert 'name="reason" id="reason" size="60" maxlength="500" value="Fraud"' in confirmation
    assert ", by staff: Fraud confirmed</div>" in revoked
    reasons = AuditEvent.objects.filter(license=issued.license, actor_kind="staff").values_list(
        "action", "changes__reason"
    )
    assert sorted(reasons) == [("license.revoked", "Fraud confirmed"), ("license.suspended", "Chargeback CB-77")]


def test_an_action_on_more_licenses_than_it_takes_at_once_is_refused_whole(staff_client, plan, monkeypatch):
    monkeypatch.setattr(LicenseAdmin, "most_licenses_per_action", 2)
    licenses = [make_license(plan=plan).license for _ in range(3)]

    refused = action(staff_client, "license", "suspend", licenses[:1], select_across="1", index="0")
    done = action(staff_client, "license", "suspend", licenses[:2])

    assert page_messages(refused) == [
        "3 licenses are selected: act on at most 2 at a time. Filter the list (by product, plan, status or "
        "expiry) and act on each part, or use the management API."
    ]
    assert "2 licenses suspended." in page_messages(done)
    statuses = [License.objects.get(pk=license.pk).status for license in licenses]
    assert sorted(statuses) == ["active", "suspended", "suspended"]


def test_revoking_asks_first_and_names_each_license(staff_client, issued, customer, plan, actor):
    revoked = services.revoke_license(license=make_license(plan=plan).license, actor=actor)
    confirmation = action(staff_client, "license", "revoke", [issued.license, revoked])
    page = confirmation.content.decode()

    assert License.objects.get(pk=issued.license.pk).status == "active"
    assert "a revoked license cannot be reinstated" in page
    assert f"<li>{issued.license.masked_key} · {issued.license.product} · {customer.email}</li>" in page
    assert f"<li>{revoked.masked_key} · {revoked.product} · already revoked</li>" in page
    assert f'name="_selected_action" value="{issued.license.pk}"' in page
    assert 'name="confirmed" value="yes"' in page


def test_staff_act_on_one_license_from_its_page_and_come_back_to_it(staff_client, plan):
    issued = make_license(plan=plan, expires_at=timezone.now() + timedelta(days=5))
    page = staff_client.get(change_url(issued.license)).content.decode()
    from_page = {"from_license_page": "1"}

    suspended = action(staff_client, "license", "suspend", [issued.license], **from_page)
    extended = action(staff_client, "license", "extend", [issued.license], days="30", unit="days", **from_page)
    confirmation = action(staff_client, "license", "revoke", [issued.license], **from_page).content.decode()
    revoked = action(staff_client, "license", "revoke", [issued.license], confirmed="yes", **from_page)

    assert "Act on this license" in page
    assert '<option value="revoke">Revoke this license</option>' in page
    assert "selected licenses" not in page
    assert suspended.redirect_chain == [(change_url(issued.license), 302)]
    assert page_messages(suspended) == ["1 license suspended."]
    assert page_messages(extended) == [
        "1 license extended.",
        f"{issued.license.masked_key} now expires on {expiry_text(issued.license.expires_at + timedelta(days=30))}.",
    ]
    assert 'name="from_license_page" value="1"' in confirmation
    assert "<title>Revoke this license for good? |" in confirmation
    assert f'<a href="{change_url(issued.license)}" class="button cancel-link">No, take me back</a>' in confirmation
    assert revoked.redirect_chain == [(change_url(issued.license), 302)]
    assert License.objects.get(pk=issued.license.pk).status == "revoked"


def test_the_admins_recent_actions_list_the_staff_members_own_changes_list_actions_included(
    staff_client, issued, actor
):
    services.revoke_license(license=make_license(plan=issued.license.plan).license, actor=actor)
    action(staff_client, "license", "suspend", [issued.license], reason="Unpaid")

    sidebar = staff_client.get(reverse("admin:index")).content.decode().split('id="recent-actions-module"')[1]

    suspended = AuditEvent.objects.get(action="license.suspended")
    assert f'<a href="{change_url(suspended)}">{suspended.target_display}</a>' in sidebar
    assert "license.suspended" in sidebar
    assert "license.revoked" not in sidebar
    # Signing in changes nothing (force_login records one for the client's staff member).
    assert "staff.signed_in" not in sidebar


def test_recent_actions_link_only_to_events_the_staff_member_may_open(client, issued):
    clerk = get_user_model().objects.create_user("clerk", password="a-long-test-password", is_staff=True)
    clerk.user_permissions.add(*Permission.objects.filter(codename__in=["view_license", "change_license"]))
    client.force_login(clerk)
    action(client, "license", "suspend", [issued.license])

    sidebar = client.get(reverse("admin:index")).content.decode().split('id="recent-actions-module"')[1]

    assert f"{issued.license}<br>" in sidebar
    assert "license.suspended" in sidebar
    assert "/admin/licensing/auditevent/" not in sidebar


def test_support_signs_a_customer_out_of_the_portal_everywhere(staff_client, customer):
    portal = Client()
    portal.post(reverse("portal:sign-in"), {"email": customer.email})
    portal.post(re.search(r"https?://\S+", mail.outbox[-1].body).group(0).split("testserver", 1)[1])
    assert portal.get(reverse("portal:licenses")).status_code == 200

    response = action(staff_client, "customer", "sign_out_everywhere", [customer])

    assert page_messages(response) == ["1 customer signed out of the portal everywhere."]
    assert portal.get(reverse("portal:licenses")).status_code == 302
    event = AuditEvent.objects.get(action="customer.signed_out_everywhere")
    assert (event.actor_kind, event.actor_display) == ("staff", "staff")
    ended_at = timezone.localtime(Customer.objects.get(pk=customer.pk).portal_sessions_ended_at)
    customer_page = staff_client.get(change_url(customer)).content.decode()
    assert f'<div class="readonly">{date_format(ended_at, "N j, Y, P")} UTC</div>' in customer_page


def test_a_licenses_page_offers_only_what_may_be_done_to_it_now(staff_client, plan, actor):
    issued = make_license(plan=plan, expires_at=timezone.now() + timedelta(days=30))
    bare = make_license(plan=plan, expires_at=None)
    activate(issued, "mac")

    def offered(license) -> list[str]:
        page = staff_client.get(change_url(license)).content.decode()
        actions = page[page.index('id="license-actions"') :]
        menu = actions[actions.index('name="action"') : actions.index("</select>")]
        return re.findall(r'<option value="(\w+)">', menu)

    active = offered(issued.license)
    services.suspend_license(license=issued.license, actor=actor)
    suspended = offered(issued.license)
    services.revoke_license(license=issued.license, actor=actor)
    revoked = offered(issued.license)

    assert active == ["suspend", "revoke", "extend", "deactivate_all_devices"]
    assert suspended == ["reinstate", "revoke", "extend", "deactivate_all_devices"]
    assert revoked == ["deactivate_all_devices"]
    # Never expiring, nothing to extend; no device, none to free.
    assert offered(bare.license) == ["suspend", "revoke"]
    revoked_page = staff_client.get(change_url(issued.license)).content.decode()
    assert "Extend by:" not in revoked_page
    assert 'name="reason"' not in revoked_page


def test_a_devices_deactivate_button_is_beside_its_name(staff_client, issued):
    activate(issued, "mac-serial", name="MacBook")

    page = staff_client.get(change_url(issued.license)).content.decode()

    row = page[page.index('<td class="field-name">') :]
    assert row.index('<td class="field-free_slot">') < row.index('<td class="field-fingerprint">')


def test_a_revoke_chosen_on_the_list_goes_back_to_the_list_when_cancelled(staff_client, plan):
    licenses = [make_license(plan=plan).license for _ in range(2)]

    confirmation = action(staff_client, "license", "revoke", licenses).content.decode()

    assert "<title>Revoke 2 licenses for good? |" in confirmation
    assert f'<a href="{changelist("license")}" class="button cancel-link">No, take me back</a>' in confirmation


def test_the_license_pages_controls_are_named_for_screen_readers(staff_client, plan):
    issued = make_license(plan=plan, expires_at=timezone.now() + timedelta(days=30))
    activate(issued, "mac-serial", name="MacBook")
    activate(issued, "pc-serial")

    page = staff_client.get(change_url(issued.license)).content.decode()

    # The unit of "Extend by: [n] [days]" has no visible label of its own.
    assert '<select name="unit" aria-label="Unit"' in page
    assert 'aria-label="Deactivate MacBook">Deactivate…</a>' in page
    assert 'aria-label="Deactivate pc-serial">Deactivate…</a>' in page


def test_a_device_rows_link_reads_view_as_the_devices_page_is_read_only(staff_client, issued):
    device = activate(issued, "mac-serial", name="MacBook").activation

    page = staff_client.get(change_url(issued.license)).content.decode()

    assert f'<a href="{change_url(device)}" class="inlineviewlink">View</a>' in page
    assert "inlinechangelink" not in page


@pytest.mark.parametrize(
    ("permissions", "offered"),
    [
        (["view_license", "view_activation", "change_license"], True),
        (["view_license", "view_activation", "change_activation"], False),
    ],
)
def test_a_device_row_offers_deactivate_to_staff_who_may_change_the_license(client, issued, permissions, offered):
    activate(issued, "mac-serial", name="MacBook")
    member = get_user_model().objects.create_user("member", password="a-long-test-password", is_staff=True)
    member.user_permissions.add(*Permission.objects.filter(codename__in=permissions))
    client.force_login(member)

    page = client.get(change_url(issued.license)).content.decode()

    assert ('aria-label="Deactivate MacBook">Deactivate…</a>' in page) is offered


def test_staff_who_may_only_view_a_license_get_no_actions_on_its_page(viewer_client, issued):
    page = viewer_client.get(change_url(issued.license)).content.decode()

    assert "Act on this license" not in page


def expiry_text(moment: datetime) -> str:
    return date_format(timezone.localtime(moment), "j F Y, H:i T")


def test_extend_action_adds_the_days_given_and_says_the_new_expiry(staff_client, plan):
    expires_at = timezone.now() + timedelta(days=5)
    license = make_license(plan=plan, expires_at=expires_at).license

    response = action(staff_client, "license", "extend", [license], days="30")

    assert License.objects.get(pk=license.pk).expires_at == expires_at + timedelta(days=30)
    assert page_messages(response) == [
        "1 license extended.",
        f"{license.masked_key} now expires on {expiry_text(expires_at + timedelta(days=30))}.",
    ]


def test_extending_a_lapsed_license_counts_from_today_and_says_the_date(staff_client, plan):
    license = make_license(plan=plan, expires_at=timezone.now() - timedelta(days=40)).license

    response = action(staff_client, "license", "extend", [license], days="14")

    new_expiry = License.objects.get(pk=license.pk).expires_at
    assert timezone.now() + timedelta(days=13) < new_expiry <= timezone.now() + timedelta(days=14)
    assert f"{license.masked_key} now expires on {expiry_text(new_expiry)}." in page_messages(response)


@pytest.mark.parametrize(
    ("days", "unit"), [("", "days"), ("0", "days"), ("-3", "months"), ("soon", "years"), ("2", "decades")]
)
def test_extend_action_without_a_positive_number_of_days_changes_nothing(staff_client, plan, days, unit):
    expires_at = timezone.now() + timedelta(days=5)
    license = make_license(plan=plan, expires_at=expires_at).license

    response = action(staff_client, "license", "extend", [license], days=days, unit=unit)

    assert License.objects.get(pk=license.pk).expires_at == expires_at
    assert "Enter a number (1 or more) of days, months or years to extend by." in page_messages(response)


def test_extend_action_adds_calendar_years_leap_day_included(staff_client, plan):
    # Far ahead: a lapsed license would be extended from today instead.
    expires_at = datetime(2095, 11, 23, 12, tzinfo=UTC)
    license = make_license(plan=plan, expires_at=expires_at).license

    action(staff_client, "license", "extend", [license], days="1", unit="years")
    action(staff_client, "license", "extend", [license], days="3", unit="months")

    assert License.objects.get(pk=license.pk).expires_at == datetime(2097, 2, 23, 12, tzinfo=UTC)
    event = AuditEvent.objects.filter(action="license.extended").order_by("id").first()
    assert event.changes["expires_at"][1].startswith("2096-11-23T12:00:00")


def test_repeating_an_action_says_nothing_changed(staff_client, issued):
    action(staff_client, "license", "suspend", [issued.license])

    response = action(staff_client, "license", "suspend", [issued.license])

    assert page_messages(response) == ["1 license was already suspended."]
    assert AuditEvent.objects.filter(action="license.suspended").count() == 1


def test_action_messages_count_in_words_that_agree_with_the_number(staff_client, issued, plan):
    others = [make_license(plan=plan).license for _ in range(2)]
    action(staff_client, "license", "suspend", [issued.license])

    response = action(staff_client, "license", "suspend", [issued.license, *others])

    assert page_messages(response) == ["2 licenses suspended.", "1 license was already suspended."]


def test_find_licenses_by_the_key_ending_shown_in_the_list(staff_client, issued, plan):
    make_license(plan=plan)

    response = staff_client.get(changelist("license"), {"q": issued.key[-5:]})

    assert list(response.context["cl"].result_list) == [issued.license]


def test_deactivate_all_devices_action(staff_client, issued):
    activate(issued, "a")
    activate(issued, "b")

    response = action(staff_client, "license", "deactivate_all_devices", [issued.license])

    assert issued.license.activations.live().count() == 0
    assert "2 devices deactivated." in page_messages(response)


@pytest.mark.parametrize(
    ("model", "field", "value"),
    [
        ("license", "product", "abc"),
        ("license", "customer", "1.5"),
        ("license", "plan", "x"),
        ("plan", "product", "abc"),
    ],
)
def test_a_hand_made_id_in_an_autocomplete_box_is_a_form_error(staff_client, plan, model, field, value):
    form = {"product": plan.product.pk, "name": "Team", "identifier": "team", "metadata": "{}", field: value}

    response = staff_client.post(reverse(f"admin:licensing_{model}_add"), form)

    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert (License.objects.count(), Plan.objects.count()) == (0, 1)


@pytest.mark.parametrize(
    ("model", "field"), [("license", "customer"), ("license", "product"), ("license", "plan"), ("plan", "product")]
)
def test_an_autocomplete_search_for_a_nul_finds_nothing_and_fails_nothing(staff_client, plan, model, field):
    response = staff_client.get(
        reverse("admin:autocomplete"),
        {"app_label": "licensing", "model_name": model, "field_name": field, "term": "\x00"},
    )

    assert response.status_code == 200
    assert "results" in response.json()


def test_an_action_on_an_id_no_license_could_have_says_so(staff_client, issued):
    response = staff_client.post(
        changelist("license"), {"action": "suspend", "_selected_action": ["not-a-uuid"]}, follow=True
    )

    assert response.status_code == 200
    assert page_messages(response) == ["The selection names no record of this list."]
    assert License.objects.get().status == License.Status.ACTIVE


def test_deleting_an_id_no_customer_could_have_says_so(staff_client, customer):
    response = staff_client.post(
        changelist("customer"), {"action": "delete_selected", "_selected_action": ["abc"], "post": "yes"}, follow=True
    )

    assert response.status_code == 200
    assert page_messages(response) == ["The selection names no record of this list."]
    assert Customer.objects.filter(pk=customer.pk).exists()


@pytest.mark.parametrize(
    ("model", "name"), [("activation", "deactivate"), ("apikey", "revoke"), ("signingkey", "retire")]
)
def test_every_list_says_so_of_an_id_none_of_its_records_could_have(staff_client, model, name):
    response = action(staff_client, model, name, [], _selected_action=["1.5x"])

    assert response.status_code == 200
    assert page_messages(response) == ["The selection names no record of this list."]


@pytest.mark.parametrize(
    "query", ["auditevent/?ip_address=notanip", "auditevent/?ip_address__gt=x", "activation/?ip_address=bad"]
)
def test_a_list_filtered_by_an_ip_address_that_is_none_shows_a_page_not_an_error(staff_client, world, query):
    # PostgreSQL's inet column refuses it (Django's ?e=1); SQLite compares it as text and lists nothing.
    response = staff_client.get(f"/admin/licensing/{query}", follow=True)

    assert response.status_code == 200


@pytest.mark.parametrize(
    "path",
    [
        "licensing/license/?status__regex=(",
        "licensing/customer/?email__iregex=(",
        "licensing/auditevent/?target_id__regex=(",
        "licensing/activation/?fingerprint__regex=(",
        "licensing/apikey/?name__regex=(",
        "auth/user/?username__regex=(",
    ],
)
def test_a_list_filtered_by_a_regular_expression_is_refused_not_a_database_error(staff_client, world, path):
    response = staff_client.get(f"/admin/{path}")

    assert response.status_code == 400


def test_a_list_that_fails_without_any_filter_is_a_server_error_not_a_filter_refused(staff_client, monkeypatch):
    def broken(self, request):
        raise ValueError("a fault of ours")

    monkeypatch.setattr(LicenseAdmin, "get_queryset", broken)

    with pytest.raises(ValueError, match="a fault of ours"):
        staff_client.get(changelist("license"))
    # A page number, or Django's own mark of a filter refused, is no filter either.
    with pytest.raises(ValueError, match="a fault of ours"):
        staff_client.get(changelist("license"), {"p": "2", "e": "1"})


@pytest.mark.parametrize(
    ("model", "lookup"),
    [
        ("signingkey", "private_key_encrypted__gte"),
        ("license", "key_encrypted__startswith"),
        ("license", "key_digest__gt"),
        ("apikey", "key_digest__lt"),
    ],
)
def test_no_list_filter_reads_a_secret_column(staff_client, world, model, lookup):
    # Whether a row is listed for ?private_key_encrypted__gte=<guess> would give the value away.
    response = staff_client.get(changelist(model), {lookup: "a"})

    assert response.status_code == 400


def test_staff_who_may_only_view_licenses_cannot_run_actions(viewer_client, issued):
    activation = activate(issued, "a").activation

    assert viewer_client.get(changelist("license")).status_code == 200
    action(viewer_client, "license", "revoke", [issued.license], confirmed="yes")
    action(viewer_client, "activation", "deactivate", [activation])

    assert License.objects.get(pk=issued.license.pk).status == "active"
    assert Activation.objects.get(pk=activation.pk).is_live
    assert not AuditEvent.objects.filter(action__in=["license.revoked", "activation.deactivated"]).exists()


def test_metadata_as_deep_as_allowed_shows_on_the_device_and_license_pages(staff_client, issued, actor):
    deepest = nested(services.MAX_METADATA_NESTING)
    device = activate(issued, "deep-device", metadata=deepest).activation
    services.update_license(license=issued.license, actor=actor, metadata=deepest)

    assert staff_client.get(change_url(device)).status_code == 200
    assert staff_client.get(change_url(issued.license)).status_code == 200


def test_bad_metadata_on_the_license_page_is_a_form_error(staff_client, issued):
    response = staff_client.post(
        change_url(issued.license),
        {
            "customer": issued.license.customer.pk,
            "plan": issued.license.plan_id,
            "max_activations": "3",
            "metadata": "[1, 2]",
            "activations-TOTAL_FORMS": "0",
            "activations-INITIAL_FORMS": "0",
            **opened(issued.license),
        },
    )

    assert response.status_code == 200
    assert "Metadata must be a JSON object." in response.content.decode()
    assert License.objects.get(pk=issued.license.pk).metadata == {}


def test_a_refusal_after_the_form_checks_is_a_message_not_a_server_error(staff_client, plan, monkeypatch):
    make_license(plan=plan, key="TAKEN-MEANWHILE")
    # As if another request stored the key between the form's check and the insert.
    monkeypatch.setattr(services, "check_new_license", lambda **kwargs: None)

    response = staff_client.post(
        reverse("admin:licensing_license_add"),
        {"product": plan.product.pk, "plan": plan.pk, "key": "TAKEN-MEANWHILE", "metadata": "{}"},
        follow=True,
    )

    assert response.status_code == 200
    assert "A license with this key already exists." in page_messages(response)
    assert License.objects.count() == 1


def test_licenses_cannot_be_deleted(staff_client, issued):
    url = reverse("admin:licensing_license_delete", args=[issued.license.pk])

    assert staff_client.post(url, {"post": "yes"}).status_code == 403
    assert License.objects.filter(pk=issued.license.pk).exists()


# ---------------------------------------------------------------- activations


def test_deactivate_selected_devices_action(staff_client, issued):
    first = activate(issued, "a").activation
    second = activate(issued, "b").activation

    response = action(staff_client, "activation", "deactivate", [first])
    again = action(staff_client, "activation", "deactivate", [first, second])

    assert "1 device deactivated." in page_messages(response)
    assert page_messages(again) == ["1 device deactivated.", "1 device was already inactive."]
    assert not Activation.objects.filter(pk__in=[first.pk, second.pk], deactivated_at__isnull=True).exists()
    events = AuditEvent.objects.filter(action="activation.deactivated").order_by("id")
    assert [(event.actor_kind, event.target_id) for event in events] == [
        ("staff", str(first.pk)),
        ("staff", str(second.pk)),
    ]


def test_a_device_page_is_read_only(staff_client, issued):
    activation = activate(issued, "a").activation

    page = staff_client.get(change_url(activation)).content.decode()
    response = staff_client.post(change_url(activation), {"name": "renamed"})

    assert 'name="_save"' not in page
    assert response.status_code == 403
    assert Activation.objects.get(pk=activation.pk).name == ""


def test_activation_list_filters_live_devices(staff_client, world):
    response = staff_client.get(changelist("activation"), {"state": "live"})

    assert [activation.fingerprint for activation in response.context["cl"].result_list] == ["ada-mac"]


# ---------------------------------------------------------------- catalog and audit trail


def test_creating_a_product_in_the_admin_is_audited(staff_client):
    response = staff_client.post(
        reverse("admin:licensing_product_add"),
        {"name": "Nova", "slug": "nova", "public_id": "kmp_2b7f0c9a41d84e6fa3c1b9", "is_active": "on"},
    )

    assert response.status_code == 302
    product = Product.objects.get(slug="nova")
    assert product.public_id == "kmp_2b7f0c9a41d84e6fa3c1b9"
    event = AuditEvent.objects.get(action="product.created")
    assert (event.actor_kind, event.changes["public_id"]) == ("staff", [None, "kmp_2b7f0c9a41d84e6fa3c1b9"])


def test_customer_email_must_be_unique_ignoring_case_in_the_admin(staff_client, customer):
    response = staff_client.post(reverse("admin:licensing_customer_add"), {"email": "ADA@example.com", "name": "Ada"})

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {"email": ["A customer with this e-mail already exists."]}
    assert Customer.objects.count() == 1


def plan_form(product, **fields) -> dict:
    defaults = {"deactivation_window_days": 30, "slot_cooldown_minutes": 0, "duration_unit": "perpetual"}
    return {"product": product.pk, "name": "Team", "identifier": "team", **defaults, **fields}


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        ({"duration_unit": "year", "duration_value": "abc"}, {"duration_value": ["Enter a whole number."]}),
        (
            {"duration_unit": "year", "identifier": "personal"},
            {
                "duration_value": ["A perpetual plan has no duration; any other needs a duration of 1 or more."],
                "identifier": ["This product already has a plan with this identifier."],
            },
        ),
    ],
)
def test_a_plan_form_names_every_field_to_mend_once(staff_client, plan, fields, errors):
    response = staff_client.post(reverse("admin:licensing_plan_add"), plan_form(plan.product, **fields))

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == errors
    assert Plan.objects.count() == 1


def test_a_plan_with_licenses_keeps_its_product(staff_client, issued):
    page = staff_client.get(change_url(issued.license.plan)).content.decode()

    assert 'name="product"' not in page
    assert 'name="product"' in staff_client.get(change_url(make_plan())).content.decode()


def test_deleting_an_unused_product_is_audited(staff_client):
    product = make_product(slug="unused")

    staff_client.post(reverse("admin:licensing_product_delete", args=[product.pk]), {"post": "yes"})

    assert not Product.objects.filter(slug="unused").exists()
    assert AuditEvent.objects.filter(action="product.deleted", actor_kind="staff").count() == 1


def test_a_product_with_licenses_cannot_be_deleted(staff_client, issued):
    product = issued.license.product

    response = staff_client.post(reverse("admin:licensing_product_delete", args=[product.pk]), {"post": "yes"})

    page = response.content.decode()
    assert "would require deleting the following protected related objects" in page
    assert "doesn’t have permission" not in page
    assert Product.objects.filter(pk=product.pk).exists()


@pytest.fixture
def license_since_the_confirmation(monkeypatch):
    """The delete confirmation found nothing referring to the record: a license came just after it."""
    monkeypatch.setattr(CustomerAdmin, "get_deleted_objects", lambda self, objs, request: ([], {}, set(), []))


def assert_customer_kept(customer) -> None:
    assert Customer.objects.filter(pk=customer.pk).exists()
    assert not AuditEvent.objects.filter(action="customer.deleted").exists()
    assert not LogEntry.objects.filter(action_flag=DELETION).exists()


def test_a_customer_given_a_license_since_the_delete_page_is_kept_and_staff_are_told(
    staff_client, issued, license_since_the_confirmation
):
    url = reverse("admin:licensing_customer_delete", args=[issued.license.customer.pk])

    response = staff_client.post(url, {"post": "yes"}, follow=True)

    assert response.redirect_chain == [(url, 302)]
    assert "Licenses refer to this customer, so it cannot be deleted." in response.content.decode()
    assert_customer_kept(issued.license.customer)


def test_deleting_selected_customers_stops_at_one_given_a_license_and_keeps_them_all(
    staff_client, issued, license_since_the_confirmation
):
    unused = make_customer(email="unused@example.com")
    selected = [unused.pk, issued.license.customer.pk]

    response = staff_client.post(
        changelist("customer"), {"action": "delete_selected", "_selected_action": selected, "post": "yes"}, follow=True
    )

    assert response.status_code == 200
    assert "Licenses refer to this customer, so it cannot be deleted." in response.content.decode()
    assert_customer_kept(unused)
    assert_customer_kept(issued.license.customer)


def test_audit_trail_is_read_only(staff_client, world):
    event = world["auditevent"]

    assert staff_client.get(reverse("admin:licensing_auditevent_add")).status_code == 403
    assert (
        staff_client.post(reverse("admin:licensing_auditevent_delete", args=[event.pk]), {"post": "yes"}).status_code
        == 403
    )
    page = staff_client.get(change_url(event)).content.decode()
    assert 'name="_save"' not in page


def test_the_audit_trail_tells_the_second_of_each_change(staff_client, world, settings):
    settings.TIME_ZONE = "UTC"
    event = AuditEvent.objects.get(action="api_key.created")
    AuditEvent.objects.filter(pk=event.pk).update(created_at=datetime(2026, 11, 24, 9, 5, 7, 250000, tzinfo=UTC))

    listed = staff_client.get(changelist("auditevent")).content.decode()
    opened = staff_client.get(change_url(event)).content.decode()

    assert f'<a href="{change_url(event)}">24 Nov 2026, 09:05:07 UTC</a>' in listed
    assert '<div class="readonly">24 Nov 2026, 09:05:07 UTC</div>' in opened


def test_an_audit_events_action_opens_it_as_its_time_does(staff_client, world):
    event = AuditEvent.objects.get(action="api_key.created")

    page = staff_client.get(changelist("auditevent")).content.decode()

    assert f'<a href="{change_url(event)}">api_key.created</a>' in page


def test_audit_trail_filters_by_license_actor_and_action(staff_client, world, plan):
    other = make_license(plan=plan)
    license = world["license"]

    by_license = staff_client.get(changelist("auditevent"), {"license": str(license.pk)})
    by_action = staff_client.get(changelist("auditevent"), {"action": "activation.deactivated"})
    by_actor = staff_client.get(changelist("auditevent"), {"actor_kind": "app"})

    assert {event.license_id for event in by_license.context["cl"].result_list} == {license.pk}
    assert other.license.pk not in {event.license_id for event in by_license.context["cl"].result_list}
    assert [event.action for event in by_action.context["cl"].result_list] == ["activation.deactivated"]
    assert {event.actor_kind for event in by_actor.context["cl"].result_list} == {"app"}


# ---------------------------------------------------------------- signing keys and API keys


def test_staff_create_an_api_key_and_see_it_once(staff_client):
    response = staff_client.post(reverse("admin:licensing_apikey_add"), {"name": "billing"}, follow=True)

    [message] = page_messages(response)
    key = re.fullmatch(r"API key created: (\S+) — copy it now, it is not shown again\.", message).group(1)
    api_key = ApiKey.objects.get()
    assert services.authenticate_api_key(key) == api_key
    assert (api_key.name, api_key.read_only, api_key.created_by) == ("billing", False, "staff")
    assert key not in staff_client.get(change_url(api_key)).content.decode()
    assert key not in staff_client.get(changelist("apikey")).content.decode()
    assert all(key not in cookie.value for cookie in response.client.cookies.values())


def test_staff_create_an_api_key_for_apps(staff_client):
    staff_client.post(reverse("admin:licensing_apikey_add"), {"name": "photon app", "apps_only": "on"})

    assert ApiKey.objects.get().apps_only is True
    assert AuditEvent.objects.get(action="api_key.created").changes["apps_only"] == [None, True]


def test_importing_an_api_key_with_full_access_is_warned_about(staff_client):
    add = reverse("admin:licensing_apikey_add")
    shipped = {"name": "photon app", "key": "kq_live_4f9a2c7e81b34d6f", "apps_only": "on"}
    backend = {"name": "billing backend", "key": "kq_live_0b8e5d13c9a74f22"}

    for_apps = page_messages(staff_client.post(add, shipped, follow=True))
    full_access = page_messages(staff_client.post(add, backend, follow=True))

    assert for_apps[0] == "API key imported: the apps that ship with it are let in from now on."
    assert full_access[0].startswith("API key imported with full access, not for apps only")
    assert services.authenticate_api_key(backend["key"]).apps_only is False


def test_revoking_an_api_key_in_the_admin_asks_first(staff_client, actor):
    issued = services.create_api_key(name="billing", actor=actor)

    asked = action(staff_client, "apikey", "revoke", [issued.api_key])

    assert "Revoking is for good" in asked.content.decode()
    assert f"billing · {issued.api_key.prefix}… · never used" in asked.content.decode()
    assert services.authenticate_api_key(issued.key) is not None

    response = action(staff_client, "apikey", "revoke", [issued.api_key], confirmed="yes")

    assert page_messages(response) == ["1 API key revoked."]
    assert services.authenticate_api_key(issued.key) is None
    assert AuditEvent.objects.filter(action="api_key.revoked", actor_kind="staff").count() == 1


def test_the_api_key_list_says_which_keys_still_work(staff_client, actor):
    billing = services.create_api_key(name="billing", read_only=True, actor=actor).api_key
    leaked = services.create_api_key(name="leaked", actor=actor).api_key
    services.revoke_api_key(api_key=leaked, actor=actor)
    shipped = services.create_api_key(name="shipped", apps_only=True, actor=actor).api_key
    in_a_year = timezone.now() + timedelta(days=365)
    rotated = services.create_api_key(name="rotated", actor=actor, expires_at=in_a_year).api_key
    lapsed = services.create_api_key(name="lapsed", actor=actor, expires_at=in_a_year).api_key
    ApiKey.objects.filter(pk=lapsed.pk).update(expires_at=timezone.now() - timedelta(days=2))

    page = staff_client.get(changelist("apikey")).content.decode()

    def minute(moment):
        return date_format(timezone.localtime(moment), "N j, Y, P T")

    revoked_on = date_format(timezone.localdate(ApiKey.objects.get(pk=leaked.pk).revoked_at))
    for prefix, state, access in [
        (billing.prefix, "Works", "Read only"),
        (leaked.prefix, f"Revoked {revoked_on}", "Full"),
        (shipped.prefix, "Works", "Apps&#x27; license calls"),
        (rotated.prefix, f"Works until {minute(in_a_year)}", "Full"),
        (lapsed.prefix, f"Expired {minute(ApiKey.objects.get(pk=lapsed.pk).expires_at)}", "Full"),
    ]:
        assert (
            f'<td class="field-prefix">{prefix}</td><td class="field-state">{state}</td>'
            f'<td class="field-access">{access}</td>'
        ) in page
    for state, keys_listed in [
        ("works", {billing, shipped, rotated}),
        ("expired", {lapsed}),
        ("revoked", {leaked}),
    ]:
        assert set(staff_client.get(changelist("apikey"), {"state": state}).context["cl"].result_list) == keys_listed


def test_staff_make_an_api_key_that_expires_and_never_one_expired_already(staff_client):
    add = reverse("admin:licensing_apikey_add")
    yesterday = timezone.localtime() - timedelta(days=1)
    next_year = timezone.localtime() + timedelta(days=365)

    def expiring(moment, **more):
        return {"name": "billing", "expires_at_0": f"{moment:%Y-%m-%d}", "expires_at_1": f"{moment:%H:%M:%S}", **more}

    refused = staff_client.post(add, expiring(yesterday))
    for_apps = staff_client.post(add, expiring(next_year, apps_only="on"))
    staff_client.post(add, expiring(next_year))

    assert refused.context["adminform"].form.errors == {"expires_at": ["An API key's expiry must be in the future."]}
    assert for_apps.context["adminform"].form.errors["expires_at"][0].startswith("A key for apps does not expire")
    assert ApiKey.objects.get().expires_at == next_year.replace(microsecond=0)


def test_a_key_shipped_in_apps_is_restricted_to_license_calls_in_the_admin(staff_client, api_client, actor):
    shipped = services.create_api_key(name="kelviq app", key="kv_shipped_in_every_app_0123", actor=actor)
    already = services.create_api_key(name="keymint app", apps_only=True, actor=actor)

    revoked = services.create_api_key(name="old app", actor=actor)
    services.revoke_api_key(api_key=revoked.api_key, actor=actor)
    chosen = [shipped.api_key, already.api_key, revoked.api_key]

    confirmation = action(staff_client, "apikey", "restrict_to_apps", chosen)
    untouched = ApiKey.objects.get(pk=shipped.api_key.pk).apps_only
    response = action(staff_client, "apikey", "restrict_to_apps", chosen, confirmed="yes")

    page = confirmation.content.decode()
    assert "<title>Restrict 3 API keys to apps for good?" in page
    assert "kelviq app" in page and "keymint app · " in page and "already for apps only" in page
    assert "revoked: left as it is" in page
    assert untouched is False
    assert page_messages(response) == [
        "1 API key restricted to apps' license calls.",
        "1 API key was already for apps only.",
        "1 API key is revoked: it works for no one, so it was left as it is.",
    ]
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {shipped.key}")
    assert api_client.get("/api/v1/licenses").status_code == 403
    assert AuditEvent.objects.filter(action="api_key.restricted_to_apps", actor_kind="staff").count() == 1
    assert ApiKey.objects.get(pk=revoked.api_key.pk).apps_only is False


def test_restricting_a_key_that_expires_to_apps_warns_that_the_apps_stop_then(staff_client, actor):
    expires_at = timezone.now() + timedelta(days=30)
    billing = services.create_api_key(name="billing", actor=actor, expires_at=expires_at).api_key

    response = action(staff_client, "apikey", "restrict_to_apps", [billing], confirmed="yes")

    when = date_format(timezone.localtime(ApiKey.objects.get(pk=billing.pk).expires_at), "N j, Y, P T")
    assert page_messages(response) == [
        "1 API key restricted to apps' license calls.",
        f"{billing} expires {when}: the apps that ship it stop working then, unless updated with another key.",
    ]
    assert ApiKey.objects.get(pk=billing.pk).apps_only is True


def test_revoking_an_api_key_again_says_it_was_already_revoked(staff_client, actor):
    issued = services.create_api_key(name="old", actor=actor)
    action(staff_client, "apikey", "revoke", [issued.api_key], confirmed="yes")

    response = action(staff_client, "apikey", "revoke", [issued.api_key], confirmed="yes")

    assert page_messages(response) == ["1 API key was already revoked."]
    assert AuditEvent.objects.filter(action="api_key.revoked").count() == 1


def test_retiring_the_key_that_signs_warns_that_apps_need_the_new_one(staff_client, actor):
    signing_now = services.current_signing_key()
    already_retired = services.create_signing_key(actor=actor, replace=True)
    services.retire_signing_key(signing_key=already_retired, actor=actor)

    confirmation = action(staff_client, "signingkey", "retire", [signing_now, already_retired]).content.decode()
    response = action(staff_client, "signingkey", "retire", [signing_now, already_retired], confirmed="yes")

    shown = page_messages(response)
    assert f"<li>{already_retired.kid} · already retired</li>" in confirmation
    assert shown[:2] == ["1 key retired.", "1 key was already retired."]
    assert "Apps that hold only the retired public key cannot verify answers" in shown[2]
    assert AuditEvent.objects.filter(action="signing_key.retired").count() == 2


def test_retiring_signing_keys_asks_first_and_names_the_key_that_signs(staff_client, actor):
    signing_now = services.current_signing_key()
    upcoming = services.create_signing_key(actor=actor, signs_from=timezone.now() + timedelta(days=30))

    page = action(staff_client, "signingkey", "retire", [signing_now, upcoming]).content.decode()

    assert "Retiring is for good" in page
    assert f"<li>{signing_now.kid} · <strong>signs now</strong></li>" in page
    assert f"<li>{upcoming.kid}</li>" in page
    assert "The key that signs now is among them." in page
    assert f'name="_selected_action" value="{signing_now.pk}"' in page
    assert 'name="action" value="retire"' in page
    assert not SigningKey.objects.filter(retired_at__isnull=False).exists()
    assert not AuditEvent.objects.filter(action="signing_key.retired").exists()


def test_retiring_a_key_that_no_longer_signs_gives_no_warning(staff_client, actor):
    old = services.current_signing_key()
    services.create_signing_key(actor=actor, replace=True)

    response = action(staff_client, "signingkey", "retire", [old], confirmed="yes")

    assert page_messages(response) == ["1 key retired."]


@pytest.mark.parametrize("model", ["apikey", "signingkey", "rsakey"])
def test_a_keys_add_form_offers_only_save(staff_client, model):
    page = staff_client.get(reverse(f"admin:licensing_{model}_add")).content.decode()

    assert 'name="_save"' in page
    assert 'name="_addanother"' not in page and 'name="_continue"' not in page


def test_a_signing_key_added_for_a_later_time_is_published_but_does_not_sign_yet(staff_client):
    signing_now = services.current_signing_key()

    response = staff_client.post(
        reverse("admin:licensing_signingkey_add"), {"signs_from": "2099-01-15 09:00:00"}, follow=True
    )
    scheduled = SigningKey.objects.exclude(pk=signing_now.pk).get()

    message = f"Signing key {scheduled.kid} created and published; it signs from 15 January 2099, 09:00 UTC."
    assert page_messages(response) == [message]
    assert services.signing_key_now() == signing_now
    assert scheduled in services.published_signing_keys()
    listing = staff_client.get(reverse("admin:licensing_signingkey_changelist")).content.decode()
    assert listing.count('alt="True"') == 1


def test_the_signs_from_field_is_typed_year_first_saying_utc(staff_client):
    page = staff_client.get(reverse("admin:licensing_signingkey_add")).content.decode()

    # Not a browser's date picker: it shows the visitor's own order and reads as local time.
    assert 'type="text" name="signs_from" placeholder="2027-03-01 09:00"' in page
    assert "In UTC, as 2027-03-01 or 2027-03-01 09:00." in page


@pytest.mark.parametrize("typed", ["2099-01-15T09:00", "2099-01-15 09:00", "2099-01-15"])
def test_the_signs_from_field_takes_year_first_dates_only(staff_client, typed):
    signing_now = services.current_signing_key()

    staff_client.post(reverse("admin:licensing_signingkey_add"), {"signs_from": typed})

    scheduled = SigningKey.objects.exclude(pk=signing_now.pk).get()
    assert scheduled.signs_from.date().isoformat() == "2099-01-15"


def test_a_day_first_or_month_first_date_is_refused_rather_than_guessed(staff_client):
    signing_now = services.current_signing_key()

    response = staff_client.post(reverse("admin:licensing_signingkey_add"), {"signs_from": "01/03/2099"})

    assert response.status_code == 200
    assert "Write the time year first, in UTC: 2027-03-01 or 2027-03-01 09:00." in response.content.decode()
    assert list(SigningKey.objects.all()) == [signing_now]


def test_a_signing_key_cannot_be_added_to_sign_from_the_past(staff_client):
    response = staff_client.post(reverse("admin:licensing_signingkey_add"), {"signs_from": "2001-01-15 09:00:00"})

    assert response.status_code == 200
    assert "A new key cannot sign from a time already past." in response.content.decode()
    assert not SigningKey.objects.exists()


def test_a_signing_key_that_would_sign_from_now_beside_another_must_be_asked_for(staff_client):
    signing_now = services.current_signing_key()

    response = staff_client.post(reverse("admin:licensing_signingkey_add"), {})

    assert response.status_code == 200
    assert f"Key {signing_now.kid} signs answers now" in response.content.decode()
    assert list(SigningKey.objects.all()) == [signing_now]


def test_adding_a_signing_key_rotates_and_retiring_stops_publishing(staff_client, actor):
    old = services.current_signing_key()

    staff_client.post(reverse("admin:licensing_signingkey_add"), {"replace": "on"})
    new = services.current_signing_key()
    action(staff_client, "signingkey", "retire", [old], confirmed="yes")

    assert new.pk != old.pk
    assert list(services.published_signing_keys()) == [new]
    page = staff_client.get(change_url(new)).content.decode()
    assert "BEGIN PUBLIC KEY" in page
    assert new.private_key_encrypted not in page
    assert "PRIVATE" not in page


# ---------------------------------------------------------------- staff accounts


def test_a_staff_account_is_made_with_its_groups_on_one_page(staff_client):
    billing = Group.objects.create(name="Billing")
    page = staff_client.get(reverse("admin:auth_user_add")).content.decode()

    staff_client.post(
        reverse("admin:auth_user_add"),
        {
            "username": "sam",
            "email": "sam@example.com",
            "usable_password": "true",
            "password1": "x-Long-pass-93",
            "password2": "x-Long-pass-93",
            "is_staff": "on",
            "groups": [billing.pk],
        },
    )

    assert 'name="is_staff"' in page
    sam = get_user_model().objects.get(username="sam")
    assert (sam.is_staff, list(sam.groups.all()), sam.email) == (True, [billing], "sam@example.com")
    created = AuditEvent.objects.get(action="user.created")
    assert (created.changes["is_staff"], created.changes["groups"]) == ([None, True], [None, ["Billing"]])


def test_making_a_staff_account_and_a_superuser_of_it_is_in_the_audit_trail(staff_client):
    staff_client.post(
        reverse("admin:auth_user_add"),
        {
            "username": "mallory",
            "usable_password": "true",
            "password1": "x-Long-pass-93",
            "password2": "x-Long-pass-93",
        },
    )
    mallory = get_user_model().objects.get(username="mallory")
    support = Group.objects.create(name="Billing")
    response = staff_client.post(
        reverse("admin:auth_user_change", args=[mallory.pk]),
        {
            "username": "mallory",
            "is_active": "on",
            "is_staff": "on",
            "is_superuser": "on",
            "groups": [support.pk],
        },
    )
    assert response.status_code == 302

    created, changed = (
        AuditEvent.objects.filter(target_type="auth.user").exclude(action="staff.signed_in").order_by("id")
    )
    assert (created.action, created.actor_display, created.target_display) == ("user.created", "staff", "mallory")
    assert created.changes == {"username": [None, "mallory"], "password": [None, "set"]}
    assert changed.action == "user.changed"
    assert changed.changes == {
        "is_staff": [False, True],
        "is_superuser": [False, True],
        "groups": [[], ["Billing"]],
    }
    assert "x-Long-pass-9" not in str(created.changes)


def test_a_password_set_and_an_account_deleted_by_staff_are_in_the_audit_trail(staff_client):
    clerk = get_user_model().objects.create_user("clerk", password="first-Long-pass-1")

    response = staff_client.post(
        reverse("admin:auth_user_password_change", args=[clerk.pk]),
        {"usable_password": "true", "password1": "second-Long-pass-2", "password2": "second-Long-pass-2"},
    )
    staff_client.post(reverse("admin:auth_user_delete", args=[clerk.pk]), {"post": "yes"})

    assert response.status_code == 302
    trail = AuditEvent.objects.filter(target_type="auth.user", target_id=str(clerk.pk)).order_by("id")
    changed, deleted = trail
    assert (changed.action, changed.changes, changed.actor_display) == (
        "user.password_changed",
        {"password": ["set", "set"]},
        "staff",
    )
    assert (deleted.action, deleted.actor_display) == ("user.deleted", "staff")
    assert {name: deleted.changes[name] for name in ["username", "is_staff", "groups"]} == {
        "username": ["clerk", None],
        "is_staff": [False, None],
        "groups": [[], None],
    }
    assert "password" not in deleted.changes
    assert not get_user_model().objects.filter(username="clerk").exists()


def test_a_staff_member_changing_their_own_password_is_in_the_audit_trail(staff_client, staff_user):
    response = staff_client.post(
        reverse("admin:password_change"),
        {
            "old_password": "a-long-test-password",
            "new_password1": "second-Long-pass-2",
            "new_password2": "second-Long-pass-2",
        },
    )

    assert response.status_code == 302
    event = AuditEvent.objects.get(action="user.password_changed")
    assert (event.target_id, event.actor_id, event.changes) == (
        str(staff_user.pk),
        str(staff_user.pk),
        {"password": ["set", "set"]},
    )


def test_a_wrong_old_password_changes_nothing_and_records_nothing(staff_client):
    response = staff_client.post(
        reverse("admin:password_change"),
        {"old_password": "a-guess", "new_password1": "second-Long-pass-2", "new_password2": "second-Long-pass-2"},
    )

    assert response.status_code == 200
    assert not AuditEvent.objects.filter(action="user.password_changed").exists()


def test_a_deleted_group_leaves_its_permissions_and_members_in_the_audit_trail(staff_client):
    group = Group.objects.create(name="Billing")
    may_change_licenses = Permission.objects.get(codename="change_license")
    group.permissions.add(may_change_licenses)
    get_user_model().objects.create_user("clerk").groups.add(group)

    staff_client.post(reverse("admin:auth_group_delete", args=[group.pk]), {"post": "yes"})

    event = AuditEvent.objects.get(action="group.deleted")
    assert event.changes == {
        "name": ["Billing", None],
        "permissions": [[str(may_change_licenses)], None],
        "members": [["clerk"], None],
    }


def test_a_password_form_that_does_not_validate_changes_nothing_and_records_nothing(staff_client):
    clerk = get_user_model().objects.create_user("clerk", password="first-Long-pass-1")

    response = staff_client.post(
        reverse("admin:auth_user_password_change", args=[clerk.pk]),
        {"usable_password": "true", "password1": "second-Long-pass-2", "password2": "another"},
    )

    assert response.status_code == 200
    assert not AuditEvent.objects.filter(action="user.password_changed").exists()


def test_what_a_group_may_do_is_in_the_audit_trail(staff_client):
    group = Group.objects.create(name="Billing")
    may_change_licenses = Permission.objects.get(codename="change_license")

    staff_client.post(
        reverse("admin:auth_group_change", args=[group.pk]),
        {"name": "Billing", "permissions": [may_change_licenses.pk]},
    )

    event = AuditEvent.objects.get(action="group.changed")
    assert event.changes == {"permissions": [[], [str(may_change_licenses)]]}
