from __future__ import annotations

import calendar
import uuid
from datetime import datetime, timedelta

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import OuterRef, Q, Subquery
from django.db.models.functions import Coalesce, Lower, Now
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext


def add_months(moment: datetime, months: int) -> datetime:
    """Return the same day `months` later, clamped to the month's last day (Jan 31 + 1 month = Feb 28)."""
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def new_public_id() -> str:
    return str(uuid.uuid4())


class ConstraintErrorsNameFieldsMixin:
    """A broken constraint names the field to mend: the one its violation_error_code names.

    Django names a field only for a unique constraint on that one field; a check, a unique set or
    an expression would otherwise be an error of the whole record, for the admin and the API alike.
    """

    def validate_constraints(self, exclude=None):
        try:
            super().validate_constraints(exclude)
        except ValidationError as error:
            field_names = {field.name for field in self._meta.concrete_fields}
            named: dict[str, list[ValidationError]] = {}
            for field, field_errors in error.error_dict.items():
                for field_error in field_errors:
                    names_a_field = field == NON_FIELD_ERRORS and field_error.code in field_names
                    named_field = field_error.code if names_a_field else field
                    named.setdefault(named_field, []).append(field_error)
            raise ValidationError(named) from None


class Product(models.Model):
    name = models.CharField(max_length=200)
    slug = models.SlugField(max_length=100, unique=True)
    # Apps built against other vendors hard-code a product id (Keymint's productId, Polar's
    # organization_id...): staff must be able to set it to the old value when moving here.
    public_id = models.CharField(
        _("public identifier"),
        max_length=100,
        unique=True,
        default=new_public_id,
        help_text=_("The product id apps send. Set it to the id your previous vendor gave the product."),
    )
    is_active = models.BooleanField(
        _("active"),
        default=True,
        help_text=_(
            "Untick to withdraw the product: no new licenses, and the licenses already sold stop activating and "
            "validating until it is ticked again."
        ),
    )
    polar_organization_id = models.UUIDField(
        _("Polar organization id"),
        null=True,
        blank=True,
        db_index=True,
        help_text=_("The organization_id apps built for Polar send with this product's keys."),
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Plan(ConstraintErrorsNameFieldsMixin, models.Model):
    class DurationUnit(models.TextChoices):
        PERPETUAL = "perpetual", _("perpetual")
        DAY = "day", _("days")
        MONTH = "month", _("months")
        YEAR = "year", _("years")

    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="plans")
    name = models.CharField(max_length=200)
    identifier = models.SlugField(max_length=100, help_text=_("Unique within the product."))
    description = models.TextField(blank=True)
    max_activations = models.PositiveIntegerField(
        _("default activation limit"),
        null=True,
        blank=True,
        validators=[MaxValueValidator(2_147_483_647)],
        help_text=_("Devices a new license may activate. Empty means unlimited."),
    )
    # Anti-churn: how often apps and customers may move a license between devices. Staff
    # and the system are never limited, so support can always help.
    max_deactivations = models.PositiveIntegerField(
        _("device changes allowed"),
        null=True,
        blank=True,
        validators=[MaxValueValidator(2_147_483_647)],
        help_text=_("Deactivations by apps and customers allowed per window. Empty means no limit."),
    )
    deactivation_window_days = models.PositiveIntegerField(
        _("window (days)"),
        default=30,
        validators=[MinValueValidator(1), MaxValueValidator(3650)],
        help_text=_("The rolling window the device changes are counted over."),
    )
    slot_cooldown_minutes = models.PositiveIntegerField(
        _("slot cooldown (minutes)"),
        default=0,
        validators=[MaxValueValidator(525_600)],
        help_text=_("How long a slot freed by an app, customer or API key stays taken. 0 frees it at once."),
    )
    duration_unit = models.CharField(max_length=10, choices=DurationUnit.choices, default=DurationUnit.PERPETUAL)
    duration_value = models.PositiveIntegerField(
        null=True,
        blank=True,
        # The column's range on PostgreSQL, stated so that every database gives the API one schema
        # (the check constraint below is what keeps plans within 100 years).
        validators=[MaxValueValidator(2_147_483_647)],
        help_text=_("How many days, months or years. Empty for perpetual."),
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["product__name", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["product", "identifier"],
                name="plan_identifier_unique_per_product",
                violation_error_message=_("This product already has a plan with this identifier."),
                violation_error_code="identifier",
            ),
            models.CheckConstraint(
                condition=Q(duration_unit="perpetual", duration_value__isnull=True)
                | (~Q(duration_unit="perpetual") & Q(duration_value__isnull=False, duration_value__gte=1)),
                name="plan_duration_is_perpetual_or_positive",
                violation_error_message=_("A perpetual plan has no duration; any other needs a duration of 1 or more."),
                violation_error_code="duration_value",
            ),
            # A longer plan is a perpetual one in all but name, and at some length its licenses
            # would expire past the year 9999, which no date can hold: every issue would fail.
            models.CheckConstraint(
                condition=Q(duration_unit="perpetual")
                | Q(duration_unit="day", duration_value__lte=36_500)
                | Q(duration_unit="month", duration_value__lte=1_200)
                | Q(duration_unit="year", duration_value__lte=100),
                name="plan_duration_at_most_100_years",
                violation_error_message=_(
                    "A plan lasts at most 100 years (36500 days, 1200 months); choose perpetual."
                ),
                violation_error_code="duration_value",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.product} · {self.name}"

    @property
    def duration_display(self) -> str:
        if self.duration_unit == self.DurationUnit.PERPETUAL:
            return str(_("perpetual"))
        units = {
            self.DurationUnit.DAY: ngettext("%(count)d day", "%(count)d days", self.duration_value),
            self.DurationUnit.MONTH: ngettext("%(count)d month", "%(count)d months", self.duration_value),
            self.DurationUnit.YEAR: ngettext("%(count)d year", "%(count)d years", self.duration_value),
        }
        return units[self.duration_unit] % {"count": self.duration_value}

    def expiry_from(self, start: datetime) -> datetime | None:
        """Return when a license of this plan issued at `start` expires (None: never)."""
        if self.duration_unit == self.DurationUnit.DAY:
            return start + timedelta(days=self.duration_value)
        if self.duration_unit == self.DurationUnit.MONTH:
            return add_months(start, self.duration_value)
        if self.duration_unit == self.DurationUnit.YEAR:
            return add_months(start, 12 * self.duration_value)
        return None


class Customer(ConstraintErrorsNameFieldsMixin, models.Model):
    public_id = models.UUIDField(_("public id"), default=uuid.uuid4, unique=True, editable=False)
    email = models.EmailField(max_length=254)
    name = models.CharField(max_length=200, blank=True)
    external_id = models.CharField(
        _("external id"), max_length=200, blank=True, help_text=_("The customer's id in your billing system.")
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Portal sessions begun, and sign-in links sent, before this time no longer sign the customer in.
    portal_sessions_ended_at = models.DateTimeField(_("signed out everywhere"), null=True, blank=True, editable=False)

    class Meta:
        ordering = ["email"]
        constraints = [
            models.UniqueConstraint(
                Lower("email"),
                name="customer_email_unique_ci",
                violation_error_message=_("A customer with this e-mail already exists."),
                violation_error_code="email",
            ),
            models.UniqueConstraint(
                fields=["external_id"],
                condition=~Q(external_id=""),
                name="customer_external_id_unique",
                violation_error_message=_("Another customer already has this external id."),
                violation_error_code="external_id",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>" if self.name else self.email

    @property
    def reference(self) -> str:
        """The id other systems know the customer by: the billing system's, else ours."""
        return self.external_id or self.public_id.hex


def live_device_count() -> Coalesce:
    """A subquery counting the live devices of the license in the outer query.

    A subquery rather than a JOIN and GROUP BY, so it combines with select_related and filters.
    """
    live = (
        Activation.objects.live()
        .filter(license=OuterRef("pk"))
        .order_by()
        .values("license")
        .annotate(total=models.Count("pk"))
        .values("total")
    )
    return Coalesce(Subquery(live), 0)


class LicenseQuerySet(models.QuerySet):
    def with_live_total(self) -> LicenseQuerySet:
        """Count each license's live devices in the same query, as `live_total`."""
        return self.annotate(live_total=live_device_count())


class License(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active", _("active")
        SUSPENDED = "suspended", _("suspended")
        REVOKED = "revoked", _("revoked")

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="licenses")
    plan = models.ForeignKey(Plan, on_delete=models.PROTECT, related_name="licenses", null=True, blank=True)
    customer = models.ForeignKey(Customer, on_delete=models.PROTECT, related_name="licenses", null=True, blank=True)
    # The key itself is never stored: a keyed digest finds it, an encrypted copy shows it to staff
    # and its owner, and a few trailing characters identify it in lists.
    key_digest = models.CharField(max_length=64, unique=True, editable=False)
    key_encrypted = models.TextField(editable=False)
    key_suffix = models.CharField(max_length=6, editable=False)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    max_activations = models.PositiveIntegerField(
        _("activation limit"),
        null=True,
        blank=True,
        validators=[MaxValueValidator(2_147_483_647)],
        help_text=_("Empty means unlimited."),
    )
    expires_at = models.DateTimeField(null=True, blank=True, help_text=_("Empty means it never expires."))
    metadata = models.JSONField(default=dict, blank=True)
    usage = models.PositiveBigIntegerField(default=0, help_text=_("Uses counted by apps (Polar's usage quota)."))
    limit_usage = models.PositiveBigIntegerField(
        _("usage limit"), null=True, blank=True, help_text=_("Most uses apps may count. Empty means unlimited.")
    )
    validation_count = models.PositiveBigIntegerField(default=0, editable=False)
    last_validated_at = models.DateTimeField(null=True, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = LicenseQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status"]),
            models.Index(fields=["expires_at"]),
            # The lists' order: without it every page sorts every license.
            models.Index(fields=["created_at"]),
        ]
        # Apart from "change": support may suspend and extend, while revoking stays with a few.
        permissions = [("revoke_license", _("Can revoke licenses for good"))]

    def __str__(self) -> str:
        return f"{self.masked_key} ({self.product.name})"

    @property
    def masked_key(self) -> str:
        return "…" + self.key_suffix

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @staticmethod
    def unexpired_at(now: datetime) -> Q:
        """The licenses not expired at `now` (`is_expired` as a query): no expiry, or a later one."""
        return Q(expires_at__isnull=True) | Q(expires_at__gt=now)

    def live_activation_count(self) -> int:
        return self.activations.live().count()

    def devices_in_use(self) -> int:
        """Live devices, as counted by the query that loaded the license (`live_total`), else now."""
        if not hasattr(self, "live_total"):
            self.live_total = self.live_activation_count()
        return self.live_total


class ActivationQuerySet(models.QuerySet):
    def live(self) -> ActivationQuerySet:
        return self.filter(deactivated_at__isnull=True)


class ActorKind(models.TextChoices):
    STAFF = "staff", _("staff user")
    CUSTOMER = "customer", _("customer")
    APP = "app", _("app")
    API_KEY = "api_key", _("API key")
    SYSTEM = "system", _("system")


class Activation(models.Model):
    """A device (an "instance") using a license. Deactivation keeps the row for history."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    license = models.ForeignKey(License, on_delete=models.PROTECT, related_name="activations")
    # Optional: some vendor APIs (Kelviq, Polar) send no device identifier at all.
    # NULL, not "", so the live-fingerprint constraint ignores activations without one.
    fingerprint = models.CharField(max_length=255, null=True, blank=True)  # noqa: DJ001
    name = models.CharField(max_length=255, blank=True)
    platform = models.CharField(max_length=100, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # Polar's activation conditions: validations of this device must send the same ones.
    conditions = models.JSONField(default=dict, blank=True)
    ip_address = models.GenericIPAddressField(_("IP address"), null=True, blank=True)
    # A default, not auto_now_add: a new device is first seen when it is created, to the microsecond.
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_seen_at = models.DateTimeField(default=timezone.now)
    deactivated_at = models.DateTimeField(null=True, blank=True)
    deactivated_by_kind = models.CharField(max_length=10, choices=ActorKind.choices, blank=True)
    deactivated_by = models.CharField(max_length=255, blank=True)

    objects = ActivationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["license", "fingerprint"],
                condition=Q(deactivated_at__isnull=True, fingerprint__isnull=False),
                name="activation_live_fingerprint_unique_per_license",
            ),
        ]
        indexes = [models.Index(fields=["license", "deactivated_at"]), models.Index(fields=["created_at"])]

    def __str__(self) -> str:
        return self.name or self.fingerprint or str(self.id)

    @property
    def is_live(self) -> bool:
        return self.deactivated_at is None


class AuditEvent(models.Model):
    """One change to licensing data: who did what to which object. Rows are only ever added."""

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    actor_kind = models.CharField(max_length=10, choices=ActorKind.choices)
    actor_id = models.CharField(max_length=100, blank=True)
    actor_display = models.CharField(max_length=255, blank=True)
    action = models.CharField(max_length=100, db_index=True)
    target_type = models.CharField(max_length=100)
    target_id = models.CharField(max_length=100)
    target_display = models.CharField(max_length=255, blank=True)
    license = models.ForeignKey(License, on_delete=models.PROTECT, related_name="audit_events", null=True, blank=True)
    changes = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)
    ip_address = models.GenericIPAddressField(_("IP address"), null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["target_type", "target_id"]),
            # A staff member's latest changes (the admin's first page), found without scanning the trail.
            models.Index(fields=["actor_kind", "actor_id", "-created_at"], name="audit_actor_latest_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.action} by {self.actor_display or self.actor_kind}"


class SigningKey(models.Model):
    """An Ed25519 key pair that signs API answers and offline license files.

    Of the keys not retired whose `signs_from` has come, the latest to come signs. A key is
    published from the moment it is made, so a rotation can publish the next key long before it
    signs and apps can ship it; older keys stay published until retired, so apps holding an answer
    or a file signed before a rotation can still check it.
    """

    class Algorithm(models.TextChoices):
        ED25519 = "ed25519", "Ed25519"

    kid = models.CharField(_("key id"), max_length=64, unique=True, editable=False)
    algorithm = models.CharField(max_length=20, choices=Algorithm.choices, default=Algorithm.ED25519, editable=False)
    public_key_pem = models.TextField(_("public key"), editable=False)
    private_key_encrypted = models.TextField(editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    signs_from = models.DateTimeField(_("signs from"), default=timezone.now)
    retired_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-signs_from", "-id"]

    def __str__(self) -> str:
        return self.kid


class ApiKeyQuerySet(models.QuerySet):
    def working(self) -> ApiKeyQuerySet:
        """The keys neither revoked nor expired."""
        return self.filter(Q(expires_at=None) | Q(expires_at__gt=timezone.now()), revoked_at=None)

    def expired(self) -> ApiKeyQuerySet:
        """The keys past their expiry, and not revoked before (as ApiKey.is_expired)."""
        return self.filter(revoked_at=None, expires_at__lte=timezone.now())


class ApiKey(models.Model):
    """A secret the vendor's own systems use for the management API, or apps for their license
    calls on the vendor faces that take one. Only its digest is stored."""

    name = models.CharField(max_length=200)
    prefix = models.CharField(
        max_length=16, editable=False, help_text=_("The key's first characters, to recognise it.")
    )
    key_digest = models.CharField(max_length=64, unique=True, editable=False)
    read_only = models.BooleanField(default=False, help_text=_("A read-only key can list and read, never change."))
    # The database defaults let a server of the release before a column was added keep inserting
    # rows while the next release migrates.
    apps_only = models.BooleanField(
        _("for apps only"),
        default=False,
        db_default=False,
        help_text=_(
            "For a key shipped inside apps: it makes license calls (activate, validate, deactivate, read "
            "a key) on the Kelviq, GetKeyManager and Keymint faces, and nothing else: no management API, "
            "no Keymint create or block. Anyone can pull a key out of an app."
        ),
    )
    created_by = models.CharField(max_length=255, blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    # A key in a billing system's configuration is easily forgotten there; one that expires by
    # itself keeps a leak from being useful for good, as security policies often require.
    expires_at = models.DateTimeField(
        _("expires"), null=True, blank=True, help_text=_("The key stops working at this time. Empty: until revoked.")
    )

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        verbose_name = _("API key")

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_authenticated(self) -> bool:
        # DRF's IsAuthenticated asks request.user this; the key stands in for a user.
        return True

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()


class RsaKey(models.Model):
    """An RSA key pair that signs GetKeyManager answers: a product's own, or the install-wide one.

    Apps built for GetKeyManager embed its public key, so a vendor imports the private key it
    used there; the newest key of a product (or the newest global key) signs.
    """

    product = models.ForeignKey(
        Product,
        on_delete=models.PROTECT,
        related_name="rsa_keys",
        null=True,
        blank=True,
        help_text=_("Empty for the global key, used when no product can be told."),
    )
    public_key_pem = models.TextField(_("public key"), editable=False)
    private_key_encrypted = models.TextField(editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = _("RSA key (GetKeyManager)")
        verbose_name_plural = _("RSA keys (GetKeyManager)")

    def __str__(self) -> str:
        return f"RSA key of {self.product}" if self.product_id else "Global RSA key"


class SignInLink(models.Model):
    """One e-mailed portal sign-in link. Only its digest is kept; every request is a row, to throttle them."""

    email = models.EmailField(max_length=254, db_index=True)
    # Empty when the address is no customer's: the request still counts, and nothing is sent.
    customer = models.ForeignKey(Customer, on_delete=models.CASCADE, null=True, blank=True, related_name="+")
    token_digest = models.CharField(max_length=64, unique=True, editable=False)
    ip_address = models.GenericIPAddressField(_("IP address"), null=True, blank=True)
    # What the per-IP limit counts (addresses.network_of): an IPv6 host holds a whole /64.
    client_network = models.CharField(max_length=43, blank=True, db_index=True, editable=False, db_default="")
    # The database's clock, as Customer.portal_sessions_ended_at's: which came first must not
    # depend on which app server's clock ran ahead.
    created_at = models.DateTimeField(db_default=Now(), db_index=True)
    used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"Sign-in link for {self.email}"


class IdempotentRequest(models.Model):
    """A management API change sent with an Idempotency-Key: while it runs, then the answer it got,
    so that a retry with the same key is answered again rather than done twice (a second license)."""

    api_key = models.ForeignKey(ApiKey, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    # SHA-256 of the method, path and body: the same key with another request is refused.
    request_digest = models.CharField(max_length=64)
    # Empty only inside the transaction of the request that claimed the key: no one else sees that.
    status_code = models.PositiveSmallIntegerField(null=True)
    # The answer's JSON, encrypted (keys.encrypt_stored_answer): an issued license's answer holds its key.
    answer_encrypted = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["api_key", "key"], name="one_request_per_idempotency_key")]

    def __str__(self) -> str:
        return f"Idempotency key {self.key!r}"
