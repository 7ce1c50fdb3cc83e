"""Brute-force guard: unknown keys from one IP slow it down, then get 429 in every face."""

from __future__ import annotations

import threading
import uuid
from time import time

import pytest
from django.core.cache import cache
from django.db import OperationalError, connection
from django.test import Client
from django.urls import reverse

from licensing import services
from licensing.api import throttling
from licensing.models import AuditEvent
from tests.factories import make_license, make_plan, make_product
from tests.test_rate_limits import redis_is_running

pytestmark = pytest.mark.django_db

ORGANIZATION_ID = "5f0c3b1e-2d4a-4c8e-9b7f-6a1d2e3f4a5b"
PRODUCT_ID = "prod_brute_force_test_0001"
GUESSER = "203.0.113.9"
NEIGHBOUR = "198.51.100.4"


@pytest.fixture
def guard(settings, monkeypatch):
    """The guard on, its clock held still at the start of a window: a test whose calls straddled the
    end of one would count them in two windows (the burst below once read 0 of its 12)."""
    cache.clear()
    settings.BRUTE_FORCE = {"slow_after": 2, "block_after": 5, "window": 600, "max_delay": 0.3}
    window_start = (time() // 600) * 600 + 1
    monkeypatch.setattr(throttling, "time", lambda: window_start)
    yield settings.BRUTE_FORCE
    cache.clear()


@pytest.fixture
def delays(monkeypatch):
    requested: list[float] = []
    monkeypatch.setattr(throttling, "sleep", requested.append)
    return requested


@pytest.fixture
def issued():
    product = make_product(public_id=PRODUCT_ID, polar_organization_id=uuid.UUID(ORGANIZATION_ID))
    return make_license(plan=make_plan(product=product))


@pytest.fixture
def api_key():
    return services.create_api_key(name="apps", actor=services.Actor.system("tests")).key


def face_calls(api_client, api_key):
    """Each face's validation call, as `call(key, address)`."""
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {api_key}"}
    return {
        "native": lambda key, address: api_client.post(
            "/api/v1/licenses/validate", {"key": key}, format="json", REMOTE_ADDR=address
        ),
        "kelviq": lambda key, address: api_client.post(
            "/compat/kelviq/api/v1/license/validate/",
            {"licenseKey": key},
            format="json",
            REMOTE_ADDR=address,
            **bearer,
        ),
        "polar": lambda key, address: api_client.post(
            "/compat/polar/v1/customer-portal/license-keys/validate",
            {"key": key, "organization_id": ORGANIZATION_ID},
            format="json",
            REMOTE_ADDR=address,
        ),
        "keymint": lambda key, address: api_client.get(
            "/compat/keymint/key", {"productId": PRODUCT_ID, "licenseKey": key}, REMOTE_ADDR=address, **bearer
        ),
        "getkeymanager": lambda key, address: api_client.post(
            "/compat/getkeymanager/api/v1/verify",
            {"api_key": api_key, "license_key": key, "identifier": "device-1"},
            REMOTE_ADDR=address,
        ),
    }


def validate(api_client, key, address=GUESSER):
    return api_client.post("/api/v1/licenses/validate", {"key": key}, format="json", REMOTE_ADDR=address)


def test_calls_past_slow_after_unknown_keys_wait_longer_each_time_up_to_the_cap(api_client, guard, delays):
    guard["block_after"] = 0

    statuses = [validate(api_client, f"GUESS-{n}").status_code for n in range(8)]

    assert statuses == [404] * 8
    assert delays == pytest.approx([0.1, 0.2, 0.3, 0.3, 0.3, 0.3])


@pytest.mark.parametrize("face", ["native", "kelviq", "polar", "keymint", "getkeymanager"])
def test_every_face_refuses_an_address_after_block_after_unknown_keys(api_client, guard, delays, issued, api_key, face):
    call = face_calls(api_client, api_key)[face]

    guesses = [call(f"GUESS-{n}", GUESSER) for n in range(5)]
    refused = call(issued.key, GUESSER)

    assert 429 not in [answer.status_code for answer in guesses]
    assert refused.status_code == 429
    assert 0 < int(refused["Retry-After"]) <= 600
    assert issued.key not in refused.content.decode()
    body = refused.json()
    if face == "native":
        assert body["error"]["code"] == "rate_limited"
    elif face == "kelviq":
        assert "throttled" in body["detail"]
    elif face == "polar":
        assert body == {"error": "TooManyRequests", "detail": "Rate limit exceeded."}
    elif face == "keymint":
        assert body["code"] == 3
    else:
        assert body["response"]["code"] == 429


@pytest.mark.parametrize("face", ["kelviq", "keymint", "getkeymanager"])
def test_faces_that_take_an_api_key_count_wrong_ones_like_unknown_license_keys(
    api_client, guard, delays, issued, api_key, face
):
    guessed = face_calls(api_client, "lsk_guessed0123456789abcdefghijklmnop")[face]
    revoked = services.create_api_key(name="old", actor=services.Actor.system("tests"))
    services.revoke_api_key(api_key=revoked.api_key, actor=services.Actor.system("tests"))
    with_revoked = face_calls(api_client, revoked.key)[face]

    refusals = [guessed(issued.key, GUESSER) for _ in range(3)] + [with_revoked(issued.key, GUESSER) for _ in range(2)]
    blocked = face_calls(api_client, api_key)[face](issued.key, GUESSER)

    assert [answer.status_code for answer in refusals] == [401] * 5
    assert delays == pytest.approx([0.1, 0.2, 0.3])
    assert blocked.status_code == 429
    assert face_calls(api_client, api_key)[face](issued.key, NEIGHBOUR).status_code == 200


def test_valid_keys_are_never_counted(api_client, guard, delays, issued):
    statuses = [validate(api_client, issued.key).status_code for _ in range(12)]

    assert statuses == [200] * 12
    assert delays == []


def test_another_address_keeps_working_while_one_is_blocked(api_client, guard, delays, issued):
    for n in range(5):
        validate(api_client, f"GUESS-{n}")

    assert validate(api_client, issued.key).status_code == 429
    assert validate(api_client, issued.key, address=NEIGHBOUR).status_code == 200
    assert validate(api_client, "GUESS-NEIGHBOUR", address=NEIGHBOUR).status_code == 404


def test_unknown_keys_met_inside_an_activation_count_too(api_client, guard, delays):
    # Activation looks the key up inside its transaction, which rolls back on the unknown key.
    statuses = [
        api_client.post(
            "/api/v1/licenses/activate", {"key": f"GUESS-{n}", "fingerprint": "device-1"}, format="json"
        ).status_code
        for n in range(6)
    ]

    assert statuses == [404] * 5 + [429]


def test_the_block_ends_with_its_window(api_client, guard, delays, issued, monkeypatch):
    for n in range(5):
        validate(api_client, f"GUESS-{n}")
    assert validate(api_client, issued.key).status_code == 429

    later = time() + guard["window"]
    monkeypatch.setattr(throttling, "time", lambda: later)

    assert validate(api_client, issued.key).status_code == 200


def test_retry_after_is_the_longest_wait_of_the_reasons_refusing(api_client, guard, delays, issued, settings):
    settings.LICENSE_RATE_LIMITS = {"per_ip": "", "per_key": "1/minute"}
    validate(api_client, issued.key)
    for n in range(5):
        validate(api_client, f"GUESS-{n}")

    refused = validate(api_client, issued.key)

    assert refused.status_code == 429
    assert refused["Retry-After"] == str(guard["window"] - 1)


def test_a_block_is_logged_once_with_the_address_and_never_a_key(api_client, guard, delays, caplog):
    caplog.set_level("DEBUG")
    guesses = [f"GUESS-{n}-SECRET" for n in range(8)]

    answers = [validate(api_client, guess) for guess in guesses]

    blocked_lines = [record for record in caplog.records if "Blocked" in record.getMessage()]
    assert len(blocked_lines) == 1
    assert blocked_lines[0].levelname == "WARNING"
    assert GUESSER in blocked_lines[0].getMessage()
    for guess in guesses:
        assert guess not in caplog.text
    for answer in answers[5:]:
        assert answer.status_code == 429
        assert "GUESS" not in answer.content.decode()


def test_behind_a_proxy_the_forwarded_address_is_the_one_counted(api_client, guard, delays, issued, settings):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}

    def validate_from(key, address):
        return api_client.post("/api/v1/licenses/validate", {"key": key}, format="json", HTTP_X_FORWARDED_FOR=address)

    for n in range(5):
        validate_from(f"GUESS-{n}", GUESSER)

    assert validate_from(issued.key, GUESSER).status_code == 429
    assert validate_from(issued.key, NEIGHBOUR).status_code == 200


def test_an_unknown_key_that_cannot_be_counted_is_still_answered_in_the_faces_shape(
    api_client, guard, delays, monkeypatch, caplog
):
    def cache_down(self):
        raise OperationalError("the cache's database is down")

    monkeypatch.setattr(throttling.UnknownKeyWindow, "record_failure", cache_down)
    api_client.raise_request_exception = False

    response = face_calls(api_client, "unused")["polar"]("NOT-A-KEY", "203.0.113.9")

    assert response.status_code == 404
    assert response.json()["error"] == "ResourceNotFound"
    assert "Could not count an unknown key" in caplog.text


def test_staff_looking_up_unknown_keys_are_not_counted(guard):
    for n in range(10):
        with pytest.raises(services.errors.LicenseNotFound):
            services.get_license_by_key(f"GUESS-{n}")

    assert throttling.UnknownKeyWindow("127.0.0.1").failures() == 0


def test_wrong_api_keys_on_the_management_api_count_and_block_the_address_everywhere(
    api_client, guard, delays, issued, api_key
):
    # Unguarded, the management API would tell a guesser which guessed key is real, even one made
    # for apps (403, not 401), whatever the dialects' guard counted.
    revoked = services.create_api_key(name="old", actor=services.Actor.system("tests"))
    services.revoke_api_key(api_key=revoked.api_key, actor=services.Actor.system("tests"))
    wrong_keys = [f"lsk_wrong{n}" for n in range(3)] + [revoked.key] * 2

    refusals = [
        api_client.get("/api/v1/licenses", REMOTE_ADDR=GUESSER, HTTP_AUTHORIZATION=f"Bearer {key}")
        for key in wrong_keys
    ]
    blocked = api_client.get("/api/v1/licenses", REMOTE_ADDR=GUESSER, HTTP_AUTHORIZATION=f"Bearer {api_key}")

    assert [answer.status_code for answer in refusals] == [401] * 5
    assert delays == pytest.approx([0.1, 0.2, 0.3])
    assert (blocked.status_code, blocked.json()["error"]["code"]) == (429, "rate_limited")
    assert 0 < int(blocked["Retry-After"]) <= 600
    assert face_calls(api_client, api_key)["kelviq"](issued.key, GUESSER).status_code == 429
    assert validate(api_client, issued.key).status_code == 429
    neighbour = api_client.get("/api/v1/licenses", REMOTE_ADDR=NEIGHBOUR, HTTP_AUTHORIZATION=f"Bearer {api_key}")
    assert neighbour.status_code == 200


def test_calls_to_the_management_api_that_guess_no_key_are_never_counted(api_client, guard, delays, issued):
    apps_key = services.create_api_key(name="app", apps_only=True, actor=services.Actor.system("tests")).key
    read_only = services.create_api_key(name="reports", read_only=True, actor=services.Actor.system("tests")).key
    products = "/api/v1/products"

    answers = [
        api_client.get(products, REMOTE_ADDR=GUESSER),
        api_client.get(products, REMOTE_ADDR=GUESSER, HTTP_AUTHORIZATION="Bearer "),
        api_client.get(products, REMOTE_ADDR=GUESSER, HTTP_AUTHORIZATION="Bearer two words"),
        api_client.get(products, REMOTE_ADDR=GUESSER, HTTP_AUTHORIZATION=f"Bearer {apps_key}"),
        api_client.post(
            products, {"name": "X"}, format="json", REMOTE_ADDR=GUESSER, HTTP_AUTHORIZATION=f"Bearer {read_only}"
        ),
    ]

    assert [answer.status_code for answer in answers] == [401, 401, 401, 403, 403]
    assert throttling.UnknownKeyWindow(GUESSER).failures() == 0


def test_the_management_api_answers_when_the_guards_counters_cannot_be_read(
    api_client, guard, delays, api_key, monkeypatch, caplog
):
    def cache_down(*args, **kwargs):
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(throttling.cache, "get_many", cache_down)

    response = api_client.get("/api/v1/products", REMOTE_ADDR=GUESSER, HTTP_AUTHORIZATION=f"Bearer {api_key}")

    assert response.status_code == 200
    assert "Could not read the rate limits' and the brute-force guard's counters" in caplog.text


@pytest.mark.parametrize("face", ["native", "kelviq", "polar", "keymint", "getkeymanager"])
def test_license_calls_are_answered_when_the_counters_cannot_be_read(
    api_client, guard, delays, issued, api_key, monkeypatch, caplog, face
):
    # Redis down must not stop every app: the calls go on unlimited, and the failure is logged.
    def cache_down(*args, **kwargs):
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(throttling.cache, "get_many", cache_down)

    answer = face_calls(api_client, api_key)[face](issued.key, GUESSER)

    assert answer.status_code == 200
    assert "Could not read the rate limits' and the brute-force guard's counters" in caplog.text


def test_a_license_call_is_answered_when_its_count_cannot_be_written(api_client, issued, settings, monkeypatch, caplog):
    settings.LICENSE_RATE_LIMITS = {"per_ip": "100/minute", "per_key": ""}

    def cache_down(*args, **kwargs):
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(throttling.cache, "set_many", cache_down)

    assert validate(api_client, issued.key).status_code == 200
    assert "Could not count a call against the rate limits" in caplog.text


def test_license_keys_the_management_api_looks_up_are_never_counted(api_client, guard, delays, issued, api_key):
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key}")

    answers = [
        api_client.post("/api/v1/licenses/find", {"key": f"GUESS-{n}"}, format="json", REMOTE_ADDR=GUESSER)
        for n in range(10)
    ]

    assert [answer.status_code for answer in answers] == [404] * 10
    assert throttling.UnknownKeyWindow(GUESSER).failures() == 0
    assert delays == []


def test_turned_off_the_guard_never_slows_or_blocks(api_client, delays):
    cache.clear()

    statuses = [validate(api_client, f"GUESS-{n}").status_code for n in range(40)]

    assert statuses == [404] * 40
    assert delays == []


@pytest.fixture(params=["database", "redis"])
def counters(request, settings):
    """The cache the guard counts in: the database table by default, or Redis."""
    if request.param == "redis":
        if not redis_is_running():
            pytest.skip("no Redis on 127.0.0.1:6379")
        settings.CACHES = {
            "default": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": "redis://127.0.0.1:6379/15",
            }
        }
    cache.clear()
    yield
    cache.clear()


@pytest.mark.django_db(transaction=True)
def test_a_parallel_burst_of_unknown_keys_is_counted_exactly(guard, counters):
    guard["block_after"] = 50
    burst = 12
    start = threading.Barrier(burst)

    def fail_once():
        try:
            start.wait()
            throttling.UnknownKeyWindow(GUESSER).record_failure()
        finally:
            connection.close()

    threads = [threading.Thread(target=fail_once) for _ in range(burst)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert throttling.UnknownKeyWindow(GUESSER).failures() == burst


@pytest.mark.parametrize(
    ("method", "path", "data"),
    [
        ("post", "/compat/kelviq/api/v1/license/validate/", {"licenseKey": "GUESS"}),
        ("get", "/compat/keymint/key", {"productId": PRODUCT_ID, "licenseKey": "GUESS"}),
        ("post", "/compat/getkeymanager/api/v1/verify", {"license_key": "GUESS", "identifier": "device-1"}),
        ("get", "/api/v1/licenses", {}),
    ],
)
def test_a_refused_api_key_is_never_logged(api_client, caplog, method, path, data):
    caplog.set_level("DEBUG")
    guessed = "lsk_guessed0123456789abcdefghijklmnop"

    answer = getattr(api_client, method)(path, data, HTTP_AUTHORIZATION=f"Bearer {guessed}")

    assert answer.status_code == 401
    assert guessed not in caplog.text
    assert guessed[4:] not in caplog.text


def sign_in_to_the_admin(client, password: str, address: str):
    return client.post(
        reverse("admin:login"),
        {"username": "staff", "password": password, "next": reverse("admin:index")},
        REMOTE_ADDR=address,
        follow=True,
    )


def test_staff_sign_in_is_blocked_after_failures_from_one_address_even_with_the_right_password(
    guard, client, api_client, staff_user, issued, caplog
):
    for _ in range(guard["block_after"]):
        wrong = sign_in_to_the_admin(client, "a-wrong-guess", GUESSER)
        assert "Please enter the correct username and password" in wrong.content.decode()
    assert f"Failed staff sign-in as 'staff' from {GUESSER}" in caplog.text

    blocked = sign_in_to_the_admin(client, "a-long-test-password", GUESSER)
    from_elsewhere = sign_in_to_the_admin(Client(), "a-long-test-password", NEIGHBOUR)

    assert "Too many failed sign-ins from your address. Try again in " in blocked.content.decode()
    assert not blocked.wsgi_request.user.is_authenticated
    assert from_elsewhere.wsgi_request.user.is_authenticated
    # The guard counts sign-ins apart from license calls: the guesser's license calls still work.
    assert validate(api_client, issued.key).status_code == 200


def test_a_staff_sign_in_is_in_the_audit_trail(guard, client, staff_user):
    sign_in_to_the_admin(client, "a-long-test-password", GUESSER)

    event = AuditEvent.objects.get(action="staff.signed_in")
    assert (event.actor_display, event.target_id, event.ip_address) == ("staff", str(staff_user.pk), GUESSER)
