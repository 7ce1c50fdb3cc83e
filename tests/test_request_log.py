from __future__ import annotations

import json
import logging

import pytest
from django.core.management import call_command
from django.test import Client

from licensing import services
from tests.factories import activate

pytestmark = pytest.mark.django_db


def request_lines(caplog) -> list[dict]:
    return [json.loads(record.getMessage()) for record in caplog.records if record.name == "licensing.requests"]


def test_each_request_is_one_line_with_the_license_id_and_never_the_key(api_client, issued, caplog):
    caplog.set_level(logging.INFO, logger="licensing.requests")
    activate(issued, "device-1")

    api_client.post("/api/v1/licenses/validate", {"key": issued.key, "fingerprint": "device-1"}, format="json")
    api_client.get(f"/compat/keymint/key?productId=prod_x&licenseKey={issued.key}")

    validate, keymint = request_lines(caplog)
    assert {key: validate[key] for key in ["method", "path", "status", "license_id"]} == {
        "method": "POST",
        "path": "/api/v1/licenses/validate",
        "status": 200,
        "license_id": str(issued.license.pk),
    }
    assert validate["duration_ms"] >= 0
    assert (keymint["path"], keymint["status"]) == ("/compat/keymint/key", 401)
    assert issued.key not in caplog.text


def test_a_portal_sign_in_link_is_logged_without_its_token(client, customer, caplog):
    caplog.set_level(logging.INFO, logger="licensing.requests")
    token = services.request_sign_in_link(email=customer.email).token

    client.get(f"/portal/sign-in/{token}/")
    client.post(f"/portal/sign-in/{token}/")

    assert [line["path"] for line in request_lines(caplog)] == ["/portal/sign-in/…/"] * 2
    assert token not in caplog.text


def test_collected_static_files_are_served_by_the_app(settings, tmp_path):
    settings.STATIC_ROOT = tmp_path
    call_command("collectstatic", "--noinput", verbosity=0)

    response = Client().get("/static/portal/portal.css")

    assert response.status_code == 200
    assert b"--accent" in b"".join(response.streaming_content)
