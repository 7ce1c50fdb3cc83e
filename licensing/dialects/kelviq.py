"""The Kelviq dialect: Kelviq's license API (activate, validate, deactivate) over licensing.services.

Kelviq is a Django REST framework service, so its answers are DRF's own: field errors as
`{"field": ["message"]}`, authentication and request errors as `{"detail": "..."}`, and license
refusals as `{"error": "..."}`. Apps authenticate with a server API key (`Authorization: Bearer`).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from django.urls import re_path
from rest_framework import exceptions, serializers
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework.views import exception_handler as drf_exception_handler

from licensing import errors, lookups, services
from licensing.addresses import client_ip
from licensing.api.authentication import ApiKeyAuthentication, ApiKeyPermission
from licensing.api.negotiation import JSONOnlyNegotiation
from licensing.api.parsers import LimitedJSONParser, too_large_body_as_api_error
from licensing.api.retry import retry_on_lost_connection
from licensing.api.serializers import validated_input
from licensing.api.throttling import LicenseCallLimits, ThrottleBeforeAuthentication
from licensing.models import Activation, License

logger = logging.getLogger(__name__)

# Kelviq's activationLimit is a plain integer. An unlimited license answers the largest limit a
# license can have (it fits a 32-bit int), so typed decoders accept it and `usage < limit` holds;
# null would break decoders of a non-nullable integer, and 0 or -1 would read as "no slots left".
UNLIMITED_ACTIVATION_LIMIT = services.MAX_ACTIVATION_LIMIT

# Our error codes → (HTTP status, Kelviq's `error` message). None: the operation's own not-found
# message ("Invalid license key or customer ID." / "... or instance ID."), as Kelviq answers it.
ERROR_ANSWERS: dict[str, tuple[int, str | None]] = {
    errors.LicenseNotFound.code: (404, None),
    errors.ActivationNotFound.code: (404, None),
    errors.LicenseExpired.code: (403, "This license has expired."),
    errors.ActivationLimitReached.code: (403, "Activation limit reached ({used}/{limit})."),
    errors.LicenseSuspended.code: (403, "This license is suspended."),
    errors.LicenseRevoked.code: (403, "This license has been revoked."),
    errors.ProductInactive.code: (403, "This product is no longer available."),
}

# Validation codes of the service → (HTTP status, Kelviq's code, Kelviq's detail or None for ours).
# Kelviq documents 200 VALID and 404 INVALID_KEY / INSTANCE_NOT_FOUND. A license that exists but may
# not be used now answers 404 too, with its own code: an app that only looks at the status then
# refuses it (fails closed), and one that reads `valid` and `code` learns why.
VALIDATION_ANSWERS: dict[str, tuple[int, str, str | None]] = {
    "VALID": (200, "VALID", "License key is valid."),
    "NOT_FOUND": (404, "INVALID_KEY", "Invalid license key."),
    "NOT_ACTIVATED": (404, "INSTANCE_NOT_FOUND", "Instance ID not found for this license."),
    "EXPIRED": (404, "EXPIRED", None),
    "SUSPENDED": (404, "SUSPENDED", None),
    "REVOKED": (404, "REVOKED", None),
    "PRODUCT_INACTIVE": (404, "PRODUCT_INACTIVE", None),
}

# Names the services give input fields → Kelviq's request fields.
REQUEST_FIELDS = {"key": "licenseKey", "name": "instanceName", "metadata": "metadata", "activation_id": "instanceId"}


# Kelviq's documentation sends camelCase fields, its own SDKs (Python and Node) snake_case.
SNAKE_CASE_FIELDS = {
    "license_key": "licenseKey",
    "instance_id": "instanceId",
    "instance_name": "instanceName",
    "customer_id": "customerId",
}


class KelviqJSONParser(LimitedJSONParser):
    """Kelviq's fields in either case. A name sent in camelCase wins over the same in snake_case;
    the keys inside `metadata` are the app's own and stay as sent."""

    def parse(self, stream, media_type=None, parser_context=None):
        data = super().parse(stream, media_type, parser_context)
        if not isinstance(data, dict):
            return data
        renamed = {SNAKE_CASE_FIELDS[name]: value for name, value in data.items() if name in SNAKE_CASE_FIELDS}
        return {**renamed, **{name: value for name, value in data.items() if name not in SNAKE_CASE_FIELDS}}


def kelviq_exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """Every failure in Kelviq's shape; nothing the client caused becomes a 500."""
    view = context["view"]
    exc = too_large_body_as_api_error(exc)
    if isinstance(exc, errors.InvalidInput):
        field = REQUEST_FIELDS.get(exc.field or "", "non_field_errors")
        return Response({field: [str(exc.message)]}, status=400)
    if isinstance(exc, errors.LicensingError):
        if exc.code not in ERROR_ANSWERS:
            return Response({"error": str(exc.message)}, status=exc.status)
        status, message = ERROR_ANSWERS[exc.code]
        message = view.not_found_message if message is None else message.format(**exc.facts)
        return Response({"error": message}, status=status)
    response = drf_exception_handler(exc, context)
    if response is None:
        logger.exception("Kelviq %s failed", view.operation)
        return Response({"error": view.server_error_message}, status=500)
    return response


class KelviqView(LicenseCallLimits, ThrottleBeforeAuthentication, JSONOnlyNegotiation, APIView):
    license_key_field = "licenseKey"
    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [ApiKeyPermission]
    parser_classes = [KelviqJSONParser]
    renderer_classes = [JSONRenderer]
    # Kelviq's own documentation describes these paths; they stay out of the native OpenAPI schema.
    schema = None
    operation = ""
    not_found_message = "Not found."
    server_error_message = "An error occurred while processing the request."

    def get_exception_handler(self):
        return kelviq_exception_handler

    def actor(self, request: Request) -> services.Actor:
        return services.Actor.app_with_key(request.auth, ip_address=client_ip(request))


def validated(serializer_class: type[serializers.Serializer], request: Request) -> dict[str, Any]:
    return validated_input(serializer_class, request.data)


# ---------------------------------------------------------------- answers


def kelviq_time(moment: datetime | None) -> str | None:
    """Kelviq's date-times, as its documents give them: UTC to the second with a Z
    (2026-01-27T10:33:00Z). Swift's default ISO 8601 decoding refuses fractions of a second."""
    if moment is None:
        return None
    return moment.astimezone(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def license_details(license: License) -> dict[str, Any]:
    """Kelviq's LicenseDetails. The caller holds a server API key, which may read full keys."""
    first_activated = lookups.first_activated_at(license)
    customer = license.customer
    plan = license.plan
    product = license.product
    return {
        "id": str(license.pk),
        "licenseKey": services.reveal_license_key(license),
        "activatedOn": kelviq_time(first_activated),
        "expiresOn": kelviq_time(license.expires_at),
        "activationUsage": license.devices_in_use(),
        "activationLimit": UNLIMITED_ACTIVATION_LIMIT if license.max_activations is None else license.max_activations,
        # Kelviq's switch staff turn off (suspended, revoked here); an expired license stays enabled.
        "enabled": license.status == License.Status.ACTIVE,
        # A license issued here without an owner has no customer to show.
        "customer": (
            {"customerId": customer.reference, "name": customer.name, "email": customer.email} if customer else None
        ),
        # Plans here have no versions: each is its own only, latest version. A license without a
        # plan keeps the plan object with empty plan fields, so license.plan.product still reads;
        # its identifier is "", as Kelviq's SDK requires a string there (null failed every answer).
        "plan": {
            "identifier": plan.identifier if plan else "",
            "name": plan.name if plan else None,
            "description": plan.description if plan else None,
            "version": 1 if plan else None,
            "isLatest": True if plan else None,
            "product": {
                "id": product.public_id,
                "identifier": product.slug,
                "name": product.name,
                # No tax codes here; Kelviq types the field as a string, and typed clients reject null.
                "taxCode": "",
                "createdOn": kelviq_time(product.created_at),
                "modifiedOn": kelviq_time(product.updated_at),
            },
        },
        # Subscriptions are billing, which this server does not do.
        "subscription": None,
    }


# ---------------------------------------------------------------- activate


class KelviqActivateInputSerializer(serializers.Serializer):
    # Trimmed, unlike the other faces' keys: Kelviq's own server is Django REST framework (its field
    # errors are), whose text fields trim, so an app sending a key with a line end works there.
    licenseKey = serializers.CharField()
    # Blank or null means "not given": apps without a customer id send either.
    customerId = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    instanceName = serializers.CharField(
        required=False, allow_blank=True, allow_null=True, max_length=services.MAX_NAME_LENGTH
    )
    metadata = serializers.DictField(required=False, allow_null=True)


class ActivateView(KelviqView):
    operation = "activate"
    not_found_message = "Invalid license key or customer ID."
    server_error_message = "An error occurred during activation processing."

    @retry_on_lost_connection
    def post(self, request):
        data = validated(KelviqActivateInputSerializer, request)
        # Kelviq sends no device identifier: every activation is a new instance.
        result = services.activate_license(
            license_key=data["licenseKey"],
            fingerprint=None,
            name=data.get("instanceName") or "",
            metadata=data.get("metadata") or {},
            customer_id=data.get("customerId") or None,
            actor=self.actor(request),
        )
        activation = result.activation
        body = {
            "instanceId": str(activation.pk),
            "activatedAt": kelviq_time(activation.created_at),
            # Instances here do not expire on their own: an instance lasts as long as its license.
            "expiresOn": kelviq_time(activation.license.expires_at),
            "license": license_details(activation.license),
        }
        return Response(body, status=201)


# ---------------------------------------------------------------- validate


class KelviqValidateInputSerializer(serializers.Serializer):
    licenseKey = serializers.CharField()
    # Text, not a UUID field: an id this server never issued (Kelviq's own example id is not a valid
    # UUID) answers 404 INSTANCE_NOT_FOUND, which apps handle by activating again, not a 400.
    instanceId = serializers.CharField(required=False, allow_blank=True, allow_null=True)


class ValidateView(KelviqView):
    operation = "validate"
    # Validation only reads a license (and counts the check), so a read-only API key may validate.
    permission_classes = [IsAuthenticated]

    @retry_on_lost_connection
    def post(self, request):
        data = validated(KelviqValidateInputSerializer, request)
        instance_id = data.get("instanceId") or None
        result = services.validate_license(
            license_key=data["licenseKey"], activation_id=instance_id, with_first_activation=True
        )
        status, code, detail = VALIDATION_ANSWERS.get(result.code, (404, result.code, None))
        if result.valid and instance_id:
            detail = "Instance ID valid for this license."
        activation: Activation | None = result.activation
        body = {
            "valid": result.valid,
            "code": code,
            "detail": detail or result.detail,
            "metadata": activation.metadata if activation else {},
            "license": license_details(result.license) if result.license else None,
        }
        return Response(body, status=status)


# ---------------------------------------------------------------- deactivate


class KelviqDeactivateInputSerializer(serializers.Serializer):
    licenseKey = serializers.CharField()
    instanceId = serializers.CharField()  # text, as in validate


class DeactivateView(KelviqView):
    operation = "deactivate"
    not_found_message = "Invalid license key or instance ID."

    @retry_on_lost_connection
    def post(self, request):
        data = validated(KelviqDeactivateInputSerializer, request)
        activation = services.find_activation(license_key=data["licenseKey"], activation_id=data["instanceId"])
        result = services.deactivate_activation(activation=activation, actor=self.actor(request))
        if result.already_inactive:
            # Kelviq knows only live instances: one already deactivated no longer exists for it.
            raise errors.ActivationNotFound(field="activation_id")
        body = {
            "message": "License instance deactivated successfully.",
            "deactivatedAt": kelviq_time(result.activation.deactivated_at),
        }
        return Response(body)


class UnknownPathView(KelviqView):
    """Any other path: DRF's JSON 404, as a DRF service answers, not an HTML page."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    operation = "request"

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        raise exceptions.NotFound()


# Kelviq's paths end with a slash; the slash is optional here because a POST to the path without it
# cannot be redirected without losing its body.
urlpatterns = [
    re_path(r"^license/activate/?$", ActivateView.as_view()),
    re_path(r"^license/validate/?$", ValidateView.as_view()),
    re_path(r"^license/deactivate/?$", DeactivateView.as_view()),
    re_path(r"", UnknownPathView.as_view()),
]
