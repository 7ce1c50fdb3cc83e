"""One license, five faces: activations through any dialect count against the same limit."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable

import pytest
from django.db import connection
from django.test import Client

from licensing import services
from licensing.models import Activation, License
from tests.factories import make_license, make_plan, make_product

ORGANIZATION_ID = "5f0c3b1e-2d4a-4c8e-9b7f-6a1d2e3f4a5b"
PRODUCT_ID = "prod_cross_dialect_test_0001"


@pytest.fixture
def setup(db):
    actor = services.Actor.system("tests")
    product = make_product(public_id=PRODUCT_ID, polar_organization_id=uuid.UUID(ORGANIZATION_ID))
    issued = make_license(plan=make_plan(product=product, max_activations=5))
    # A key made for apps is all the license calls of every face need.
    api_key = services.create_api_key(name="apps", apps_only=True, actor=actor).key
    return issued, api_key


def activators(key: str, api_key: str) -> dict[str, Callable[[Client, str], int]]:
    """How each face activates a device named `device`; each returns the HTTP status."""
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {api_key}"}

    def post_json(client, path, body, **headers):
        return client.post(path, json.dumps(body), content_type="application/json", **headers).status_code

    return {
        "native": lambda client, device: post_json(
            client, "/api/v1/licenses/activate", {"key": key, "fingerprint": device}
        ),
        "kelviq": lambda client, device: post_json(
            client, "/compat/kelviq/api/v1/license/activate/", {"licenseKey": key, "instanceName": device}, **bearer
        ),
        "polar": lambda client, device: post_json(
            client,
            "/compat/polar/v1/customer-portal/license-keys/activate",
            {"key": key, "organization_id": ORGANIZATION_ID, "label": device},
        ),
        "keymint": lambda client, device: post_json(
            client,
            "/compat/keymint/key/activate",
            {"productId": PRODUCT_ID, "licenseKey": key, "hostId": device},
            **bearer,
        ),
        # GetKeyManager answers HTTP 200 either way: its envelope's code says 300 (activated) or not.
        "getkeymanager": lambda client, device: (
            201
            if client.post(
                "/compat/getkeymanager/api/v1/activate", {"api_key": api_key, "license_key": key, "identifier": device}
            ).json()["response"]["code"]
            == 300
            else 403
        ),
    }


def test_every_face_sees_the_same_slots(setup):
    issued, api_key = setup
    client = Client()
    for name, activate in activators(issued.key, api_key).items():
        assert activate(client, f"{name}-device") in {200, 201}, name

    native = client.post(
        "/api/v1/licenses/validate", json.dumps({"key": issued.key}), content_type="application/json"
    ).json()["license"]
    keymint = client.get(
        f"/compat/keymint/key?productId={PRODUCT_ID}&licenseKey={issued.key}", HTTP_AUTHORIZATION=f"Bearer {api_key}"
    ).json()["data"]["license"]
    kelviq = client.post(
        "/compat/kelviq/api/v1/license/validate/",
        json.dumps({"licenseKey": issued.key}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {api_key}",
    ).json()["license"]
    polar = client.post(
        "/compat/polar/v1/customer-portal/license-keys/validate",
        json.dumps({"key": issued.key, "organization_id": ORGANIZATION_ID}),
        content_type="application/json",
    ).json()

    assert (native["activations_used"], native["max_activations"]) == (5, 5)
    assert (keymint["activations"], keymint["maxActivations"]) == (5, 5)
    assert (kelviq["activationUsage"], kelviq["activationLimit"]) == (5, 5)
    assert (polar["usage"], polar["limit_activations"]) == (0, 5)
    for name, activate in activators(issued.key, api_key).items():
        assert activate(client, f"{name}-one-too-many") == 403, name
    assert Activation.objects.filter(license=issued.license).live().count() == 5


def test_one_machine_is_one_device_whichever_face_names_it_with_spaces_or_a_line_end(setup):
    issued, api_key = setup
    client = Client()
    faces = activators(issued.key, api_key)

    native = faces["native"](client, "machine-1")
    getkeymanager = client.post(
        "/compat/getkeymanager/api/v1/activate",
        {"api_key": api_key, "license_key": issued.key, "identifier": "machine-1\n"},
    ).json()["response"]
    keymint = faces["keymint"](client, " machine-1")
    checked_out = client.post(
        "/api/v1/licenses/checkout",
        json.dumps({"key": issued.key, "fingerprint": "machine-1\n"}),
        content_type="application/json",
    )

    assert (native, getkeymanager["code"], keymint) == (201, 301, 200)
    assert list(Activation.objects.filter(license=issued.license).live().values_list("fingerprint", flat=True)) == [
        "machine-1"
    ]
    assert checked_out.status_code == 200


def test_a_fingerprint_of_spaces_only_is_one_device_as_sent(setup):
    issued, api_key = setup
    keymint = activators(issued.key, api_key)["keymint"]

    statuses = [keymint(Client(), "  ") for _ in range(3)]

    assert statuses == [200, 200, 200]
    assert list(Activation.objects.filter(license=issued.license).live().values_list("fingerprint", flat=True)) == [
        "  "
    ]


def test_devices_imported_under_their_old_ids_keep_working_for_polar_and_kelviq_apps(setup):
    issued, api_key = setup
    polar_activation_id, kelviq_instance_id = str(uuid.uuid4()), str(uuid.uuid4())
    billing_key = services.create_api_key(name="migration", actor=services.Actor.system("tests")).key
    client = Client(HTTP_AUTHORIZATION=f"Bearer {billing_key}")
    for old_id, conditions in ((polar_activation_id, {"major_version": 4}), (kelviq_instance_id, {})):
        imported = client.post(
            f"/api/v1/licenses/{issued.license.pk}/activations",
            {"id": old_id, "name": "Studio Mac", "conditions": conditions},
            content_type="application/json",
        )
        assert imported.status_code == 201
    polar = "/compat/polar/v1/customer-portal/license-keys/"

    def polar_call(name, **body):
        return Client().post(
            polar + name,
            json.dumps({"key": issued.key, "organization_id": ORGANIZATION_ID, **body}),
            content_type="application/json",
        )

    polar_validated = polar_call("validate", activation_id=polar_activation_id, conditions={"major_version": 4})
    polar_mismatch = polar_call("validate", activation_id=polar_activation_id, conditions={"major_version": 5})
    kelviq_validated = Client().post(
        "/compat/kelviq/api/v1/license/validate/",
        json.dumps({"licenseKey": issued.key, "instanceId": kelviq_instance_id}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {api_key}",
    )
    polar_deactivated = polar_call("deactivate", activation_id=polar_activation_id)

    assert polar_validated.status_code == 200
    assert (polar_validated.json()["activation"]["id"], polar_validated.json()["activation"]["label"]) == (
        polar_activation_id,
        "Studio Mac",
    )
    assert polar_mismatch.status_code == 404
    assert (kelviq_validated.status_code, kelviq_validated.json()["code"]) == (200, "VALID")
    assert polar_deactivated.status_code == 204
    assert list(issued.license.activations.live().values_list("pk", flat=True)) == [uuid.UUID(kelviq_instance_id)]


@pytest.mark.django_db(transaction=True)
def test_the_limit_holds_when_activations_arrive_through_every_face_at_once():
    actor = services.Actor.system("tests")
    product = make_product(public_id=PRODUCT_ID, polar_organization_id=uuid.UUID(ORGANIZATION_ID))
    issued = make_license(plan=make_plan(product=product, max_activations=3))
    api_key = services.create_api_key(name="apps", apps_only=True, actor=actor).key
    migration_key = services.create_api_key(name="migration", actor=actor).key

    def import_device(client: Client, device: str) -> int:
        return client.post(
            f"/api/v1/licenses/{issued.license.pk}/activations",
            {"fingerprint": device},
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {migration_key}",
        ).status_code

    # Devices imported from another server take their slots under the same lock as activations.
    faces = [*activators(issued.key, api_key).items(), ("import", import_device)]
    per_face = 6
    barrier = threading.Barrier(len(faces) * per_face)
    statuses: list[tuple[str, int]] = []
    lock = threading.Lock()

    def run(name: str, activate: Callable[[Client, str], int], n: int) -> None:
        try:
            barrier.wait()
            status = activate(Client(), f"{name}-{n}")
            with lock:
                statuses.append((name, status))
        finally:
            connection.close()

    threads = [
        threading.Thread(target=run, args=(name, activate, n)) for name, activate in faces for n in range(per_face)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert len(statuses) == len(threads)
    assert all(status in {200, 201, 403} for _, status in statuses)
    assert sum(status in {200, 201} for _, status in statuses) == 3
    assert Activation.objects.filter(license=issued.license).live().count() == 3


def test_a_key_made_for_apps_reaches_nothing_but_license_calls(setup):
    issued, api_key = setup
    client = Client(HTTP_AUTHORIZATION=f"Bearer {api_key}")
    keymint = {"productId": PRODUCT_ID, "licenseKey": issued.key}

    listing = client.get("/api/v1/licenses")
    reading = client.get(f"/api/v1/licenses/{issued.license.pk}")
    issuing = client.post("/api/v1/licenses", {"product": issued.license.product_id}, content_type="application/json")
    creating = client.post("/compat/keymint/key", {"productId": PRODUCT_ID}, content_type="application/json")
    blocking = client.post("/compat/keymint/key/block", keymint, content_type="application/json")
    reading_on_keymint = client.get("/compat/keymint/key", keymint)

    refusal = {
        "code": "forbidden",
        "message": "This API key is for apps' license calls only; use a key made for your own systems.",
    }
    for answer in (listing, reading, issuing):
        assert (answer.status_code, answer.json()["error"]) == (403, refusal)
    assert issued.key not in reading.content.decode()
    for answer in (creating, blocking):
        assert (answer.status_code, answer.json()) == (
            401,
            {"message": "Insufficient permissions for this operation", "code": 1},
        )
    assert reading_on_keymint.status_code == 200
    issued.license.refresh_from_db()
    assert (License.objects.count(), issued.license.status) == (1, License.Status.ACTIVE)


FACES_TOO_LARGE = {
    "native": (
        "/api/v1/licenses/validate",
        "application/json",
        lambda body: body["error"]["code"],
        "request_too_large",
    ),
    "kelviq": ("/compat/kelviq/api/v1/license/validate/", "application/json", lambda body: body["detail"], None),
    "polar": (
        "/compat/polar/v1/customer-portal/license-keys/validate",
        "application/json",
        lambda body: body["error"],
        "RequestTooLarge",
    ),
    "keymint": ("/compat/keymint/key/activate", "application/json", lambda body: body["code"], 1),
    # GetKeyManager answers an unreadable body as 215; it said "could not be read", not why.
    "getkeymanager": (
        "/compat/getkeymanager/api/v1/verify",
        "application/x-www-form-urlencoded",
        lambda body: (body["response"]["code"], body["response"]["message"]),
        (215, "The request body must be at most 500 bytes."),
    ),
}


@pytest.mark.parametrize("face", FACES_TOO_LARGE)
def test_a_body_past_djangos_own_upload_limit_gets_the_faces_size_answer(setup, settings, face):
    """DRF reads a body whole before any parser, so past DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB) Django
    refused it first: a 500 on the native, Kelviq and Keymint faces (Polar had its own catch, now the
    shared one). Here both limits are small, so the body stays small."""
    _, api_key = setup
    settings.API_MAX_BODY_BYTES, settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 500, 1_000
    path, content_type, answered, expected = FACES_TOO_LARGE[face]
    padding = "x" * 2_000
    body = f"api_key={api_key}&license_key={padding}" if face == "getkeymanager" else json.dumps({"key": padding})

    response = Client().post(path, body, content_type=content_type, HTTP_AUTHORIZATION=f"Bearer {api_key}")

    assert response.status_code == (200 if face == "getkeymanager" else 413)
    assert response["Content-Type"] == "application/json"
    assert answered(response.json()) == (expected or "The request body must be at most 500 bytes.")
