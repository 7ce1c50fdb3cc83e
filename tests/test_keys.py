from __future__ import annotations

import io
import math
import re

import pytest
from django.core import mail
from django.core.management import CommandError, call_command
from django.db import connection
from django.urls import reverse

from licensing import errors, keys, services, signing
from licensing.models import ApiKey, License, RsaKey, SigningKey
from tests.factories import make_license


def test_generated_key_is_five_groups_of_unambiguous_characters():
    key = keys.generate_license_key()

    assert re.fullmatch(r"[A-Z2-9]{5}(-[A-Z2-9]{5}){4}", key)
    assert not set(key) & set("0O1IL")


def test_generated_keys_carry_at_least_100_bits_of_randomness():
    assert 25 * math.log2(len(set(keys.KEY_ALPHABET))) >= 100
    assert len({keys.generate_license_key() for _ in range(2000)}) == 2000


def _raw_rows(table: str) -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT * FROM {table}")  # noqa: S608 - fixed table names from the test
        return cursor.fetchall()


@pytest.mark.django_db
@pytest.mark.parametrize("supplied_key", [None, "IMPORTED-KEYMINT-0001-ABCD"])
def test_database_never_holds_the_plaintext_key(supplied_key):
    issued = make_license(key=supplied_key)

    for table in ["licensing_license", "licensing_auditevent"]:
        for row in _raw_rows(table):
            assert not any(issued.key in str(value) for value in row), table


@pytest.mark.django_db
def test_license_is_found_by_its_key_in_one_query(issued, django_assert_num_queries):
    with django_assert_num_queries(1):
        found = services.get_license_by_key(issued.key)

    assert found.pk == issued.license.pk
    assert found.product.name == "Photon Editor"


@pytest.mark.django_db
def test_unknown_key_is_not_found(issued):
    with pytest.raises(errors.LicenseNotFound) as raised:
        services.get_license_by_key(issued.key.lower())

    assert raised.value.status == 404
    assert raised.value.field == "key"


@pytest.mark.django_db
def test_supplied_key_is_kept_as_given_and_revealed_to_staff(plan):
    issued = make_license(plan=plan, key="lmsq_7f3a9c2e-4b1d-imported")

    assert issued.key == "lmsq_7f3a9c2e-4b1d-imported"
    license = services.get_license_by_key("lmsq_7f3a9c2e-4b1d-imported")
    assert services.reveal_license_key(license) == "lmsq_7f3a9c2e-4b1d-imported"
    assert license.masked_key == "…ported"


@pytest.mark.django_db
def test_generated_key_is_revealed_and_masked_by_its_last_characters(issued):
    license = License.objects.get(pk=issued.license.pk)

    assert services.reveal_license_key(license) == issued.key
    assert license.masked_key == "…" + issued.key[-6:]


@pytest.mark.django_db
def test_short_imported_key_shows_at_most_a_third_of_itself(plan):
    license = make_license(plan=plan, key="ABC123").license

    assert license.key_suffix == "23"


@pytest.mark.django_db
def test_a_key_already_in_use_is_refused(issued, plan):
    with pytest.raises(errors.DuplicateLicenseKey) as raised:
        make_license(plan=plan, key=issued.key)

    assert raised.value.status == 409
    assert raised.value.field == "key"
    assert License.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("bad_key", ["", " padded ", "tab\tinside", "line\nbreak", "x" * 256])
def test_unusable_supplied_keys_are_refused_naming_the_field(plan, bad_key):
    with pytest.raises(errors.InvalidInput) as raised:
        make_license(plan=plan, key=bad_key)

    assert raised.value.field == "key"
    assert License.objects.count() == 0


@pytest.mark.django_db
def test_a_255_character_key_is_accepted(plan):
    key = "K" * 255

    assert make_license(plan=plan, key=key).license == services.get_license_by_key(key)


def test_digest_depends_on_the_license_key_secret(settings):
    settings.LICENSE_KEY_SECRET = "first-secret"
    first = keys.digest_license_key("SAME-KEY")
    settings.LICENSE_KEY_SECRET = "second-secret"

    assert keys.digest_license_key("SAME-KEY") != first


# ---------------------------------------------------------------- rotating LICENSE_KEY_SECRET

OLD_SECRET = "the-secret-this-database-was-set-up-with-0123456789"
NEW_SECRET = "the-secret-that-replaces-it-after-a-leak-9876543210"


@pytest.fixture
def set_up_under_the_old_secret(db, settings):
    settings.LICENSE_KEY_SECRET, settings.LICENSE_KEY_SECRET_FALLBACKS = OLD_SECRET, []
    services.forget_cached_keys()
    yield settings
    services.forget_cached_keys()


def on_a_host_with(settings, secret: str, fallbacks: list[str]) -> None:
    """As a host restarted with these settings: nothing decrypted under others stays in its memory."""
    settings.LICENSE_KEY_SECRET, settings.LICENSE_KEY_SECRET_FALLBACKS = secret, fallbacks
    services.forget_cached_keys()
    signing._private_key.cache_clear()
    signing._rsa_private_key.cache_clear()


def switch_secrets(settings, fallbacks: list[str]) -> None:
    on_a_host_with(settings, NEW_SECRET, fallbacks)


def validate(client, key: str):
    return client.post("/api/v1/licenses/validate", {"key": key, "nonce": "n-1"}, format="json")


def test_a_rotation_keeps_every_secret_working_and_then_needs_the_old_one_no_more(
    set_up_under_the_old_secret, api_client, plan, customer, actor
):
    settings = set_up_under_the_old_secret
    services.signing_key_made_if_none()
    services.create_rsa_key(actor=actor)
    issued = make_license(plan=plan, customer=customer)
    billing = services.create_api_key(name="billing", actor=actor)
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {billing.key}")
    order = {"product": plan.product_id, "customer_email": "new@example.com"}
    first = api_client.post("/api/v1/licenses", order, format="json", HTTP_IDEMPOTENCY_KEY="order-1")

    switch_secrets(settings, [OLD_SECRET])
    during = validate(api_client, issued.key)
    activated_during = api_client.post(
        "/api/v1/licenses/activate", {"key": issued.key, "fingerprint": "laptop"}, format="json"
    )
    as_an_import = api_client.post("/api/v1/licenses", {"product": plan.product_id, "key": issued.key}, format="json")
    out = io.StringIO()
    call_command("rekey_secrets", stdout=out)
    switch_secrets(settings, [])

    assert during.status_code == 200 and during.json()["valid"] is True
    assert activated_during.status_code == 201
    assert (as_an_import.status_code, as_an_import.json()["error"]["code"]) == (409, "duplicate_license_key")
    assert "Stored again under LICENSE_KEY_SECRET: 2 license key(s), 1 signing key(s), 1 RSA key(s)" in out.getvalue()
    # Opened by the new secret alone.
    for private_key in (SigningKey.objects.get(), RsaKey.objects.get()):
        keys.decrypt_private_key(private_key.private_key_encrypted)
    after = validate(api_client, issued.key)
    assert after.status_code == 200 and after.json()["valid"] is True
    deactivated = api_client.post(
        "/api/v1/licenses/deactivate", {"key": issued.key, "fingerprint": "laptop"}, format="json"
    )
    assert deactivated.status_code == 200
    assert after["X-License-Signature"]
    assert services.reveal_license_key(License.objects.get(pk=issued.license.pk)) == issued.key
    replayed = api_client.post("/api/v1/licenses", order, format="json", HTTP_IDEMPOTENCY_KEY="order-1")
    assert (replayed["Idempotent-Replayed"], replayed.json()) == ("true", first.json())
    assert License.objects.get(pk=issued.license.pk).updated_at == issued.license.updated_at


def test_an_api_key_moves_at_its_next_use_and_the_command_names_those_that_have_not(
    set_up_under_the_old_secret, api_client, actor
):
    settings = set_up_under_the_old_secret
    used = services.create_api_key(name="billing", actor=actor)
    idle = services.create_api_key(name="reports", actor=actor)

    switch_secrets(settings, [OLD_SECRET])
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {used.key}")
    assert api_client.get("/api/v1/products").status_code == 200
    out = io.StringIO()
    call_command("rekey_secrets", stdout=out)
    switch_secrets(settings, [])

    last_used = ApiKey.objects.get(pk=used.api_key.pk).last_used_at
    assert f"  {used.api_key} (last used {last_used:%Y-%m-%d %H:%M} UTC)" in out.getvalue()
    assert f"  {idle.api_key} (never used)" in out.getvalue()
    assert services.authenticate_api_key(used.key) == used.api_key
    assert services.authenticate_api_key(idle.key) is None


def test_without_the_old_secret_as_a_fallback_nothing_stored_under_it_is_found(
    set_up_under_the_old_secret, api_client, plan
):
    issued = make_license(plan=plan)

    switch_secrets(set_up_under_the_old_secret, [])

    assert validate(api_client, issued.key).status_code == 404
    with pytest.raises(CommandError, match="LICENSE_KEY_SECRET_FALLBACKS is empty"):
        call_command("rekey_secrets", stdout=io.StringIO())


def test_a_sign_in_link_mailed_before_the_rotation_still_signs_in(set_up_under_the_old_secret, client, customer):
    client.post(reverse("portal:sign-in"), {"email": customer.email})
    link = re.search(r"https?://\S+", mail.outbox[-1].body).group(0).split("testserver", 1)[1]

    switch_secrets(set_up_under_the_old_secret, [OLD_SECRET])

    assert client.post(link).status_code == 302


def test_hosts_restarted_one_at_a_time_read_what_hosts_of_the_step_before_or_after_stored(
    set_up_under_the_old_secret, api_client, plan, actor
):
    settings = set_up_under_the_old_secret
    billing = services.create_api_key(name="billing", actor=actor)

    def still_on_the_old_secret():
        on_a_host_with(settings, OLD_SECRET, [])

    def restarted_once():  # step 1: the new secret read, the old one written
        on_a_host_with(settings, OLD_SECRET, [NEW_SECRET])

    def restarted_twice():  # step 2: the secrets swapped
        on_a_host_with(settings, NEW_SECRET, [OLD_SECRET])

    restarted_once()
    issued_in_step_1 = make_license(plan=plan)
    still_on_the_old_secret()
    assert validate(api_client, issued_in_step_1.key).status_code == 200
    restarted_twice()
    issued_in_step_2 = make_license(plan=plan)
    assert services.authenticate_api_key(billing.key) == billing.api_key
    restarted_once()

    assert validate(api_client, issued_in_step_2.key).status_code == 200
    assert services.reveal_license_key(License.objects.get(pk=issued_in_step_2.license.pk)) == issued_in_step_2.key
    assert services.authenticate_api_key(billing.key) == billing.api_key
    restarted_twice()
    assert services.authenticate_api_key(billing.key) == billing.api_key


def test_a_record_no_secret_opens_is_named_and_the_rest_still_moves(set_up_under_the_old_secret, plan):
    settings = set_up_under_the_old_secret
    on_a_host_with(settings, "a-third-secret-no-host-was-given-0123456789", [])
    lost = make_license(plan=plan)
    on_a_host_with(settings, OLD_SECRET, [])
    kept = make_license(plan=plan)

    switch_secrets(settings, [OLD_SECRET])
    out, err = io.StringIO(), io.StringIO()
    call_command("rekey_secrets", stdout=out, stderr=err)
    switch_secrets(settings, [])

    assert "1 license key(s)" in out.getvalue()
    assert f"license {lost.license.pk}: none of the secrets opens its key" in err.getvalue()
    assert services.get_license_by_key(kept.key).pk == kept.license.pk
