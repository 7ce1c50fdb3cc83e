"""API-key authentication for the management API, shaped like DRF's TokenAuthentication."""

from __future__ import annotations

import logging

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions

from licensing import keys, services
from licensing.addresses import client_ip

logger = logging.getLogger(__name__)


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <API key>`; request.user and request.auth are the ApiKey."""

    keyword = "Bearer"

    def authenticate(self, request):
        words = authentication.get_authorization_header(request).split()
        if not words or words[0].lower() != self.keyword.lower().encode():
            return None
        if len(words) != 2:
            raise exceptions.AuthenticationFailed("Send the API key as: Authorization: Bearer <key>.")
        try:
            key = words[1].decode()
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("The API key is not valid.") from None
        api_key = services.authenticate_api_key(key)
        if api_key is None:
            # Enough to spot someone guessing keys, or a system still sending a key that expired or was
            # revoked (named as staff know it); the key itself is never logged.
            known = services.find_api_key(key)
            refused = f"{known} (revoked or expired)" if known else f"starting {keys.shown_part_of_api_key(key)!r}"
            logger.warning("Refused API key %s from %s", refused, client_ip(request) or "an unknown address")
            raise exceptions.AuthenticationFailed("The API key is not valid, has been revoked or has expired.")
        return api_key, api_key

    def authenticate_header(self, request):
        return self.keyword


class ApiKeyPermission(permissions.BasePermission):
    """An app's license call: any live API key reads; only a read-write key changes anything."""

    manages = False

    def has_permission(self, request, view):
        if request.auth is None:
            return False
        # DRF makes the permission objects anew for each request: the message is this request's.
        # A view that only reads may take a POST (a key in a body, never in a URL): `reads_only`.
        changes = request.method not in permissions.SAFE_METHODS and not getattr(view, "reads_only", False)
        self.message = services.api_key_refusal(request.auth, changes=changes, manages=self.manages)
        return self.message is None


class ManagementPermission(ApiKeyPermission):
    """The management API: as ApiKeyPermission, and never with a key made for apps."""

    manages = True


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = ApiKeyAuthentication
    name = "apiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "An API key from `manage.py create_api_key`."}
