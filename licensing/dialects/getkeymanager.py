"""GetKeyManager (formerly Keevault): verify, activate, deactivate and get-license-key-details.

Requests are form-encoded POSTs (multipart and JSON are read too) carrying `api_key` (or
`Authorization: Bearer`), `license_key` and `identifier` (our fingerprint). Every answer is
GetKeyManager's envelope: `response` {code, message, ...extra, timestamp}, `response_base64` (the
exact JSON bytes of `response`), `private_key_used` and `signature`, an RSA PKCS#1 v1.5 SHA-256
signature over those bytes made with the product's own RSA key, else the install-wide one. Apps
embed GetKeyManager's public key, which is why the vendor imports its private keys here.

Logical failures are HTTP 200, as at GetKeyManager; only refused API keys are HTTP 401. Codes are
JSON numbers: the vendor's documents show both "400" and 400, and its clients compare loosely.
"""

from __future__ import annotations

import base64
import calendar
import contextlib
import json
import logging
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import SuspiciousOperation
from django.urls import path, re_path
from django.utils import timezone
from rest_framework import authentication, exceptions, parsers, status
from rest_framework.negotiation import BaseContentNegotiation, DefaultContentNegotiation
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from licensing import errors, services, signing
from licensing.addresses import client_ip
from licensing.api.negotiation import JSONOnlyNegotiation
from licensing.api.parsers import LimitedJSONParser, RequestTooLarge, too_large_body_as_api_error
from licensing.api.retry import retry_on_lost_connection
from licensing.api.throttling import LicenseCallLimits
from licensing.models import Activation, ApiKey, License, Product

logger = logging.getLogger(__name__)

# Messages are not translated: apps built for GetKeyManager may compare them.
VALID = (200, "License key is valid")
ACTIVATED = (300, "License key activated")
ALREADY_ACTIVE = (301, "License key already active")
DEACTIVATED = (400, "License key deactivated")
ALREADY_INACTIVE = (401, "License key already inactive")
DETAILS_FOUND = (500, "Active license key found")
INVALID_LICENSE_KEY = (210, "Invalid license key")
IDENTIFIER_REQUIRED = (215, "Identifier is required")
API_KEY_INVALID = (100, "Invalid API key")
API_KEY_INACTIVE = (101, "API key is inactive")
API_KEY_NO_PERMISSION = (102, "API key has no permission for this endpoint")
# Outside GetKeyManager's codes, so no app mistakes it for any answer it knows.
SERVER_ERROR = (900, "The server could not answer. Try again.")

# Our errors as GetKeyManager answers them. The only exception: deactivate answers an identifier
# that never activated as "already inactive" (see DeactivateView).
ANSWERS: dict[type[errors.LicensingError], tuple[int, str]] = {
    errors.LicenseNotFound: INVALID_LICENSE_KEY,
    errors.ActivationNotFound: (202, "License key is not active for this identifier"),
    errors.ProductInactive: (203, "Product is inactive"),
    errors.LicenseSuspended: (204, "License key is blocked"),
    errors.LicenseRevoked: (204, "License key is blocked"),
    errors.LicenseExpired: (205, "License key has expired"),
    errors.ActivationLimitReached: (302, "Activation limit reached"),
    # Polar's conditions and usage quota: GetKeyManager's calls send neither, so verify never meets
    # these; mapped so that every validation code has an answer.
    errors.ConditionsMismatch: (202, "License key is not active for this identifier"),
    errors.UsageLimitReached: (204, "License key is blocked"),
    # The plan's anti-churn policy: a freed slot still cooling down is not free yet, and GetKeyManager
    # has no code for "too many device changes", so its access-denied code answers that.
    errors.SlotCoolingDown: (302, "Activation limit reached"),
    errors.DeactivationLimitReached: (150, "Access denied: no device changes left for now"),
}


class Refused(Exception):
    """An answer given before the licensing call: a refused API key or unusable input."""

    def __init__(self, answer: tuple[int, str], *, http_status: int = status.HTTP_200_OK, message: str = "") -> None:
        self.code, default_message = answer
        self.message = message or default_message
        self.http_status = http_status
        super().__init__(self.message)


# ---------------------------------------------------------------- parsing


class _BoundedFormMixin:
    """Form bodies get the JSON parser's size cap, and an unreadable one is bad input, never a server error."""

    def parse(self, stream, media_type=None, parser_context=None):
        request = (parser_context or {}).get("request")
        limit = settings.API_MAX_BODY_BYTES
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0) if request is not None else 0
        except ValueError:
            length = 0
        if length > limit:
            raise RequestTooLarge(f"The request body must be at most {limit} bytes.")
        try:
            return super().parse(stream, media_type, parser_context)
        except (SuspiciousOperation, LookupError, UnicodeError, ValueError):
            raise exceptions.ParseError("The request body could not be read.") from None


class GetKeyManagerFormParser(_BoundedFormMixin, parsers.FormParser):
    pass


class GetKeyManagerMultiPartParser(_BoundedFormMixin, parsers.MultiPartParser):
    pass


class JSONAnswersOnly(BaseContentNegotiation):
    """GetKeyManager answers JSON whatever the client's Accept header says."""

    def select_parser(self, request, parsers):
        return DefaultContentNegotiation().select_parser(request, parsers)

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


def _text(data: Mapping, name: str) -> str | None:
    value = data.get(name)
    return value if isinstance(value, str) and services.is_encodable(value) else None


def license_key_from(data: Mapping) -> str:
    # A missing or unusable key is simply not a valid key, as GetKeyManager answers it.
    license_key = _text(data, "license_key")
    if not license_key:
        raise Refused(INVALID_LICENSE_KEY)
    return license_key


def identifier_from(data: Mapping) -> str:
    identifier = _text(data, "identifier")
    if identifier is None or not identifier.strip():
        raise Refused(IDENTIFIER_REQUIRED)
    # Measured as stored: without the spaces and line end around it, as every face trims a device id.
    if len(identifier.strip()) > services.MAX_FINGERPRINT_LENGTH:
        raise Refused(
            IDENTIFIER_REQUIRED,
            message=f"The identifier must be at most {services.MAX_FINGERPRINT_LENGTH} characters.",
        )
    if "\x00" in identifier:
        # PostgreSQL cannot compare text holding NUL; no identifier can contain one.
        raise Refused(IDENTIFIER_REQUIRED, message="The identifier must not contain NUL characters.")
    return identifier


def api_key_from(request: Request, data: Mapping) -> str | None:
    """The `api_key` field, else `Authorization: Bearer <key>`."""
    if key := _text(data, "api_key"):
        return key
    words = authentication.get_authorization_header(request).split()
    if len(words) == 2 and words[0].lower() == b"bearer":
        try:
            return words[1].decode()
        except UnicodeDecodeError:
            return None
    return None


def authenticate(request: Request, data: Mapping, *, writes: bool) -> ApiKey:
    key = api_key_from(request, data)
    api_key = services.authenticate_api_key(key) if key else None
    if api_key is None:
        known = services.find_api_key(key) if key else None
        answer = API_KEY_INACTIVE if known is not None else API_KEY_INVALID
        raise Refused(answer, http_status=status.HTTP_401_UNAUTHORIZED)
    if services.api_key_refusal(api_key, changes=writes, manages=False):
        raise Refused(API_KEY_NO_PERMISSION, http_status=status.HTTP_401_UNAUTHORIZED)
    return api_key


# ---------------------------------------------------------------- rendering


def response_bytes(response: dict[str, Any]) -> bytes:
    """`response` as GetKeyManager's PHP writes it (json_encode: compact, ASCII, "/" escaped), so an app that
    re-encodes the decoded `response` to check the signature gets the same bytes for text and numbers."""
    return json.dumps(response, separators=(",", ":")).replace("/", "\\/").encode()


def signed_envelope(response: dict[str, Any], *, product: Product | None) -> dict[str, Any]:
    """Serialize `response` once; base64 and sign those same bytes, so apps can check either."""
    payload = response_bytes(response)
    rsa_key = services.rsa_key_for(product)
    signature = signing.rsa_sign(payload, private_key_encrypted=rsa_key.private_key_encrypted)
    return {
        "response": response,
        "response_base64": base64.b64encode(payload).decode(),
        "private_key_used": "product" if rsa_key.product_id else "global",
        "signature": base64.b64encode(signature).decode(),
    }


def unix_time(moment: datetime | None) -> int | None:
    # Whole seconds counted exactly: through a float, the last microsecond of 9999 reads as 10000.
    return calendar.timegm(moment.utctimetuple()) if moment is not None else None


def license_details(license: License, activation: Activation, *, license_key: str) -> dict[str, Any]:
    return {
        "licenseKey": {
            "license_key": license_key,
            "status": license.status,
            "activation_limit": license.max_activations,
            "activations": license.devices_in_use(),
            "identifier": activation.fingerprint,
            "activated_at": unix_time(activation.created_at),
            "created_at": unix_time(license.created_at),
            "expires_at": unix_time(license.expires_at),
            "plan": {"identifier": license.plan.identifier, "name": license.plan.name} if license.plan else None,
            "metadata": license.metadata,
        },
        "product": {"id": license.product.public_id, "name": license.product.name, "slug": license.product.slug},
    }


# ---------------------------------------------------------------- views


class GetKeyManagerView(LicenseCallLimits, JSONOnlyNegotiation, APIView):
    """Parse, authenticate, call one service, and answer in GetKeyManager's signed envelope, errors included."""

    license_key_field = "license_key"
    authentication_classes: list = []
    permission_classes = [AllowAny]
    parser_classes = [GetKeyManagerFormParser, GetKeyManagerMultiPartParser, LimitedJSONParser]
    renderer_classes = [JSONRenderer]
    content_negotiation_class = JSONAnswersOnly
    metadata_class = None  # OPTIONS is answered as a method not allowed, in the envelope
    schema = None  # the OpenAPI schema describes the native API; GetKeyManager documents its own
    writes = False
    # The license's product once it is known, so its own RSA key signs (errors included).
    product: Product | None = None

    @retry_on_lost_connection
    def post(self, request: Request) -> Response:
        data = request.data if isinstance(request.data, Mapping) else {}
        api_key = authenticate(request, data, writes=self.writes)
        license_key = license_key_from(data)
        try:
            identifier = identifier_from(data)
        except Refused:
            # GetKeyManager signs with the global key only when no product could be resolved.
            with contextlib.suppress(errors.LicenseNotFound):
                self.product = services.get_license_by_key(license_key).product
            raise
        return self.call(
            license_key=license_key,
            identifier=identifier,
            actor=services.Actor.app_with_key(api_key, ip_address=client_ip(request)),
        )

    def call(self, *, license_key: str, identifier: str, actor: services.Actor) -> Response:
        raise NotImplementedError

    def answer(self, answer: tuple[int, str], *, http_status: int = status.HTTP_200_OK, **extra: Any) -> Response:
        code, message = answer
        response = {"code": code, "message": message, **extra, "timestamp": unix_time(timezone.now())}
        return Response(signed_envelope(response, product=self.product), status=http_status)

    def handle_exception(self, exc: Exception) -> Response:
        answer, http_status = self.error_answer(exc)
        try:
            response = self.answer(answer, http_status=http_status)
            if isinstance(exc, exceptions.Throttled) and exc.wait:
                response["Retry-After"] = str(math.ceil(exc.wait))
            return response
        except Exception:
            logger.exception("GetKeyManager answer could not be signed")
            response = {"code": SERVER_ERROR[0], "message": SERVER_ERROR[1], "timestamp": unix_time(timezone.now())}
            body = {
                "response": response,
                "response_base64": base64.b64encode(response_bytes(response)).decode(),
                "private_key_used": "global",
                "signature": "",
            }
            return Response(body, status=status.HTTP_500_INTERNAL_SERVER_ERROR)

    def error_answer(self, exc: Exception) -> tuple[tuple[int, str], int]:
        exc = too_large_body_as_api_error(exc)
        if isinstance(exc, Refused):
            return (exc.code, exc.message), exc.http_status
        if type(exc) in ANSWERS:
            answer = ANSWERS[type(exc)]
            # GetKeyManager answers its access-denied code with HTTP 403, every other code with 200.
            return answer, status.HTTP_403_FORBIDDEN if answer[0] == 150 else status.HTTP_200_OK
        if isinstance(exc, errors.InvalidInput):
            # The identifier is the only input the services check here (as the fingerprint).
            return (IDENTIFIER_REQUIRED[0], str(exc.message)), status.HTTP_200_OK
        if isinstance(exc, errors.LicensingError):
            # A refusal this table does not name yet: refused by state is access denied, else invalid.
            if exc.status == status.HTTP_403_FORBIDDEN:
                return (150, str(exc.message)), status.HTTP_403_FORBIDDEN
            return (INVALID_LICENSE_KEY[0], str(exc.message)), status.HTTP_200_OK
        if isinstance(exc, exceptions.Throttled):
            # GetKeyManager documents no rate-limit code: like a wrong path, the code repeats the status.
            return (exc.status_code, "Too many requests. Try again later."), exc.status_code
        if isinstance(exc, exceptions.NotFound | exceptions.MethodNotAllowed):
            # GetKeyManager has no code for a wrong path or method: the code repeats the HTTP status.
            return (exc.status_code, str(exc.detail)), exc.status_code
        if isinstance(exc, exceptions.APIException):
            # Unreadable, unsupported or oversized bodies: bad input, which GetKeyManager answers as 215.
            return (IDENTIFIER_REQUIRED[0], str(exc.detail)), status.HTTP_200_OK
        if isinstance(exc, SuspiciousOperation):
            return (IDENTIFIER_REQUIRED[0], "The request body could not be read."), status.HTTP_200_OK
        logger.error("GetKeyManager call failed", exc_info=exc)
        return SERVER_ERROR, status.HTTP_500_INTERNAL_SERVER_ERROR


class VerifyView(GetKeyManagerView):
    def call(self, *, license_key: str, identifier: str, actor: services.Actor) -> Response:
        result = services.validate_license(license_key=license_key, fingerprint=identifier)
        self.product = result.license.product if result.license else None
        if result.valid:
            return self.answer(VALID)
        return self.answer(ANSWERS[type(result.problem)])


class ActivateView(GetKeyManagerView):
    writes = True

    def call(self, *, license_key: str, identifier: str, actor: services.Actor) -> Response:
        self.product = services.get_license_by_key(license_key).product
        result = services.activate_license(license_key=license_key, fingerprint=identifier, actor=actor)
        return self.answer(ACTIVATED if result.created else ALREADY_ACTIVE)


class DeactivateView(GetKeyManagerView):
    writes = True

    def call(self, *, license_key: str, identifier: str, actor: services.Actor) -> Response:
        self.product = services.get_license_by_key(license_key).product
        try:
            activation = services.find_activation(license_key=license_key, fingerprint=identifier)
        except errors.ActivationNotFound:
            # GetKeyManager leaves an identifier that never activated open. "Already inactive" is true
            # (it holds no slot) and is what an app deactivating on uninstall treats as done.
            return self.answer(ALREADY_INACTIVE)
        result = services.deactivate_activation(activation=activation, actor=actor)
        return self.answer(ALREADY_INACTIVE if result.already_inactive else DEACTIVATED)


class LicenseKeyDetailsView(GetKeyManagerView):
    def call(self, *, license_key: str, identifier: str, actor: services.Actor) -> Response:
        license = services.get_license_by_key(license_key)
        self.product = license.product
        # "Active license key found" must not be said of a blocked or expired key: answer as verify does.
        if problem := services.license_problem(license):
            raise problem
        activation = services.find_activation(license_key=license_key, fingerprint=identifier)
        if not activation.is_live:
            raise errors.ActivationNotFound()
        return self.answer(DETAILS_FOUND, **license_details(license, activation, license_key=license_key))


class UnknownEndpointView(GetKeyManagerView):
    """Any other path under the prefix: GetKeyManager's envelope, not Django's HTML page."""

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        raise exceptions.NotFound("There is no such GetKeyManager endpoint.")


urlpatterns = [
    path("verify", VerifyView.as_view()),
    path("activate", ActivateView.as_view()),
    path("deactivate", DeactivateView.as_view()),
    path("get-license-key-details", LicenseKeyDetailsView.as_view()),
    re_path(r"", UnknownEndpointView.as_view()),
]
