"""Keymint's license API, both generations, so an app built for Keymint works by changing its base URL.

Legacy paths (`/activate-key`, `/get-key`, ...) answer in snake_case, current ones (`/key/activate`,
`GET /key`, ...) in camelCase. Every body carries Keymint's numeric `code`: 0 success, 1 bad input,
bad token or not found, 2 refused by the key's state or a conflict, 3 rate limited (with
Retry-After). The access token is an API key of this server.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from django.urls import path, re_path
from django.utils import timezone
from rest_framework import authentication, exceptions, permissions
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from licensing import errors, services
from licensing.addresses import client_ip
from licensing.api.negotiation import JSONOnlyNegotiation
from licensing.api.parsers import LimitedJSONParser, RequestTooLarge, too_large_body_as_api_error
from licensing.api.retry import retry_on_lost_connection
from licensing.api.throttling import LicenseCallLimits, ThrottleBeforeAuthentication
from licensing.api.views import IdempotentChanges
from licensing.models import Customer, License, Product, add_months

logger = logging.getLogger(__name__)

# Keymint documents these bounds for productId, licenseKey and hostId. Its minimums (22 and 23
# characters) are not enforced: keys imported from elsewhere and this server's demo keys are shorter.
MAX_ID_LENGTH = 256
MAX_HOST_ID_LENGTH = 64


class KeymintError(Exception):
    """An answer the dialect gives on its own: HTTP status, Keymint's numeric code, message."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def missing_params() -> KeymintError:
    return KeymintError(400, 1, "Missing required params")


# ---------------------------------------------------------------- errors: one table, one handler

# Our service errors as Keymint answers them: (HTTP status, code, message; None keeps the service's).
LICENSING_ERRORS: dict[type[errors.LicensingError], tuple[int, int, str | None]] = {
    errors.InvalidInput: (400, 1, None),
    errors.LicenseNotFound: (404, 1, "Invalid license key"),
    # Keymint answers a key of an inactive product as an unknown key (its block, unblock and create
    # documents say "not found, or product is inactive").
    errors.ProductInactive: (404, 1, "Invalid license key"),
    errors.ActivationNotFound: (404, 1, "Device not found"),
    errors.LicenseExpired: (403, 2, "License expired"),
    errors.LicenseSuspended: (403, 2, "License blocked"),
    errors.LicenseRevoked: (403, 2, "License revoked"),
    errors.ActivationLimitReached: (403, 2, "Activation limit reached"),
    errors.InvalidStatusChange: (409, 2, None),
    errors.DuplicateRecord: (409, 2, None),
    errors.DuplicateLicenseKey: (409, 2, None),
    # A conflict, in Keymint's codes (its statuses have no 422).
    errors.IdempotencyKeyReused: (409, 2, None),
}

DRF_ERRORS: list[tuple[type[exceptions.APIException], int, int, str | None]] = [
    (exceptions.NotAuthenticated, 401, 1, "Invalid access token"),
    (exceptions.AuthenticationFailed, 401, 1, "Invalid access token"),
    # Keymint answers a token that lacks the scope an operation needs with 401 and this message
    # (its authentication and error-code pages); here that is a read-only key changing anything, or
    # a key made for apps creating or blocking.
    (exceptions.PermissionDenied, 401, 1, "Insufficient permissions for this operation"),
    (RequestTooLarge, 413, 1, None),
    (exceptions.ParseError, 400, 1, None),
    (exceptions.UnsupportedMediaType, 415, 1, "Send the body as JSON (Content-Type: application/json)"),
    (exceptions.MethodNotAllowed, 405, 1, "Method not allowed"),
    (exceptions.NotFound, 404, 1, "Not found"),
]


def error_answer(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response({"message": message, "code": code}, status=status, headers=headers)


def licensing_error_answer(exc: errors.LicensingError, vendor_fields: dict[str, str]) -> Response:
    kind = next((kind for kind in type(exc).__mro__ if kind in LICENSING_ERRORS), None)
    if kind is None:
        status, code, message = exc.status, 2 if exc.status in (403, 409) else 1, None
    else:
        status, code, message = LICENSING_ERRORS[kind]
    if message is None:
        message = str(exc.message)
        # Input errors name the request field; a refusal by state (status, ...) speaks for itself.
        if exc.field and isinstance(exc, errors.InvalidInput):
            message = f"{vendor_fields.get(exc.field, exc.field)}: {message}"
    return error_answer(status, code, message)


def keymint_exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """Answer every failure as Keymint does, `{"message", "code"}`; never a 500 the client caused."""
    exc = too_large_body_as_api_error(exc)
    if isinstance(exc, KeymintError):
        return error_answer(exc.status, exc.code, exc.message)
    if isinstance(exc, errors.LicensingError):
        return licensing_error_answer(exc, getattr(context.get("view"), "vendor_fields", {}))
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if not isinstance(exc, exceptions.APIException):
        logger.exception("Keymint call failed", exc_info=exc)
        return error_answer(500, 1, "Server error")
    status, code, message = exc.status_code, 3 if exc.status_code == 429 else 1, None
    for kind, kind_status, kind_code, kind_message in DRF_ERRORS:
        if isinstance(exc, kind):
            status, code, message = kind_status, kind_code, kind_message
            break
    headers = {"WWW-Authenticate": exc.auth_header} if getattr(exc, "auth_header", None) else None
    if isinstance(exc, exceptions.Throttled) and exc.wait:
        headers = {"Retry-After": str(math.ceil(exc.wait))}
    return error_answer(status, code, message or str(exc.detail), headers)


# ---------------------------------------------------------------- authentication


class KeymintTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <API key of this server>`, what Keymint calls the access token."""

    def authenticate(self, request):
        words = authentication.get_authorization_header(request).split()
        if len(words) != 2 or words[0].lower() != b"bearer":
            raise exceptions.NotAuthenticated()
        try:
            api_key = services.authenticate_api_key(words[1].decode())
        except UnicodeDecodeError:
            api_key = None
        if api_key is None:
            raise exceptions.AuthenticationFailed()
        return api_key, api_key

    def authenticate_header(self, request):
        return "Bearer"


class KeymintTokenPermission(permissions.BasePermission):
    """Any live API key reads keys; activating, deactivating, creating and blocking need a read-write
    key, as on every face of this server (Kelviq answers 403 and GetKeyManager 102 for the same);
    creating and blocking, the vendor's business, never take a key made for apps."""

    def has_permission(self, request, view):
        if request.auth is None:
            return False
        refusal = services.api_key_refusal(
            request.auth, changes=request.method in view.write_methods, manages=request.method in view.manage_methods
        )
        return refusal is None


class JSONAnswers(DefaultContentNegotiation):
    """Always answer JSON, whatever Accept says: Keymint clients expect nothing else."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


# ---------------------------------------------------------------- input


def json_body(request: Request) -> dict[str, Any]:
    if not isinstance(request.data, dict):
        raise KeymintError(400, 1, "The request body must be a JSON object")
    return request.data


def text(
    data: Any,
    name: str,
    *,
    required: bool = True,
    max_length: int = MAX_ID_LENGTH,
    label: str | None = None,
    blank_is_absent: bool = False,
) -> str | None:
    """Return a string field; absent or null is None (or Missing required params when required)."""
    value = data.get(name)
    name = label or name
    if value is None or ((required or blank_is_absent) and value == ""):
        if required:
            raise missing_params()
        return None
    if not isinstance(value, str):
        raise KeymintError(400, 1, f"{name} must be a string")
    if not value:
        raise KeymintError(400, 1, f"{name} must not be empty")
    if len(value) > max_length:
        raise KeymintError(400, 1, f"{name} must be at most {max_length} characters")
    if "\x00" in value or not services.is_encodable(value):
        raise KeymintError(400, 1, f"{name} must be valid text")
    return value


def find_key(data: Any) -> tuple[License, str]:
    """Return the license of `licenseKey` if it belongs to `productId` (else Invalid license key)."""
    product_id, license_key = text(data, "productId"), text(data, "licenseKey")
    return services.find_license(license_key=license_key, product_public_id=product_id), license_key


def activation_limit(value: Any) -> int | None:
    """`maxActivations`: a numeric string such as "5" (a number is taken too); absent or null is unlimited."""
    if value is None:
        return None
    if isinstance(value, str) and value.isascii() and value.isdigit():
        # Twelve digits are past any limit, and enough for the service to say the number is too
        # big; thousands would be slow to read whole.
        return int((value.lstrip("0") or "0")[:12])
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise KeymintError(400, 1, 'maxActivations must be a whole number, such as "5"')


def expiry(value: Any) -> datetime:
    """`expiryDate`: an ISO 8601 date-time (UTC when it names no zone); absent or null is a month from now."""
    if value is None:
        return add_months(timezone.now(), 1)
    try:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        moment = None
    if moment is None:
        raise KeymintError(400, 1, "expiryDate must be an ISO 8601 date-time, such as 2025-06-30T23:59:59Z")
    if timezone.is_naive(moment):
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise KeymintError(400, 1, "expiryDate must be from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z") from None


def customer_by_reference(reference: str) -> Customer:
    """The customer Keymint's `customerId` names (see services.find_customer)."""
    customer = services.find_customer(reference)
    if customer is None:
        raise KeymintError(404, 1, f"Customer with ID {reference} not found")
    return customer


# ---------------------------------------------------------------- output


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.capitalize() for word in rest)


def camelize(value: Any) -> Any:
    if isinstance(value, dict):
        # A license's metadata is the vendor's own, its keys answered as they were stored.
        return {camel(name): item if name == "metadata" else camelize(item) for name, item in value.items()}
    if isinstance(value, list):
        return [camelize(item) for item in value]
    return value


def iso(moment: datetime | None) -> str | None:
    """Keymint's date-times: UTC with milliseconds and a Z, like 2025-10-01T18:45:49.305Z."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def license_extras(license: License) -> dict[str, Any]:
    """What Keymint's SDK reads of a license on activate and get beside its devices. This server has
    no product versions and no list of allowed hosts, so those are Keymint's empty values."""
    return {
        "expiration_date": iso(license.expires_at),
        "metadata": license.metadata,
        "version_id": None,
        "version": None,
        "allowed_hosts": None,
    }


def key_details(license: License) -> dict[str, Any]:
    devices = list(license.activations.live().order_by("created_at"))
    customer = license.customer
    return {
        "license": {
            "id": str(license.id),
            "key": services.reveal_license_key(license),
            "product_id": license.product.public_id,
            "max_activations": license.max_activations,
            "activations": len(devices),
            "devices": [
                {
                    "host_id": device.fingerprint,
                    "device_tag": device.name or None,
                    "ip_address": device.ip_address,
                    "activation_time": iso(device.created_at),
                }
                for device in devices
            ],
            # Keymint's `activated` is the key's own on/off switch (block/unblock), not "has devices".
            "activated": license.status == License.Status.ACTIVE,
            **license_extras(license),
        },
        # This server has no disabled customers, so every customer is active.
        "customer": (
            {"id": customer.reference, "name": customer.name or None, "email": customer.email, "active": True}
            if customer
            else None
        ),
    }


# ---------------------------------------------------------------- views


class KeymintView(LicenseCallLimits, ThrottleBeforeAuthentication, JSONOnlyNegotiation, APIView):
    authentication_classes = [KeymintTokenAuthentication]
    permission_classes = [KeymintTokenPermission]
    parser_classes = [LimitedJSONParser]
    renderer_classes = [JSONRenderer]
    content_negotiation_class = JSONAnswers
    license_key_field = "licenseKey"
    # OPTIONS is a wrong method too, not DRF's description of the view.
    metadata_class = None
    # A vendor's API, not part of this server's own OpenAPI description.
    schema = None
    # Methods a read-only API key may not call, and those a key made for apps may not call.
    write_methods: frozenset[str] = frozenset()
    manage_methods: frozenset[str] = frozenset()
    # The legacy paths answer in snake_case, the current ones in camelCase.
    camel_case = False
    # Our field names as this call's client knows them, for input error messages.
    vendor_fields: dict[str, str] = {}

    def get_exception_handler(self):
        return keymint_exception_handler

    def actor(self, request: Request) -> services.Actor:
        """Who a call acts as: the vendor's own systems for a key's management calls (create, block,
        unblock), else the app the key is built into."""
        if request.method in self.manage_methods:
            return services.Actor.api_key(request.auth, ip_address=client_ip(request))
        return services.Actor.app_with_key(request.auth, ip_address=client_ip(request))

    def answer(self, body: dict[str, Any]) -> Response:
        return Response(camelize(body) if self.camel_case else body)


class ActivateKeyView(KeymintView):
    """Activate a device, or check a key: apps call it at every start (Keymint has no validate call)."""

    write_methods = frozenset({"POST"})
    vendor_fields = {"fingerprint": "hostId", "name": "deviceTag"}

    @retry_on_lost_connection
    def post(self, request):
        data = json_body(request)
        license, license_key = find_key(data)
        host_id = text(data, "hostId", required=False, max_length=MAX_HOST_ID_LENGTH)
        # Keymint sets no minimum length for the tag: an app that fills it from an empty host name
        # sends "", which names no tag (a 400 would stop the app from starting at all).
        device_tag = text(data, "deviceTag", required=False, max_length=services.MAX_NAME_LENGTH, blank_is_absent=True)
        result = services.activate_license(
            license_key=license_key, fingerprint=host_id, name=device_tag or "", actor=self.actor(request)
        )
        if not result.created:
            # A live device checking its key: count the check as a validation (activating again has
            # already moved its last-seen time).
            services.count_check(result.activation)
        customer = license.customer
        return self.answer(
            {
                "code": 0,
                "message": "License valid",
                "licensee_name": (customer.name or None) if customer else None,
                "licensee_email": customer.email if customer else None,
                **license_extras(license),
            }
        )


class DeactivateKeyView(KeymintView):
    """Free one device (`hostId`), or every device of the key when no hostId is sent."""

    write_methods = frozenset({"POST"})

    @retry_on_lost_connection
    def post(self, request):
        data = json_body(request)
        try:
            license, license_key = find_key(data)
        except errors.LicenseNotFound:
            # Keymint's deactivate has one not-found answer, for the product, the key and the device.
            raise KeymintError(404, 1, "Device not found") from None
        host_id = text(data, "hostId", required=False, max_length=MAX_HOST_ID_LENGTH)
        actor = self.actor(request)
        if host_id is None:
            freed = services.deactivate_all_activations(license=license, actor=actor)
            if not freed:
                raise KeymintError(403, 2, "License not activated")
            return self.answer({"message": "All devices deactivated", "code": 0, "devices_removed": len(freed)})
        try:
            activation = services.find_activation(license_key=license_key, fingerprint=host_id)
        except errors.ActivationNotFound:
            activation = None
        result = services.deactivate_activation(activation=activation, actor=actor) if activation else None
        if result is None or result.already_inactive:
            # Keymint tells a key with no device at all from a device it does not have; a device
            # freed before (Keymint drops it from the key) is one it does not have.
            if license.live_activation_count() == 0:
                raise KeymintError(403, 2, "License not activated")
            raise KeymintError(404, 1, "Device not found")
        return self.answer({"message": "Device deactivated", "code": 0, "devices_removed": 1})


class GetKeyView(KeymintView):
    """Legacy `POST /get-key`, the key in the JSON body."""

    @retry_on_lost_connection
    def post(self, request):
        license, _ = find_key(json_body(request))
        return self.answer({"code": 0, "data": key_details(license)})


CREATE_FIELDS = {
    "max_activations": "maxActivations",
    "expires_at": "expiryDate",
    "email": "newCustomer.email",
    "name": "newCustomer.name",
    "customer_email": "newCustomer.email",
}


def create_key(view: KeymintView, request: Request) -> Response:
    data = json_body(request)
    product_id = text(data, "productId")
    max_activations = activation_limit(data.get("maxActivations"))
    expires_at = expiry(data.get("expiryDate"))
    customer_id = text(data, "customerId", required=False)
    new_customer = data.get("newCustomer")
    if customer_id is not None and new_customer is not None:
        raise KeymintError(400, 1, "Send customerId or newCustomer, not both")
    customer, email, name = None, None, ""
    if customer_id is not None:
        customer = customer_by_reference(customer_id)
    elif new_customer is not None:
        if not isinstance(new_customer, dict):
            raise KeymintError(400, 1, "newCustomer must be an object with name and email")
        if new_customer.get("email") in (None, ""):
            # Keymint lets a customer have no e-mail; here the e-mail is what identifies a customer.
            raise KeymintError(400, 1, "newCustomer.email is required")
        email = text(new_customer, "email", max_length=254, label="newCustomer.email")
        name = text(new_customer, "name", required=False, max_length=200, label="newCustomer.name") or ""
    product = Product.objects.filter(public_id=product_id, is_active=True).first()
    if product is None:
        raise KeymintError(404, 1, "Product not found or inactive")
    issued = services.create_license(
        product=product,
        actor=view.actor(request),
        customer=customer,
        customer_email=email,
        customer_name=name,
        max_activations=max_activations,
        expires_at=expires_at,
    )
    return Response({"code": 0, "key": issued.key})


class CreateKeyView(IdempotentChanges, KeymintView):
    """Legacy `POST /create-key`. Keymint's SDKs send an Idempotency-Key with it: a retry gets the
    first answer (the same key) again, as on the management API."""

    write_methods = manage_methods = frozenset({"POST"})
    vendor_fields = CREATE_FIELDS

    def post(self, request):
        return create_key(self, request)


class KeyView(IdempotentChanges, KeymintView):
    """Current `/key`: GET reads a key (productId and licenseKey in the query), POST creates one
    (an Idempotency-Key as on `/create-key`)."""

    write_methods = manage_methods = frozenset({"POST"})
    vendor_fields = CREATE_FIELDS
    camel_case = True

    def initialize_request(self, request, *args, **kwargs):
        # Keymint's SDK sends the key of a read in an x-license-key header (out of URLs and their
        # logs), its documentation in the query: the header counts where the query has none, for the
        # rate limits as for the read.
        if request.method in ("GET", "HEAD") and "licenseKey" not in request.GET and "x-license-key" in request.headers:
            request.GET = request.GET.copy()
            request.GET["licenseKey"] = request.headers["x-license-key"]
        return super().initialize_request(request, *args, **kwargs)

    @retry_on_lost_connection
    def get(self, request):
        license, _ = find_key(request.query_params)
        return self.answer({"code": 0, "data": key_details(license)})

    def post(self, request):
        return create_key(self, request)


class KeyStatusView(KeymintView):
    """Block (suspend) or unblock (reinstate) a key. Repeating either one succeeds again."""

    write_methods = manage_methods = frozenset({"POST"})
    block = True

    def post(self, request):
        license, _ = find_key(json_body(request))
        if self.block:
            services.suspend_license(license=license, actor=self.actor(request))
            return self.answer({"message": "Key blocked", "code": 0})
        services.reinstate_license(license=license, actor=self.actor(request))
        return self.answer({"message": "Key unblocked", "code": 0})


class UnknownEndpointView(KeymintView):
    """Any other path under the Keymint prefix (trailing slashes included): Keymint's 404 shape."""

    authentication_classes: list = []
    permission_classes = [permissions.AllowAny]

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        raise exceptions.NotFound()


urlpatterns = [
    path("activate-key", ActivateKeyView.as_view()),
    path("deactivate-key", DeactivateKeyView.as_view()),
    path("get-key", GetKeyView.as_view()),
    path("create-key", CreateKeyView.as_view()),
    path("block-key", KeyStatusView.as_view(block=True)),
    path("unblock-key", KeyStatusView.as_view(block=False)),
    path("key/activate", ActivateKeyView.as_view(camel_case=True)),
    path("key/deactivate", DeactivateKeyView.as_view(camel_case=True)),
    path("key", KeyView.as_view()),
    path("key/block", KeyStatusView.as_view(block=True, camel_case=True)),
    path("key/unblock", KeyStatusView.as_view(block=False, camel_case=True)),
    re_path(r"", UnknownEndpointView.as_view()),
]
