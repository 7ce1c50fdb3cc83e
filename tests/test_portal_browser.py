"""The portal's main path in a real browser: Debian's Chromium driven by Playwright."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from django.core import mail
from django.db import connections

from licensing import services
from portal import views as portal_views
from tests.factories import activate, make_customer, make_license, make_plan, make_product

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"),
]


@pytest.fixture
def page():
    # Playwright's sync API runs an event loop in this thread; the ORM calls the test makes between
    # browser steps are still plain synchronous code.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        context = browser.new_context(viewport={"width": 1100, "height": 800})
        yield context.new_page()
        browser.close()
        # The test's database calls ran in Playwright's greenlet, whose connection the session's
        # teardown cannot see; hand it back now so the test database can be dropped.
        connections.close_all()
    del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"portal-{name}.png"), full_page=True)


def test_customer_signs_in_and_frees_a_device(page, live_server):
    customer = make_customer(email="ada@example.com", name="Ada Lovelace")
    plan = make_plan(product=make_product(name="Photon Editor"), name="Personal", max_activations=3)
    issued = make_license(plan=plan, customer=customer)
    activate(issued, "mac-serial-0001", name="MacBook", platform="macOS")
    activate(issued, "pc-serial-0002", name="Office PC", platform="Windows")

    page.goto(f"{live_server.url}/portal/")
    screenshot(page, "1-sign-in")
    page.get_by_label("E-mail address").fill("ada@example.com")
    page.get_by_role("button", name="Send me a sign-in link").click()
    page.get_by_role("heading", name="Check your e-mail").wait_for()
    screenshot(page, "2-check-email")

    link = re.search(r"https?://\S+", mail.outbox[-1].body).group(0)
    page.goto(link)
    page.get_by_role("button", name="Continue to your licenses").click()
    page.get_by_role("heading", name="Your licenses").wait_for()
    assert "2 of 3 slots in use" in page.content()
    # A link on its own line is tapped with a thumb, as the buttons are: 44 px high.
    assert page.get_by_role("link", name=re.compile("Sign out everywhere")).bounding_box()["height"] >= 44
    screenshot(page, "3-licenses")

    page.get_by_role("link", name="Photon Editor · Personal", exact=True).click()
    page.get_by_role("heading", name="Devices using this license").wait_for()
    screenshot(page, "4-license")
    page.get_by_role("link", name="Deactivate MacBook").click()
    page.get_by_role("heading", name="Deactivate MacBook?").wait_for()
    screenshot(page, "5-confirm")
    page.get_by_role("button", name="Yes, deactivate it").click()

    page.get_by_text("MacBook deactivated. 1 of 3 slots in use.").wait_for()
    page.wait_for_load_state("load")
    screenshot(page, "6-deactivated")
    # Focus on the message is what makes a screen reader read it out after the redirect.
    assert page.evaluate("document.activeElement.id") == "messages"
    devices = page.locator("table tbody tr")
    assert devices.count() == 1
    assert "Office PC" in devices.first.inner_text()
    assert services.validate_license(license_key=issued.key, fingerprint="mac-serial-0001").code == "NOT_ACTIVATED"
    assert services.validate_license(license_key=issued.key, fingerprint="pc-serial-0002").code == "VALID"


def test_a_device_name_with_no_spaces_wraps_instead_of_widening_the_page_on_a_phone(page, live_server):
    customer = make_customer(email="grace@example.com")
    issued = make_license(plan=make_plan(max_activations=3), customer=customer)
    activate(issued, "phone-serial-0001", name="A" * 255)
    page.set_viewport_size({"width": 390, "height": 844})

    page.goto(f"{live_server.url}/portal/")
    page.get_by_label("E-mail address").fill("grace@example.com")
    page.get_by_role("button", name="Send me a sign-in link").click()
    page.get_by_role("heading", name="Check your e-mail").wait_for()
    page.goto(re.search(r"https?://\S+", mail.outbox[-1].body).group(0))
    page.get_by_role("button", name="Continue to your licenses").click()
    page.goto(f"{live_server.url}/portal/licenses/{issued.license.pk}/")
    screenshot(page, "long-name-phone")

    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    deactivate = page.get_by_role("link", name=re.compile("^Deactivate A+$")).bounding_box()
    assert deactivate["x"] + deactivate["width"] <= 390
    # The narrowest screens that must not scroll sideways (WCAG's reflow at 320 CSS pixels).
    page.set_viewport_size({"width": 320, "height": 700})
    assert page.evaluate("document.documentElement.scrollWidth") <= 320


def sign_in(page, live_server, email: str) -> None:
    page.goto(f"{live_server.url}/portal/")
    page.get_by_label("E-mail address").fill(email)
    page.get_by_role("button", name="Send me a sign-in link").click()
    page.get_by_role("heading", name="Check your e-mail").wait_for()
    page.goto(re.search(r"https?://\S+", mail.outbox[-1].body).group(0))
    page.get_by_role("button", name="Continue to your licenses").click()
    page.get_by_role("heading", name="Your licenses").wait_for()


def test_a_device_search_says_what_it_found_and_a_phone_does_not_read_out_column_names_twice(
    page, live_server, monkeypatch
):
    monkeypatch.setattr(portal_views, "DEVICES_PER_PAGE", 2)
    issued = make_license(plan=make_plan(max_activations=5), customer=make_customer(email="ada@example.com"))
    for number, name in enumerate(["Build agent 1", "Build agent 2", "Office PC"]):
        activate(issued, f"fp-{number}", name=name, platform="Linux")
    sign_in(page, live_server, "ada@example.com")
    page.goto(f"{live_server.url}/portal/licenses/{issued.license.pk}/")

    page.get_by_label("Find a device").fill("agent")
    page.get_by_label("Find a device").press("Enter")
    page.get_by_text("2 devices match “agent”.").wait_for()
    page.wait_for_load_state("load")

    # Focus on the result is what makes a screen reader say it: the page otherwise looks unchanged.
    assert page.evaluate("document.activeElement.id") == "search-result"
    assert "devices matching “agent”" in page.title()
    page.set_viewport_size({"width": 360, "height": 700})
    screenshot(page, "search-phone")
    # Each cell still shows its column's name on a narrow screen, where the header row is hidden.
    label = page.evaluate("getComputedStyle(document.querySelector('td[data-label]'), '::before').content")
    assert label.startswith('"Device: "')
    # (The table's explicit roles are for Safari, which drops a block-laid table's; Chromium keeps them.)
    cells = page.locator("table").aria_snapshot()
    assert "Build agent 1" in cells and "Platform:" not in cells


def test_a_long_address_and_a_nameless_device_fit_a_320_px_screen_with_controls_a_thumb_can_hit(page, live_server):
    email = "maximilian.alexander.featherstonehaugh-wolfeschlegelsteinhausen@example-company.com"
    issued = make_license(plan=make_plan(max_activations=3), customer=make_customer(email=email))
    device = activate(issued, "f" * 255).activation
    page.set_viewport_size({"width": 320, "height": 700})
    license_page = f"{live_server.url}/portal/licenses/{issued.license.pk}/"

    page.goto(f"{live_server.url}/portal/")
    page.get_by_label("E-mail address").fill(email)
    page.get_by_role("button", name="Send me a sign-in link").click()
    page.get_by_role("heading", name="Check your e-mail").wait_for()
    widths = {"check e-mail": page.evaluate("document.documentElement.scrollWidth")}
    page.goto(re.search(r"https?://\S+", mail.outbox[-1].body).group(0))
    page.get_by_role("button", name="Continue to your licenses").click()
    page.get_by_role("heading", name="Your licenses").wait_for()
    widths["licenses"] = page.evaluate("document.documentElement.scrollWidth")
    link_height = page.get_by_role("link", name="Devices and history").bounding_box()["height"]
    show_key_height = page.locator("details.key summary").bounding_box()["height"]
    page.goto(license_page)
    widths["license"] = page.evaluate("document.documentElement.scrollWidth")
    page.goto(f"{license_page}devices/{device.pk}/deactivate/")
    screenshot(page, "nameless-device-confirm-320")
    widths["confirm"] = page.evaluate("document.documentElement.scrollWidth")

    assert widths == {"check e-mail": 320, "licenses": 320, "license": 320, "confirm": 320}
    assert link_height >= 44 and show_key_height >= 44


def test_the_key_is_shown_and_hidden_by_one_control_that_says_which_it_will_do(page, live_server):
    customer = make_customer(email="linus@example.com")
    issued = make_license(plan=make_plan(product=make_product(name="Atlas Sync")), customer=customer)
    sign_in(page, live_server, "linus@example.com")
    control = page.locator("details.key summary")
    key = page.get_by_text(issued.key, exact=True)

    closed = (control.inner_text(), key.is_visible())
    control.click()
    opened = (control.inner_text(), key.is_visible())
    control.click()

    assert closed == (f"{issued.license.masked_key} Show key", False)
    assert opened == (f"{issued.license.masked_key} Hide key", True)
    assert not key.is_visible()


def test_without_a_clipboard_copy_selects_the_key_and_says_how_to_copy_it(page, live_server):
    customer = make_customer(email="linus@example.com")
    issued = make_license(plan=make_plan(product=make_product(name="Atlas Sync")), customer=customer)
    # As on plain HTTP, where browsers give pages no clipboard.
    page.add_init_script("Object.defineProperty(navigator, 'clipboard', {value: undefined})")
    sign_in(page, live_server, "linus@example.com")

    page.get_by_text("Show key").click()
    page.get_by_role("button", name="Copy the Atlas Sync key").click()

    status = page.locator(f"#key-{issued.license.pk}-status")
    assert status.get_attribute("role") == "status"
    # Waited for by the locator: a function to wait for would be a string evaluated in the page,
    # which its Content-Security-Policy refuses.
    status.filter(has_text="Selected: press Ctrl+C (⌘C on a Mac) to copy it").wait_for()
    assert page.evaluate("window.getSelection().toString()") == issued.key


def test_no_page_is_refused_what_it_loads_by_the_content_security_policy(page, live_server, django_user_model):
    """Every face's pages under their Content-Security-Policy: a script, style or image they need
    and the policy refuses is a console error, and the page would work only in part."""
    refusals = []
    page.on("console", lambda message: message.type == "error" and refusals.append(message.text))
    page.on("pageerror", lambda error: refusals.append(str(error)))
    customer = make_customer(email="linus@example.com")
    issued = make_license(plan=make_plan(product=make_product(name="Atlas Sync")), customer=customer)
    activate(issued, "linux-box", name="Linux box")
    django_user_model.objects.create_superuser("staff", "staff@example.com", "a long staff password")

    sign_in(page, live_server, "linus@example.com")
    page.get_by_role("link", name="Atlas Sync").first.click()
    page.get_by_role("heading", name="Devices using this license").wait_for()
    page.goto(f"{live_server.url}/admin/")
    page.get_by_label("Username").fill("staff")
    page.get_by_label("Password").fill("a long staff password")
    page.get_by_role("button", name="Log in").click()
    for path in (
        "licensing/license/",
        f"licensing/license/{issued.license.pk}/change/",
        "licensing/license/add/",
        "licensing/activation/",
        "licensing/auditevent/",
    ):
        page.goto(f"{live_server.url}/admin/{path}")
        page.wait_for_load_state("load")
    page.goto(f"{live_server.url}/api/docs/")
    page.get_by_text("/api/v1/licenses/validate", exact=True).wait_for()

    assert refusals == []
