"""The Polar dialect: Polar's public license-key calls (validate, activate, deactivate) over licensing.services.

Polar is a FastAPI service. Its refusals are `{"error": "<exception class>", "detail": "<message>"}`
(ResourceNotFound 404, NotPermitted 403, BadRequest 400) and bad input is a 422
`{"error": "RequestValidationError", "detail": [{"loc", "msg", "type"}]}` as pydantic words it.
These calls take no authentication: the license key and the organization id are the credential.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import uuid
from collections.abc import Callable
from typing import Any, NamedTuple

from django.http import Http404
from django.urls import re_path
from rest_framework import exceptions
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from licensing import errors, services
from licensing.addresses import client_ip
from licensing.api.negotiation import JSONOnlyNegotiation
from licensing.api.parsers import LimitedJSONParser, RequestTooLarge, too_large_body_as_api_error
from licensing.api.retry import retry_on_lost_connection
from licensing.api.throttling import LicenseCallLimits
from licensing.models import Activation, Customer, License

logger = logging.getLogger(__name__)


class PolarAnswer(NamedTuple):
    status: int
    error: str
    detail: str


NOT_FOUND = PolarAnswer(404, "ResourceNotFound", "Not found")
NO_LONGER_ACTIVE = PolarAnswer(404, "ResourceNotFound", "License key is no longer active.")
CANNOT_ACTIVATE = PolarAnswer(
    403, "NotPermitted", "License key is no longer active. This license key can not be activated."
)
BENEFIT_MISMATCH = PolarAnswer(404, "ResourceNotFound", "License key does not match given benefit.")
CUSTOMER_MISMATCH = PolarAnswer(404, "ResourceNotFound", "License key does not match given user.")

# A license whose activation limit is 0 takes no activations: Polar's word for such a key.
ACTIVATIONS_NOT_SUPPORTED = "activations_not_supported"

# Our error codes → Polar's answer, per call, with the messages of Polar's own service.
POLAR_ANSWERS: dict[str, dict[str, PolarAnswer]] = {
    "validate": {
        errors.LicenseNotFound.code: NOT_FOUND,
        errors.LicenseRevoked.code: NO_LONGER_ACTIVE,
        errors.LicenseSuspended.code: NO_LONGER_ACTIVE,
        errors.ProductInactive.code: NO_LONGER_ACTIVE,
        errors.LicenseExpired.code: PolarAnswer(404, "ResourceNotFound", "License key has expired."),
        errors.ActivationNotFound.code: NOT_FOUND,
        errors.ConditionsMismatch.code: PolarAnswer(
            404, "ResourceNotFound", "License key does not match required conditions"
        ),
        errors.UsageLimitReached.code: PolarAnswer(400, "BadRequest", "License key only has {remaining} more usages."),
    },
    "activate": {
        errors.LicenseNotFound.code: NOT_FOUND,
        errors.LicenseRevoked.code: CANNOT_ACTIVATE,
        errors.LicenseSuspended.code: CANNOT_ACTIVATE,
        errors.ProductInactive.code: CANNOT_ACTIVATE,
        errors.LicenseExpired.code: PolarAnswer(403, "NotPermitted", "License key has expired."),
        errors.ActivationLimitReached.code: PolarAnswer(
            403, "NotPermitted", "License key activation limit already reached"
        ),
        ACTIVATIONS_NOT_SUPPORTED: PolarAnswer(
            403,
            "NotPermitted",
            "This license key does not support activations. Use the /validate endpoint instead to check license "
            "validity.",
        ),
    },
    "deactivate": {
        errors.LicenseNotFound.code: NOT_FOUND,
        errors.ActivationNotFound.code: NOT_FOUND,
    },
}

# Names the services give input fields → Polar's request fields.
REQUEST_FIELDS = {"name": "label", "metadata": "meta"}

# An error Polar's own service does not have is named by its status, as Polar's exceptions are.
ERROR_NAMES = {403: "NotPermitted", 404: "ResourceNotFound"}

STATUSES = {License.Status.ACTIVE: "granted", License.Status.SUSPENDED: "disabled", License.Status.REVOKED: "revoked"}

# This server has no benefits, so no id is invented. The empty string, not null: Polar's official
# SDKs declare benefit_id a non-null string and would refuse every answer carrying null.
NO_BENEFIT = ""

# Polar's own bound: conditions and meta are metadata (at most 50 pairs, keys of 1-40 characters,
# values text of 1-500 characters, integers, numbers or booleans).
MAX_PAIRS = 50
KEY_LENGTHS = (1, 40)
TEXT_VALUE_LENGTHS = (1, 500)


class PolarError(Exception):
    def __init__(self, answer: PolarAnswer) -> None:
        self.answer = answer
        super().__init__(answer.detail)


class RequestInvalid(Exception):
    """Polar's 422: one pydantic error per problem, every problem of the body at once."""

    def __init__(self, problems: list[dict[str, Any]]) -> None:
        self.problems = problems
        super().__init__(problems)


def problem(loc: list[Any], msg: str, kind: str) -> dict[str, Any]:
    return {"loc": ["body", *loc], "msg": msg, "type": kind}


def polar_exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """Every failure in Polar's shape; nothing the client caused becomes a 500."""
    view = context["view"]
    exc = too_large_body_as_api_error(exc)
    if isinstance(exc, PolarError):
        return polar_error(exc.answer)
    if isinstance(exc, RequestInvalid):
        return Response({"error": "RequestValidationError", "detail": exc.problems}, status=422)
    if isinstance(exc, errors.InvalidInput):
        field = REQUEST_FIELDS.get(exc.field or "", exc.field)
        detail = [problem([field] if field else [], str(exc.message), "value_error")]
        return Response({"error": "RequestValidationError", "detail": detail}, status=422)
    if isinstance(exc, errors.LicensingError):
        return polar_error(answer_for(view.operation, exc))
    if isinstance(exc, exceptions.ParseError):
        # FastAPI's answer to a body that is not JSON.
        detail = [problem([], "JSON decode error", "json_invalid")]
        return Response({"error": "RequestValidationError", "detail": detail}, status=422)
    if isinstance(exc, exceptions.UnsupportedMediaType):
        return Response({"error": "RequestValidationError", "detail": [NOT_AN_OBJECT]}, status=422)
    if isinstance(exc, RequestTooLarge):
        return Response({"error": "RequestTooLarge", "detail": str(exc.detail)}, status=413)
    if isinstance(exc, exceptions.NotFound | Http404):
        return polar_error(NOT_FOUND)
    if isinstance(exc, exceptions.MethodNotAllowed):
        return Response({"error": "MethodNotAllowed", "detail": "Method Not Allowed"}, status=405)
    if isinstance(exc, exceptions.Throttled):
        headers = {"Retry-After": str(math.ceil(exc.wait))} if exc.wait else None
        return Response({"error": "TooManyRequests", "detail": "Rate limit exceeded."}, status=429, headers=headers)
    if isinstance(exc, exceptions.APIException):
        return Response({"error": type(exc).__name__, "detail": str(exc.detail)}, status=exc.status_code)
    logger.exception("Polar %s failed", view.operation)
    return Response({"error": "InternalServerError", "detail": "Internal Server Error"}, status=500)


def answer_for(operation: str, error: errors.LicensingError) -> PolarAnswer:
    code = error.code
    if isinstance(error, errors.ActivationLimitReached) and error.facts.get("limit") == 0:
        code = ACTIVATIONS_NOT_SUPPORTED
    answer = POLAR_ANSWERS.get(operation, {}).get(code)
    if answer is None:
        return PolarAnswer(error.status, ERROR_NAMES.get(error.status, "BadRequest"), str(error.message))
    return answer._replace(detail=answer.detail.format(**error.facts))


def polar_error(answer: PolarAnswer) -> Response:
    return Response({"error": answer.error, "detail": answer.detail}, status=answer.status)


# ---------------------------------------------------------------- reading the body as Polar does


NOT_AN_OBJECT = problem(
    [], "Input should be a valid dictionary or object to extract fields from", "model_attributes_type"
)


def is_json(media_type: str | None) -> bool:
    """FastAPI reads a body as JSON without a Content-Type, or with application/json or application/*+json."""
    full_type = (media_type or "").split(";")[0].strip().lower()
    main_type, _, sub_type = full_type.partition("/")
    return not full_type or (main_type == "application" and (sub_type == "json" or sub_type.endswith("+json")))


class PolarJSONParser(LimitedJSONParser):
    """JSON with the native size cap, under any Content-Type; a body FastAPI would not read as JSON is a 422."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        if not is_json(media_type):
            raise RequestInvalid([NOT_AN_OBJECT])
        return super().parse(stream, media_type, parser_context)


class PolarContentNegotiation(BaseContentNegotiation):
    """Polar answers JSON whatever Accept says, and reads every body with the one parser."""

    def select_parser(self, request, parsers):
        return parsers[0]

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class FieldInvalid(Exception):
    def __init__(self, problems: list[dict[str, Any]]) -> None:
        self.problems = problems
        super().__init__(problems)


REQUIRED = object()
Check = Callable[[Any, list[Any]], Any]


def text(value: Any, loc: list[Any]) -> str:
    if not isinstance(value, str):
        raise FieldInvalid([problem(loc, "Input should be a valid string", "string_type")])
    return value


def label(value: Any, loc: list[Any]) -> str:
    """A device's label: text no longer than a device name may be here (Polar sets no bound)."""
    value = text(value, loc)
    if too_long := length_problem(value, loc, (0, services.MAX_NAME_LENGTH)):
        raise FieldInvalid([too_long])
    return value


def uuid_text(value: Any, loc: list[Any]) -> uuid.UUID:
    # Any UUID version: Polar asks for version 4, but a stricter check could only refuse ids
    # that would answer 404 anyway.
    if not isinstance(value, str):
        raise FieldInvalid([problem(loc, "UUID input should be a string, bytes or UUID object", "uuid_type")])
    try:
        return uuid.UUID(value)
    except ValueError:
        raise FieldInvalid([problem(loc, "Input should be a valid UUID", "uuid_parsing")]) from None


INTEGER_TEXT = re.compile(r"\s*[+-]?[0-9]+\s*")


def usage_count(value: Any, loc: list[Any]) -> int:
    """A whole number as pydantic reads one (1, 1.0, "1", true), from 0 to the service's bound, refused
    in pydantic's words (a negative number would give uses back)."""
    if isinstance(value, bool | int):
        number = int(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise FieldInvalid([problem(loc, "Input should be a finite number", "finite_number")])
        if not value.is_integer():
            raise FieldInvalid(
                [problem(loc, "Input should be a valid integer, got a number with a fractional part", "int_from_float")]
            )
        number = int(value)
    elif isinstance(value, str) and INTEGER_TEXT.fullmatch(value) and len(value) < 100:
        # Longer digit strings are past the bound anyway, and Python refuses to parse huge ones.
        number = int(value)
    elif isinstance(value, str):
        raise FieldInvalid(
            [problem(loc, "Input should be a valid integer, unable to parse string as an integer", "int_parsing")]
        )
    else:
        raise FieldInvalid([problem(loc, "Input should be a valid integer", "int_type")])
    if number < 0:
        raise FieldInvalid([problem(loc, "Input should be greater than or equal to 0", "greater_than_equal")])
    if number > services.MAX_USAGE_INCREMENT:
        raise FieldInvalid(
            [problem(loc, f"Input should be less than or equal to {services.MAX_USAGE_INCREMENT}", "less_than_equal")]
        )
    return number


def plural(count: int) -> str:
    return "" if count == 1 else "s"


def length_problem(value: str, loc: list[Any], lengths: tuple[int, int]) -> dict[str, Any] | None:
    shortest, longest = lengths
    if len(value) < shortest:
        return problem(loc, f"String should have at least {shortest} character{plural(shortest)}", "string_too_short")
    if len(value) > longest:
        return problem(loc, f"String should have at most {longest} character{plural(longest)}", "string_too_long")
    return None


def scalar_problems(value: Any, loc: list[Any]) -> list[dict[str, Any]]:
    """Pydantic's errors for a value of `str | int | float | bool`: one per member of the union."""
    if isinstance(value, bool | int):
        return []
    if isinstance(value, float):
        # JSON lets NaN and Infinity in; no database or JSON answer can hold them.
        return [] if math.isfinite(value) else [problem(loc, "Input should be a finite number", "finite_number")]
    if isinstance(value, str):
        too_long_or_short = length_problem(value, [*loc, "constrained-str"], TEXT_VALUE_LENGTHS)
        if too_long_or_short is None:
            return []
        return [
            too_long_or_short,
            problem(
                [*loc, "int"], "Input should be a valid integer, unable to parse string as an integer", "int_parsing"
            ),
            problem(
                [*loc, "float"], "Input should be a valid number, unable to parse string as a number", "float_parsing"
            ),
            problem([*loc, "bool"], "Input should be a valid boolean, unable to interpret input", "bool_parsing"),
        ]
    return [
        problem([*loc, "constrained-str"], "Input should be a valid string", "string_type"),
        problem([*loc, "int"], "Input should be a valid integer", "int_type"),
        problem([*loc, "float"], "Input should be a valid number", "float_type"),
        problem([*loc, "bool"], "Input should be a valid boolean", "bool_type"),
    ]


def scalar_map(value: Any, loc: list[Any]) -> dict[str, Any]:
    """Polar's metadata shape, used for `conditions` and `meta`."""
    if not isinstance(value, dict):
        raise FieldInvalid([problem(loc, "Input should be a valid dictionary", "dict_type")])
    problems = []
    for key, item in value.items():
        if key_problem := length_problem(key, [*loc, key, "[key]"], KEY_LENGTHS):
            problems.append(key_problem)
        problems.extend(scalar_problems(item, [*loc, key]))
    if not problems and len(value) > MAX_PAIRS:
        problems.append(
            problem(
                loc, f"Dictionary should have at most {MAX_PAIRS} items after validation, not {len(value)}", "too_long"
            )
        )
    if problems:
        raise FieldInvalid(problems)
    return value


def optional(check: Check) -> Check:
    def check_unless_null(value: Any, loc: list[Any]) -> Any:
        return None if value is None else check(value, loc)

    return check_unless_null


def parsed(request: Request, fields: dict[str, tuple[Check, Any]]) -> dict[str, Any]:
    """Read the body against Polar's request schema; raise RequestInvalid with every problem.

    Fields Polar does not know are ignored, as pydantic ignores them.
    """
    if request.stream is None:
        raise RequestInvalid([problem([], "Field required", "missing")])
    body = request.data
    if not isinstance(body, dict):
        raise RequestInvalid([NOT_AN_OBJECT])
    values: dict[str, Any] = {}
    problems: list[dict[str, Any]] = []
    for name, (check, default) in fields.items():
        if name not in body:
            if default is REQUIRED:
                problems.append(problem([name], "Field required", "missing"))
            else:
                values[name] = default() if callable(default) else default
            continue
        try:
            values[name] = check(body[name], [name])
        except FieldInvalid as invalid:
            problems.extend(invalid.problems)
    if problems:
        raise RequestInvalid(problems)
    return values


# ---------------------------------------------------------------- answers


def customer_object(customer: Customer, organization_id: uuid.UUID | None) -> dict[str, Any]:
    """Polar's customer, from what this server knows; what it does not keep is Polar's empty value."""
    email_digest = hashlib.sha256(customer.email.lower().encode()).hexdigest()
    return {
        "id": customer.public_id,
        "created_at": customer.created_at,
        "modified_at": customer.updated_at,
        "metadata": {},
        "external_id": customer.external_id or None,
        "email": customer.email,
        "email_verified": False,
        # Polar's customers are people or teams; every customer here is a person.
        "type": "individual",
        "name": customer.name or None,
        "billing_name": None,
        "billing_address": None,
        "tax_id": None,
        "organization_id": organization_id,
        "deleted_at": None,
        "first_user_event_at": None,
        # The URL Polar derives from the e-mail.
        "avatar_url": f"https://www.gravatar.com/avatar/{email_digest}?d=404",
    }


def license_key_object(license: License, *, key: str) -> dict[str, Any]:
    """Polar's license key. The app sent the key itself, so the key is answered whole."""
    organization_id = license.product.polar_organization_id
    customer = license.customer
    return {
        "id": license.pk,
        "created_at": license.created_at,
        "modified_at": license.updated_at,
        "organization_id": organization_id,
        # A license issued here without an owner has no customer to show.
        "customer_id": customer.public_id if customer else None,
        "customer": customer_object(customer, organization_id) if customer else None,
        # No seats, subscriptions or orders here: a key is the customer's own, granted by no sale.
        "member_id": None,
        "member": None,
        "benefit_id": NO_BENEFIT,
        "key": key,
        "display_key": "****-" + key[-6:],
        "status": STATUSES[license.status],
        # None is unlimited here; on Polar it means the key takes no activations (see the README).
        "limit_activations": license.max_activations,
        "usage": license.usage,
        "limit_usage": license.limit_usage,
        "validations": license.validation_count,
        "last_validated_at": license.last_validated_at,
        "expires_at": license.expires_at,
        "subscription_id": None,
        "subscription": None,
        "order_id": None,
        "order": None,
    }


def activation_object(activation: Activation) -> dict[str, Any]:
    return {
        "id": activation.pk,
        "license_key_id": activation.license_id,
        "label": activation.name,
        "meta": activation.metadata,
        "created_at": activation.created_at,
        # Polar leaves it null until the activation changes; a live activation here never does.
        "modified_at": None,
    }


# ---------------------------------------------------------------- views


# Polar lets any web page call its public endpoints: they take no cookies, so any origin is safe.
# The same headers as Polar's CORS middleware (Starlette's), on answers to a request with an Origin.
CORS_HEADERS = {"Access-Control-Allow-Origin": "*"}
CORS_PREFLIGHT_HEADERS = {
    **CORS_HEADERS,
    "Access-Control-Allow-Methods": "DELETE, GET, HEAD, OPTIONS, PATCH, POST, PUT",
    "Access-Control-Allow-Headers": "Accept, Accept-Language, Authorization, Content-Language, Content-Type",
    "Access-Control-Max-Age": "600",
}


class PolarView(LicenseCallLimits, JSONOnlyNegotiation, APIView):
    license_key_field = "key"
    authentication_classes: list = []
    permission_classes = [AllowAny]
    parser_classes = [PolarJSONParser]
    renderer_classes = [JSONRenderer]
    content_negotiation_class = PolarContentNegotiation
    # Polar documents these paths; they stay out of the native OpenAPI schema.
    schema = None
    operation = "request"

    def get_exception_handler(self):
        return polar_exception_handler

    def options(self, request, *args, **kwargs):
        if "HTTP_ACCESS_CONTROL_REQUEST_METHOD" not in request.META:
            raise exceptions.MethodNotAllowed(request.method)
        return Response(headers=CORS_PREFLIGHT_HEADERS)

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if "HTTP_ORIGIN" in request.META:
            for name, value in CORS_HEADERS.items():
                response[name] = value
        return response

    def actor(self, request: Request) -> services.Actor:
        return services.Actor.app(ip_address=client_ip(request))

    def license(self, data: dict[str, Any]) -> License:
        return services.find_license(license_key=data["key"], polar_organization_id=data["organization_id"])


VALIDATE_FIELDS = {
    "key": (text, REQUIRED),
    "organization_id": (uuid_text, REQUIRED),
    "activation_id": (optional(uuid_text), None),
    "benefit_id": (optional(uuid_text), None),
    "customer_id": (optional(uuid_text), None),
    "increment_usage": (optional(usage_count), None),
    "conditions": (scalar_map, dict),
}


class ValidateView(PolarView):
    operation = "validate"

    @retry_on_lost_connection
    def post(self, request):
        data = parsed(request, VALIDATE_FIELDS)
        license = self.license(data)
        mismatch = None
        # Polar tells apart keys of another benefit or customer. This server has no benefits, so a
        # benefit_id never matches. Polar checks the key's state first, and so does this; it checks
        # the activation before the benefit and the customer, where these come first here (all 404s).
        if data["benefit_id"] is not None:
            mismatch = BENEFIT_MISMATCH
        elif data["customer_id"] is not None and not services.license_belongs_to(license, str(data["customer_id"])):
            mismatch = CUSTOMER_MISMATCH
        if mismatch is not None:
            if state_problem := services.license_problem(license):
                raise state_problem
            raise PolarError(mismatch)

        activation_id = data["activation_id"]
        result = services.validate_license(
            license_key=data["key"],
            activation_id=str(activation_id) if activation_id else None,
            conditions=data["conditions"],
            increment_usage=data["increment_usage"] or 0,
        )
        if not result.valid:
            raise result.problem
        body = license_key_object(result.license, key=data["key"])
        body["activation"] = activation_object(result.activation) if result.activation else None
        return Response(body)


ACTIVATE_FIELDS = {
    "key": (text, REQUIRED),
    "organization_id": (uuid_text, REQUIRED),
    "label": (label, REQUIRED),
    "conditions": (scalar_map, dict),
    "meta": (scalar_map, dict),
}


class ActivateView(PolarView):
    operation = "activate"

    @retry_on_lost_connection
    def post(self, request):
        data = parsed(request, ACTIVATE_FIELDS)
        self.license(data)
        # Polar sends no device identifier: every activation is a new one.
        result = services.activate_license(
            license_key=data["key"],
            fingerprint=None,
            name=data["label"],
            metadata=data["meta"],
            conditions=data["conditions"],
            actor=self.actor(request),
        )
        activation = result.activation
        body = {**activation_object(activation), "license_key": license_key_object(activation.license, key=data["key"])}
        return Response(body)


DEACTIVATE_FIELDS = {
    "key": (text, REQUIRED),
    "organization_id": (uuid_text, REQUIRED),
    "activation_id": (uuid_text, REQUIRED),
}


class DeactivateView(PolarView):
    operation = "deactivate"

    @retry_on_lost_connection
    def post(self, request):
        data = parsed(request, DEACTIVATE_FIELDS)
        self.license(data)
        activation = services.find_activation(license_key=data["key"], activation_id=str(data["activation_id"]))
        result = services.deactivate_activation(activation=activation, actor=self.actor(request))
        if result.already_inactive:
            # Polar deletes a deactivated activation: a repeat finds nothing.
            raise errors.ActivationNotFound(field="activation_id")
        return Response(status=204)


class UnknownPathView(PolarView):
    """Any other path under Polar's prefix: a JSON 404, not an HTML page."""

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        raise exceptions.NotFound()


# Polar redirects a path with a trailing slash to the one without; a POST cannot follow a redirect
# everywhere with its body, so both are answered here.
urlpatterns = [
    re_path(r"^v1/customer-portal/license-keys/validate/?$", ValidateView.as_view()),
    re_path(r"^v1/customer-portal/license-keys/activate/?$", ActivateView.as_view()),
    re_path(r"^v1/customer-portal/license-keys/deactivate/?$", DeactivateView.as_view()),
    re_path(r"", UnknownPathView.as_view()),
]
