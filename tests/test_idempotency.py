"""A billing system that lost an answer to a timeout retries with the same Idempotency-Key: the
change is made once, and the retry gets the first answer again."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import OperationalError, connection
from rest_framework.test import APIClient

from licensing import services
from licensing.api import serializers as api
from licensing.models import AuditEvent, IdempotentRequest, License
from tests.test_concurrency import run_at_once

LICENSES = "/api/v1/licenses"


def issue(client, plan, idempotency_key: str, **body):
    return client.post(
        LICENSES,
        {"product": plan.product_id, "plan": plan.pk, **body},
        format="json",
        HTTP_IDEMPOTENCY_KEY=idempotency_key,
    )


def error(response) -> dict:
    return response.json()["error"]


@pytest.mark.django_db
def test_a_retry_with_the_same_key_gets_the_first_answer_and_makes_nothing_more(management_client, plan):
    first = issue(management_client, plan, "order-42", customer_email="ada@example.com")
    retry = issue(management_client, plan, "order-42", customer_email="ada@example.com")

    assert (first.status_code, retry.status_code) == (201, 201)
    assert retry.json() == first.json()
    assert retry["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    assert License.objects.count() == 1
    assert AuditEvent.objects.filter(action="license.created").count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("path", [LICENSES, "/compat/keymint/key"])
def test_a_caller_is_authenticated_before_the_changes_transaction_begins(api_client, path, monkeypatch):
    """A refused caller (one the brute-force guard holds back, say) must not hold a transaction open:
    on SQLite it would be the whole database's write lock."""
    open_blocks = []
    authenticate = services.authenticate_api_key

    def noting_open_blocks(key):
        open_blocks.append(len(connection.atomic_blocks))
        return authenticate(key)

    monkeypatch.setattr(services, "authenticate_api_key", noting_open_blocks)
    api_client.credentials(HTTP_AUTHORIZATION="Bearer not-a-key-of-this-server")

    plain = api_client.post(path, {}, format="json")
    keyed = api_client.post(path, {}, format="json", HTTP_IDEMPOTENCY_KEY="order-42")

    assert (plain.status_code, keyed.status_code) == (401, 401)
    assert open_blocks[0] == open_blocks[1]
    assert not IdempotentRequest.objects.exists()


@pytest.mark.django_db
def test_a_claim_whose_transaction_cannot_begin_leaves_the_enclosing_one_whole(management_client, plan, monkeypatch):
    enclosing = list(connection.atomic_blocks)

    def locked(*args, **kwargs):
        raise OperationalError("database is locked")

    monkeypatch.setattr(connection, "savepoint", locked)
    with pytest.raises(OperationalError):
        issue(management_client, plan, "order-42")
    monkeypatch.undo()

    assert connection.atomic_blocks == enclosing


@pytest.mark.django_db
def test_the_kept_answer_holds_no_license_key_in_clear(management_client, plan):
    issued = issue(management_client, plan, "order-42").json()

    stored = IdempotentRequest.objects.get()
    assert issued["key"] not in stored.answer_encrypted
    assert services.stored_answer(stored)["key"] == issued["key"]


@pytest.mark.django_db
def test_the_same_key_with_another_request_is_refused(management_client, plan):
    issue(management_client, plan, "order-42")

    other = issue(management_client, plan, "order-42", max_activations=9)
    elsewhere = management_client.patch(
        f"{LICENSES}/{License.objects.get().pk}", {"max_activations": 9}, format="json", HTTP_IDEMPOTENCY_KEY="order-42"
    )

    for refused in (other, elsewhere):
        assert refused.status_code == 422
        assert (error(refused)["code"], error(refused)["field"]) == ("idempotency_key_reused", "Idempotency-Key")
    assert License.objects.get().max_activations == plan.max_activations


@pytest.mark.django_db
def test_a_refused_change_lets_its_key_go_so_the_mended_retry_runs(management_client, plan):
    refused = issue(management_client, plan, "order-42", max_activations=-1)
    mended = issue(management_client, plan, "order-42", max_activations=2)

    assert (refused.status_code, mended.status_code) == (400, 201)
    assert License.objects.get().max_activations == 2


@pytest.mark.django_db
def test_keys_belong_to_an_api_key_and_last_a_day(management_client, plan, read_only_api_key):
    other_system = APIClient()
    other_system.credentials(
        HTTP_AUTHORIZATION=f"Bearer {services.create_api_key(name='crm', actor=services.Actor.system()).key}"
    )

    issue(management_client, plan, "order-42")
    issue(other_system, plan, "order-42")
    IdempotentRequest.objects.update(
        created_at=IdempotentRequest.objects.get(api_key__name="billing").created_at - timedelta(hours=25)
    )
    issue(management_client, plan, "order-42")

    assert License.objects.count() == 3


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["", "x" * 256, "ordre-\u00e9"])
def test_a_key_that_is_no_key_is_refused_naming_the_header(management_client, plan, key):
    response = issue(management_client, plan, key)

    assert response.status_code == 400
    assert error(response)["field"] == "Idempotency-Key"
    assert not License.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["", "order-1"])
def test_a_method_the_path_does_not_take_is_405_whatever_its_key(management_client, plan, key):
    license = services.create_license(product=plan.product, plan=plan, actor=services.Actor.system("tests")).license

    response = management_client.patch(f"{LICENSES}/{license.pk}/suspend", HTTP_IDEMPOTENCY_KEY=key)

    assert response.status_code == 405
    assert not IdempotentRequest.objects.exists()


@pytest.mark.django_db
def test_a_change_whose_answer_failed_is_undone_with_its_key_so_the_retry_makes_it_once(api_key, plan, monkeypatch):
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key.key}")
    render = api.LicenseWithKeySerializer.to_representation
    failures = iter([RuntimeError("the answer failed after the license was stored")])

    def fail_once(serializer, license):
        if (failure := next(failures, None)) is not None:
            raise failure
        return render(serializer, license)

    monkeypatch.setattr(api.LicenseWithKeySerializer, "to_representation", fail_once)

    failed = issue(client, plan, "order-42")
    retry = issue(client, plan, "order-42")

    assert (failed.status_code, retry.status_code) == (500, 201)
    assert "Idempotent-Replayed" not in retry
    assert License.objects.count() == 1
    assert AuditEvent.objects.filter(action="license.created").count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_same_key_sent_at_once_makes_one_license_and_every_sender_gets_its_answer(api_key, plan):
    def send(_n):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key.key}")
        response = issue(client, plan, "order-42")
        return response.status_code, response.json()["id"]

    outcomes = run_at_once(8, send)

    assert License.objects.count() == 1
    assert set(outcomes) == {(201, str(License.objects.get().pk))}
