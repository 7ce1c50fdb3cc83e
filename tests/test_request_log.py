from __future__ import annotations

import json
import logging
import re

import pytest
from django.core.management import call_command
from django.db import OperationalError
from django.test import Client

from config import settings as project_settings
from licensing import services
from licensing.log_format import ConsoleFormatter
from tests.factories import activate

pytestmark = pytest.mark.django_db


def request_lines(caplog) -> list[dict]:
    return [json.loads(record.getMessage()) for record in caplog.records if record.name == "licensing.requests"]


def test_each_request_is_one_line_with_the_license_id_and_never_the_key(api_client, issued, caplog):
    caplog.set_level(logging.INFO, logger="licensing.requests")
    activate(issued, "device-1")

    body = {"key": issued.key, "fingerprint": "device-1"}
    api_client.post("/api/v1/licenses/validate", body, format="json", REMOTE_ADDR="203.0.113.9")
    api_client.get(f"/compat/keymint/key?productId=prod_x&licenseKey={issued.key}")

    validate, keymint = request_lines(caplog)
    assert {key: validate[key] for key in ["client", "method", "path", "status", "license_id"]} == {
        "client": "203.0.113.9",
        "method": "POST",
        "path": "/api/v1/licenses/validate",
        "status": 200,
        "license_id": str(issued.license.pk),
    }
    assert validate["duration_ms"] >= 0
    assert (keymint["path"], keymint["status"]) == ("/compat/keymint/key", 401)
    assert issued.key not in caplog.text


def test_an_offline_file_checkout_is_logged_with_its_license_id(api_client, issued, caplog):
    caplog.set_level(logging.INFO, logger="licensing.requests")
    activate(issued, "device-1")

    response = api_client.post(
        "/api/v1/licenses/checkout", {"key": issued.key, "fingerprint": "device-1"}, format="json"
    )

    assert response.status_code == 200
    assert request_lines(caplog)[0]["license_id"] == str(issued.license.pk)


def test_a_refused_call_is_its_request_line_alone(api_client, client, caplog):
    caplog.set_level(logging.INFO)

    api_client.post("/api/v1/licenses/validate", {"key": "NO-SUCH-KEY"}, format="json")
    client.get("/portal/no-such-page/")

    assert [line["status"] for line in request_lines(caplog)] == [404, 404]
    assert [record.name for record in caplog.records] == ["licensing.requests"] * 2


def test_a_portal_sign_in_link_is_logged_without_its_token(client, customer, caplog):
    caplog.set_level(logging.INFO, logger="licensing.requests")
    token = services.request_sign_in_link(email=customer.email).token

    client.get(f"/portal/sign-in/{token}/")
    client.post(f"/portal/sign-in/{token}/")

    assert [line["path"] for line in request_lines(caplog)] == ["/portal/sign-in/…/"] * 2
    assert token not in caplog.text


def console_lines(caplog) -> str:
    [formatter] = [h.formatter for h in logging.getLogger().handlers if isinstance(h.formatter, ConsoleFormatter)]
    return "\n".join(formatter.format(record) for record in caplog.records)


def test_a_sign_in_link_posted_without_a_csrf_cookie_is_refused_and_logged_without_its_token(customer, caplog):
    """Django's CSRF refusal logs the path: a mail scanner posting a link put a working link in the log."""
    token = services.request_sign_in_link(email=customer.email).token

    response = Client(enforce_csrf_checks=True).post(f"/portal/sign-in/{token}/")

    assert response.status_code == 403
    assert "Forbidden (CSRF cookie not set.): /portal/sign-in/…/" in console_lines(caplog)
    assert token not in console_lines(caplog)


def test_the_development_servers_lines_show_no_query_string_or_sign_in_token():
    handlers = logging.getLogger("django.server").handlers
    [formatter] = [h.formatter for h in handlers if isinstance(h.formatter, ConsoleFormatter)]
    line = '"GET /compat/keymint/key?productId=p&licenseKey=SECRET-KEY HTTP/1.1" 200 312'
    link = '"GET /portal/sign-in/SECRET-TOKEN/ HTTP/1.1" 200 1024'

    formatted = [
        formatter.format(logging.LogRecord("django.server", logging.INFO, __file__, 1, text, None, None))
        for text in (line, link)
    ]

    assert formatted[0].endswith('"GET /compat/keymint/key?… HTTP/1.1" 200 312')
    assert formatted[1].endswith('"GET /portal/sign-in/…/ HTTP/1.1" 200 1024')


def test_collected_static_files_are_served_by_the_app_under_names_browsers_keep(settings, tmp_path):
    settings.STORAGES = project_settings.STORAGES
    settings.STATIC_ROOT = tmp_path
    call_command("collectstatic", "--noinput", verbosity=0)
    browser = Client()

    [stylesheet] = re.findall(r'href="(/static/portal/portal\.[0-9a-f]{12}\.css)"', browser.get("/portal/").text)
    response = browser.get(stylesheet)

    assert response.status_code == 200
    assert b"--accent" in b"".join(response.streaming_content)
    # Named by its content, so an upgrade's stylesheet has another name.
    assert "immutable" in response["Cache-Control"]


def test_the_console_prints_a_request_line_as_bare_json_and_other_lines_plainly(api_client, issued):
    [formatter] = [h.formatter for h in logging.getLogger().handlers if isinstance(h.formatter, ConsoleFormatter)]
    request_line = logging.LogRecord("licensing.requests", logging.INFO, __file__, 1, '{"status": 200}', None, None)
    other_line = logging.LogRecord("licensing.services", logging.INFO, __file__, 1, "Something", None, None)

    assert formatter.format(request_line) == '{"status": 200}'
    assert formatter.format(other_line).endswith("INFO licensing.services Something")


def test_an_unknown_host_is_one_log_line_without_a_traceback(client, caplog):
    response = client.get("/admin/", HTTP_HOST="203.0.113.9")

    assert response.status_code == 400
    [record] = [record for record in caplog.records if record.name == "django.security.DisallowedHost"]
    assert record.exc_info is None
    assert "Invalid HTTP_HOST header: '203.0.113.9'" in record.getMessage()


def console_handler() -> logging.Handler:
    [handler] = [h for h in logging.getLogger("django").handlers if isinstance(h.formatter, ConsoleFormatter)]
    return handler


def test_a_request_django_refuses_as_suspicious_is_one_warning_line(client, caplog):
    client.get("/portal/")
    fields = {f"field{number}": "x" for number in range(1001)}

    response = client.post("/portal/", {**fields, "csrfmiddlewaretoken": client.cookies["csrftoken"].value})

    assert response.status_code == 400
    [record] = [record for record in caplog.records if record.name.startswith("django.security.")]
    handler = console_handler()
    assert handler.filter(record)
    line = handler.format(record)
    assert "WARNING django.security.TooManyFieldsSent The number of GET/POST parameters exceeded" in line
    assert "\n" not in line


def test_a_line_break_a_client_sent_cannot_forge_a_log_line(staff_client, caplog):
    forged = "x\n2026-11-24 15:00:00,000 ERROR forged\x1b[0m"

    response = staff_client.get("/admin/licensing/license/", {"_to_field": forged})

    assert response.status_code == 400
    [record] = [record for record in caplog.records if record.name.startswith("django.security.")]
    line = console_handler().format(record)
    assert "\n" not in line
    assert "x\\x0a2026-11-24 15:00:00,000 ERROR forged\\x1b[0m" in line


def test_the_health_check_answers_by_ip_over_plain_http_without_a_log_line(client, settings, caplog):
    settings.SECURE_SSL_REDIRECT = True
    caplog.set_level(logging.INFO, logger="licensing.requests")

    response = client.get("/healthz", HTTP_HOST="10.0.0.5")

    assert (response.status_code, response.json()) == (200, {"status": "ok"})
    assert not request_lines(caplog)


def test_a_call_over_plain_http_is_sent_to_https_as_it_was_sent(client, settings):
    settings.SECURE_SSL_REDIRECT = True

    post = client.post("/api/v1/licenses/validate?x=1", {"key": "K"}, content_type="application/json")
    page = client.get("/portal/")

    # A 301 would have the app send its activation again as a GET.
    assert (post.status_code, post["Location"]) == (308, "https://testserver/api/v1/licenses/validate?x=1")
    assert (page.status_code, page["Location"]) == (301, "https://testserver/portal/")


def test_the_health_check_answers_only_reads(client):
    assert client.post("/healthz").status_code == 404


def test_the_health_check_is_503_when_the_database_does_not_answer(client, monkeypatch):
    def fail(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr("licensing.middleware.connection.cursor", fail)

    response = client.get("/healthz")

    assert (response.status_code, response.json()) == (503, {"status": "database unavailable"})
