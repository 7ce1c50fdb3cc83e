"""The native API: thin views that parse, call licensing.services, and render."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from datetime import timedelta
from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from django.db import transaction
from django.db.models import Q
from django.http import Http404
from django.urls import Resolver404, resolve
from django.urls.converters import IntConverter, UUIDConverter
from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework import exceptions, generics, serializers
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from licensing import errors, services, signing
from licensing.addresses import client_ip
from licensing.api import serializers as api
from licensing.api.authentication import ApiKeyAuthentication, ManagementPermission
from licensing.api.exceptions import SERVER_ERROR, SERVER_ERROR_MESSAGE, error_body
from licensing.api.negotiation import JSONOnlyNegotiation
from licensing.api.retry import retry_on_lost_connection
from licensing.api.schema import BuiltOnceSchemaGenerator
from licensing.api.throttling import ApiKeyGuard, LicenseCallLimits
from licensing.middleware import content_security_policy
from licensing.models import Activation, AuditEvent, Customer, IdempotentRequest, License, Plan, Product, SigningKey

logger = logging.getLogger(__name__)

SIGNATURE_HEADER_DOC = OpenApiParameter(
    signing.SIGNATURE_HEADER,
    type=str,
    location=OpenApiParameter.HEADER,
    response=True,
    description='keyid="…", algorithm="ed25519", signature="<base64>": Ed25519 over the exact body bytes.',
)


def validated(serializer_class: type[serializers.Serializer], request: Request) -> dict[str, Any]:
    return api.validated_input(serializer_class, request.data)


ERROR_DESCRIPTIONS = {
    400: "Bad input; `field` names it.",
    403: "Refused by the license's state or limit.",
    404: "Unknown key, or no such activation for it.",
    413: "Request body too large.",
}
ERRORS = {code: OpenApiResponse(api.ErrorSerializer, description=text) for code, text in ERROR_DESCRIPTIONS.items()}
REVOKED_LICENSE_CHANGE = OpenApiResponse(
    api.ErrorSerializer, description="A revoked license's expiry, plan or limits (license_revoked)."
)
LICENSE_CALL_ERRORS = {
    code: OpenApiResponse(api.LicenseCallErrorSerializer, description=text) for code, text in ERROR_DESCRIPTIONS.items()
}


# ---------------------------------------------------------------- app-facing license calls


class LicenseCallView(LicenseCallLimits, JSONOnlyNegotiation, APIView):
    """An app-facing call: the license key is the credential, and every answer is signed.

    The body gets `meta` (server time, the request's nonce, the call it answers, the SHA-256 of the
    license key it named) and an Ed25519 signature over its exact bytes in X-License-Signature, so an
    app can trust a stored answer and detect a replayed one, one the server gave to another call that
    carried its nonce, or one about another license key.
    """

    call_name: str
    # For the schema's refusals shared by every view (licensing.api.schema).
    error_serializer = api.LicenseCallErrorSerializer
    authentication_classes: list = []
    permission_classes = [AllowAny]
    license_key_field = "key"

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if isinstance(response.data, dict):
            nonce = self._sent_text(request, "nonce")
            license_key = self._sent_text(request, self.license_key_field)
            response.data["meta"] = {
                "server_time": timezone.now(),
                "nonce": nonce if nonce is not None and len(nonce) <= api.MAX_NONCE_LENGTH else None,
                "call": self.call_name,
                # The key itself never goes back; its hash lets the app check the answer is about it.
                "key_sha256": signing.license_key_sha256(license_key) if license_key else None,
            }
            # For the request log: which license the call was about (its id, never its key).
            license = response.data.get("license")
            if isinstance(license, dict):
                response.license_id = license.get("id")
        signing_key = services.current_signing_key()

        def sign(rendered):
            rendered[signing.SIGNATURE_HEADER] = signing.signature_header(
                rendered.content, kid=signing_key.kid, private_key_encrypted=signing_key.private_key_encrypted
            )

        response.add_post_render_callback(sign)
        return response

    @staticmethod
    def _sent_text(request: Request, name: str) -> str | None:
        """A text the body sent as `name`, or None: none sent, not text, or no body that parsed."""
        try:
            value = request.data.get(name) if isinstance(request.data, dict) else None
        except Exception:  # noqa: BLE001 - the body did not parse; that error is already the answer
            return None
        return value if isinstance(value, str) and services.is_encodable(value) else None

    def handle_exception(self, exc):
        # Even a failure must be a signed JSON answer: an app treats an unsigned one as forged.
        try:
            return super().handle_exception(exc)
        except Exception:
            logger.exception("License call failed")
            return Response(error_body(SERVER_ERROR, SERVER_ERROR_MESSAGE), status=500)

    def app_actor(self, request: Request) -> services.Actor:
        return services.Actor.app(ip_address=client_ip(request))


class ActivateLicenseView(LicenseCallView):
    call_name = "activate"

    @extend_schema(
        summary="Activate a license on a device",
        parameters=[SIGNATURE_HEADER_DOC],
        request=api.ActivateLicenseInputSerializer,
        responses={
            201: OpenApiResponse(api.ActivationAnswerSerializer, description="A new activation."),
            200: OpenApiResponse(api.ActivationAnswerSerializer, description="The device was already active."),
            **LICENSE_CALL_ERRORS,
        },
    )
    @retry_on_lost_connection
    def post(self, request):
        data = validated(api.ActivateLicenseInputSerializer, request)
        result = services.activate_license(
            license_key=data["key"],
            fingerprint=data["fingerprint"],
            name=data["name"],
            platform=data["platform"],
            metadata=data["metadata"],
            actor=self.app_actor(request),
        )
        body = {
            "created": result.created,
            "activation": api.render(api.ActivationSerializer, result.activation),
            "license": api.render(api.AppLicenseSerializer, result.activation.license),
        }
        return Response(body, status=201 if result.created else 200)


class ValidateLicenseView(LicenseCallView):
    call_name = "validate"

    @extend_schema(
        summary="Check whether a license, and a device, may be used now",
        parameters=[SIGNATURE_HEADER_DOC],
        request=api.ValidateLicenseInputSerializer,
        responses={
            200: OpenApiResponse(api.ValidationAnswerSerializer, description="`valid` says; `code` says why not."),
            404: OpenApiResponse(api.ValidationAnswerSerializer, description="Unknown key: code NOT_FOUND."),
            400: LICENSE_CALL_ERRORS[400],
            413: LICENSE_CALL_ERRORS[413],
        },
    )
    @retry_on_lost_connection
    def post(self, request):
        data = validated(api.ValidateLicenseInputSerializer, request)
        activation_id = data.get("activation_id")
        result = services.validate_license(
            license_key=data["key"],
            fingerprint=data.get("fingerprint"),
            activation_id=str(activation_id) if activation_id else None,
        )
        body = {
            "valid": result.valid,
            "code": result.code,
            "detail": result.detail,
            "license": api.render(api.AppLicenseSerializer, result.license) if result.license else None,
            "activation": api.render(api.ActivationSerializer, result.activation) if result.activation else None,
        }
        return Response(body, status=404 if result.code == "NOT_FOUND" else 200)


class DeactivateLicenseView(LicenseCallView):
    call_name = "deactivate"

    @extend_schema(
        summary="Free a device's slot",
        parameters=[SIGNATURE_HEADER_DOC],
        request=api.DeactivateLicenseInputSerializer,
        responses={
            200: api.DeactivationAnswerSerializer,
            400: LICENSE_CALL_ERRORS[400],
            403: OpenApiResponse(
                api.LicenseCallErrorSerializer, description="The plan's device changes are used up for now."
            ),
            404: LICENSE_CALL_ERRORS[404],
            413: LICENSE_CALL_ERRORS[413],
        },
    )
    @retry_on_lost_connection
    def post(self, request):
        data = validated(api.DeactivateLicenseInputSerializer, request)
        activation_id = data.get("activation_id")
        activation = services.find_activation(
            license_key=data["key"],
            activation_id=str(activation_id) if activation_id else None,
            fingerprint=data.get("fingerprint"),
        )
        result = services.deactivate_activation(activation=activation, actor=self.app_actor(request))
        body = {
            "activation": api.render(api.ActivationSerializer, result.activation),
            "already_inactive": result.already_inactive,
            "detail": "This device was already inactive." if result.already_inactive else "Device deactivated.",
            "license": api.render(api.AppLicenseSerializer, result.activation.license),
        }
        return Response(body)


class CheckoutLicenseView(LicenseCallView):
    call_name = "checkout"

    @extend_schema(
        summary="Get an offline license file for an activated device",
        parameters=[SIGNATURE_HEADER_DOC],
        request=api.CheckoutLicenseInputSerializer,
        responses={200: api.CheckoutAnswerSerializer, **LICENSE_CALL_ERRORS},
    )
    @retry_on_lost_connection
    def post(self, request):
        data = validated(api.CheckoutLicenseInputSerializer, request)
        checkout = services.checkout_license(
            license_key=data["key"],
            fingerprint=data["fingerprint"],
            ttl=timedelta(seconds=data["ttl"]) if "ttl" in data else None,
            actor=self.app_actor(request),
        )
        text, payload, signing_key = build_license_file(checkout)
        body = {
            "license_file": text,
            "issued_at": payload["issued_at"],
            "expires_at": payload["expires_at"],
            "kid": signing_key.kid,
            "algorithm": signing_key.algorithm,
            "activation": api.render(api.ActivationSerializer, checkout.activation),
        }
        response = Response(body)
        # Its answer shows no license: the request log gets the id here.
        response.license_id = str(checkout.activation.license_id)
        return response


def build_license_file(checkout: services.Checkout) -> tuple[str, dict[str, Any], SigningKey]:
    """Sign a checkout into an offline license file; return the text, its payload and the signing key."""
    signing_key = services.current_signing_key()
    payload = api.LicenseFilePayloadSerializer(checkout).data
    text = signing.license_file(payload, kid=signing_key.kid, private_key_encrypted=signing_key.private_key_encrypted)
    return text, payload, signing_key


class SigningKeyListView(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        summary="Public keys that check signed answers and license files", responses=api.SigningKeyListSerializer
    )
    def get(self, request):
        current = services.current_signing_key()
        published = services.published_signing_keys()
        return Response(
            {"keys": api.SigningKeySerializer(published, many=True, context={"current_kid_pk": current.pk}).data}
        )


class SchemaView(SpectacularAPIView):
    """The OpenAPI schema of the one API this server has, in its one language.

    drf-spectacular would copy a `?version=` into the schema and into the Content-Disposition
    header, where a line break or a NUL in it fails the answer with a 500; and it would build the
    schema anew for any `?lang=`, which would translate only Django's and DRF's own phrases.
    """

    generator_class = BuiltOnceSchemaGenerator

    @extend_schema(exclude=True)
    def get(self, request, *args, **kwargs):
        return self._get_schema_response(request)

    def _get_version_parameter(self, request):
        return None


class ApiDocsView(SpectacularSwaggerSplitView):
    # Swagger UI's script comes from this view (?script), not from the page, so the pages' policy
    # holds, but for the <style> the page and Swagger UI carry.
    @extend_schema(exclude=True)
    def get(self, request, *args, **kwargs):
        response = super().get(request, *args, **kwargs)
        response.headers["Content-Security-Policy"] = content_security_policy(style_src="'self' 'unsafe-inline'")
        return response


class UnknownEndpointView(APIView):
    """Any other path under /api/: a JSON 404 like every other API error, not Django's HTML page."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(exclude=True)
    def dispatch(self, request, *args, **kwargs):
        return super().dispatch(request, *args, **kwargs)

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        # Clients that add a slash to every path would otherwise read what follows as a bad id.
        without_slash = request.path_info.rstrip("/")
        if without_slash != request.path_info and self._is_endpoint(without_slash):
            raise exceptions.NotFound(f"There is no such API endpoint: paths end without a slash ({without_slash}).")
        # A record's path with an id of the wrong kind reaches here; saying so beats "no such endpoint".
        parts = request.path_info.removeprefix("/api/v1/").split("/")
        for collection, record_id in zip(parts[::2], parts[1::2], strict=False):
            if collection not in RECORD_IDS or record_id in LICENSE_CALLS:
                break
            noun, kind, id_pattern = RECORD_IDS[collection]
            if not re.fullmatch(id_pattern, record_id):
                raise exceptions.NotFound(f"There is no {noun} with this id: {noun} ids are {kind}.")
        raise exceptions.NotFound("There is no such API endpoint.")

    @staticmethod
    def _is_endpoint(path: str) -> bool:
        try:
            return getattr(resolve(path).func, "view_class", None) is not UnknownEndpointView
        except Resolver404:
            return False


# What the routes' converters take (licensing.api.urls); an id that is not so matches no route.
RECORD_IDS = {
    "licenses": ("license", "UUIDs in lower case", UUIDConverter.regex),
    "activations": ("activation", "UUIDs in lower case", UUIDConverter.regex),
    "products": ("product", "whole numbers", IntConverter.regex),
    "plans": ("plan", "whole numbers", IntConverter.regex),
    "customers": ("customer", "whole numbers", IntConverter.regex),
}
# A mistyped license call (`validate/`) is no license id.
LICENSE_CALLS = set(api.LICENSE_CALLS)


# ---------------------------------------------------------------- management API


class Pagination(PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
    # Past the last page (404): says which page is missing, where DRF says only "Invalid page.".
    invalid_page_message = "There is no page {page_number}: the list ends before it."

    def get_page_number(self, request, paginator):
        # DRF answers a page that is no number as a missing page (404); it is bad input.
        page_number = str(super().get_page_number(request, paginator))
        if page_number not in self.last_page_strings and not re.fullmatch(r"[1-9][0-9]*", page_number):
            raise serializers.ValidationError({self.page_query_param: ["A page is a whole number from 1."]})
        return page_number

    def get_page_size(self, request):
        page_size = request.query_params.get(self.page_size_query_param)
        # DRF answers a size that is no number with its default size, as if none were asked for.
        if page_size is not None and not re.fullmatch(r"[1-9][0-9]*", page_size):
            most = self.max_page_size
            message = f"A page size is a whole number from 1; sizes above {most} give {most}."
            raise serializers.ValidationError({self.page_size_query_param: [message]})
        return super().get_page_size(request)

    def get_paginated_response_schema(self, schema):
        # DRF writes "no next page" in OpenAPI 3.0's words (nullable), which 3.1 no longer reads.
        paginated = super().get_paginated_response_schema(schema)
        for link in ("next", "previous"):
            paginated["properties"][link] = {"type": ["string", "null"], "format": "uri"}
        return paginated

    def get_schema_operation_parameters(self, view):
        # What the two methods above take: whole numbers from 1.
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            parameter["schema"]["minimum"] = 1
        return parameters


def no_record_with_this_id(model) -> exceptions.NotFound:
    return exceptions.NotFound(f"There is no {model._meta.verbose_name} with this id.")


def record_or_404(records, **lookup):
    """`records.get(**lookup)`, or a 404 that says which kind of record was not found."""
    try:
        return records.get(**lookup)
    except ObjectDoesNotExist:
        raise no_record_with_this_id(records.model) from None


class AnswerAgain(Exception):
    """Raised before a view runs, to send the answer an earlier request with its Idempotency-Key got."""

    def __init__(self, record: IdempotentRequest) -> None:
        self.record = record


IDEMPOTENCY_KEY_HEADER = "Idempotency-Key"
IDEMPOTENT_METHODS = {"POST", "PATCH"}
MAX_IDEMPOTENCY_KEY_LENGTH = 255


# A change (POST, PATCH) sent with an Idempotency-Key header is done once for the API key that
# sent it: a retry (a billing system that lost the answer to a timeout) gets the first answer again,
# with Idempotent-Replayed: true, instead of a second license. Views that take API keys mix it in.
# (Comments, not docstrings: OpenAPI shows a view's docstring, an inherited one too, as each of its
# operations' description.)
class IdempotentChanges:
    takes_idempotency_keys = True
    idempotent_request: IdempotentRequest | None = None
    # The key's claim, the change and its kept answer are one transaction: a retry sent while the
    # first runs waits for it (on the claim's unique index; SQLite's write lock) and then gets its
    # answer, and a change that fails or is cut off takes its claim with it, so a retry runs it. It
    # begins once the caller is authenticated and let through, so no refused caller (held by the
    # brute-force guard's delay, say) keeps it open; dispatch ends it, however the request ends.
    claim_transaction: transaction.Atomic | None = None

    def dispatch(self, request, *args, **kwargs):
        try:
            response = super().dispatch(request, *args, **kwargs)
        except BaseException as error:
            self._end_claim_transaction(error)
            raise
        self._end_claim_transaction(None)
        return response

    def _end_claim_transaction(self, error: BaseException | None) -> None:
        block, self.claim_transaction = self.claim_transaction, None
        if block is not None:
            block.__exit__(type(error) if error else None, error, error.__traceback__ if error else None)

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        key = request.headers.get(IDEMPOTENCY_KEY_HEADER)
        if key is None or request.method not in IDEMPOTENT_METHODS or getattr(self, "reads_only", False):
            return
        if getattr(self, request.method.lower(), None) is None:
            return  # answered 405 by the dispatch: no change to claim a key for
        if not 0 < len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH or not key.isascii() or not key.isprintable():
            raise errors.InvalidInput(
                f"An Idempotency-Key is 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} printable ASCII characters.",
                field=IDEMPOTENCY_KEY_HEADER,
            )
        # The body as parsed, not as sent: a retry that spaces or orders its JSON otherwise is the same.
        body = json.dumps(request.data, sort_keys=True, separators=(",", ":"))
        digest = hashlib.sha256(f"{request.method} {request.path}\n{body}".encode()).hexdigest()
        block = transaction.atomic()
        block.__enter__()
        # Kept once entered: a BEGIN that failed has nothing for dispatch to end.
        self.claim_transaction = block
        record, answered = services.claim_idempotency_key(api_key=request.auth, key=key, request_digest=digest)
        if answered:
            raise AnswerAgain(record)
        self.idempotent_request = record

    def handle_exception(self, exc):
        if isinstance(exc, AnswerAgain):
            headers = {"Idempotent-Replayed": "true"}
            return Response(services.stored_answer(exc.record), status=exc.record.status_code, headers=headers)
        return super().handle_exception(exc)

    def finalize_response(self, request, response, *args, **kwargs):
        response = super().finalize_response(request, response, *args, **kwargs)
        if self.idempotent_request is not None:
            if response.status_code >= 500:
                # Whatever the change did goes with the claim: the retry does it whole.
                transaction.set_rollback(True)
            else:
                services.finish_idempotent_request(
                    self.idempotent_request, status_code=response.status_code, answer=response.data
                )
            self.idempotent_request = None
        return response


# Authenticated by API key, never one made for apps; read-only keys may only read. Writes are
# audited as the key, and take Idempotency-Keys.
class ManagementView(IdempotentChanges, ApiKeyGuard):
    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [ManagementPermission]
    pagination_class = Pagination

    def api_actor(self) -> services.Actor:
        return services.Actor.api_key(self.request.auth, ip_address=client_ip(self.request))

    def get_object(self):
        try:
            return super().get_object()
        except Http404:
            raise no_record_with_this_id(self.get_queryset().model) from None


class CatalogMixin(ManagementView):
    # A unique value another record holds is 409 duplicate_record: a retry of a create that went
    # through finds it so, and tells it apart from bad input.
    refuses_duplicates = True

    def perform_create(self, serializer):
        record = serializer.Meta.model(**serializer.validated_data)
        services.save_catalog_record(record=record, actor=self.api_actor())
        serializer.instance = record

    def perform_update(self, serializer):
        record = serializer.instance
        for name, value in serializer.validated_data.items():
            setattr(record, name, value)
        services.save_catalog_record(record=record, actor=self.api_actor(), fields=serializer.validated_data.keys())

    def perform_destroy(self, instance):
        services.delete_catalog_record(record=instance, actor=self.api_actor())


# A list whose query-string filters are checked like a body: a bad one is a 400 naming it.
class FilteredListMixin:
    filters_class: type[serializers.Serializer]

    def get_queryset(self):
        return self.apply_filters(super().get_queryset())

    def apply_filters(self, queryset):
        if self.request.method != "GET":
            return queryset
        filters = self.filters_class(data=query_filters(self.request, self.filters_class))
        filters.is_valid(raise_exception=True)
        return self.filtered(queryset, **filters.validated_data)


# Not filters, but taken by every list: its page, and DRF's choice of format (only JSON is offered).
LIST_PARAMETERS = {Pagination.page_query_param, Pagination.page_size_query_param, api_settings.URL_FORMAT_OVERRIDE}


def query_filters(request: Request, filters_class: type[serializers.Serializer]) -> dict[str, str]:
    """The query string's filters, for `filters_class` to check like a body.

    A filter the list does not have, or one given twice, is refused: ignored, it would list
    everything, and a job meant for one plan's licenses would act on all of them.
    """
    offered = set(filters_class().fields)
    for name, values in request.query_params.lists():
        if name not in offered and name not in LIST_PARAMETERS:
            filters = ", ".join(sorted(offered)) or "nothing"
            raise serializers.ValidationError({name: [f"This list has no such filter; it filters by {filters}."]})
        if len(values) > 1:
            raise serializers.ValidationError({name: ["Give this once."]})
    # DRF reads a blank value in a query string as no filter at all: `?external_id=` would list
    # every customer. As a plain dict, a blank value is refused like a blank field of a body.
    return request.query_params.dict()


class NoFilters(serializers.Serializer):
    """For a list with no filters: any given is refused rather than ignored."""


class ProductListView(FilteredListMixin, CatalogMixin, generics.ListCreateAPIView):
    queryset = Product.objects.order_by("id")
    serializer_class = api.ProductSerializer
    filters_class = NoFilters

    def filtered(self, products):
        return products


class ProductDetailView(CatalogMixin, generics.RetrieveUpdateDestroyAPIView):
    queryset = Product.objects.all()
    serializer_class = api.ProductSerializer


class PlanListFilterSerializer(serializers.Serializer):
    product = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)


@extend_schema_view(get=extend_schema(parameters=[PlanListFilterSerializer]))
class PlanListView(FilteredListMixin, CatalogMixin, generics.ListCreateAPIView):
    queryset = Plan.objects.order_by("id")
    serializer_class = api.PlanSerializer
    filters_class = PlanListFilterSerializer

    def filtered(self, plans, product=None):
        return plans if product is None else plans.filter(product_id=product)


class PlanDetailView(CatalogMixin, generics.RetrieveUpdateDestroyAPIView):
    queryset = Plan.objects.all()
    serializer_class = api.PlanSerializer


class CustomerListFilterSerializer(serializers.Serializer):
    email = serializers.EmailField(required=False, help_text="Any case.")
    external_id = serializers.CharField(required=False, max_length=200, help_text="The billing system's id.")
    updated_since = serializers.DateTimeField(
        required=False, help_text="The customer changed at or after this time (a sync's last run)."
    )


@extend_schema_view(get=extend_schema(parameters=[CustomerListFilterSerializer]))
class CustomerListView(FilteredListMixin, CatalogMixin, generics.ListCreateAPIView):
    queryset = Customer.objects.order_by("id")
    serializer_class = api.CustomerSerializer
    filters_class = CustomerListFilterSerializer

    def filtered(self, customers, email=None, external_id=None, updated_since=None):
        if email is not None:
            customers = customers.filter(email__iexact=email)
        if external_id is not None:
            customers = customers.filter(external_id=external_id)
        if updated_since is not None:
            customers = customers.filter(updated_at__gte=updated_since)
        return customers


class CustomerDetailView(CatalogMixin, generics.RetrieveUpdateDestroyAPIView):
    queryset = Customer.objects.all()
    serializer_class = api.CustomerSerializer


def licenses_for_listing():
    return License.objects.select_related("customer").with_live_total()


class LicenseListFilterSerializer(serializers.Serializer):
    product = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    plan = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    customer = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1, help_text="Its id.")
    customer_email = serializers.EmailField(required=False)
    customer_external_id = serializers.CharField(required=False, max_length=200, help_text="The billing system's id.")
    status = serializers.ChoiceField(choices=License.Status.choices, required=False)
    # Not nullable: DRF would read `?expired=` or `?expired=null` as no filter and list everything.
    expired = serializers.BooleanField(required=False, default=None)
    updated_since = serializers.DateTimeField(
        required=False,
        help_text="The license or its owner changed at or after this time (a sync's last run); devices' calls "
        "change nothing.",
    )


@extend_schema_view(get=extend_schema(parameters=[LicenseListFilterSerializer]))
class LicenseListView(FilteredListMixin, ManagementView, generics.ListAPIView):
    serializer_class = api.LicenseSerializer
    filters_class = LicenseListFilterSerializer

    def get_queryset(self):
        return self.apply_filters(License.objects.select_related("customer").order_by("-created_at", "id"))

    def paginate_queryset(self, queryset):
        page = super().paginate_queryset(queryset)
        if page is not None:
            services.count_live_devices(page)
        return page

    filter_lookups = {
        "product": "product_id",
        "plan": "plan_id",
        "customer": "customer_id",
        "customer_email": "customer__email__iexact",
        "customer_external_id": "customer__external_id",
        "status": "status",
    }

    def filtered(self, licenses, expired=None, updated_since=None, **filters):
        licenses = licenses.filter(**{self.filter_lookups[name]: value for name, value in filters.items()})
        if updated_since is not None:
            # A license's answer carries its owner, so a change to the owner changes the answer too.
            licenses = licenses.filter(Q(updated_at__gte=updated_since) | Q(customer__updated_at__gte=updated_since))
        if expired is not None:
            unexpired = License.unexpired_at(timezone.now())
            licenses = licenses.exclude(unexpired) if expired else licenses.filter(unexpired)
        return licenses

    @extend_schema(
        summary="Issue a license",
        request=api.CreateLicenseInputSerializer,
        responses={
            201: api.LicenseWithKeySerializer,
            400: ERRORS[400],
            403: OpenApiResponse(
                api.ErrorSerializer, description="A read-only API key, or an inactive product (product_inactive)."
            ),
            409: OpenApiResponse(api.ErrorSerializer),
        },
    )
    def post(self, request):
        data = validated(api.CreateLicenseInputSerializer, request)
        issued = services.create_license(
            product=data["product"],
            plan=data.get("plan"),
            customer=data.get("customer"),
            customer_email=data.get("customer_email"),
            customer_name=data["customer_name"],
            customer_external_id=data.get("customer_external_id", ""),
            key=data.get("key"),
            max_activations=data.get("max_activations", services.UNSET),
            expires_at=data.get("expires_at", services.UNSET),
            metadata=data["metadata"],
            limit_usage=data.get("limit_usage"),
            usage=data["usage"],
            actor=self.api_actor(),
        )
        license = licenses_for_listing().get(pk=issued.license.pk)
        return Response(api.LicenseWithKeySerializer(license).data, status=201)


class LicenseDetailView(ManagementView, APIView):
    @extend_schema(summary="A license, with its key", responses={200: api.LicenseWithKeySerializer, 404: ERRORS[404]})
    def get(self, request, pk):
        return Response(api.LicenseWithKeySerializer(record_or_404(licenses_for_listing(), pk=pk)).data)

    @extend_schema(
        summary="Change a license's owner, plan, device limit, expiry, metadata or usage limit",
        request=api.UpdateLicenseInputSerializer,
        responses={200: api.LicenseSerializer, 400: ERRORS[400], 404: ERRORS[404], 409: REVOKED_LICENSE_CHANGE},
    )
    def patch(self, request, pk):
        license = record_or_404(License.objects, pk=pk)
        data = validated(api.UpdateLicenseInputSerializer, request)
        services.update_license(license=license, actor=self.api_actor(), **data)
        return Response(api.LicenseSerializer(licenses_for_listing().get(pk=pk)).data)


class LicenseFindView(ManagementView, APIView):
    # The key is sent in a body, never in a URL, where access logs and proxies would keep it.
    reads_only = True

    @extend_schema(
        summary="Find a license by its whole key (read-only keys may too)",
        request=api.FindLicenseInputSerializer,
        responses={200: api.LicenseWithKeySerializer, 400: ERRORS[400], 404: ERRORS[404]},
    )
    def post(self, request):
        data = validated(api.FindLicenseInputSerializer, request)
        # Found with its relations and device count, all the answer shows.
        return Response(api.LicenseWithKeySerializer(services.get_license_by_key(data["key"])).data)


LICENSE_ACTIONS = {
    "suspend": services.suspend_license,
    "reinstate": services.reinstate_license,
    "revoke": services.revoke_license,
}


class LicenseStatusView(ManagementView, APIView):
    action_name = ""

    @extend_schema(
        request=api.StatusChangeInputSerializer,
        responses={
            200: api.LicenseSerializer,
            400: ERRORS[400],
            404: ERRORS[404],
            409: OpenApiResponse(api.ErrorSerializer, description="Not from this status (a revoked license stays so)."),
        },
    )
    def post(self, request, pk):
        license = record_or_404(License.objects, pk=pk)
        data = validated(api.StatusChangeInputSerializer, request)
        LICENSE_ACTIONS[self.action_name](license=license, actor=self.api_actor(), reason=data["reason"])
        return Response(api.LicenseSerializer(licenses_for_listing().get(pk=pk)).data)


class LicenseExtendView(ManagementView, APIView):
    @extend_schema(
        summary="Give a license a new expiry, or more days or months",
        request=api.ExtendLicenseInputSerializer,
        responses={200: api.LicenseSerializer, 400: ERRORS[400], 404: ERRORS[404], 409: REVOKED_LICENSE_CHANGE},
    )
    def post(self, request, pk):
        license = record_or_404(License.objects, pk=pk)
        data = validated(api.ExtendLicenseInputSerializer, request)
        services.extend_license(license=license, actor=self.api_actor(), **data)
        return Response(api.LicenseSerializer(licenses_for_listing().get(pk=pk)).data)


class ActivationListFilterSerializer(serializers.Serializer):
    live = serializers.BooleanField(  # not nullable, as `expired` above
        required=False, default=None, help_text="true: devices in use; false: deactivated ones."
    )


@extend_schema_view(get=extend_schema(parameters=[ActivationListFilterSerializer]))
class LicenseActivationListView(FilteredListMixin, ManagementView, generics.ListAPIView):
    serializer_class = api.ManagedActivationSerializer
    filters_class = ActivationListFilterSerializer

    def get_queryset(self):
        license = record_or_404(License.objects, pk=self.kwargs["pk"])
        return self.apply_filters(Activation.objects.filter(license=license).order_by("-created_at", "id"))

    def filtered(self, activations, live=None):
        return activations if live is None else activations.filter(deactivated_at__isnull=live)

    @extend_schema(
        summary="Import a device another license server activated, under the id its app holds",
        description="The device takes a slot within the license's limit, whatever the license's state, and is "
        "audited as activation.imported. Apps that stored the id (Polar's activation_id, Kelviq's instanceId) "
        "keep validating with it.",
        request=api.ImportActivationInputSerializer,
        responses={
            201: api.ManagedActivationSerializer,
            400: ERRORS[400],
            403: OpenApiResponse(
                api.ErrorSerializer,
                description="A read-only API key or one made for apps, or the license is full "
                "(activation_limit_reached).",
            ),
            404: OpenApiResponse(api.ErrorSerializer, description="No license has this id."),
            409: OpenApiResponse(
                api.ErrorSerializer, description="The id is taken, or a live device of the license has the fingerprint."
            ),
        },
    )
    def post(self, request, pk):
        license = record_or_404(License.objects, pk=pk)
        data = validated(api.ImportActivationInputSerializer, request)
        activation = services.import_activation(
            license=license,
            actor=self.api_actor(),
            activation_id=data.get("id"),
            fingerprint=data.get("fingerprint"),
            name=data["name"],
            platform=data["platform"],
            metadata=data["metadata"],
            conditions=data["conditions"],
            created_at=data.get("created_at"),
            last_seen_at=data.get("last_seen_at"),
        )
        return Response(api.ManagedActivationSerializer(activation).data, status=201)


class AuditEventListFilterSerializer(serializers.Serializer):
    license = serializers.UUIDField(required=False, help_text="Its id: the changes to one license and its devices.")
    action = serializers.CharField(
        required=False, max_length=100, help_text="One action, as license.revoked; one no event has lists nothing."
    )
    since = serializers.DateTimeField(
        required=False,
        help_text="Changes at or after this time. A sync reads on from a minute before its last event and skips "
        "the ids it has: an event is stamped before its change commits, so a slower change can land behind it.",
    )


@extend_schema_view(
    get=extend_schema(
        summary="The audit trail: every change, oldest first", parameters=[AuditEventListFilterSerializer]
    )
)
class AuditEventListView(FilteredListMixin, ManagementView, generics.ListAPIView):
    # Oldest first, for a sync reading on with `since`. Changes to what the management API itself
    # manages: staff accounts, API keys and signing keys are the admin's to show.
    queryset = AuditEvent.objects.filter(
        target_type__in=[model._meta.label_lower for model in (License, Activation, Product, Plan, Customer)]
    ).order_by("created_at", "id")
    serializer_class = api.AuditEventSerializer
    filters_class = AuditEventListFilterSerializer

    def filtered(self, events, license=None, action=None, since=None):
        if license is not None:
            events = events.filter(license_id=license)
        if action is not None:
            events = events.filter(action=action)
        if since is not None:
            events = events.filter(created_at__gte=since)
        return events


DEVICE_FREEING_REFUSED = OpenApiResponse(api.ErrorSerializer, description="A read-only API key, or one made for apps.")


class LicenseDeactivateAllView(ManagementView, APIView):
    @extend_schema(
        summary="Deactivate every live device of a license",
        operation_id="v1_licenses_activations_deactivate_all",
        request=None,
        responses={
            200: api.DeactivatedDevicesSerializer,
            403: DEVICE_FREEING_REFUSED,
            404: ERRORS[404],
        },
    )
    def post(self, request, pk):
        license = record_or_404(License.objects, pk=pk)
        validated(api.EmptyInputSerializer, request)
        freed = services.deactivate_all_activations(license=license, actor=self.api_actor())
        return Response(api.DeactivatedDevicesSerializer({"deactivated": freed}).data)


class ActivationDeactivateView(ManagementView, APIView):
    @extend_schema(
        summary="Deactivate one of a license's devices",
        request=None,
        responses={
            200: api.DeactivatedActivationSerializer,
            403: DEVICE_FREEING_REFUSED,
            404: ERRORS[404],
        },
    )
    def post(self, request, pk, activation_pk):
        license = record_or_404(License.objects, pk=pk)
        try:
            activation = license.activations.get(pk=activation_pk)
        except Activation.DoesNotExist:
            raise exceptions.NotFound("This license has no activation with this id.") from None
        validated(api.EmptyInputSerializer, request)
        result = services.deactivate_activation(activation=activation, actor=self.api_actor())
        result.activation.already_inactive = result.already_inactive
        return Response(api.DeactivatedActivationSerializer(result.activation).data)
