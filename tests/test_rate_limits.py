"""Rate limits on the public license calls: per client IP and per key, 429 with Retry-After in each face's shape."""

from __future__ import annotations

import uuid
from time import time

import pytest
from django.core.cache import cache, caches

from licensing import services
from licensing.api import throttling
from tests.factories import make_license, make_plan, make_product

pytestmark = pytest.mark.django_db

ORGANIZATION_ID = "5f0c3b1e-2d4a-4c8e-9b7f-6a1d2e3f4a5b"
PRODUCT_ID = "prod_rate_limit_test_00001"


class Clock:
    """The throttle's clock, held still so that no test's calls straddle the end of a minute."""

    def __init__(self) -> None:
        self.now = (time() // 60) * 60 + 1

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    frozen = Clock()
    monkeypatch.setattr(throttling, "time", frozen)
    return frozen


@pytest.fixture
def limits(settings, clock):
    cache.clear()
    settings.LICENSE_RATE_LIMITS = {"per_ip": "", "per_key": "3/minute"}
    yield settings.LICENSE_RATE_LIMITS
    cache.clear()


@pytest.fixture
def issued():
    product = make_product(public_id=PRODUCT_ID, polar_organization_id=uuid.UUID(ORGANIZATION_ID))
    return make_license(plan=make_plan(product=product))


@pytest.fixture
def api_key():
    return services.create_api_key(name="apps", actor=services.Actor.system("tests")).key


def calls(api_client, issued, api_key):
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {api_key}"}
    return {
        "native": lambda: api_client.post("/api/v1/licenses/validate", {"key": issued.key}, format="json"),
        "kelviq": lambda: api_client.post(
            "/compat/kelviq/api/v1/license/validate/", {"licenseKey": issued.key}, format="json", **bearer
        ),
        "polar": lambda: api_client.post(
            "/compat/polar/v1/customer-portal/license-keys/validate",
            {"key": issued.key, "organization_id": ORGANIZATION_ID},
            format="json",
        ),
        "keymint": lambda: api_client.get(
            f"/compat/keymint/key?productId={PRODUCT_ID}&licenseKey={issued.key}", **bearer
        ),
        "keymint's SDK": lambda: api_client.get(
            f"/compat/keymint/key?productId={PRODUCT_ID}", HTTP_X_LICENSE_KEY=issued.key, **bearer
        ),
        "getkeymanager": lambda: api_client.post(
            "/compat/getkeymanager/api/v1/verify", {"api_key": api_key, "license_key": issued.key, "identifier": "d"}
        ),
    }


def test_every_face_refuses_a_key_past_its_limit_with_429_and_retry_after(api_client, issued, api_key, limits):
    for name, call in calls(api_client, issued, api_key).items():
        cache.clear()
        answers = [call() for _ in range(4)]

        assert 429 not in [answer.status_code for answer in answers[:3]], name
        refused = answers[3]
        assert refused.status_code == 429, name
        assert int(refused["Retry-After"]) > 0, name
        body = refused.json()
        assert issued.key not in refused.content.decode(), name
        if name == "native":
            assert body["error"]["code"] == "rate_limited"
        elif name.startswith("keymint"):
            assert body["code"] == 3
        elif name == "polar":
            assert body == {"error": "TooManyRequests", "detail": "Rate limit exceeded."}
        elif name == "kelviq":
            assert "throttled" in body["detail"]
        else:
            assert body["response"]["code"] == 429


def test_each_key_has_its_own_budget(api_client, issued, limits):
    other = make_license(plan=issued.license.plan)
    for _ in range(3):
        api_client.post("/api/v1/licenses/validate", {"key": issued.key}, format="json")

    assert api_client.post("/api/v1/licenses/validate", {"key": issued.key}, format="json").status_code == 429
    assert api_client.post("/api/v1/licenses/validate", {"key": other.key}, format="json").status_code == 200


def test_one_address_is_limited_across_keys(api_client, issued, limits):
    limits.update({"per_ip": "2/minute", "per_key": ""})

    statuses = [
        api_client.post("/api/v1/licenses/validate", {"key": f"UNKNOWN-{n}"}, format="json").status_code
        for n in range(3)
    ]

    assert statuses == [404, 404, 429]


def test_the_cache_holds_no_license_key(api_client, issued, limits):
    from django.db import connection

    api_client.post("/api/v1/licenses/validate", {"key": issued.key}, format="json")

    with connection.cursor() as cursor:
        cursor.execute("SELECT cache_key FROM licensing_cache")
        stored = " ".join(row[0] for row in cursor.fetchall())
    assert stored
    assert issued.key not in stored


def test_a_forged_forwarded_for_header_does_not_dodge_the_address_limit(api_client, limits):
    limits.update({"per_ip": "2/minute", "per_key": ""})

    statuses = [
        api_client.post(
            "/api/v1/licenses/validate", {"key": f"UNKNOWN-{n}"}, format="json", HTTP_X_FORWARDED_FOR=f"10.0.0.{n}"
        ).status_code
        for n in range(3)
    ]

    assert statuses == [404, 404, 429]


def test_behind_a_proxy_that_adds_ports_one_address_is_one_client(api_client, limits, settings):
    """Azure's gateway, for one, forwards "address:port": a new port each call must not be a new budget."""
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    limits.update({"per_ip": "2/minute", "per_key": ""})

    statuses = [
        api_client.post(
            "/api/v1/licenses/validate", {"key": f"UNKNOWN-{n}"}, format="json", HTTP_X_FORWARDED_FOR=forwarded
        ).status_code
        for n, forwarded in enumerate(["203.0.113.9:50001", "203.0.113.9:50002", "203.0.113.9:50003"])
    ]

    assert statuses == [404, 404, 429]


def test_one_ipv6_network_is_one_client(api_client, limits):
    limits.update({"per_ip": "2/minute", "per_key": ""})

    statuses = [
        api_client.post(
            "/api/v1/licenses/validate", {"key": f"UNKNOWN-{n}"}, format="json", REMOTE_ADDR=f"2001:db8:1:2::{n + 1}"
        ).status_code
        for n in range(3)
    ]
    elsewhere = api_client.post(
        "/api/v1/licenses/validate", {"key": "UNKNOWN"}, format="json", REMOTE_ADDR="2001:db8:1:3::1"
    )

    assert statuses == [404, 404, 429]
    assert elsewhere.status_code == 404


def test_calls_without_a_client_address_share_no_budget(api_client, limits):
    limits.update({"per_ip": "2/minute", "per_key": ""})

    statuses = {
        api_client.post("/api/v1/licenses/validate", {"key": f"UNKNOWN-{n}"}, format="json", REMOTE_ADDR="").status_code
        for n in range(4)
    }

    assert statuses == {404}


def test_a_decoy_key_in_the_body_does_not_dodge_keymints_key_limit(api_client, issued, api_key, limits):
    statuses = [
        api_client.generic(
            "GET",
            f"/compat/keymint/key?productId={PRODUCT_ID}&licenseKey={issued.key}",
            f'{{"licenseKey": "decoy-{n}"}}',
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {api_key}",
        ).status_code
        for n in range(4)
    ]

    assert statuses == [200, 200, 200, 429]


def test_a_head_request_counts_against_its_keys_limit_as_a_get_does(api_client, issued, api_key, limits):
    read = f"/compat/keymint/key?productId={PRODUCT_ID}&licenseKey={issued.key}"
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {api_key}"}

    statuses = [api_client.head(read, **bearer).status_code for _ in range(3)]
    statuses += [api_client.get(read, **bearer).status_code, api_client.head(read, **bearer).status_code]

    assert statuses == [200, 200, 200, 429, 429]


def test_a_body_that_cannot_be_read_gets_its_own_answer_with_the_limits_on(api_client, limits, settings):
    # The per-key limit reads the key from the body: that failing is the body's fault, not the counters'.
    malformed = api_client.post("/api/v1/licenses/validate", "{bad", content_type="application/json")
    too_large = api_client.post(
        "/api/v1/licenses/validate",
        '{"key": "%s"}' % ("K" * settings.API_MAX_BODY_BYTES),
        content_type="application/json",
    )

    assert (malformed.status_code, malformed.json()["error"]["code"]) == (400, "malformed_request")
    assert too_large.status_code == 413


def redis_is_running() -> bool:
    import socket

    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", 6379)) == 0


@pytest.mark.skipif(not redis_is_running(), reason="no Redis on 127.0.0.1:6379")
def test_the_limits_work_with_redis_counters(api_client, issued, limits, settings):
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:6379/15"}
    }
    cache.clear()

    statuses = [
        api_client.post("/api/v1/licenses/validate", {"key": issued.key}, format="json").status_code for _ in range(4)
    ]

    assert statuses == [200, 200, 200, 429]
    cache.clear()


def test_redis_url_selects_the_redis_cache():
    from tests.test_settings import settings_with

    result = settings_with("s.CACHES['default']['BACKEND']", REDIS_URL="redis://127.0.0.1:6379/0")

    assert result.stdout.strip() == "django.core.cache.backends.redis.RedisCache"


def test_many_keys_from_one_address_cannot_flush_its_counter(api_client, limits):
    limits.update({"per_ip": "20/minute", "per_key": "120/minute"})

    statuses = [
        api_client.post("/api/v1/licenses/validate", {"key": f"GUESS-{n}"}, format="json").status_code
        for n in range(400)
    ]

    assert statuses.count(404) == 20
    assert statuses.count(429) == 380


@pytest.mark.parametrize(
    ("path", "method"), [("/compat/kelviq/api/v1/license/validate/", "post"), ("/compat/keymint/key", "get")]
)
def test_guessing_api_keys_is_rate_limited_too(api_client, limits, path, method):
    limits.update({"per_ip": "2/minute", "per_key": ""})
    api_client.credentials(HTTP_AUTHORIZATION="Bearer guessed-token-0123456789")

    statuses = [getattr(api_client, method)(path, {"licenseKey": "K"}, format="json").status_code for _ in range(3)]

    assert statuses == [401, 401, 429]


def test_spaces_around_a_key_do_not_buy_a_new_budget(api_client, issued, api_key, limits):
    statuses = [
        api_client.post(
            "/compat/kelviq/api/v1/license/validate/",
            {"licenseKey": issued.key + " " * n},
            format="json",
            HTTP_AUTHORIZATION=f"Bearer {api_key}",
        ).status_code
        for n in range(4)
    ]

    assert statuses == [200, 200, 200, 429]


def test_a_window_ends_on_the_clock_and_the_next_starts_with_a_full_budget(api_client, issued, limits, clock):
    for _ in range(3):
        api_client.post("/api/v1/licenses/validate", {"key": issued.key}, format="json")
    clock.now += 58.5

    refused = api_client.post("/api/v1/licenses/validate", {"key": issued.key}, format="json")
    clock.now += 0.5
    window_end = api_client.post("/api/v1/licenses/validate", {"key": issued.key}, format="json")

    assert refused.status_code == 429
    assert refused["Retry-After"] == "1"
    assert window_end.status_code == 200


def test_refused_calls_are_not_counted(api_client, issued, limits, clock):
    for _ in range(10):
        api_client.post("/api/v1/licenses/validate", {"key": issued.key}, format="json")
    clock.now += 60

    statuses = [
        api_client.post("/api/v1/licenses/validate", {"key": issued.key}, format="json").status_code for _ in range(4)
    ]

    assert statuses == [200, 200, 200, 429]


@pytest.fixture
def cache_calls(monkeypatch):
    """The names of the cache's methods called, in order."""
    backend = caches["default"]
    used: list[str] = []
    for name in ["get", "get_many", "set", "set_many", "add", "incr", "decr", "delete", "delete_many", "touch"]:
        monkeypatch.setattr(backend, name, recorded(getattr(backend, name), name, used))
    return used


def test_an_allowed_call_reads_and_writes_the_limits_once(api_client, issued, limits, settings, cache_calls):
    limits["per_ip"] = "10/minute"
    settings.BRUTE_FORCE = {**settings.BRUTE_FORCE, "slow_after": 2, "block_after": 5}

    answer = api_client.post("/api/v1/licenses/validate", {"key": issued.key}, format="json")

    assert answer.status_code == 200
    assert cache_calls == ["get_many", "set_many"]


def test_limits_turned_off_never_touch_the_cache(api_client, issued, limits, cache_calls):
    limits["per_key"] = None

    statuses = [
        api_client.post("/api/v1/licenses/validate", {"key": issued.key}, format="json").status_code for _ in range(5)
    ]

    assert statuses == [200] * 5
    assert cache_calls == []


def recorded(method, name, used):
    # Only the throttle's own calls: Django's set_many calls set once per key on some backends.
    def wrapper(*args, **kwargs):
        used.append(name)
        depth = len(used)
        try:
            return method(*args, **kwargs)
        finally:
            del used[depth:]

    return wrapper
