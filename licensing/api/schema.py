"""The OpenAPI schema documents every status the API can answer, not only the happy ones.

Each view lists what is particular to it (a license call's 403 for a limit, validate's 404 shape);
the refusals every view of a kind shares are added here from what the view is: a JSON body can be
malformed (400), too large (413) or not JSON (415); query parameters can be wrong (400); an API key
can be missing (401) or read-only (403); a path id or a page can be unknown (404); a license call
can be rate-limited (429).
"""

from __future__ import annotations

from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse

from licensing.api.authentication import ApiKeyAuthentication
from licensing.api.serializers import ErrorSerializer, RefuseUnknownFieldsMixin

BODY_METHODS = {"POST", "PUT", "PATCH"}


class BuiltOnceSchemaGenerator(SchemaGenerator):
    """Builds the schema a process serves once: it is the same for every request (public, with
    every endpoint), and building it takes 50 to 130 ms, which a public URL should not let anyone
    spend at will."""

    built: dict[bool, dict] = {}

    def get_schema(self, request=None, public=False):
        if public not in self.built:
            self.built[public] = super().get_schema(request=request, public=public)
        return self.built[public]


class LicensingAutoSchema(AutoSchema):
    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for code, description in self._shared_refusals().items():
            if code not in responses:
                answer = OpenApiResponse(
                    getattr(self.view, "error_serializer", ErrorSerializer), description=description
                )
                responses[code] = self._get_response_for_code(answer, code, direction=direction)
        return dict(sorted(responses.items()))

    def get_override_parameters(self):
        parameters = super().get_override_parameters()
        if self._takes_idempotency_key():
            parameters.append(
                OpenApiParameter(
                    "Idempotency-Key",
                    {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[\\x20-\\x7E]+$"},
                    OpenApiParameter.HEADER,
                    description="Any 1-255 printable ASCII characters, new for each change (an order id): a retry "
                    "with the same key and request gets the first answer again (Idempotent-Replayed: true) "
                    "for 24 hours, instead of making the change twice.",
                )
            )
            parameters.append(
                OpenApiParameter(
                    "Idempotent-Replayed",
                    {"type": "string", "enum": ["true"]},
                    OpenApiParameter.HEADER,
                    response=True,
                    description="Sent when this is the first answer again, for a retry with the same Idempotency-Key.",
                )
            )
        if self.view.throttle_classes:
            parameters.append(
                OpenApiParameter(
                    "Retry-After",
                    int,
                    OpenApiParameter.HEADER,
                    response=["429"],
                    description="Seconds to wait before calling again.",
                )
            )
        return parameters

    def _takes_idempotency_key(self) -> bool:
        view = self.view
        return (
            self.method in {"POST", "PATCH"}
            and getattr(view, "takes_idempotency_keys", False)
            and not getattr(view, "reads_only", False)
        )

    def _shared_refusals(self) -> dict[str, str]:
        refusals = {}
        if self._takes_idempotency_key():
            refusals["422"] = "This Idempotency-Key was sent with another request."
        if self.method in BODY_METHODS or self._is_paginated():
            refusals["400"] = "Bad input; `field` names it."
        if ApiKeyAuthentication in self.view.authentication_classes:
            refusals["401"] = "No API key, or one that is unknown, revoked or expired."
            refusals["403"] = (
                "This API key is made for apps."
                if getattr(self.view, "reads_only", False)
                else "This API key is read-only."
            )
        if "{" in self.path or self._is_paginated():
            refusals["404"] = "No such record, or no such page."
        if self.method in BODY_METHODS and getattr(self.view, "refuses_duplicates", False):
            refusals["409"] = "Another record holds this value already (duplicate_record); `field` names it."
        if self.method == "DELETE":
            refusals["409"] = "Licenses (or a product's plans) refer to it (record_in_use)."
        if self.method in BODY_METHODS:
            refusals["413"] = "Request body too large."
            refusals["415"] = "The request body is not JSON."
        refusals["406"] = "The client takes no JSON (its Accept header)."
        if self.view.throttle_classes:
            refusals["429"] = getattr(
                self.view, "throttled_because", "Too many calls from this address or for this key; see Retry-After."
            )
        return refusals

    def _is_paginated(self) -> bool:
        paginated = getattr(self.view, "pagination_class", None) is not None
        return self.method == "GET" and paginated and self._is_list_view()

    def _map_serializer(self, serializer, direction, bypass_extensions=False):
        schema = super()._map_serializer(serializer, direction, bypass_extensions)
        if direction == "request" and isinstance(serializer, RefuseUnknownFieldsMixin):
            schema["additionalProperties"] = False
        return schema
