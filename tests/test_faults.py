"""The database connection dropping in the middle of a license call loses nothing, half-writes nothing,
and the app still gets its answer, on every face."""

from __future__ import annotations

import base64
import json
import re
import uuid
from urllib.parse import urlencode

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from django.core.signals import request_started
from django.db import DEFAULT_DB_ALIAS, OperationalError, connection, connections

from licensing import lookups, services
from licensing.models import Activation, AuditEvent
from tests.factories import SYSTEM, activate, make_license, make_plan

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="pg_terminate_backend is PostgreSQL's"),
]


@pytest.fixture(autouse=True)
def live_connection_afterwards(transactional_db):
    yield
    # A failing test leaves its killed connection behind, and emptying the database needs a live one.
    connection.close()


DEVICE = "device-1"
POLAR_ORGANIZATION = uuid.UUID("5f0c3b1e-2d4a-4c8e-9b7f-6a1d2e3f4a5b")
KEYMINT_PRODUCT = "prod_9f8e7d6c5b4a39281706f5"


def kill_the_connection() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(pg_backend_pid())")


def end_the_connection_from_outside() -> None:
    """End this connection's server process as a database restart does: the connection looks open until used."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    other = connections.create_connection(DEFAULT_DB_ALIAS)
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    finally:
        other.close()


# Each face activates as an app built for it does, asserts its own success answer, and returns the
# activation id it answered (None for the faces whose answer names no activation).


def activate_natively(client, issued, api_key) -> str | None:
    response = client.post("/api/v1/licenses/activate", {"key": issued.key, "fingerprint": DEVICE}, format="json")
    assert response.status_code == 201
    assert response.json()["created"] is True
    return response.json()["activation"]["id"]


def activate_on_kelviq(client, issued, api_key) -> str | None:
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key.key}")
    response = client.post("/compat/kelviq/api/v1/license/activate/", {"licenseKey": issued.key}, format="json")
    assert response.status_code == 201
    assert response.json()["license"]["activationUsage"] == 1
    return response.json()["instanceId"]


def activate_on_polar(client, issued, api_key) -> str | None:
    product = issued.license.product
    product.polar_organization_id = POLAR_ORGANIZATION
    services.save_catalog_record(record=product, actor=SYSTEM)
    response = client.post(
        "/compat/polar/v1/customer-portal/license-keys/activate",
        {"key": issued.key, "organization_id": str(POLAR_ORGANIZATION), "label": "Ada's MacBook"},
        format="json",
    )
    assert response.status_code == 200
    assert response.json()["label"] == "Ada's MacBook"
    return response.json()["id"]


def activate_on_keymint(client, issued, api_key) -> str | None:
    product = issued.license.product
    product.public_id = KEYMINT_PRODUCT
    services.save_catalog_record(record=product, actor=SYSTEM)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key.key}")
    response = client.post(
        "/compat/keymint/key/activate",
        {"productId": KEYMINT_PRODUCT, "licenseKey": issued.key, "hostId": DEVICE},
        format="json",
    )
    assert response.status_code == 200
    assert (response.json()["code"], response.json()["message"]) == (0, "License valid")
    return None


def activate_on_getkeymanager(client, issued, api_key) -> str | None:
    rsa_key = services.create_rsa_key(actor=SYSTEM)
    response = client.post(
        "/compat/getkeymanager/api/v1/activate",
        data=urlencode({"api_key": api_key.key, "license_key": issued.key, "identifier": DEVICE}),
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200
    body = response.json()
    public_key = serialization.load_pem_public_key(rsa_key.public_key_pem.encode())
    signed = base64.b64decode(body["response_base64"])
    public_key.verify(base64.b64decode(body["signature"]), signed, padding.PKCS1v15(), hashes.SHA256())
    assert json.loads(signed)["code"] == 300
    return None


# Each face, and the fingerprint its activation binds: Kelviq and Polar send no device identifier.
FACES = {
    "native": (activate_natively, DEVICE),
    "kelviq": (activate_on_kelviq, None),
    "polar": (activate_on_polar, None),
    "keymint": (activate_on_keymint, DEVICE),
    "getkeymanager": (activate_on_getkeymanager, DEVICE),
}


@pytest.mark.parametrize("face", FACES)
def test_a_connection_killed_mid_activation_is_retried_cleanly(face, api_client, api_key, monkeypatch, caplog):
    issued = make_license(plan=make_plan(max_activations=3))
    record_event = services.record_event
    killed = []

    def kill_the_connection_once(**kwargs):
        # The activation row is written, its audit event not yet, the transaction still open.
        if kwargs["action"] == "activation.created" and not killed:
            killed.append(True)
            kill_the_connection()
        return record_event(**kwargs)

    monkeypatch.setattr(services, "record_event", kill_the_connection_once)

    activate_on_face, fingerprint = FACES[face]
    answered_id = activate_on_face(api_client, issued, api_key)

    assert killed
    [retried] = [record.getMessage() for record in caplog.records if record.name == "licensing.api.retry"]
    # What the database said, on the line: a lost connection, or a deadlock, retried alike.
    assert re.fullmatch(r"Database error during /\S+ \(.*(connection|terminat).*\); trying again", retried)
    activation = Activation.objects.get(license=issued.license)
    assert activation.is_live
    assert activation.fingerprint == fingerprint
    assert answered_id is None or answered_id == str(activation.pk)
    assert AuditEvent.objects.filter(action="activation.created").count() == 1
    assert services.validate_license(license_key=issued.key, activation_id=str(activation.pk)).code == "VALID"


@pytest.mark.parametrize("face", ["native", "kelviq", "polar"])
def test_a_connection_lost_after_the_activation_committed_is_not_retried(face, api_client, api_key, monkeypatch):
    issued = make_license(plan=make_plan(max_activations=3))
    activate_license = services.activate_license

    def commit_then_lose_the_connection(**kwargs):
        activate_license(**kwargs)
        kill_the_connection()
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(services, "activate_license", commit_then_lose_the_connection)

    activate_on_face, _ = FACES[face]
    api_client.raise_request_exception = False
    with pytest.raises(AssertionError):
        activate_on_face(api_client, issued, api_key)

    connection.close()
    # A second try would have taken a second slot: Kelviq and Polar name no device to find again.
    assert Activation.objects.filter(license=issued.license).count() == 1


@pytest.mark.parametrize("face", FACES)
def test_a_connection_that_died_idle_is_retried_when_the_rate_limits_meet_it(face, api_client, api_key, settings):
    settings.LICENSE_RATE_LIMITS = {"per_ip": "600/minute", "per_key": "120/minute"}
    issued = make_license(plan=make_plan(max_activations=3))
    ended = []

    def end_it_as_the_request_starts(**kwargs):
        if not ended:
            ended.append(True)
            end_the_connection_from_outside()

    request_started.connect(end_it_as_the_request_starts)
    try:
        activate_on_face, fingerprint = FACES[face]
        activate_on_face(api_client, issued, api_key)
    finally:
        request_started.disconnect(end_it_as_the_request_starts)

    assert ended
    activation = Activation.objects.get(license=issued.license)
    assert (activation.is_live, activation.fingerprint) == (True, fingerprint)


def validate_natively(client, issued, activation, api_key) -> None:
    response = client.post("/api/v1/licenses/validate", {"key": issued.key, "fingerprint": DEVICE}, format="json")
    assert response.status_code == 200
    assert (response.json()["valid"], response.json()["code"]) == (True, "VALID")


def validate_on_kelviq(client, issued, activation, api_key) -> None:
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key.key}")
    response = client.post(
        "/compat/kelviq/api/v1/license/validate/",
        {"licenseKey": issued.key, "instanceId": str(activation.pk)},
        format="json",
    )
    assert response.status_code == 200
    assert (response.json()["valid"], response.json()["code"]) == (True, "VALID")


@pytest.mark.parametrize("validate", [validate_natively, validate_on_kelviq], ids=["native", "kelviq"])
def test_a_connection_killed_as_a_validation_looks_the_license_up_is_retried_cleanly(
    validate, api_client, api_key, monkeypatch
):
    issued = make_license(plan=make_plan(max_activations=3))
    activation = activate(issued, DEVICE).activation
    license_with_device = lookups.license_with_device
    killed = []

    def kill_the_connection_once(**kwargs):
        if not killed:
            killed.append(True)
            kill_the_connection()
        return license_with_device(**kwargs)

    monkeypatch.setattr(lookups, "license_with_device", kill_the_connection_once)

    validate(api_client, issued, activation, api_key)

    assert killed
    issued.license.refresh_from_db()
    assert issued.license.validation_count == 1
