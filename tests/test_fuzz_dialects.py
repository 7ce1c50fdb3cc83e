"""Hypothesis throws malformed requests at every vendor dialect: wrong types, missing fields, huge
strings, NUL characters and lone surrogates, bodies that are not JSON or not an object, form and
multipart bodies, wrong and missing content types, empty bodies. Each answer must be one the
vendor documents, in the vendor's own shape; none is a 5xx.

Each request starts as a valid one (a real key, ids and product identifiers) with up to two fields
left out or replaced, so the odd values reach the services and the database, not only the first
check that fails.
"""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from licensing import services
from tests.factories import activate, make_license, make_plan, make_product

pytestmark = pytest.mark.django_db

FUZZ_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    # One license per test, shared by its examples: state they leave (a full activation limit, a
    # blocked key) is more input to fuzz against, not a leak.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

ORGANIZATION_ID = "5f0c3b1e-2d4a-4c8e-9b7f-6a1d2e3f4a5b"
PRODUCT_PUBLIC_ID = "prod_fuzz_dialects_0001"
BODY_LIMIT = 65_536

# Every character JSON can carry, lone surrogates and NUL included.
any_character = st.characters(codec=None, categories=None)
odd_text = st.one_of(
    st.text(any_character, max_size=40),
    st.sampled_from(["", " ", "\x00", "a\x00b", "\ud800", "\udfff", "\U0010ffff", "null", "0", "true"]),
    st.integers(0, 3).map(lambda n: "é" * (255 + n)),
    st.sampled_from([256, 4_096, BODY_LIMIT]).map(lambda n: "x" * n),
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**63, -(2**63) - 1, 10**40]),
    st.floats(allow_nan=True, allow_infinity=True),
    odd_text,
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(any_character, max_size=8), children),
    max_leaves=8,
)
form_text = st.text(st.characters(codec="utf-8"), max_size=40) | st.sampled_from(["", "\x00", "x" * 300])

CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-16",
    "application/json; charset=no-such-charset",
    "application/vnd.api+json",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=fuzz",
    "text/plain",
    "",
]


@pytest.fixture
def world(db):
    """A product every dialect can name, a 2-device license with one device, and an API key."""
    product = make_product(name="Fuzz", slug="fuzz", public_id=PRODUCT_PUBLIC_ID, polar_organization_id=ORGANIZATION_ID)
    plan = make_plan(product=product, max_activations=2)
    issued = make_license(plan=plan, customer_email="fuzz@example.com")
    activation = activate(issued, fingerprint="fuzz-host").activation
    api_key = services.create_api_key(name="fuzz", actor=services.Actor.system("tests"))
    return {
        "key": issued.key,
        "activation_id": str(activation.pk),
        "fingerprint": activation.fingerprint,
        "customer": issued.license.customer.reference,
        "api_key": api_key.key,
    }


MISSING = object()


def mutated(valid: dict) -> st.SearchStrategy[dict]:
    """A valid body with up to two fields left out or replaced by any JSON value, maybe a stray field too."""
    changes = st.dictionaries(st.sampled_from(sorted(valid)), st.just(MISSING) | json_values, max_size=2)
    strays = st.dictionaries(st.text(any_character, max_size=8), json_values, max_size=1)

    def apply(changes: dict, strays: dict) -> dict:
        body = {**strays, **valid, **changes}
        return {name: value for name, value in body.items() if value is not MISSING}

    return st.builds(apply, changes, strays)


def encoded(body: dict) -> st.SearchStrategy[tuple[bytes, str]]:
    """Mostly the body as JSON; else as a form, multipart, broken or no JSON, nothing, or too much,
    under any content type."""
    as_json = json.dumps(body).encode()
    form_fields = {name: value for name, value in body.items() if isinstance(value, str)}
    # surrogatepass: a lone surrogate becomes the invalid UTF-8 an odd client would send.
    as_form = urlencode(form_fields, errors="surrogatepass").encode()
    any_content_type = st.sampled_from(CONTENT_TYPES)
    as_json_should_be = st.tuples(st.just(as_json), st.just("application/json"))
    as_sent = st.one_of(
        as_json_should_be,
        as_json_should_be,
        st.tuples(st.just(as_form), st.just("application/x-www-form-urlencoded")),
        st.tuples(
            st.sampled_from([as_json, as_form, b"", as_json[: len(as_json) // 2], b"x" * (BODY_LIMIT + 1)]),
            any_content_type,
        ),
        st.tuples(st.binary(max_size=64), any_content_type),
    )
    return as_sent


def requests(valid: dict) -> st.SearchStrategy[tuple[bytes, str]]:
    return mutated(valid).flatmap(encoded)


def send(path: str, request: tuple[bytes, str], *, api_key: str | None = None):
    body, content_type = request
    headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
    return Client().generic("POST", path, data=body, content_type=content_type, headers=headers)


def assert_not_a_server_error(response) -> dict:
    assert response.status_code < 500, response.content[:500]
    if not response.content:
        return {}
    assert response["Content-Type"].startswith("application/json")
    return json.loads(response.content)


def is_text(value) -> bool:
    return isinstance(value, str) and value != ""


# ---------------------------------------------------------------- Kelviq

KELVIQ = "/compat/kelviq/api/v1/license/"


def kelviq_body(operation: str, world: dict) -> dict:
    if operation == "activate":
        return {"licenseKey": world["key"], "customerId": world["customer"], "instanceName": "Fuzz", "metadata": {}}
    return {"licenseKey": world["key"], "instanceId": world["activation_id"]}


KELVIQ_SUCCESS = {
    ("activate", 201): {"instanceId", "activatedAt", "expiresOn", "license"},
    ("validate", 200): {"valid", "code", "detail", "metadata", "license"},
    ("deactivate", 200): {"message", "deactivatedAt"},
}


def assert_kelviq_answer(operation: str, response) -> None:
    """DRF's shapes, as Kelviq answers: field errors, `detail`, or the license refusal's `error`."""
    body = assert_not_a_server_error(response)
    status = response.status_code
    if (operation, status) in KELVIQ_SUCCESS:
        assert set(body) == KELVIQ_SUCCESS[(operation, status)]
    elif operation == "validate" and status == 404:
        assert set(body) == KELVIQ_SUCCESS[("validate", 200)] and body["valid"] is False
    elif status == 400 and "detail" not in body:
        assert body and all(isinstance(messages, list) and all(map(is_text, messages)) for messages in body.values())
    elif status in (400, 413, 415):
        assert set(body) == {"detail"} and is_text(body["detail"])
    else:
        assert status in (403, 404), (status, body)
        assert set(body) == {"error"} and is_text(body["error"])


@pytest.mark.parametrize("operation", ["activate", "validate", "deactivate"])
@FUZZ_SETTINGS
@given(data=st.data())
def test_kelviq_answers_any_request_in_kelviqs_shape(operation, data, world):
    request = data.draw(requests(kelviq_body(operation, world)))
    response = send(f"{KELVIQ}{operation}/", request, api_key=world["api_key"])
    assert_kelviq_answer(operation, response)


# ---------------------------------------------------------------- GetKeyManager

GETKEYMANAGER = "/compat/getkeymanager/api/v1/"


def assert_getkeymanager_answer(response) -> None:
    """Always the signed envelope; only a refused API key (401) or no device changes left (403) leave HTTP 200."""
    body = assert_not_a_server_error(response)
    assert response.status_code in (200, 401, 403, 413), (response.status_code, body)
    assert set(body) == {"response", "response_base64", "private_key_used", "signature"}
    answer = body["response"]
    assert type(answer["code"]) is int and is_text(answer["message"]) and type(answer["timestamp"]) is int
    assert is_text(body["signature"])


@pytest.mark.parametrize("operation", ["verify", "activate", "deactivate", "get-license-key-details"])
@FUZZ_SETTINGS
@given(data=st.data())
def test_getkeymanager_answers_any_request_in_its_signed_envelope(operation, data, world):
    valid = {"api_key": world["api_key"], "license_key": world["key"], "identifier": world["fingerprint"]}
    request = data.draw(requests(valid))
    assert_getkeymanager_answer(send(GETKEYMANAGER + operation, request))


# ---------------------------------------------------------------- Polar

POLAR = "/compat/polar/v1/customer-portal/license-keys/"


def polar_body(operation: str, world: dict) -> dict:
    key = {"key": world["key"], "organization_id": ORGANIZATION_ID}
    if operation == "validate":
        return {**key, "activation_id": world["activation_id"], "increment_usage": 1, "conditions": {}}
    if operation == "activate":
        return {**key, "label": "Fuzz laptop", "conditions": {"major": 2}, "meta": {"seats": 1}}
    return {**key, "activation_id": world["activation_id"]}


def assert_polar_answer(operation: str, response) -> None:
    """FastAPI's shapes, as Polar answers: the resource, 422 with pydantic's problems, or `error` and `detail`."""
    body = assert_not_a_server_error(response)
    status = response.status_code
    if status == 200:
        assert operation != "deactivate" and is_text(body["id"]) and "key" in body or "license_key" in body
    elif status == 204:
        assert operation == "deactivate" and body == {}
    elif status == 422:
        assert body["error"] == "RequestValidationError" and body["detail"]
        for problem in body["detail"]:
            assert set(problem) == {"loc", "msg", "type"} and problem["loc"][0] == "body"
    else:
        assert status in (400, 403, 404, 413), (status, body)
        assert set(body) == {"error", "detail"} and is_text(body["error"]) and is_text(body["detail"])


@pytest.mark.parametrize("operation", ["validate", "activate", "deactivate"])
@FUZZ_SETTINGS
@given(data=st.data())
def test_polar_answers_any_request_in_polars_shape(operation, data, world):
    request = data.draw(requests(polar_body(operation, world)))
    assert_polar_answer(operation, send(POLAR + operation, request))


# ---------------------------------------------------------------- Keymint

KEYMINT = "/compat/keymint/"
KEYMINT_PATHS = {
    "activate-key": "device",
    "deactivate-key": "device",
    "get-key": "key",
    "create-key": "create",
    "block-key": "key",
    "unblock-key": "key",
    "key/activate": "device",
    "key/deactivate": "device",
    "key": "create",
    "key/block": "key",
    "key/unblock": "key",
}


def keymint_body(path: str, world: dict) -> dict:
    kind = KEYMINT_PATHS[path]
    if kind == "create":
        return {
            "productId": PRODUCT_PUBLIC_ID,
            "maxActivations": "5",
            "expiryDate": "2030-06-30T23:59:59Z",
            "newCustomer": {"name": "New", "email": "new@example.com"},
        }
    key = {"productId": PRODUCT_PUBLIC_ID, "licenseKey": world["key"]}
    if kind == "device":
        return {**key, "hostId": world["fingerprint"], "deviceTag": "Fuzz laptop"}
    return key


def assert_keymint_answer(response) -> None:
    """Keymint's `{"message", "code"}`: 0 on success, 1 for bad input or not found, 2 refused by state."""
    body = assert_not_a_server_error(response)
    status = response.status_code
    if status == 200:
        assert body["code"] == 0
    else:
        assert status in (400, 401, 403, 404, 409, 413, 415), (status, body)
        assert set(body) == {"message", "code"} and is_text(body["message"])
        assert body["code"] == (2 if status in (403, 409) else 1)


@pytest.mark.parametrize("path", KEYMINT_PATHS)
@FUZZ_SETTINGS
@given(data=st.data())
def test_keymint_answers_any_request_in_keymints_shape(path, data, world):
    request = data.draw(requests(keymint_body(path, world)))
    assert_keymint_answer(send(KEYMINT + path, request, api_key=world["api_key"]))


@FUZZ_SETTINGS
@given(data=st.data())
def test_keymint_reads_any_query_string_in_keymints_shape(data, world):
    values = form_text | st.sampled_from([world["key"], PRODUCT_PUBLIC_ID])
    query = data.draw(st.dictionaries(st.sampled_from(["productId", "licenseKey", "stray"]), values))
    response = Client().get(KEYMINT + "key", query, headers={"authorization": f"Bearer {world['api_key']}"})
    assert_keymint_answer(response)
