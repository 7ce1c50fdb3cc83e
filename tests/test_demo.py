from __future__ import annotations

import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from licensing import services
from licensing.models import Activation, AuditEvent, Customer, License, Plan, Product

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def development_mode(settings):
    settings.DEBUG = True


def load_demo() -> str:
    out = io.StringIO()
    call_command("load_demo", stdout=out)
    return out.getvalue()


def counts() -> dict[str, int]:
    models = [Product, Plan, Customer, License, Activation, AuditEvent]
    return {model.__name__: model.objects.count() for model in models}


def test_demo_has_licenses_in_every_state():
    load_demo()

    assert counts()["Product"] == 2
    assert counts()["Customer"] == 3
    verdicts = {
        key: services.validate_license(license_key=key).code
        for key in ["DEMO-ACTIVE-FREE-SLOTS", "DEMO-AT-LIMIT", "DEMO-EXPIRED", "DEMO-SUSPENDED", "DEMO-REVOKED"]
    }
    assert verdicts == {
        "DEMO-ACTIVE-FREE-SLOTS": "VALID",
        "DEMO-AT-LIMIT": "VALID",
        "DEMO-EXPIRED": "EXPIRED",
        "DEMO-SUSPENDED": "SUSPENDED",
        "DEMO-REVOKED": "REVOKED",
    }
    at_limit = services.get_license_by_key("DEMO-AT-LIMIT")
    assert at_limit.live_activation_count() == at_limit.max_activations
    free = services.get_license_by_key("DEMO-ACTIVE-FREE-SLOTS")
    assert free.live_activation_count() < free.max_activations
    assert services.get_license_by_key("DEMO-UNLIMITED").max_activations is None


def test_loading_the_demo_twice_adds_nothing(client):
    load_demo()
    first = counts()

    output = load_demo()

    assert counts() == first
    assert "DEMO-AT-LIMIT" in output
    assert "Admin (/admin/): user 'admin', password 'admin'" in output


def test_demo_staff_user_can_sign_in_to_the_admin(client):
    load_demo()

    assert client.login(username="admin", password="admin")
    assert client.get("/admin/licensing/license/").status_code == 200
    assert get_user_model().objects.get(username="admin").is_staff


def test_demo_refuses_to_load_outside_development(settings):
    settings.DEBUG = False

    with pytest.raises(CommandError, match="only with DJANGO_DEBUG on"):
        load_demo()

    assert not get_user_model().objects.exists()
    assert License.objects.count() == 0
