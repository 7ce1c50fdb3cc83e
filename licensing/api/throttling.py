"""Rate limits and the brute-force guard on the public license calls of every face.

Rate limits count calls per client IP and per license key; the guard counts unknown license keys
per client IP, slows that IP down and then refuses it. Counters live in Django's cache (a database
table by default, Redis with REDIS_URL), so every server process and host shares them. Each face
answers a refusal as 429 with Retry-After in its own shape, through its own handler of DRF's
Throttled error.
"""

from __future__ import annotations

import logging
import math
from time import sleep, time

from django.conf import settings
from django.core.cache import cache
from rest_framework.throttling import BaseThrottle, SimpleRateThrottle

from licensing import keys, services
from licensing.api.retry import retry_on_lost_connection

logger = logging.getLogger(__name__)


class LicenseCallThrottle(SimpleRateThrottle):
    def get_rate(self):
        # Read on every request, not at import as DRF does, so settings (and tests) can change it.
        return settings.LICENSE_RATE_LIMITS.get(self.scope) or None

    def allow_request(self, request, view):
        self.rate = self.get_rate()
        if self.rate is None:
            return True
        self.num_requests, self.duration = self.parse_rate(self.rate)
        return super().allow_request(request, view)


class LicenseCallIPThrottle(LicenseCallThrottle):
    scope = "per_ip"

    def get_cache_key(self, request, view):
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}


class LicenseKeyThrottle(LicenseCallThrottle):
    """Counts calls naming the same license key; the cache holds its digest, never the key."""

    scope = "per_key"

    def get_cache_key(self, request, view):
        data = request.data
        key = data.get(view.license_key_field) if hasattr(data, "get") else None
        if not isinstance(key, str) or not key:
            key = request.query_params.get(view.license_key_field)
        if not isinstance(key, str) or not key.strip():
            return None
        # Stripped: faces that trim the key (Kelviq's DRF fields) must not give " KEY" a fresh budget.
        return self.cache_format % {"scope": self.scope, "ident": keys.digest_license_key(key.strip())}


# Past `slow_after`, each unknown key makes the next calls wait this much longer.
DELAY_STEP_SECONDS = 0.1


class UnknownKeyWindow:
    """The unknown license keys one client IP named in the current window, one cache entry each.

    Each failure claims the next numbered entry with cache.add, which is atomic on every backend (an
    INSERT on the database cache, SET NX on Redis), so a parallel burst cannot undercount. A single
    counter would need incr, which the database cache does as a read then a write that also resets
    the entry's expiry. Windows are aligned to the clock, so every host agrees when one ends.
    """

    def __init__(self, ident: str | None) -> None:
        self.config = settings.BRUTE_FORCE
        length = self.config["window"]
        now = time()
        window_number = int(now // length)
        self.seconds_left = (window_number + 1) * length - now
        self.ident = ident
        self.keys = [f"unknown_keys_{ident}_{window_number}_{n}" for n in range(1, self._most_worth_counting() + 1)]

    def _most_worth_counting(self) -> int:
        """Failures past the block, or past the longest delay when nothing blocks, change nothing."""
        slow_after, block_after = self.config["slow_after"], self.config["block_after"]
        if block_after:
            return block_after
        if slow_after:
            return slow_after + math.ceil(self.config["max_delay"] / DELAY_STEP_SECONDS) - 1
        return 0

    def failures(self) -> int:
        return len(cache.get_many(self.keys)) if self.keys else 0

    def blocks(self, failures: int) -> bool:
        return 0 < self.config["block_after"] <= failures

    def delay(self, failures: int) -> float:
        slow_after = self.config["slow_after"]
        if not slow_after or failures < slow_after:
            return 0.0
        return min(self.config["max_delay"], DELAY_STEP_SECONDS * (failures - slow_after + 1))

    def record_failure(self) -> None:
        timeout = math.ceil(self.seconds_left)
        for number in range(self.failures() + 1, len(self.keys) + 1):
            if cache.add(self.keys[number - 1], True, timeout):
                if number == self.config["block_after"]:
                    logger.warning("Blocked %s for %d s after %d unknown license keys", self.ident, timeout, number)
                return


def client_ident(request) -> str | None:
    # DRF's own rule (DJANGO_NUM_PROXIES, X-Forwarded-For), so the guard and the rate limits see the same client.
    return BaseThrottle().get_ident(request)


class UnknownKeyThrottle(BaseThrottle):
    """Slows down, then refuses, a client IP that keeps naming license keys no license has.

    Both happen before the key is looked up, so every call from the IP waits or is refused, valid
    keys included: were a valid key answered, or answered sooner, a guesser would learn which of its
    guesses hit.
    """

    def allow_request(self, request, view):
        self.window = UnknownKeyWindow(client_ident(request))
        failures = self.window.failures()
        if self.window.blocks(failures):
            return False
        if delay := self.window.delay(failures):
            # The wait holds one of the server's few worker threads, so it stays short (max_delay): a
            # long one would let a handful of parallel guessers hold every thread, and the block
            # stops a guesser soon anyway.
            sleep(delay)
        return True

    def wait(self):
        return math.ceil(self.window.seconds_left)


LICENSE_CALL_THROTTLES = [UnknownKeyThrottle, LicenseCallIPThrottle, LicenseKeyThrottle]


class LicenseCallLimits:
    """The rate limits and the brute-force guard of an app-facing license call, for every face."""

    throttle_classes = LICENSE_CALL_THROTTLES

    def dispatch(self, request, *args, **kwargs):
        with services.counting_unknown_key_lookups() as unknown_keys:
            response = super().dispatch(request, *args, **kwargs)
        # Counted once the answer is ready, not where the service met the unknown key: inside an
        # activation's transaction, the database cache's write would be rolled back with it.
        if unknown_keys.count:
            UnknownKeyWindow(client_ident(request)).record_failure()
        return response

    # The limits' counters (in a database table unless REDIS_URL is set), and on Kelviq and Keymint
    # the API key, are read before the handler runs: a pooled connection that died while idle, as
    # every one does when the database restarts, fails here first. A second try may count this call
    # twice against a rate limit.
    @retry_on_lost_connection
    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)


class ThrottleBeforeAuthentication:
    """DRF's `initial` with the rate limits checked before authentication, so that callers guessing
    API keys are limited too (DRF checks throttles only once a caller is authenticated)."""

    def initial(self, request, *args, **kwargs):
        self.format_kwarg = self.get_format_suffix(**kwargs)
        request.accepted_renderer, request.accepted_media_type = self.perform_content_negotiation(request)
        request.version, request.versioning_scheme = self.determine_version(request, *args, **kwargs)
        self.check_throttles(request)
        self.perform_authentication(request)
        self.check_permissions(request)
