"""Rate limits on the public license calls of every face, per client IP and per license key.

Counters live in Django's cache (a database table by default, Redis with REDIS_URL), so every
server process and host shares them. Each face answers a refusal as 429 with Retry-After in its
own shape, through its own handler of DRF's Throttled error.
"""

from __future__ import annotations

from django.conf import settings
from rest_framework.throttling import SimpleRateThrottle

from licensing import keys


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


LICENSE_CALL_THROTTLES = [LicenseCallIPThrottle, LicenseKeyThrottle]


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
