"""Rate limits and the brute-force guard on the public license calls of every face, and the guard
on the management API.

Rate limits count calls per client IP and per license key in fixed windows; the guard counts
unknown keys (license keys, and the API keys vendor faces and the management API take) per client
IP, slows that IP down and then refuses it. Counters live in Django's cache (a database table by default, Redis with
REDIS_URL), so every server process and host shares them. Each face answers a refusal as 429 with
Retry-After in its own shape, through its own handler of DRF's Throttled error.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from time import sleep, time

from django.conf import settings
from django.core.cache import cache
from django.db import DatabaseError
from rest_framework.throttling import BaseThrottle

from licensing import keys, services
from licensing.addresses import client_ip, network_of
from licensing.api.retry import retry_on_lost_connection

logger = logging.getLogger(__name__)


# Past `slow_after`, each unknown key makes the next calls wait this much longer.
DELAY_STEP_SECONDS = 0.1


class UnknownKeyWindow:
    """The unknown keys one client IP named in the current window, one cache entry each.

    Each failure claims the next numbered entry with cache.add, which is atomic on every backend (an
    INSERT on the database cache, SET NX on Redis), so a parallel burst cannot undercount. A single
    counter would need incr, which the database cache does as a read then a write that also resets
    the entry's expiry. Windows are aligned to the clock, so every host agrees when one ends.
    """

    def __init__(self, ident: str | None, now: float | None = None) -> None:
        self.config = settings.BRUTE_FORCE
        length = self.config["window"]
        now = time() if now is None else now
        window_number = int(now // length)
        self.seconds_left = (window_number + 1) * length - now
        self.ident = ident
        worth_counting = self._most_worth_counting() if ident else 0
        self.keys = [f"unknown_keys_{ident}_{window_number}_{n}" for n in range(1, worth_counting + 1)]

    def _most_worth_counting(self) -> int:
        """Failures past the block, or past the longest delay when nothing blocks, change nothing."""
        slow_after, block_after = self.config["slow_after"], self.config["block_after"]
        if block_after:
            return block_after
        if slow_after:
            return slow_after + math.ceil(self.config["max_delay"] / DELAY_STEP_SECONDS) - 1
        return 0

    def failures(self) -> int:
        return self.count(cache.get_many(self.keys)) if self.keys else 0

    def count(self, stored: dict) -> int:
        """The failures among entries read together with other counters."""
        return sum(key in stored for key in self.keys)

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
                    logger.warning("Blocked %s for %d s after %d failed guesses", self.ident, timeout, number)
                return


def brute_force_guard_on() -> bool:
    return bool(settings.BRUTE_FORCE["slow_after"] or settings.BRUTE_FORCE["block_after"])


@contextlib.contextmanager
def guesses_counted(request) -> Iterator[None]:
    """Count for the guard the unknown keys the services met while the block ran, once it ends: not
    where a service met one, as inside an activation's transaction the database cache's write would
    be rolled back with it."""
    with services.counting_unknown_key_lookups() as unknown_keys:
        try:
            yield
        finally:
            if unknown_keys.count:
                try:
                    UnknownKeyWindow(client_ident(request)).record_failure()
                except Exception:
                    # The answer is right without it; a guess not counted matters less than losing it.
                    logger.exception("Could not count an unknown key")


def client_ident(request) -> str | None:
    """The client the guard and the per-IP limit count (`addresses.network_of`). None when the
    address is unknown: such calls share nothing rather than one budget for everyone."""
    return network_of(client_ip(request))


# Counters outlive their window a little: the database cache and Redis round an expiry down to the
# second, and hosts' clocks differ slightly. A later window has a key of its own, so this costs nothing.
EXPIRY_MARGIN_SECONDS = 2

PERIOD_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class RateWindow:
    """A fixed-window counter of one rate limit: the calls one client IP or one license key made in
    the current window, aligned to the clock like the guard's."""

    key: str
    limit: int
    seconds_left: float

    @classmethod
    def current(cls, scope: str, request, view, now: float) -> RateWindow | None:
        # Read on every request, not at import as DRF does, so settings (and tests) can change it.
        rate = settings.LICENSE_RATE_LIMITS.get(scope)
        if not rate:
            return None
        # Only once the limit is on: the per-key ident parses the body, and a body the view cannot
        # parse should get the view's own answer, after authentication.
        ident = RATE_LIMIT_IDENTS[scope](request, view)
        if ident is None:
            return None
        number, period = rate.split("/")
        length = PERIOD_SECONDS[period[0]]
        window_number = int(now // length)
        return cls(f"throttle_{scope}_{ident}_{window_number}", int(number), (window_number + 1) * length - now)

    @property
    def timeout(self) -> int:
        return math.ceil(self.seconds_left) + EXPIRY_MARGIN_SECONDS


def license_key_digest(request, view) -> str | None:
    """The per-key limit's ident: the cache holds the key's digest, never the key."""
    # From where the view reads it, never the other place: a decoy there would be a fresh budget.
    data = request.query_params if request.method in ("GET", "HEAD") else request.data
    key = data.get(view.license_key_field) if hasattr(data, "get") else None
    if not isinstance(key, str) or not key.strip():
        return None
    # Stripped: faces that trim the key (Kelviq's DRF fields) must not give " KEY" a fresh budget.
    return keys.digest_license_key(key.strip())


RATE_LIMIT_IDENTS = {"per_ip": lambda request, view: client_ident(request), "per_key": license_key_digest}


class LicenseCallThrottle(BaseThrottle):
    """The rate limits (per client IP, per license key) and the brute-force guard, in one cache read
    and, when the call is allowed, one cache write.

    The guard slows down, then refuses, a client IP that keeps naming keys that match nothing.
    Both happen before the key is looked up, so every call from the IP waits or is refused, valid
    keys included: were a valid key answered, or answered sooner, a guesser would learn which of its
    guesses hit.

    The counters are read, then written back one higher, not incremented in the cache (the database
    cache's incr is a read and a write too, and one more round trip), as DRF's throttles do: calls
    that overlap count once, so a client keeping several calls in flight gets past a limit by up to
    that factor (140 calls, 8 at a time, were counted as 45). The README says so; a hard limit needs
    a gateway's. Refused calls are not counted, so a client that keeps calling gets through again
    once the window ends.
    """

    rate_limits = tuple(RATE_LIMIT_IDENTS)

    def allow_request(self, request, view):
        now = time()
        guard = UnknownKeyWindow(client_ident(request), now)
        counters = [
            window for window in (RateWindow.current(scope, request, view, now) for scope in self.rate_limits) if window
        ]
        wanted = guard.keys + [window.key for window in counters]
        try:
            stored = cache.get_many(wanted) if wanted else {}
        except DatabaseError:
            # The database cache: its failure is the database's, which the call could not answer
            # without either (a license call first retries a lost connection: initial).
            raise
        except Exception:
            # Redis out of reach: the call is answered unlimited rather than not at all. Keys are
            # too long to guess meanwhile, and an app refused stops its user.
            logger.exception("Could not read the rate limits' and the brute-force guard's counters")
            return True

        failures = guard.count(stored)
        refusals = [guard.seconds_left] if guard.blocks(failures) else []
        refusals += [window.seconds_left for window in counters if stored.get(window.key, 0) >= window.limit]
        if refusals:
            self.seconds_left = max(refusals)
            return False

        # One write when both limits count in the same period (the default). Periods that differ get
        # a write each: a minute's counter kept for a day would fill the database cache, which then
        # culls live counters along with it.
        by_expiry = defaultdict(dict)
        for window in counters:
            by_expiry[window.timeout][window.key] = stored.get(window.key, 0) + 1
        for timeout, counts in by_expiry.items():
            try:
                cache.set_many(counts, timeout)
            except DatabaseError:
                raise
            except Exception:
                logger.exception("Could not count a call against the rate limits")
        if delay := guard.delay(failures):
            # The wait holds one of the server's few worker threads, so it stays short (max_delay): a
            # long one would let a handful of parallel guessers hold every thread, and the block
            # stops a guesser soon anyway.
            sleep(delay)
        return True

    def wait(self):
        return self.seconds_left


class LicenseCallLimits:
    """The rate limits and the brute-force guard of an app-facing license call, for every face."""

    throttle_classes = [LicenseCallThrottle]

    def get_throttles(self):
        # With every limit and the guard off (a gateway in front may do it) there is nothing to check
        # before the call, so no throttle works out the client's address for nothing.
        if not any(settings.LICENSE_RATE_LIMITS.values()) and not brute_force_guard_on():
            return []
        return super().get_throttles()

    def dispatch(self, request, *args, **kwargs):
        with guesses_counted(request):
            return super().dispatch(request, *args, **kwargs)

    # The limits' counters (in a database table unless REDIS_URL is set), and on Kelviq and Keymint
    # the API key, are read before the handler runs: a pooled connection that died while idle, as
    # every one does when the database restarts, fails here first. A second try may count this call
    # twice against a rate limit.
    @retry_on_lost_connection
    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)


class ApiKeyGuardThrottle(LicenseCallThrottle):
    """The brute-force guard alone: the vendor's own systems call as often as their work needs."""

    rate_limits = ()


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


class ApiKeyGuard(ThrottleBeforeAuthentication):
    """The brute-force guard on calls authenticated by an API key alone (the management API): an IP
    that keeps sending API keys that are unknown, revoked or expired is slowed down, then refused,
    as on the dialects' license calls, whose window it shares. Only those keys count: the license
    keys the management API looks up are the vendor's own business."""

    throttle_classes = [ApiKeyGuardThrottle]
    # For the OpenAPI description (licensing.api.schema): what this 429 means.
    throttled_because = "This address sent too many unknown, revoked or expired API keys; see Retry-After."

    def get_throttles(self):
        return super().get_throttles() if brute_force_guard_on() else []

    def perform_authentication(self, request):
        # What counts is what the service notes as an unknown key, as on the dialects' calls: a
        # malformed Authorization header is no guess.
        with guesses_counted(request):
            super().perform_authentication(request)
