from __future__ import annotations

import os

import hypothesis
import pytest
from django.contrib.auth import get_user_model
from django.test import override_settings

from config import settings as project_settings
from licensing import services
from portal import views as portal_views
from tests.factories import make_customer, make_license, make_plan, make_product

# The fuzz tests try the same inputs on every run: a new input failing would turn a change's CI red
# for a fault it did not make. HYPOTHESIS_PROFILE=explore tries new ones on each run.
hypothesis.settings.register_profile("suite", derandomize=True)
hypothesis.settings.register_profile("explore", derandomize=False)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "suite"))


@pytest.fixture
def actor():
    return services.Actor.system("tests")


@pytest.fixture
def app_actor():
    return services.Actor.app(ip_address="203.0.113.7")


@pytest.fixture
def product(db):
    return make_product(name="Photon Editor", slug="photon")


@pytest.fixture
def plan(product):
    return make_plan(product=product, name="Personal", identifier="personal", max_activations=3)


@pytest.fixture
def customer(db):
    return make_customer(email="ada@example.com", name="Ada Lovelace")


@pytest.fixture
def other_customer(db):
    return make_customer(email="grace@example.com", name="Grace Hopper")


@pytest.fixture
def issued(plan, customer):
    """A fresh license with a limit of 3 devices, and its plaintext key."""
    return make_license(plan=plan, customer=customer)


@pytest.fixture
def staff_user(db):
    return get_user_model().objects.create_superuser("staff", "staff@example.com", "a-long-test-password")


@pytest.fixture
def staff_client(client, staff_user):
    client.force_login(staff_user)
    return client


@pytest.fixture(scope="session", autouse=True)
def static_files_uncollected():
    """The tests never collect static files, which production's storage needs before it can name one."""
    plain_names = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}
    with override_settings(STORAGES={**project_settings.STORAGES, "staticfiles": plain_names}):
        yield


class RunAtOnce:
    def submit(self, work, *args, **kwargs):
        work(*args, **kwargs)


@pytest.fixture(autouse=True)
def work_after_answers_done_at_once(monkeypatch):
    """The portal mails sign-in links from a thread of its own once the answer is sent; a test
    reads the mail as soon as its request is answered."""
    monkeypatch.setattr(portal_views, "after_answers", RunAtOnce())


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # Real hashers are slow on purpose; the tests sign users in hundreds of times.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def api_client():
    from rest_framework.test import APIClient

    return APIClient()


@pytest.fixture
def api_key(db):
    return services.create_api_key(name="billing", actor=services.Actor.system("tests"))


@pytest.fixture
def read_only_api_key(db):
    return services.create_api_key(name="reports", read_only=True, actor=services.Actor.system("tests"))


@pytest.fixture
def management_client(api_client, api_key):
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key.key}")
    return api_client


@pytest.fixture(autouse=True)
def validation_tallies_written_at_once(settings):
    # A background writer's connection cannot see a test's uncommitted rows.
    settings.VALIDATION_TALLY_SECONDS = 0


@pytest.fixture(autouse=True)
def fresh_key_caches():
    # Each test's database starts without the keys a previous test cached.
    services.forget_cached_keys()


@pytest.fixture(autouse=True)
def no_rate_limits(settings):
    # The suite sends thousands of license calls, many with unknown keys, from one address; tests of
    # the limits and of the brute-force guard turn them on.
    settings.LICENSE_RATE_LIMITS = {"per_ip": "", "per_key": ""}
    settings.BRUTE_FORCE = {**settings.BRUTE_FORCE, "slow_after": 0, "block_after": 0}
