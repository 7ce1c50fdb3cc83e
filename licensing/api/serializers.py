"""Input and output shapes of the native API. Names are unique: drf-spectacular makes them components."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.db import models
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.settings import api_settings

from licensing import keys, services
from licensing.api.exceptions import error_codes
from licensing.models import Activation, ActorKind, AuditEvent, Customer, License, Plan, Product, SigningKey


class StrictTextMixin:
    """Text only: DRF would turn 42 or true into "42" and "True", and let in unencodable strings."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        if not services.is_encodable(data):
            raise serializers.ValidationError("This must be valid Unicode text.")
        return super().to_internal_value(data)


class StrictCharField(StrictTextMixin, serializers.CharField):
    pass


class StrictSlugField(StrictTextMixin, serializers.SlugField):
    pass


class StrictEmailField(StrictTextMixin, serializers.EmailField):
    pass


class StrictUUIDField(StrictTextMixin, serializers.UUIDField):
    pass


class StrictBooleanField(serializers.BooleanField):
    """true or false only: DRF would also take "yes", "on" and 1."""

    def to_internal_value(self, data):
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


def whole_number(data: Any) -> int | None:
    """A JSON number that is whole, as JSON Schema counts one (3 and 3.0, not 3.5), or None.

    Not true or "3", which DRF would take as 1 and 3.
    """
    if isinstance(data, int) and not isinstance(data, bool):
        return data
    if isinstance(data, float) and data.is_integer():
        return int(data)
    return None


class StrictIntegerField(serializers.IntegerField):
    """Whole JSON numbers only (whole_number)."""

    def to_internal_value(self, data):
        number = whole_number(data)
        if number is None:
            self.fail("invalid")
        return super().to_internal_value(number)


class StrictPrimaryKeyRelatedField(serializers.PrimaryKeyRelatedField):
    """A record's id as a whole JSON number (whole_number): DRF would take 1.5 as record 1."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.queryset is not None and "does_not_exist" not in kwargs.get("error_messages", {}):
            # In the words of the record's own path ("There is no plan with this id."), not DRF's "Invalid pk".
            name = self.queryset.model._meta.verbose_name
            self.error_messages["does_not_exist"] = f"There is no {name} with this id."

    def to_internal_value(self, data):
        number = whole_number(data)
        if number is None:
            self.fail("incorrect_type", data_type=type(data).__name__)
        return super().to_internal_value(number)


@extend_schema_field({"type": "object", "additionalProperties": True})
class MetadataField(serializers.JSONField):
    def to_internal_value(self, data):
        try:
            services.check_metadata(data, field=self.field_name)
        except services.errors.InvalidInput as error:
            raise serializers.ValidationError(str(error.message)) from None
        return super().to_internal_value(data)


# A field the serializer does not take is an error, so a typo is not silently ignored. (A comment:
# OpenAPI would show a docstring as the description of every request body.)
class RefuseUnknownFieldsMixin:
    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            writable = {field.field_name for field in self._writable_fields}
            unknown = sorted(set(data) - writable)
            if unknown:
                raise serializers.ValidationError({name: ["This field is not allowed."] for name in unknown})
        return super().to_internal_value(data)


class StrictInputSerializer(RefuseUnknownFieldsMixin, serializers.Serializer):
    pass


class StrictModelSerializer(RefuseUnknownFieldsMixin, serializers.ModelSerializer):
    serializer_related_field = StrictPrimaryKeyRelatedField
    serializer_field_mapping = {
        **serializers.ModelSerializer.serializer_field_mapping,
        models.CharField: StrictCharField,
        models.TextField: StrictCharField,
        models.SlugField: StrictSlugField,
        models.EmailField: StrictEmailField,
        models.UUIDField: StrictUUIDField,
        models.PositiveIntegerField: StrictIntegerField,
        models.BooleanField: StrictBooleanField,
    }


@functools.cache
def _shared(serializer_class: type[serializers.Serializer]) -> serializers.Serializer:
    return serializer_class()


def render(serializer_class: type[serializers.Serializer], instance: Any) -> dict[str, Any]:
    """`serializer_class(instance).data` from one instance per class, shared by every request.

    A new DRF serializer deep-copies each declared field, which on a license call costs more than
    its database look-up. Rendering and validating keep no state on the serializer, so one
    instance serves every thread.
    """
    return _shared(serializer_class).to_representation(instance)


def validated_input(serializer_class: type[serializers.Serializer], data: Any) -> dict[str, Any]:
    """The validated data of `serializer_class(data=data)`, or its ValidationError, from the shared instance."""
    if data is None:
        # What is_valid() says of a JSON null body; run_validation alone calls it a null field.
        raise serializers.ValidationError({api_settings.NON_FIELD_ERRORS_KEY: ["No data provided"]})
    return _shared(serializer_class).run_validation(data)


def key_field(**kwargs: Any) -> StrictCharField:
    return StrictCharField(max_length=keys.MAX_KEY_LENGTH, trim_whitespace=False, **kwargs)


MAX_NONCE_LENGTH = 200
NONCE_HELP = f"Any string up to {MAX_NONCE_LENGTH} characters; echoed in meta.nonce, inside the signature."


# ---------------------------------------------------------------- app-facing license calls


class ActivateLicenseInputSerializer(StrictInputSerializer):
    key = key_field()
    fingerprint = StrictCharField(max_length=services.MAX_FINGERPRINT_LENGTH)
    name = StrictCharField(max_length=services.MAX_NAME_LENGTH, required=False, allow_blank=True, default="")
    platform = StrictCharField(max_length=services.MAX_PLATFORM_LENGTH, required=False, allow_blank=True, default="")
    metadata = MetadataField(required=False, default=dict)
    nonce = StrictCharField(max_length=MAX_NONCE_LENGTH, required=False, help_text=NONCE_HELP)


class ValidateLicenseInputSerializer(StrictInputSerializer):
    key = key_field()
    fingerprint = StrictCharField(max_length=services.MAX_FINGERPRINT_LENGTH, required=False)
    activation_id = StrictUUIDField(required=False)
    nonce = StrictCharField(max_length=MAX_NONCE_LENGTH, required=False, help_text=NONCE_HELP)


class DeactivateLicenseInputSerializer(StrictInputSerializer):
    key = key_field()
    activation_id = StrictUUIDField(required=False)
    fingerprint = StrictCharField(max_length=services.MAX_FINGERPRINT_LENGTH, required=False)
    nonce = StrictCharField(max_length=MAX_NONCE_LENGTH, required=False, help_text=NONCE_HELP)

    def validate(self, data):
        if "activation_id" not in data and "fingerprint" not in data:
            raise serializers.ValidationError({"activation_id": ["Give the activation_id or the fingerprint."]})
        return data


class CheckoutLicenseInputSerializer(StrictInputSerializer):
    key = key_field()
    fingerprint = StrictCharField(max_length=services.MAX_FINGERPRINT_LENGTH)
    ttl = StrictIntegerField(
        required=False,
        min_value=60,
        max_value=int(settings.OFFLINE_LICENSE_MAX_TTL.total_seconds()),
        help_text="Seconds the file stays valid (default: the server's OFFLINE_LICENSE_DEFAULT_TTL, 30 days unset).",
    )
    nonce = StrictCharField(max_length=MAX_NONCE_LENGTH, required=False, help_text=NONCE_HELP)


# The shapes of the app-facing answers are plain Serializers with declared fields: they render on
# every license call, and a ModelSerializer rebuilds its fields from the model each time.


class ProductSummarySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    public_id = serializers.CharField()
    name = serializers.CharField()
    slug = serializers.CharField()


class PlanSummarySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    identifier = serializers.CharField()
    name = serializers.CharField()


class AppLicenseSerializer(serializers.Serializer):
    """The license as an app sees it: no key, no owner."""

    id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=License.Status.choices)
    product = ProductSummarySerializer()
    plan = PlanSummarySerializer(allow_null=True)
    expires_at = serializers.DateTimeField(allow_null=True)
    expired = serializers.BooleanField(source="is_expired", help_text="Past its expiry, whatever its status.")
    max_activations = serializers.IntegerField(allow_null=True, help_text="null: unlimited.")
    activations_used = serializers.SerializerMethodField()
    activations_remaining = serializers.SerializerMethodField(
        help_text="null: unlimited. Free slots, less those cooling down after a deactivation (plan's slot cooldown)."
    )
    metadata = serializers.JSONField()

    def get_activations_used(self, license: License) -> int:
        return license.devices_in_use()

    def get_activations_remaining(self, license: License) -> int | None:
        return services.activations_remaining(license)


class ActivationSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    fingerprint = serializers.CharField(allow_null=True)
    name = serializers.CharField()
    platform = serializers.CharField()
    metadata = serializers.JSONField()
    created_at = serializers.DateTimeField()
    last_seen_at = serializers.DateTimeField()
    deactivated_at = serializers.DateTimeField(allow_null=True)


# The app-facing calls of the native API, each view's `call_name`.
LICENSE_CALLS = ["activate", "validate", "deactivate", "checkout"]


class MetaSerializer(serializers.Serializer):
    server_time = serializers.DateTimeField()
    nonce = serializers.CharField(allow_null=True)
    call = serializers.ChoiceField(
        choices=LICENSE_CALLS,
        help_text="The call this answers: a signed answer to one call cannot pass for another's.",
    )
    key_sha256 = serializers.CharField(
        allow_null=True,
        help_text="SHA-256 (hex) of the license key the request sent, so an answer about another key "
        "cannot pass for one about the app's.",
    )


class ActivationAnswerSerializer(serializers.Serializer):
    created = serializers.BooleanField(help_text="false when the device was already active (HTTP 200).")
    activation = ActivationSerializer()
    license = AppLicenseSerializer()
    meta = MetaSerializer()


class ValidationAnswerSerializer(serializers.Serializer):
    valid = serializers.BooleanField()
    code = serializers.ChoiceField(choices=["VALID", *services.VALIDATION_CODES.values()])
    detail = serializers.CharField()
    license = AppLicenseSerializer(allow_null=True)
    activation = ActivationSerializer(allow_null=True)
    meta = MetaSerializer()


class DeactivationAnswerSerializer(serializers.Serializer):
    activation = ActivationSerializer()
    already_inactive = serializers.BooleanField()
    detail = serializers.CharField()
    license = AppLicenseSerializer()
    meta = MetaSerializer()


class LicenseFilePayloadSerializer(serializers.Serializer):
    """What an offline license file holds (the signer adds kid and alg)."""

    license = AppLicenseSerializer()
    activation = ActivationSerializer()
    key_sha256 = serializers.CharField(
        help_text="SHA-256 (hex) of the license key the file is for, so a file for another key cannot "
        "pass for one for the app's."
    )
    issued_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()


class CheckoutAnswerSerializer(serializers.Serializer):
    license_file = serializers.CharField()
    issued_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()
    kid = serializers.CharField()
    algorithm = serializers.CharField()
    activation = ActivationSerializer(help_text="The device the file is issued to, inside the signature.")
    meta = MetaSerializer()


class ErrorDeviceSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    platform = serializers.CharField()
    fingerprint = serializers.CharField(allow_null=True, help_text="Masked: its last four characters.")
    created_at = serializers.DateTimeField()
    last_seen_at = serializers.DateTimeField()


class ErrorDetailSerializer(serializers.Serializer):
    """A refusal: `code` says which, `message` says it in words, and some codes carry their facts."""

    code = serializers.CharField(help_text=f"Which refusal, for code to act on: one of {', '.join(error_codes())}.")
    message = serializers.CharField()
    field = serializers.CharField(required=False, help_text="The input field at fault, where one is.")
    errors = serializers.JSONField(required=False, help_text="invalid_input: every field's errors.")
    limit = serializers.IntegerField(
        required=False,
        help_text="activation_limit_reached: the license's device limit; deactivation_limit_reached: the "
        "device changes a window allows.",
    )
    used = serializers.IntegerField(required=False, help_text="activation_limit_reached: devices in use.")
    devices = ErrorDeviceSerializer(
        many=True, required=False, help_text="activation_limit_reached: the devices in use, to free one."
    )
    portal_url = serializers.URLField(
        required=False,
        allow_null=True,
        help_text="activation_limit_reached: the customer portal, where the customer can free a device (null: "
        "the server has no PUBLIC_URL set).",
    )
    remaining = serializers.IntegerField(
        required=False, help_text="deactivation_limit_reached: device changes left; usage_limit_reached: uses left."
    )
    window_days = serializers.IntegerField(
        required=False, help_text="deactivation_limit_reached: the days over which device changes are counted."
    )
    available_at = serializers.DateTimeField(
        required=False,
        help_text="slot_cooling_down: when the slot frees; deactivation_limit_reached: when a device change comes "
        "back (absent while some are left, or when the plan allows none).",
    )
    expired_at = serializers.DateTimeField(required=False, help_text="license_expired: when it expired.")
    retry_after = serializers.IntegerField(
        required=False, help_text="rate_limited: seconds to wait, as the Retry-After header says."
    )


class ErrorSerializer(serializers.Serializer):
    error = ErrorDetailSerializer()


class LicenseCallErrorSerializer(ErrorSerializer):
    """A license call's refusal: signed like its other answers, so it carries `meta` too."""

    meta = MetaSerializer()


class SigningKeySerializer(serializers.ModelSerializer):
    public_key = serializers.CharField(source="public_key_pem")
    active = serializers.SerializerMethodField(help_text="Whether this key signs new answers.")

    class Meta:
        model = SigningKey
        fields = ["kid", "algorithm", "public_key", "created_at", "signs_from", "active"]
        extra_kwargs = {
            "signs_from": {
                "help_text": "When this key signs, or signed, its first answer; a later time is a key "
                "published ahead of a rotation, for apps to embed before it signs."
            }
        }

    def get_active(self, signing_key: SigningKey) -> bool:
        return signing_key.pk == self.context["current_kid_pk"]


class SigningKeyListSerializer(serializers.Serializer):
    keys = SigningKeySerializer(many=True)


# ---------------------------------------------------------------- management API


class ProductSerializer(StrictModelSerializer):
    class Meta:
        model = Product
        fields = ["id", "name", "slug", "public_id", "polar_organization_id", "is_active", "created_at", "updated_at"]
        # As the customers' below: a taken slug or public id is the model's 409, naming the field.
        extra_kwargs = {"slug": {"validators": []}, "public_id": {"required": False, "validators": []}}


class PlanSerializer(StrictModelSerializer):
    class Meta:
        model = Plan
        fields = [
            "id",
            "product",
            "name",
            "identifier",
            "description",
            "max_activations",
            "duration_unit",
            "duration_value",
            "max_deactivations",
            "deactivation_window_days",
            "slot_cooldown_minutes",
            "created_at",
            "updated_at",
        ]
        # The model's constraint refuses a duplicate identifier in the admin's words, naming the field
        # (services.save_catalog_record); DRF's own check would say it in other words, for no field.
        validators: list = []


class CustomerSerializer(StrictModelSerializer):
    class Meta:
        model = Customer
        fields = ["id", "email", "name", "external_id", "created_at", "updated_at"]
        # The model's constraints refuse a taken e-mail or external id in the admin's words, naming the
        # field (services.save_catalog_record); DRF's own check would say it in other words.
        extra_kwargs = {"external_id": {"validators": []}}


class LicenseSerializer(serializers.ModelSerializer):
    """A license as the vendor's systems see it; the key only where the view adds it."""

    customer = CustomerSerializer(read_only=True, allow_null=True, help_text="null: the license has no owner.")
    activations_used = serializers.IntegerField(source="live_total", read_only=True)
    masked_key = serializers.CharField(read_only=True)
    expired = serializers.BooleanField(source="is_expired", read_only=True)

    class Meta:
        model = License
        fields = [
            "id",
            "masked_key",
            "product",
            "plan",
            "customer",
            "status",
            "max_activations",
            "activations_used",
            "expires_at",
            "expired",
            "metadata",
            "usage",
            "limit_usage",
            "validation_count",
            "last_validated_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class LicenseWithKeySerializer(LicenseSerializer):
    key = serializers.SerializerMethodField()

    class Meta(LicenseSerializer.Meta):
        fields = ["id", "key", *LicenseSerializer.Meta.fields[1:]]
        read_only_fields = fields

    def get_key(self, license: License) -> str:
        return services.reveal_license_key(license)


# A license's owner, named by its e-mail or, as a billing system knows it, by an id: an e-mail
# changed in billing would otherwise make a second customer here. (A comment, not a docstring: the
# schema would show it as the description of the request bodies.)
class OwnerInputSerializer(StrictInputSerializer):
    customer = StrictPrimaryKeyRelatedField(
        queryset=Customer.objects.all(), required=False, help_text="An existing customer, by its id here."
    )
    customer_external_id = StrictCharField(
        max_length=200,
        required=False,
        help_text="An existing customer, by the billing system's id (external_id). With customer_email: that "
        "customer, else the one with the e-mail (which takes the id), else a new one with both.",
    )
    customer_name = StrictCharField(
        max_length=200,
        required=False,
        allow_blank=True,
        default="",
        help_text="With customer_email: the name of a customer made for it, or found without one.",
    )

    def validate(self, data):
        named = [name for name in ("customer", "customer_external_id", "customer_email") if name in data]
        # An e-mail with the billing system's id names one owner: found by the id, else by the e-mail, else made.
        by_email_and_billing_id = named == ["customer_external_id", "customer_email"] and data["customer_email"]
        if len(named) > 1 and not by_email_and_billing_id:
            raise serializers.ValidationError({named[1]: [f"Name the owner once: by {named[0]} or by {named[1]}."]})
        named_by_id = "customer" in data or ("customer_external_id" in data and not by_email_and_billing_id)
        if data["customer_name"] and named_by_id:
            raise serializers.ValidationError(
                {
                    "customer_name": [
                        "A customer named by its id keeps its own name: customer_name goes with customer_email."
                    ]
                }
            )
        if data["customer_name"] and not data.get("customer_email"):
            raise serializers.ValidationError({"customer_email": ["A customer_name needs a customer_email."]})
        if "customer_external_id" in data and not by_email_and_billing_id:
            customer = Customer.objects.filter(external_id=data.pop("customer_external_id")).first()
            if customer is None:
                raise serializers.ValidationError(
                    {"customer_external_id": ["There is no customer with this external id."]}
                )
            data["customer"] = customer
        return data


class CreateLicenseInputSerializer(OwnerInputSerializer):
    product = StrictPrimaryKeyRelatedField(queryset=Product.objects.all())
    plan = StrictPrimaryKeyRelatedField(queryset=Plan.objects.all(), required=False, allow_null=True)
    customer_email = StrictEmailField(
        max_length=254, required=False, help_text="The owner's e-mail: that customer, made if there is none."
    )
    key = key_field(required=False, help_text="Leave out to generate one; give it to import an existing key.")
    max_activations = StrictIntegerField(
        min_value=0,
        max_value=services.MAX_ACTIVATION_LIMIT,
        required=False,
        allow_null=True,
        help_text="Leave out for the plan's limit; null is unlimited.",
    )
    expires_at = serializers.DateTimeField(
        required=False, allow_null=True, help_text="Leave out for the plan's duration; null never expires."
    )
    metadata = MetadataField(required=False, default=dict)
    limit_usage = StrictIntegerField(
        min_value=0,
        max_value=services.MAX_USAGE_LIMIT,
        required=False,
        allow_null=True,
        help_text="Most uses apps may count; null is unlimited.",
    )
    usage = StrictIntegerField(
        min_value=0,
        max_value=services.MAX_USAGE_LIMIT,
        required=False,
        default=0,
        help_text="Uses counted already, for a key imported from Polar with its usage.",
    )


class UpdateLicenseInputSerializer(OwnerInputSerializer):
    customer_email = StrictEmailField(
        max_length=254,
        required=False,
        allow_null=True,
        help_text="The new owner's e-mail: that customer, made if there is none; null leaves the license without one.",
    )
    plan = StrictPrimaryKeyRelatedField(
        queryset=Plan.objects.all(),
        required=False,
        help_text="Another plan of the license's product; the license takes its activation limit, unless "
        "max_activations is sent too. The expiry stays.",
    )
    max_activations = StrictIntegerField(
        min_value=0, max_value=services.MAX_ACTIVATION_LIMIT, required=False, allow_null=True
    )
    expires_at = serializers.DateTimeField(required=False, allow_null=True)
    metadata = MetadataField(required=False)
    limit_usage = StrictIntegerField(min_value=0, max_value=services.MAX_USAGE_LIMIT, required=False, allow_null=True)


class FindLicenseInputSerializer(StrictInputSerializer):
    key = key_field(help_text="The whole license key, exactly as the customer has it.")


class EmptyInputSerializer(StrictInputSerializer):
    """For actions that take no input: a body with fields is a mistake worth reporting."""


class StatusChangeInputSerializer(StrictInputSerializer):
    reason = StrictCharField(
        max_length=services.MAX_REASON_LENGTH,
        required=False,
        allow_blank=True,
        # Generated clients send null for an optional field they were given no value for.
        allow_null=True,
        default="",
        help_text="Why (an unpaid invoice, a chargeback): kept in the change's audit event.",
    )

    def validate_reason(self, reason: str | None) -> str:
        return reason or ""


class ExtendLicenseInputSerializer(StrictInputSerializer):
    days = StrictIntegerField(min_value=1, required=False)
    months = StrictIntegerField(
        min_value=1, required=False, help_text="Calendar months: 12 is a year, to the same day."
    )
    expires_at = serializers.DateTimeField(required=False, allow_null=True)

    def validate(self, data):
        if [name in data for name in ("days", "months", "expires_at")].count(True) != 1:
            raise serializers.ValidationError({"days": ["Give one of days, months or expires_at."]})
        return data


class AuditEventSerializer(serializers.ModelSerializer):
    action = serializers.CharField(
        read_only=True, help_text="What was done: license.created, activation.deactivated..."
    )
    actor_kind = serializers.ChoiceField(
        choices=ActorKind.choices, read_only=True, help_text="Who did it: staff, an API key, an app..."
    )
    actor_display = serializers.CharField(
        read_only=True, help_text="Who did it, in words: a staff member, an API key's name."
    )
    target_type = serializers.CharField(
        read_only=True, help_text="The kind of record changed: licensing.license, licensing.activation..."
    )
    license = serializers.UUIDField(
        source="license_id", read_only=True, allow_null=True, help_text="The license the change concerns, if any."
    )
    changes = serializers.JSONField(
        read_only=True,
        help_text="Mostly each field changed as [before, after]; a refusal gives its reason, and some events "
        "(a deactivation, a sign-in) nothing.",
    )
    ip_address = serializers.IPAddressField(
        read_only=True, allow_null=True, help_text="Where an app, customer or API key called from; null for staff."
    )

    class Meta:
        model = AuditEvent
        fields = [
            "id",
            "created_at",
            "action",
            "actor_kind",
            "actor_id",
            "actor_display",
            "target_type",
            "target_id",
            "target_display",
            "license",
            "changes",
            "ip_address",
        ]
        read_only_fields = fields

    def to_representation(self, event):
        answer = super().to_representation(event)
        # Where staff work from is the admin's to show, not the vendor's systems'.
        if event.actor_kind == ActorKind.STAFF:
            answer["ip_address"] = None
        return answer


class ImportActivationInputSerializer(StrictInputSerializer):
    id = StrictUUIDField(
        required=False,
        help_text="The id the old license server gave the device (Polar's activation_id, Kelviq's instanceId), "
        "so apps that stored it keep validating with it. Leave out for a new one.",
    )
    fingerprint = StrictCharField(max_length=services.MAX_FINGERPRINT_LENGTH, required=False, allow_null=True)
    name = StrictCharField(max_length=services.MAX_NAME_LENGTH, required=False, allow_blank=True, default="")
    platform = StrictCharField(max_length=services.MAX_PLATFORM_LENGTH, required=False, allow_blank=True, default="")
    metadata = MetadataField(required=False, default=dict)
    conditions = MetadataField(
        required=False, default=dict, help_text="Polar's activation conditions, which its validations must match."
    )
    created_at = serializers.DateTimeField(
        required=False,
        help_text="When the old server activated the device (UTC unless the time says); leave out for now.",
    )
    last_seen_at = serializers.DateTimeField(
        required=False, help_text="When the old server last heard from the device; leave out for created_at."
    )


class ManagedActivationSerializer(serializers.ModelSerializer):
    deactivated_by_kind = serializers.ChoiceField(
        choices=ActorKind.choices, allow_blank=True, read_only=True, help_text="Empty while the device is active."
    )

    class Meta:
        model = Activation
        fields = [
            "id",
            "fingerprint",
            "name",
            "platform",
            "metadata",
            "conditions",
            "ip_address",
            "created_at",
            "last_seen_at",
            "deactivated_at",
            "deactivated_by_kind",
            "deactivated_by",
        ]
        read_only_fields = fields


class DeactivatedDevicesSerializer(serializers.Serializer):
    deactivated = ManagedActivationSerializer(
        many=True, read_only=True, help_text="The devices that were live and are now freed (none: it had none)."
    )


class DeactivatedActivationSerializer(ManagedActivationSerializer):
    already_inactive = serializers.BooleanField(
        read_only=True, help_text="True when the device was already inactive, so nothing changed."
    )

    class Meta(ManagedActivationSerializer.Meta):
        fields = [*ManagedActivationSerializer.Meta.fields, "already_inactive"]
        read_only_fields = fields
