"""Where a request comes from, read once for every face: API, dialects, portal and admin."""

from __future__ import annotations

import ipaddress

from rest_framework.throttling import BaseThrottle


def client_ip(request) -> str | None:
    """The client's IP address, as audit events, sign-in links and the rate limits record it.

    Behind DJANGO_NUM_PROXIES proxies it is the address the outermost of them added to
    X-Forwarded-For (DRF's rule, which the rate limits use too), else REMOTE_ADDR. None when that is
    no IP address (a misconfigured proxy): an audit record must not hold what a client wrote.
    """
    ident = BaseThrottle().get_ident(request)
    try:
        return str(ipaddress.ip_address(ident.strip()))
    except (ValueError, AttributeError):
        return None
