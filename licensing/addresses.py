"""Where a request comes from, read once for every face: API, dialects, portal and admin."""

from __future__ import annotations

import ipaddress
import re

from rest_framework.throttling import BaseThrottle

# "1.2.3.4:5555" or "[2001:db8::1]:443": some proxies add the client's port to X-Forwarded-For.
_WITH_PORT = re.compile(r"\[(?P<v6>[^\]]+)\](?::\d+)?|(?P<v4>\d{1,3}(?:\.\d{1,3}){3}):\d+")


def client_ip(request) -> str | None:
    """The client's IP address, as audit events, sign-in links and the rate limits record it.

    Behind DJANGO_NUM_PROXIES proxies it is the address the outermost of them added to
    X-Forwarded-For (DRF's rule, which the rate limits use too), else REMOTE_ADDR. When the
    header holds no IP address (a proxy set up otherwise than the setting says), it is the
    connection's address: never text a client wrote, and never nothing, which would let a client
    out of the per-address limits.
    """
    forwarded = _address(BaseThrottle().get_ident(request))
    return forwarded or _address(request.META.get("REMOTE_ADDR"))


def network_of(address: str | None) -> str | None:
    """What the per-client limits count for an address: an IPv4 address itself, an IPv6 address's
    /64 network (any IPv6 host holds a whole /64, so one address each would give it billions of
    budgets)."""
    if address is None:
        return None
    if ipaddress.ip_address(address).version == 6:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return address


def _address(text: object) -> str | None:
    if not isinstance(text, str):
        return None
    text = text.strip()
    if match := _WITH_PORT.fullmatch(text):
        text = match.group("v6") or match.group("v4")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    # A dual-stack listener shows IPv4 clients as ::ffff:1.2.3.4; as IPv6 they would all share one /64.
    return str(getattr(address, "ipv4_mapped", None) or address)
