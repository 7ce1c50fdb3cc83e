"""Every error of the native API as {"error": {"code", "message", "field"?, ...facts}}."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import NON_FIELD_ERRORS
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from django.urls import reverse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import exception_handler as drf_exception_handler

from licensing import errors
from licensing.api.parsers import RequestTooLarge, too_large_body_as_api_error
from licensing.models import Activation

DRF_ERROR_CODES = [
    (exceptions.ParseError, "malformed_request"),
    (exceptions.NotAuthenticated, "unauthorized"),
    (exceptions.AuthenticationFailed, "unauthorized"),
    (exceptions.PermissionDenied, "forbidden"),
    (exceptions.NotFound, "not_found"),
    (exceptions.MethodNotAllowed, "method_not_allowed"),
    (exceptions.NotAcceptable, "not_acceptable"),
    (exceptions.UnsupportedMediaType, "unsupported_media_type"),
    (exceptions.Throttled, "rate_limited"),
    (RequestTooLarge, "request_too_large"),
]


SERVER_ERROR = "server_error"
SERVER_ERROR_MESSAGE = "The server could not answer. Try again."
# Refusals only the portal's or the admin's pages give.
PAGE_ONLY_ERRORS = {errors.SignInLinkInvalid, errors.TooManyRequests, errors.ChangedMeanwhile}


def error_codes() -> list[str]:
    """Every code an API error body can carry, for the schema."""
    licensing_codes = {
        kind.code
        for kind in vars(errors).values()
        if isinstance(kind, type)
        and issubclass(kind, errors.LicensingError)
        and kind not in {errors.LicensingError, *PAGE_ONLY_ERRORS}
    }
    return sorted(licensing_codes | {code for _, code in DRF_ERROR_CODES} | {"invalid_input", SERVER_ERROR})


def error_body(code: str, message: str, field: str | None = None, **facts: Any) -> dict[str, Any]:
    error = {"code": code, "message": message}
    if field:
        error["field"] = field
    return {"error": {**error, **facts}}


def mask_fingerprint(fingerprint: str | None) -> str | None:
    """Show enough of a device id to recognise it, never enough to reuse it."""
    if not fingerprint:
        return None
    return "…" + fingerprint[-4:] if len(fingerprint) > 8 else "…"


def live_devices(license) -> list[dict[str, Any]]:
    return [
        {
            "id": str(activation.pk),
            "name": activation.name,
            "platform": activation.platform,
            "fingerprint": mask_fingerprint(activation.fingerprint),
            "created_at": activation.created_at,
            "last_seen_at": activation.last_seen_at,
        }
        for activation in Activation.objects.filter(license=license).live().order_by("created_at")
    ]


def licensing_error_facts(error: errors.LicensingError) -> dict[str, Any]:
    facts = {name: value for name, value in error.facts.items() if name != "license"}
    if isinstance(error, errors.ActivationLimitReached):
        facts["devices"] = live_devices(error.facts["license"])
        # Where the person at the new device can free one of them; only a configured address, as
        # a request's Host header is the caller's to choose.
        facts["portal_url"] = settings.PUBLIC_URL + reverse("portal:sign-in") if settings.PUBLIC_URL else None
    return facts


def first_error(detail: Any, prefix: str = "") -> tuple[str | None, str]:
    """Return the first (field path, message) in a DRF validation detail."""
    if isinstance(detail, dict):
        name, value = next(iter(detail.items()))
        field = None if name == "non_field_errors" else f"{prefix}{name}"
        nested_field, message = first_error(value, prefix=f"{field}." if field else prefix)
        return nested_field or field, message
    if isinstance(detail, list) and detail:
        return first_error(detail[0], prefix)
    return None, str(detail)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    exc = too_large_body_as_api_error(exc)
    if isinstance(exc, errors.LicensingError):
        facts = licensing_error_facts(exc)
        if isinstance(exc, errors.InvalidInput) or "errors" in facts:
            # Shaped as the serializers' refusals are, whichever check refused: code reading `errors`
            # finds every invalid_input's fields there (and a duplicate's).
            field_errors = facts.get("errors") or {exc.field: [str(exc.message)]}
            facts["errors"] = {
                (api_settings.NON_FIELD_ERRORS_KEY if name in (None, NON_FIELD_ERRORS) else name): messages
                for name, messages in field_errors.items()
            }
        body = error_body(exc.code, str(exc.message), exc.field, **facts)
        return Response(body, status=exc.status)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        field, message = first_error(exc.detail)
        response.data = error_body("invalid_input", message, field, errors=exc.detail)
        response.status_code = status.HTTP_400_BAD_REQUEST
        return response
    code = next((code for kind, code in DRF_ERROR_CODES if isinstance(exc, kind)), "error")
    message = str(exc.detail)
    facts = {"retry_after": exc.wait} if isinstance(exc, exceptions.Throttled) and exc.wait else {}
    response.data = error_body(code, message, **facts)
    return response
