"""Schemathesis fuzzes the native API from its own OpenAPI schema, in-process through the WSGI app:
no input gives a 5xx, and every answer (status, content type, headers, body) is one the schema
documents.

Input strictness is not judged here: the API refuses some schema-valid input on purpose (NUL
characters PostgreSQL cannot store, a name already taken, "give the activation_id or the
fingerprint") and tolerates some schema-invalid query strings as DRF does (a page_size of "x" means
the default), so positive_data_acceptance and negative_data_rejection would flag designed
behaviour. The explicit tests of each feature assert those answers.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from config.wsgi import application
from tests.factories import activate, make_license, make_plan, make_product

schema = schemathesis.openapi.from_wsgi("/api/schema/", application)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def connection_kept_across_requests(db):
    """Keep the test's connection, and its transaction, open across the WSGI requests.

    The WSGI handler closes the connection when a request ends, as it should in production; in a
    test that connection holds the test's transaction. Django's test client disconnects the same
    signals around each request.
    """
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def seeded(db):
    """Real records for the fuzzer to aim at, so it reaches the services and not only 404s.

    Two devices on a plan that allows one device change a window: freeing both reaches the
    anti-churn refusal.
    """
    product = make_product(name="Fuzz Product", slug="fuzz")
    plan = make_plan(product=product, max_activations=3, max_deactivations=1)
    issued = make_license(plan=plan, customer_email="fuzz@example.com")
    devices = [activate(issued, fingerprint=f"fuzz-device-000{n}").activation for n in (1, 2)]
    return {
        "key": issued.key,
        "fingerprints": [device.fingerprint for device in devices],
        "activation_ids": [str(device.pk) for device in devices],
        "license_id": str(issued.license.pk),
        "product_id": product.pk,
        "plan_id": plan.pk,
        "customer_id": issued.license.customer_id,
    }


PATH_RECORDS = {"licenses": "license_id", "products": "product_id", "plans": "plan_id", "customers": "customer_id"}


def aim_at_seeded_records(case, seeded, device: int) -> None:
    """Swap the generated ids and key for real ones (and one of the two devices), keeping every
    other generated value."""
    collection = case.operation.path.split("/")[3]
    if case.path_parameters and "id" in case.path_parameters:
        case.path_parameters["id"] = seeded[PATH_RECORDS[collection]]
    if case.path_parameters and "activation_pk" in case.path_parameters:
        case.path_parameters["activation_pk"] = seeded["activation_ids"][device]
    if not isinstance(case.body, dict):
        return
    for field, name in (("key", "key"), ("product", "product_id"), ("plan", "plan_id")):
        if field in case.body:
            case.body[field] = seeded[name]
    if "activation_id" in case.body:
        case.body["activation_id"] = seeded["activation_ids"][device]
    # Activation keeps its generated fingerprint: new devices are what fill the limit.
    if "fingerprint" in case.body and case.operation.path != "/api/v1/licenses/activate":
        case.body["fingerprint"] = seeded["fingerprints"][device]


@schema.parametrize()
@schema.given(seeded_device=st.sampled_from([None, 0, 1]))
@settings(
    max_examples=25,
    deadline=None,
    # The seeded records and the test transaction are shared by one operation's examples on purpose.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api_answers_only_what_its_schema_documents(
    case, seeded_device, seeded, api_key, connection_kept_across_requests
):
    if seeded_device is not None:
        aim_at_seeded_records(case, seeded, seeded_device)
    case.call_and_validate(headers={"Authorization": f"Bearer {api_key.key}"}, checks=CHECKS)
