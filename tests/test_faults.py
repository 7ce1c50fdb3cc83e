"""The database connection dropping in the middle of an activation loses nothing and half-writes nothing."""

from __future__ import annotations

import pytest
from django.db import connection

from licensing import services
from licensing.models import Activation, AuditEvent
from tests.factories import make_license, make_plan

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="pg_terminate_backend is PostgreSQL's"),
]


def test_a_connection_killed_mid_activation_is_retried_cleanly(api_client, monkeypatch):
    issued = make_license(plan=make_plan(max_activations=3))
    record_event = services.record_event
    killed = []

    def kill_the_connection_once(**kwargs):
        # The activation row is written, its audit event not yet, the transaction still open.
        if not killed:
            killed.append(True)
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        return record_event(**kwargs)

    monkeypatch.setattr(services, "record_event", kill_the_connection_once)

    response = api_client.post(
        "/api/v1/licenses/activate", {"key": issued.key, "fingerprint": "device-1"}, format="json"
    )

    assert killed
    assert response.status_code == 201
    assert Activation.objects.filter(license=issued.license, fingerprint="device-1").count() == 1
    assert AuditEvent.objects.filter(action="activation.created").count() == 1
    assert services.validate_license(license_key=issued.key, fingerprint="device-1").code == "VALID"
