from __future__ import annotations

import math
import re

import pytest
from django.db import connection

from licensing import errors, keys, services
from licensing.models import License
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
