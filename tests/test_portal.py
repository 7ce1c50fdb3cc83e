"""The customer portal through the test client: sign-in links, pages, and freeing devices."""

from __future__ import annotations

import json
import re
import smtplib
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.sessions.middleware import SessionMiddleware
from django.core import mail
from django.core.mail import BadHeaderError, EmailMessage
from django.db import OperationalError
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from license_verifier import verify_license_file

from licensing import services
from licensing.models import Activation, AuditEvent, Customer, SignInLink
from portal import views as portal_views
from tests.factories import activate, make_license, make_plan, make_product

pytestmark = pytest.mark.django_db


def request_link(client, email: str, **extra):
    """The page a customer sees after asking for a link: the check-email page, or the form's refusal."""
    return client.post(reverse("portal:sign-in"), {"email": email}, follow=True, **extra)


def link_from_mail(message) -> str:
    return re.search(r"https?://\S+", message.body).group(0)


def sign_in(client, customer) -> None:
    request_link(client, customer.email)
    path = link_from_mail(mail.outbox[-1]).split("testserver", 1)[1]
    response = client.post(path)
    assert response.status_code == 302


@pytest.fixture
def signed_in(client, customer):
    sign_in(client, customer)
    return client


# ---------------------------------------------------------------- signing in


def test_a_customer_gets_a_link_that_signs_them_in(client, customer, issued):
    response = request_link(client, "ADA@example.com")

    assert "If ADA@example.com has licenses with us" in response.content.decode()
    assert [message.to for message in mail.outbox] == [["ada@example.com"]]
    link = link_from_mail(mail.outbox[0])
    path = link.split("testserver", 1)[1]
    assert client.get(path).status_code == 200
    assert client.post(path).headers["Location"] == reverse("portal:licenses")
    assert "Photon Editor" in client.get(reverse("portal:licenses")).content.decode()


def test_reloading_the_page_after_asking_for_a_link_asks_for_no_other(client, customer):
    asked = request_link(client, customer.email)
    reloads = [client.get(reverse("portal:check-email")) for _ in range(4)]

    assert asked.redirect_chain == [(reverse("portal:check-email"), 302)]
    assert [reload.status_code for reload in reloads] == [200] * 4
    assert f"If {customer.email} has licenses with us" in reloads[-1].content.decode()
    assert len(mail.outbox) == 1
    assert SignInLink.objects.count() == 1
    assert "no-cache" in reloads[-1].headers["Cache-Control"]
    # Nothing asked in this browser: the page to ask from.
    assert Client().get(reverse("portal:check-email")).headers["Location"] == reverse("portal:sign-in")


def test_the_address_asked_for_is_shown_only_while_its_link_can_be_used(client, customer, monkeypatch):
    request_link(client, customer.email)
    later = timezone.now() + services.SIGN_IN_LINK_LIFETIME + timedelta(seconds=1)
    monkeypatch.setattr(portal_views.timezone, "now", lambda: later)

    response = client.get(reverse("portal:check-email"))

    assert response.headers["Location"] == reverse("portal:sign-in")


def test_a_session_from_the_release_before_leads_back_to_asking_for_a_link(client, customer):
    session = client.session
    session[portal_views.SESSION_LINK_SENT_TO_KEY] = customer.email
    session.save()

    response = client.get(reverse("portal:check-email"))

    assert response.headers["Location"] == reverse("portal:sign-in")


def test_signed_in_the_page_after_asking_for_a_link_leads_to_the_licenses(client, customer):
    sign_in(client, customer)

    response = client.get(reverse("portal:check-email"))

    assert response.headers["Location"] == reverse("portal:licenses")
    assert portal_views.SESSION_LINK_SENT_TO_KEY not in client.session


def test_the_mail_is_named_after_the_senders_domain_not_the_machine(client, customer, settings):
    settings.DEFAULT_FROM_EMAIL = "Photon Licenses <licenses@photon.example>"

    request_link(client, customer.email)

    sent = mail.outbox[0].message()
    assert sent["From"] == "Photon Licenses <licenses@photon.example>"
    assert re.fullmatch(r"<[^@<>\s]+@photon\.example>", sent["Message-ID"])


def test_the_sellers_name_is_on_every_page_and_in_the_mail(client, customer, issued, settings):
    settings.VENDOR_NAME = "Photon Software"

    sign_in_page = client.get(reverse("portal:sign-in")).content.decode()
    sign_in(client, customer)
    licenses = client.get(reverse("portal:licenses")).content.decode()

    assert "<title>Sign in · Photon Software</title>" in sign_in_page
    assert '<span class="brand">Your Photon Software licenses</span>' in sign_in_page
    assert "<title>Your licenses · Photon Software</title>" in licenses
    assert mail.outbox[0].subject == "Your Photon Software sign-in link"
    assert "see your Photon Software licenses and devices" in mail.outbox[0].body


def test_without_a_sellers_name_the_pages_and_mail_name_none(client, customer, settings):
    settings.VENDOR_NAME = ""

    page = client.get(reverse("portal:sign-in")).content.decode()
    request_link(client, customer.email)

    assert "<title>Sign in</title>" in page
    assert mail.outbox[0].subject == "Your sign-in link"
    assert "see your licenses and devices" in mail.outbox[0].body


def test_an_unknown_address_gets_the_same_answer_and_no_mail(customer):
    def answer(email: str):
        browser = Client()
        redirect = browser.post(reverse("portal:sign-in"), {"email": email})
        cookie = redirect.cookies["sessionid"]
        # Its expiry is a clock time: two requests a second apart differ there, whoever asked.
        cookie_attributes = sorted((name, value) for name, value in cookie.items() if name != "expires")
        shown = browser.get(redirect.headers["Location"]).content.decode()
        return redirect.status_code, sorted(redirect.headers.items()), cookie_attributes, len(cookie.value), shown

    known = answer("ada@example.com")
    unknown = answer("nobody@example.com")

    assert known[:4] == unknown[:4]
    assert unknown[4].replace("nobody@example.com", "ada@example.com") == known[4]
    assert len(mail.outbox) == 1
    assert SignInLink.objects.filter(email="nobody@example.com", customer=None).count() == 1


def test_a_link_works_once(client, customer):
    request_link(client, customer.email)
    path = link_from_mail(mail.outbox[0]).split("testserver", 1)[1]
    client.post(path)
    client.post(reverse("portal:sign-out"))

    again = client.post(path)
    opened_again = client.get(path)

    assert again.status_code == 400
    assert "This sign-in link was already used." in again.content.decode()
    assert client.get(reverse("portal:licenses")).status_code == 302
    # Opened again, it says so at once rather than offering a button that fails.
    assert opened_again.status_code == 400
    assert "This sign-in link was already used." in opened_again.content.decode()
    assert "Continue" not in opened_again.content.decode()


def test_a_used_link_opened_again_while_signed_in_leads_to_the_licenses(client, customer):
    request_link(client, customer.email)
    path = link_from_mail(mail.outbox[0]).split("testserver", 1)[1]
    client.post(path)

    page = client.get(path).content.decode()

    assert f'href="{reverse("portal:licenses")}">Go to your licenses ({customer.email})' in page
    assert "You are signed in already: this link is no longer needed." in page
    assert "Ask for a new one" not in page


def test_a_link_expires_after_15_minutes(client, customer):
    request_link(client, customer.email)
    SignInLink.objects.update(created_at=timezone.now() - timedelta(minutes=16))
    path = link_from_mail(mail.outbox[0]).split("testserver", 1)[1]

    assert client.post(path).status_code == 400
    assert "This sign-in link has expired: links last 15 minutes." in client.get(path).content.decode()


@pytest.mark.parametrize("token", ["tampered", "x" * 43])
def test_a_tampered_link_signs_no_one_in(client, customer, token):
    request_link(client, customer.email)

    response = client.post(reverse("portal:redeem", args=[token]))

    assert response.status_code == 400
    assert client.get(reverse("portal:licenses")).status_code == 302


def test_requests_are_throttled_per_address_and_per_ip(client, customer):
    for _ in range(3):
        assert request_link(client, customer.email).status_code == 200

    by_address = request_link(client, customer.email)
    for n in range(7):
        request_link(client, f"someone{n}@example.com")
    by_ip = request_link(client, "another@example.com")

    assert by_address.status_code == 429
    assert "<title>Error: Sign in</title>" in by_address.content.decode()
    assert "Please wait up to 15 minutes and try again." in by_address.content.decode()
    assert by_ip.status_code == 429
    assert len(mail.outbox) == 3


def test_behind_a_proxy_each_customer_is_counted_by_the_forwarded_address(client, customer, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    # The proxy's own address is REMOTE_ADDR for everyone; the client's is the last X-Forwarded-For entry.
    for n in range(10):
        request_link(client, f"someone{n}@example.com", HTTP_X_FORWARDED_FOR="203.0.113.7")

    from_the_busy_address = request_link(client, "another@example.com", HTTP_X_FORWARDED_FOR="203.0.113.7")
    from_elsewhere = request_link(client, customer.email, HTTP_X_FORWARDED_FOR="spoofed, 198.51.100.2")

    assert from_the_busy_address.status_code == 429
    assert from_elsewhere.status_code == 200
    assert SignInLink.objects.filter(customer=customer).get().ip_address == "198.51.100.2"


def test_an_ipv6_host_is_counted_by_its_slash_64_not_by_each_of_its_addresses(client, customer):
    # Any IPv6 host holds a whole /64: a new address per request must not make a new budget.
    for n in range(10):
        request_link(client, f"someone{n}@example.com", REMOTE_ADDR=f"2001:db8:1:2::{n + 1:x}")

    same_network = request_link(client, "another@example.com", REMOTE_ADDR="2001:db8:1:2:ffff::1")
    next_network = request_link(client, customer.email, REMOTE_ADDR="2001:db8:1:3::1")

    assert same_network.status_code == 429
    assert next_network.status_code == 200
    link = SignInLink.objects.filter(customer=customer).get()
    assert (link.ip_address, link.client_network) == ("2001:db8:1:3::1", "2001:db8:1:3::/64")


@pytest.mark.parametrize(
    "failure", [smtplib.SMTPServerDisconnected("gone"), TimeoutError(), socket.gaierror(), BadHeaderError("bad")]
)
def test_a_mail_server_failure_answers_like_any_address_and_is_logged(client, customer, monkeypatch, caplog, failure):
    def fail(*args, **kwargs):
        raise failure

    monkeypatch.setattr(EmailMessage, "send", fail)

    for_a_customer = request_link(client, customer.email)
    for_a_stranger = request_link(client, "stranger@example.com")

    assert (for_a_customer.status_code, for_a_stranger.status_code) == (200, 200)
    assert "Check your e-mail" in for_a_customer.content.decode()
    assert "It works once, for 15 minutes." in for_a_customer.content.decode()
    assert f"Could not send a portal sign-in link (customer {customer.pk})" in caplog.text
    assert customer.email not in caplog.text


def test_the_link_is_mailed_off_the_server_thread_once_the_answer_is_sent(rf, customer, monkeypatch):
    """A slow mail server must not make a customer's address answer slower than a stranger's, nor
    the next request on the same connection, which the same server thread answers."""
    monkeypatch.setattr(portal_views, "after_answers", ThreadPoolExecutor(max_workers=1))
    mail_server_answers = threading.Event()
    send = EmailMessage.send
    monkeypatch.setattr(EmailMessage, "send", lambda message: mail_server_answers.wait(5) and send(message))
    request = rf.post(reverse("portal:sign-in"), {"email": customer.email})
    SessionMiddleware(lambda request: None).process_request(request)
    written = []
    render = portal_views.render_to_string
    monkeypatch.setattr(
        portal_views, "render_to_string", lambda *args, **kwargs: written.append(1) or render(*args, **kwargs)
    )

    response = portal_views.sign_in(request)
    written_in_the_request = len(written)
    response.close()  # what the WSGI server does once the client has the whole answer
    sent_when_the_server_thread_was_free = len(mail.outbox)
    mail_server_answers.set()
    portal_views.after_answers.shutdown(wait=True)

    assert response.headers["Location"] == reverse("portal:check-email")
    assert (sent_when_the_server_thread_was_free, len(mail.outbox)) == (0, 1)
    # Nor is the mail written before the answer: a stranger's answer has none to write.
    assert (written_in_the_request, len(written)) == (0, 1)


def test_the_mailed_link_leads_to_the_public_url_whatever_port_the_request_named(client, customer, settings):
    settings.PUBLIC_URL = "https://licenses.example.com"

    request_link(client, customer.email, HTTP_HOST="testserver:6666")

    assert link_from_mail(mail.outbox[0]).startswith("https://licenses.example.com/portal/sign-in/")


def test_without_a_public_url_the_link_is_built_from_the_request(client, customer, settings):
    settings.PUBLIC_URL = ""

    request_link(client, customer.email)

    assert link_from_mail(mail.outbox[0]).startswith("http://testserver/portal/sign-in/")


def test_expired_links_are_deleted_when_the_next_one_is_asked_for(client, customer):
    request_link(client, customer.email)
    request_link(client, "nobody@example.com")
    SignInLink.objects.update(created_at=timezone.now() - timedelta(minutes=16))
    request_link(client, "someone@example.com")

    request_link(client, customer.email)

    assert sorted(SignInLink.objects.values_list("email", flat=True)) == [customer.email, "someone@example.com"]


def test_an_invalid_address_is_a_form_error(client):
    response = request_link(client, "not an address")
    empty = request_link(client, "").content.decode()

    assert response.status_code == 200
    page = response.content.decode()
    assert "Enter an e-mail address like name@example.com." in page
    assert "Enter the e-mail address you bought with." in empty
    # Announced: the title says so and the field, which names the error, takes the focus.
    assert "<title>Error: Sign in</title>" in page
    assert 'aria-invalid="true" aria-describedby="email-errors" autofocus>' in page
    assert not SignInLink.objects.exists()


def test_sign_out_ends_the_session(signed_in):
    response = signed_in.post(reverse("portal:sign-out"), follow=True)

    assert "You are signed out." in response.content.decode()
    assert signed_in.get(reverse("portal:licenses")).status_code == 302


def test_changing_a_customers_address_signs_out_whoever_signed_in_by_the_old_one(signed_in, customer, actor):
    request_link(Client(), customer.email.upper())
    link_to_the_old_address = link_from_mail(mail.outbox[-1]).split("testserver", 1)[1]
    customer.email = "ada.new@example.com"

    services.save_catalog_record(record=customer, actor=actor, fields=["email"])

    assert signed_in.get(reverse("portal:licenses"))["Location"] == reverse("portal:sign-in")
    # Nor can a link mailed to the old address, unused yet, sign anyone in.
    assert Client().post(link_to_the_old_address).status_code == 400
    sign_in(signed_in, customer)
    assert signed_in.get(reverse("portal:licenses")).status_code == 200


def test_signing_out_everywhere_ends_every_session_and_the_links_already_sent(signed_in, customer):
    other_browser = Client()
    sign_in(other_browser, customer)
    request_link(Client(), customer.email)
    unused_link = link_from_mail(mail.outbox[-1]).split("testserver", 1)[1]

    page = signed_in.get(reverse("portal:sign-out")).content.decode()
    response = signed_in.post(reverse("portal:sign-out"), {"everywhere": "1"}, follow=True)

    assert 'name="everywhere" value="1"' in page
    assert "You are signed out everywhere" in response.content.decode()
    assert other_browser.get(reverse("portal:licenses"))["Location"] == reverse("portal:sign-in")
    assert "before every sign-in to this account was ended" in Client().post(unused_link).content.decode()
    event = AuditEvent.objects.get(action="customer.signed_out_everywhere")
    assert (event.actor_kind, event.target_id) == ("customer", str(customer.pk))
    # A new link signs in again (once the three asked for lately stop counting against the limit).
    SignInLink.objects.update(created_at=timezone.now() - timedelta(minutes=16))
    sign_in(other_browser, customer)
    assert other_browser.get(reverse("portal:licenses")).status_code == 200


def test_signing_out_everywhere_leaves_other_customers_signed_in(signed_in, other_customer):
    theirs = Client()
    sign_in(theirs, other_customer)

    signed_in.post(reverse("portal:sign-out"), {"everywhere": "1"})

    assert theirs.get(reverse("portal:licenses")).status_code == 200
    assert Customer.objects.get(pk=other_customer.pk).portal_sessions_ended_at is None


def test_which_came_first_a_link_or_signing_out_everywhere_is_the_databases_call_not_an_app_servers(
    signed_in, customer, monkeypatch
):
    real_now = timezone.now

    def on_a_server_whose_clock_is(minutes_off: int, call) -> None:
        monkeypatch.setattr(timezone, "now", lambda: real_now() + timedelta(minutes=minutes_off))
        call()
        monkeypatch.setattr(timezone, "now", real_now)

    on_a_server_whose_clock_is(+10, lambda: request_link(Client(), customer.email))
    link_sent_before = link_from_mail(mail.outbox[-1]).split("testserver", 1)[1]
    on_a_server_whose_clock_is(-10, lambda: signed_in.post(reverse("portal:sign-out"), {"everywhere": "1"}))
    on_a_server_whose_clock_is(-10, lambda: request_link(Client(), customer.email))
    link_sent_after = link_from_mail(mail.outbox[-1]).split("testserver", 1)[1]

    assert "before every sign-in to this account was ended" in Client().post(link_sent_before).content.decode()
    assert Client().post(link_sent_after).status_code == 302


def test_a_links_age_is_told_by_the_databases_clock_not_the_app_servers(client, customer, monkeypatch):
    real_now = timezone.now
    # A server whose clock runs sixteen minutes ahead, past a link's whole lifetime.
    monkeypatch.setattr(timezone, "now", lambda: real_now() + timedelta(minutes=16))

    request_link(client, customer.email)
    response = client.post(link_from_mail(mail.outbox[-1]).split("testserver", 1)[1])

    assert response.status_code == 302
    assert client.get(reverse("portal:licenses")).status_code == 200


def test_a_session_begun_before_signing_out_everywhere_existed_still_works(signed_in, customer):
    assert customer.portal_sessions_ended_at is None

    assert signed_in.get(reverse("portal:licenses")).status_code == 200
    assert (
        signed_in.session[portal_views.SESSION_ADDRESS_KEY]
        == portal_views.salted_hmac("portal.session-address", customer.email, algorithm="sha256").hexdigest()
    )


def test_a_link_asked_for_in_other_letter_case_signs_in(client, customer):
    request_link(client, customer.email.upper())

    response = client.post(link_from_mail(mail.outbox[-1]).split("testserver", 1)[1])

    assert response.status_code == 302


def test_sign_out_by_address_asks_first_and_signs_out_only_with_a_post(signed_in, customer):
    asked = signed_in.get(reverse("portal:sign-out"))

    assert asked.status_code == 200
    assert '<button type="submit">Sign out</button>' in asked.content.decode()
    assert f'<span class="who">{customer.email}</span>' in asked.content.decode()
    assert signed_in.get(reverse("portal:licenses")).status_code == 200


def test_sign_out_by_address_when_signed_out_leads_to_sign_in(client):
    response = client.get(reverse("portal:sign-out"))

    assert response.status_code == 302
    assert response["Location"] == reverse("portal:sign-in")


def test_a_link_opened_while_signed_in_says_who_is_signed_in_now(signed_in, customer, other_customer):
    request_link(Client(), other_customer.email)
    forwarded = link_from_mail(mail.outbox[-1]).split("testserver", 1)[1]

    page = signed_in.get(forwarded).content.decode()

    assert f'<span class="who">{customer.email}</span>' in page
    assert "Continue to your licenses" in page


def test_staff_are_not_customers(staff_client):
    assert staff_client.get(reverse("portal:licenses")).status_code == 302


# ---------------------------------------------------------------- pages


def test_licenses_page_shows_product_status_key_and_slots(signed_in, issued, customer, plan, actor):
    activate(issued, "mac", name="MacBook")
    make_license(plan=plan, customer=customer, expires_at=datetime(2026, 3, 2, 12, tzinfo=UTC))
    suspended = make_license(plan=plan, customer=customer)
    services.suspend_license(license=suspended.license, actor=actor)
    make_license(plan=plan, customer=customer, expires_at=timezone.now() + timedelta(days=10))

    page = signed_in.get(reverse("portal:licenses")).content.decode()

    assert "Photon Editor · Personal" in page
    assert "Active, never expires" in page
    assert "Active, expires in 10 days" in page
    assert "1 of 3 slots in use" in page
    assert issued.key in page
    assert issued.license.masked_key in page
    assert "Expired on 2 March 2026" in page
    assert "Suspended" in page


def test_each_licenses_link_to_its_devices_is_named_after_it(signed_in, issued, customer):
    other_plan = make_plan(product=make_product(name="Atlas Sync"), name="Team")
    make_license(plan=other_plan, customer=customer)

    page = signed_in.get(reverse("portal:licenses")).content.decode()

    names = re.findall(r'class="step" href="[^"]+" aria-label="([^"]+)">Devices and history</a>', page)
    assert sorted(names) == ["Devices and history: Atlas Sync · Team", "Devices and history: Photon Editor · Personal"]


def test_licenses_the_customer_can_use_come_first_newest_first(signed_in, issued, customer, plan, actor):
    revoked = make_license(plan=plan, customer=customer)
    services.revoke_license(license=revoked.license, actor=actor)
    expired = make_license(plan=plan, customer=customer, expires_at=timezone.now() - timedelta(days=1))
    newest = make_license(plan=plan, customer=customer)

    page = signed_in.get(reverse("portal:licenses")).content.decode()

    order = [page.index(each.license.masked_key) for each in (newest, issued, expired, revoked)]
    assert order == sorted(order)


def test_a_license_of_a_withdrawn_product_says_so_and_comes_after_usable_ones(signed_in, issued, customer, actor):
    withdrawn = make_license(plan=make_plan(), customer=customer)
    withdrawn.license.product.is_active = False
    services.save_catalog_record(record=withdrawn.license.product, actor=actor, fields=["is_active"])

    page = signed_in.get(reverse("portal:licenses")).content.decode()

    assert page.index(issued.license.masked_key) < page.index(withdrawn.license.masked_key)
    assert page.count("No longer available: the product was withdrawn") == 1
    # Only the usable license reads as active.
    assert page.count("Active, never expires") == 1


def test_an_expired_license_of_a_withdrawn_product_reads_as_expired_as_its_apps_are_told(signed_in, customer, actor):
    expired = make_license(plan=make_plan(), customer=customer, expires_at=timezone.now() - timedelta(days=1))
    expired.license.product.is_active = False
    services.save_catalog_record(record=expired.license.product, actor=actor, fields=["is_active"])

    page = signed_in.get(reverse("portal:licenses")).content.decode()

    assert services.validate_license(license_key=expired.key).code == "EXPIRED"
    assert "Expired on " in page
    assert "No longer available" not in page


def test_pages_showing_keys_are_never_kept_by_a_browser_or_proxy(signed_in, issued):
    for url in (reverse("portal:licenses"), reverse("portal:license", args=[issued.license.pk])):
        response = signed_in.get(url)

        assert issued.key in response.content.decode()
        assert "no-store" in response["Cache-Control"]
        assert "private" in response["Cache-Control"]


def test_a_customer_with_no_licenses_is_told_so(client, other_customer):
    sign_in(client, other_customer)

    assert "There are no licenses for this e-mail address." in client.get(reverse("portal:licenses")).content.decode()


def test_license_page_lists_live_devices_and_history(signed_in, issued, actor):
    activate(issued, "mac", name="MacBook", platform="macOS")
    old = activate(issued, "old", name="Old PC").activation
    services.deactivate_activation(activation=old, actor=actor)

    page = signed_in.get(reverse("portal:license", args=[issued.license.pk])).content.decode()

    devices = page.split('id="devices-heading"')[1].split('id="history-heading"')[0]
    assert "MacBook" in devices and "macOS" in devices
    assert "Old PC" not in devices
    history = page.split('id="history-heading"')[1]
    assert "Old PC deactivated" in history
    assert "MacBook activated" in history


def test_the_history_names_a_device_without_name_or_fingerprint_as_the_device_list_does(signed_in, issued):
    nameless = services.activate_license(license_key=issued.key, actor=services.Actor.app()).activation

    page = signed_in.get(reverse("portal:license", args=[issued.license.pk])).content.decode()

    history = page.split('id="history-heading"')[1]
    assert "Unnamed device activated" in history
    assert str(nameless.pk) not in history


def test_the_history_says_a_device_was_carried_over_from_the_old_license_server(signed_in, issued):
    services.import_activation(license=issued.license, name="Studio Mac", actor=services.Actor.system())

    page = signed_in.get(reverse("portal:license", args=[issued.license.pk])).content.decode()

    history = page.split('id="history-heading"')[1]
    assert "Studio Mac carried over from our previous license system" in history


def license_with_devices(customer, names: list[str]) -> services.IssuedLicense:
    issued = make_license(customer=customer, max_activations=None)
    for n, name in enumerate(names):
        activate(issued, f"fp-{n}", name=name, platform="Windows" if n % 2 else "Linux")
    return issued


def devices_section(page: str) -> str:
    return page.split('id="devices-heading"')[1].split('id="history-heading"')[0]


def test_a_license_with_more_devices_than_fit_shows_them_a_page_at_a_time(signed_in, customer, monkeypatch):
    monkeypatch.setattr(portal_views, "DEVICES_PER_PAGE", 2)
    issued = license_with_devices(customer, ["Alpha", "Bravo", "Charlie", "Delta", "Echo"])
    url = reverse("portal:license", args=[issued.license.pk])

    first = devices_section(signed_in.get(url).content.decode())
    last = devices_section(signed_in.get(url, {"page": 3}).content.decode())

    assert "Alpha" in first and "Bravo" in first and "Charlie" not in first
    assert "Devices 1–2 of 5" in first
    assert 'href="?page=2" rel="next"' in first and 'rel="prev"' not in first
    assert "Echo" in last and "Delta" not in last
    assert "Devices 5–5 of 5" in last
    assert 'href="?page=2" rel="prev"' in last and 'rel="next"' not in last
    # Followed from an old or mistyped address: the nearest page there is, never an error.
    assert "Echo" in devices_section(signed_in.get(url, {"page": 9}).content.decode())
    assert "Alpha" in devices_section(signed_in.get(url, {"page": "two"}).content.decode())


def test_a_device_is_found_by_its_name_fingerprint_or_platform_whatever_page_it_is_on(signed_in, customer, monkeypatch):
    monkeypatch.setattr(portal_views, "DEVICES_PER_PAGE", 2)
    issued = license_with_devices(customer, ["Studio Mac", "Bravo", "Charlie", "Office mac mini", "Echo"])
    url = reverse("portal:license", args=[issued.license.pk])

    assert '<input type="search" id="device-search" name="q" value=""' in signed_in.get(url).content.decode()
    by_name = devices_section(signed_in.get(url, {"q": " MAC "}).content.decode())
    by_fingerprint = devices_section(signed_in.get(url, {"q": "fp-2"}).content.decode())
    by_platform = devices_section(signed_in.get(url, {"q": "windows"}).content.decode())

    assert "Studio Mac" in by_name and "Office mac mini" in by_name and "Bravo" not in by_name
    assert 'value="MAC"' in by_name
    assert "Charlie" in by_fingerprint and "Bravo" not in by_fingerprint
    assert "Bravo" in by_platform and "Office mac mini" in by_platform and "Charlie" not in by_platform


def test_a_search_that_finds_nothing_says_so_with_a_way_back_to_every_device(signed_in, customer, monkeypatch):
    monkeypatch.setattr(portal_views, "DEVICES_PER_PAGE", 2)
    issued = license_with_devices(customer, ["Alpha", "Bravo", "Charlie"])
    url = reverse("portal:license", args=[issued.license.pk])

    page = devices_section(signed_in.get(url, {"q": "<b>zebra</b>"}).content.decode())

    assert "No device matches “&lt;b&gt;zebra&lt;/b&gt;”." in page
    assert f'<a class="button secondary" href="{url}">Show every device</a>' in page
    assert "Deactivate all devices" not in page


def test_a_search_over_more_than_a_page_keeps_the_search_in_its_page_links(signed_in, customer, monkeypatch):
    monkeypatch.setattr(portal_views, "DEVICES_PER_PAGE", 2)
    issued = license_with_devices(customer, ["Mac 1", "PC", "Mac 2", "Mac 3"])
    url = reverse("portal:license", args=[issued.license.pk])

    no_match = devices_section(signed_in.get(url, {"q": "mac & co"}).content.decode())
    macs = devices_section(signed_in.get(url, {"q": " mac "}).content.decode())
    second = devices_section(signed_in.get(url, {"q": "mac", "page": 2}).content.decode())

    assert '<p id="search-result" tabindex="-1">No device matches “mac &amp; co”.</p>' in no_match
    assert "3 devices match “mac”." in macs and "<caption>Devices 1–2 of 3 matching “mac”</caption>" in macs
    assert 'href="?q=mac&amp;page=2" rel="next"' in macs
    assert (
        "devices matching “mac” · devices, page 2 of 2</title>"
        in signed_in.get(url, {"q": "mac", "page": 2}).content.decode()
    )
    assert "Mac 3" in second and "Mac 1" not in second and 'href="?q=mac" rel="prev"' in second


def test_a_long_device_list_is_easy_to_page_and_tell_apart_by_keyboard_and_screen_reader(
    signed_in, customer, monkeypatch
):
    monkeypatch.setattr(portal_views, "DEVICES_PER_PAGE", 2)
    issued = license_with_devices(customer, ["Agent", "Agent", "Charlie", "Delta", "Echo"])
    url = reverse("portal:license", args=[issued.license.pk])

    page = signed_in.get(url, {"page": 2}).content.decode()
    found = devices_section(signed_in.get(url, {"q": "delta"}).content.decode())

    devices = devices_section(page)
    # The page links come before the fifty rows' buttons too, and say where the reader is.
    assert devices.index('rel="next"') < devices.index("<table")
    assert devices.count('<span aria-current="page">Page 2 of 3</span>') == 2
    assert "<caption>Devices 3–4 of 5</caption>" in devices
    assert "devices, page 2 of 3</title>" in page
    # Two devices named alike are told apart by their fingerprints.
    first = devices_section(signed_in.get(url).content.decode())
    assert 'Agent<br><span class="fingerprint">fp-0</span>' in first
    assert 'Agent<br><span class="fingerprint">fp-1</span>' in first
    assert '<p id="search-result" tabindex="-1">1 device matches “delta”.</p>' in found
    assert "<caption>Devices matching “delta”</caption>" in found


def test_a_device_page_opened_again_after_freeing_it_says_there_is_nothing_to_do(signed_in, issued):
    device = activate(issued, "mac", name="MacBook").activation
    url = reverse("portal:deactivate-device", args=[issued.license.pk, device.pk])
    signed_in.post(url)

    again = signed_in.get(url).content.decode()

    assert "MacBook is already deactivated: there is nothing to do." in again
    # A statement, not the question there is nothing to answer; the license it is about above it.
    assert "<h1>Nothing to deactivate</h1>" in again
    assert f"<title>Nothing to deactivate · {issued.license.product.name} · {issued.license.plan.name}</title>" in again
    license_url = reverse("portal:license", args=[issued.license.pk])
    assert (
        f'<a class="step" href="{license_url}">← {issued.license.product.name} · {issued.license.plan.name}</a>'
        in again
    )
    assert "Yes, deactivate it" not in again


@pytest.mark.parametrize("page_number", ["0", "-1"])
def test_a_page_number_below_one_shows_the_first_page(signed_in, customer, monkeypatch, page_number):
    monkeypatch.setattr(portal_views, "DEVICES_PER_PAGE", 2)
    issued = license_with_devices(customer, ["Alpha", "Bravo", "Charlie", "Delta", "Echo"])

    page = signed_in.get(reverse("portal:license", args=[issued.license.pk]), {"page": page_number})

    assert "Devices 1–2 of 5" in devices_section(page.content.decode())


def test_a_search_with_a_nul_in_it_finds_what_the_rest_of_it_names(signed_in, customer, monkeypatch):
    monkeypatch.setattr(portal_views, "DEVICES_PER_PAGE", 2)
    issued = license_with_devices(customer, ["Alpha", "Bravo", "Charlie"])

    response = signed_in.get(reverse("portal:license", args=[issued.license.pk]), {"q": "Br\x00avo"})

    assert response.status_code == 200
    found = devices_section(response.content.decode())
    assert "Bravo" in found and "Alpha" not in found


def test_freeing_a_device_found_by_a_search_leads_back_to_that_search_and_page(signed_in, customer, monkeypatch):
    monkeypatch.setattr(portal_views, "DEVICES_PER_PAGE", 2)
    issued = license_with_devices(customer, ["Mac 1", "PC", "Mac 2", "Mac 3", "Mac 4"])
    license_url = reverse("portal:license", args=[issued.license.pk])
    mac_3 = Activation.objects.get(license=issued.license, name="Mac 3")
    deactivate_url = reverse("portal:deactivate-device", args=[issued.license.pk, mac_3.pk])

    found = devices_section(signed_in.get(license_url, {"q": "mac", "page": "2"}).content.decode())
    confirmation = signed_in.get(deactivate_url, {"q": "mac", "page": "2"}).content.decode()
    response = signed_in.post(f"{deactivate_url}?q=mac&page=2")

    assert f'href="{deactivate_url}?q=mac&amp;page=2"' in found
    assert "Deactivate all devices" not in found
    assert f'href="{license_url}?q=mac&amp;page=2">Cancel</a>' in confirmation
    assert response.status_code == 302
    assert response["Location"] == f"{license_url}?q=mac&page=2"
    assert not Activation.objects.get(pk=mac_3.pk).is_live


def test_a_license_whose_devices_fit_on_one_page_has_no_search_or_page_links(signed_in, issued):
    activate(issued, "mac", name="MacBook")

    page = devices_section(signed_in.get(reverse("portal:license", args=[issued.license.pk])).content.decode())

    assert "MacBook" in page
    assert 'type="search"' not in page and "Devices 1–" not in page


# ---------------------------------------------------------------- freeing devices


def test_deactivating_a_device_frees_its_slot(signed_in, issued):
    activation = activate(issued, "mac", name="MacBook").activation
    activate(issued, "pc", name="PC")
    url = reverse("portal:deactivate-device", args=[issued.license.pk, activation.pk])
    assert (
        f"<title>Deactivate MacBook? · {issued.license.product.name} · {issued.license.plan.name}</title>"
        in signed_in.get(url).content.decode()
    )

    response = signed_in.post(url, follow=True)

    # The message is a status region, focused when the page loads (base.html), so it is read out.
    assert (
        '<div class="messages" id="messages" role="status" tabindex="-1">\n'
        '        <ul><li class="success">MacBook deactivated. 1 of 3 slots in use.</li></ul>'
    ) in response.content.decode()
    assert not Activation.objects.get(pk=activation.pk).is_live
    assert services.validate_license(license_key=issued.key, fingerprint="mac").code == "NOT_ACTIVATED"
    row = Activation.objects.get(pk=activation.pk)
    assert (row.deactivated_by_kind, row.deactivated_by) == ("customer", "ada@example.com")


def test_deactivating_an_inactive_device_says_so(signed_in, issued, actor):
    activation = activate(issued, "mac", name="MacBook").activation
    services.deactivate_activation(activation=activation, actor=actor)

    response = signed_in.post(reverse("portal:deactivate-device", args=[issued.license.pk, activation.pk]), follow=True)

    assert "MacBook was already deactivated." in response.content.decode()


def test_deactivate_all_devices(signed_in, issued):
    activate(issued, "a")
    activate(issued, "b")
    url = reverse("portal:deactivate-all", args=[issued.license.pk])

    confirmation = signed_in.get(url).content.decode()
    response = signed_in.post(url, follow=True)

    assert "The app on each of these devices stops working" in confirmation
    assert "<li>a</li>" in confirmation and "<li>b</li>" in confirmation

    assert "2 devices deactivated. 0 of 3 slots in use." in response.content.decode()
    assert issued.license.activations.live().count() == 0
    again = signed_in.post(url, follow=True)
    assert "No device was in use: nothing changed." in again.content.decode()


def test_freeing_every_device_of_a_big_license_names_the_first_and_counts_the_rest(signed_in, customer, monkeypatch):
    monkeypatch.setattr(portal_views, "DEVICES_NAMED_BEFORE_FREEING_ALL", 2)
    issued = license_with_devices(customer, ["Alpha", "Bravo", "Charlie", "Delta", "Echo"])
    url = reverse("portal:deactivate-all", args=[issued.license.pk])

    confirmation = signed_in.get(url).content.decode()
    response = signed_in.post(url, follow=True)

    assert "<title>Deactivate all 5 devices?" in confirmation
    assert "Yes, deactivate all 5 devices</button>" in confirmation
    assert "<li>Alpha</li>" in confirmation and "<li>Bravo</li>" in confirmation
    assert "Charlie" not in confirmation
    assert "<li>and 3 more</li>" in confirmation
    assert "5 devices deactivated." in response.content.decode()
    assert issued.license.activations.live().count() == 0


def test_deactivate_all_with_no_device_in_use_offers_nothing_to_confirm(signed_in, issued):
    activation = activate(issued, "a", name="Old laptop").activation
    services.deactivate_activation(activation=activation, actor=services.Actor.system("test"))

    confirmation = signed_in.get(reverse("portal:deactivate-all", args=[issued.license.pk])).content.decode()

    assert "No device is using this license: there is nothing to deactivate." in confirmation
    assert "<h1>Nothing to deactivate</h1>" in confirmation
    assert "Old laptop" not in confirmation
    assert "Yes, deactivate all devices" not in confirmation


@pytest.mark.parametrize(
    ("expires_at", "words"),
    [
        (lambda now: now + timedelta(days=365), "Active, expires in 365 days, on "),
        (lambda now: now + timedelta(days=2), "Active, expires in 2 days, on "),
        (lambda now: now + timedelta(days=1), "Active, expires tomorrow at 10:00 UTC"),
        (lambda now: now.replace(hour=23, minute=59, second=59, microsecond=999999), "Active, expires today at 23:59"),
    ],
)
def test_days_left_are_counted_in_calendar_days(signed_in, customer, plan, expires_at, words, monkeypatch):
    # Held at mid-morning: a midnight between making the license and showing it changes the count.
    morning = timezone.now().replace(hour=10, minute=0, second=0, microsecond=0)
    monkeypatch.setattr(timezone, "now", lambda: morning)
    expiry = expires_at(timezone.localtime())
    make_license(plan=plan, customer=customer, expires_at=expiry)

    page = signed_in.get(reverse("portal:licenses")).content.decode()

    assert words in page
    assert "today" in words or "tomorrow" in words or f"on {expiry.day} {expiry:%B %Y}" in page


def test_a_license_expiring_minutes_after_midnight_says_tomorrow_and_when(signed_in, customer, plan, monkeypatch):
    late = timezone.now().replace(hour=23, minute=50, second=0, microsecond=0)
    monkeypatch.setattr(timezone, "now", lambda: late)
    make_license(plan=plan, customer=customer, expires_at=late + timedelta(minutes=20))

    page = signed_in.get(reverse("portal:licenses")).content.decode()

    assert "Active, expires tomorrow at 00:10 UTC" in page
    assert "expires in 1 day" not in page


def test_devices_over_a_lowered_limit_say_what_it_takes_to_activate_another(signed_in, customer, actor):
    issued = make_license(plan=make_plan(max_activations=3), customer=customer)
    for name in ("a", "b", "c"):
        activate(issued, name)
    solo = make_license(plan=make_plan(max_activations=1), customer=customer)
    activate(solo, "only")
    services.change_activation_limit(license=issued.license, max_activations=1, actor=actor)

    page = signed_in.get(reverse("portal:license", args=[issued.license.pk])).content.decode()
    listing = signed_in.get(reverse("portal:licenses")).content.decode()

    assert "3 devices in use, over the limit of 1: deactivate 2 before another can be activated" in page
    license = issued.license
    assert f"<title>{license.product.name} · {license.plan.name} · {license.masked_key}</title>" in page
    assert "1 of 1 slot in use" in listing


def test_an_offline_license_file_downloads_for_a_live_device(signed_in, issued):
    activation = activate(issued, "mac", name="MacBook").activation
    page = signed_in.get(reverse("portal:license", args=[issued.license.pk])).content.decode()
    assert "lets the app on its device run without reaching the license server, for 30 days" in page
    assert '<td role="cell" data-label="Last seen">now</td>' in page
    assert re.search(r"<time [^>]+>\d+ \w+ \d{4}, \d\d:\d\d UTC</time>\s+MacBook activated", page)

    response = signed_in.post(reverse("portal:license-file", args=[issued.license.pk, activation.pk]))

    assert response.status_code == 200
    filename = f"{issued.license.product.slug}-macbook-{str(activation.pk)[:8]}.lic"
    assert response["Content-Disposition"] == f'attachment; filename="{filename}"'
    public_keys = {each.kid: each.public_key_pem for each in services.published_signing_keys()}
    payload = verify_license_file(response.content.decode(), public_keys, fingerprint="mac", license_key=issued.key)
    assert payload["activation"]["id"] == str(activation.pk)


@pytest.mark.parametrize(("seconds", "words"), [(43200, "12 hours"), (5400, "90 minutes"), (86400, "1 day")])
def test_the_offline_file_note_gives_a_life_shorter_than_days_in_hours_or_minutes(
    signed_in, issued, settings, seconds, words
):
    settings.OFFLINE_LICENSE_DEFAULT_TTL = timedelta(seconds=seconds)
    activate(issued, "mac", name="MacBook")

    page = signed_in.get(reverse("portal:license", args=[issued.license.pk])).content.decode()

    assert f"run without reaching the license server, for {words} (never past" in page


# ---------------------------------------------------------------- another customer's objects


def test_another_customers_license_and_devices_are_404(client, issued, other_customer):
    activation = activate(issued, "mac").activation
    sign_in(client, other_customer)
    license_id = issued.license.pk

    for url in [
        reverse("portal:license", args=[license_id]),
        reverse("portal:deactivate-all", args=[license_id]),
        reverse("portal:deactivate-device", args=[license_id, activation.pk]),
    ]:
        assert client.get(url).status_code == 404
        assert client.post(url).status_code == 404
    assert client.post(reverse("portal:license-file", args=[license_id, activation.pk])).status_code == 404
    assert Activation.objects.get(pk=activation.pk).is_live


def test_a_device_of_another_license_is_404(signed_in, issued, customer):
    other = make_license(plan=make_plan(), customer=None)
    theirs = activate(other, "theirs").activation

    response = signed_in.post(reverse("portal:deactivate-device", args=[issued.license.pk, theirs.pk]))

    assert response.status_code == 404
    assert Activation.objects.get(pk=theirs.pk).is_live


def test_signed_out_visitors_are_sent_to_sign_in(client, issued):
    response = client.get(reverse("portal:license", args=[issued.license.pk]))

    assert response.status_code == 302
    assert response["Location"] == reverse("portal:sign-in")


def test_changes_need_a_post_with_csrf(issued, customer):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    sign_in_page = client.get(reverse("portal:sign-in"))
    token = sign_in_page.cookies["csrftoken"].value
    client.post(reverse("portal:sign-in"), {"email": customer.email, "csrfmiddlewaretoken": token})
    path = link_from_mail(mail.outbox[-1]).split("testserver", 1)[1]
    client.post(path, {"csrfmiddlewaretoken": client.cookies["csrftoken"].value})
    activation = activate(issued, "mac").activation

    response = client.post(reverse("portal:deactivate-device", args=[issued.license.pk, activation.pk]))

    assert response.status_code == 403
    assert Activation.objects.get(pk=activation.pk).is_live


def test_downloading_a_license_file_needs_a_post_and_an_address_followed_leads_to_its_license(signed_in, issued):
    activation = activate(issued, "mac").activation

    response = signed_in.get(reverse("portal:license-file", args=[issued.license.pk, activation.pk]))

    assert (response.status_code, response["Location"]) == (302, reverse("portal:license", args=[issued.license.pk]))
    assert not AuditEvent.objects.filter(action="activation.checked_out").exists()


def test_the_sign_in_page_answers_head_for_uptime_checks(client):
    assert client.head(reverse("portal:sign-in")).status_code == 200


def test_the_sign_in_mail_greets_the_customer_by_name(client, customer):
    request_link(client, customer.email)

    assert mail.outbox[0].body.startswith("Hello Ada Lovelace,")


def test_the_confirmation_says_what_a_deactivation_uses_up(signed_in, customer):
    strict = make_plan(max_activations=3, max_deactivations=2, deactivation_window_days=30, slot_cooldown_minutes=60)
    issued = make_license(plan=strict, customer=customer)
    device = activate(issued, "mac", name="MacBook").activation

    one = signed_in.get(reverse("portal:deactivate-device", args=[issued.license.pk, device.pk])).content.decode()
    every = signed_in.get(reverse("portal:deactivate-all", args=[issued.license.pk])).content.decode()

    for page in (one, every):
        assert "A freed slot can take another device 60 minutes later." in page
        assert "Each device deactivated uses one of your device changes: 2 are left." in page
        assert "become free for" not in page
    assert (
        "The app on MacBook stops working at its next online check, or, if an offline license file was downloaded "
        "for it, when that file expires."
    ) in one


def test_the_history_says_which_deactivations_were_the_customers_own(signed_in, customer, other_customer, actor):
    issued = make_license(plan=make_plan(), customer=other_customer)
    mine, theirs = (activate(issued, name, name=name).activation for name in ("Mine", "Theirs"))
    services.deactivate_activation(activation=theirs, actor=services.Actor.customer(other_customer))
    services.update_license(license=issued.license, customer=customer, actor=actor)
    signed_in.post(reverse("portal:deactivate-device", args=[issued.license.pk, mine.pk]))

    page = signed_in.get(reverse("portal:license", args=[issued.license.pk])).content.decode()

    assert "Mine deactivated (by you)" in page
    assert "Theirs deactivated (by customer)" in page


@pytest.mark.parametrize("path", ["/portal/licenses/00000000-0000-4000-8000-000000000000/", "/portal/no-such-page/"])
def test_a_page_that_is_not_there_says_so_with_a_way_back(signed_in, customer, path):
    response = signed_in.get(path)

    assert response.status_code == 404
    page = response.content.decode()
    assert "There is nothing here" in page
    assert f'<a class="step" href="{reverse("portal:licenses")}">Your licenses</a>' in page
    # Still signed in, as the header says on every other page.
    assert f'<span class="who">{customer.email}</span>' in page


def test_an_admin_page_that_is_not_there_is_the_admins_page(staff_client):
    response = staff_client.get("/admin/licensing/no-such-page/")

    assert response.status_code == 404
    page = response.content.decode()
    assert "There is nothing here" in page
    assert f'href="{reverse("admin:index")}">Back to the admin</a>' in page
    assert reverse("portal:licenses") not in page


def test_a_server_error_page_renders_with_nothing_from_the_request(rf):
    response = portal_views.server_error(rf.get("/portal/licenses/"))

    assert response.status_code == 500
    assert "Something went wrong on our side" in response.content.decode()


def test_a_failure_outside_an_api_views_own_handling_is_answered_in_json(api_client, issued, monkeypatch, rf):
    # Signing happens after the view's own error handling: the database gone then was the portal's page.
    def database_gone():
        raise OperationalError("the database is gone")

    monkeypatch.setattr(services, "current_signing_key", database_gone)
    api_client.raise_request_exception = False

    response = api_client.post("/api/v1/licenses/validate", {"key": issued.key}, format="json")
    dialect = portal_views.server_error(rf.post("/compat/kelviq/api/v1/license/validate/"))
    # Served under a path prefix (SCRIPT_NAME), the API is known by the path below it.
    prefixed = portal_views.server_error(rf.post("/api/v1/licenses/validate", SCRIPT_NAME="/licensing"))

    for answer in (response, dialect, prefixed):
        assert (answer.status_code, answer["Content-Type"]) == (500, "application/json")
        assert json.loads(answer.content)["error"]["code"] == "server_error"


def test_customers_are_shown_where_to_get_help_when_the_vendor_says_where(signed_in, customer, plan, actor, settings):
    suspended = make_license(plan=plan, customer=customer)
    services.suspend_license(license=suspended.license, actor=actor)
    make_license(plan=plan, customer=customer)
    help_link = '<a href="mailto:help@example.com">Contact support</a>'

    without = signed_in.get(reverse("portal:licenses")).content.decode()
    settings.SUPPORT_URL = "mailto:help@example.com"
    listing = signed_in.get(reverse("portal:licenses")).content.decode()
    page = signed_in.get(reverse("portal:license", args=[suspended.license.pk])).content.decode()

    assert "mailto:" not in without
    assert without.count("Suspended · The seller you bought it from can help.") == 1
    assert listing.count(help_link) == 1
    assert help_link in page
    assert "Questions about a license? Contact support" in listing


def test_each_copy_button_names_the_key_it_copies(signed_in, customer, plan):
    first = make_license(plan=plan, customer=customer).license
    second = make_license(plan=plan, customer=customer).license

    listing = signed_in.get(reverse("portal:licenses")).content.decode()

    for license in (first, second):
        assert f'<span class="visually-hidden"> the Photon Editor key {license.masked_key}</span>' in listing


def test_following_another_customers_link_says_whose_licenses_are_shown_now(signed_in, customer, other_customer):
    request_link(Client(), other_customer.email)
    forwarded = link_from_mail(mail.outbox[-1]).split("testserver", 1)[1]
    request_link(Client(), other_customer.email)
    own_again = link_from_mail(mail.outbox[-1]).split("testserver", 1)[1]

    switched = signed_in.post(forwarded, follow=True)
    same = signed_in.post(own_again, follow=True)

    assert "You are now signed in as grace@example.com." in switched.content.decode()
    assert same.status_code == 200
    assert "You are now signed in as" not in same.content.decode()


def test_a_form_sent_without_its_csrf_check_says_so_with_a_way_back(customer):
    browser = Client(enforce_csrf_checks=True)

    response = browser.post(reverse("portal:sign-in"), {"email": customer.email})

    assert response.status_code == 403
    page = response.content.decode()
    assert "<title>Page expired</title>" in page
    assert "Nothing was done" in page
    assert f'<a class="step" href="{reverse("portal:sign-in")}">Sign in</a>' in page


def test_error_pages_are_drawn_when_the_database_is_what_failed(signed_in, monkeypatch):
    def database_gone(request):
        raise OperationalError("the database is gone")

    monkeypatch.setattr(portal_views, "signed_in_customer", database_gone)
    browser = Client(enforce_csrf_checks=True)
    browser.cookies = signed_in.cookies

    expired = browser.post(reverse("portal:sign-out"))
    missing = browser.get("/portal/no-such-page/")

    assert (expired.status_code, missing.status_code) == (403, 404)
    assert f'<a class="step" href="{reverse("portal:sign-in")}">Sign in</a>' in missing.content.decode()


def test_a_signed_in_customers_form_sent_without_its_csrf_check_keeps_them_signed_in(signed_in, customer):
    browser = Client(enforce_csrf_checks=True)
    browser.cookies = signed_in.cookies

    response = browser.post(reverse("portal:sign-out"))

    assert response.status_code == 403
    page = response.content.decode()
    assert "<title>Page expired" in page
    assert f'<span class="who">{customer.email}</span>' in page
    assert f'<a class="step" href="{reverse("portal:licenses")}">Your licenses</a>' in page
