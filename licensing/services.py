"""Every licensing rule and every write. The admin, the native API, the vendor dialects and the
portal are thin faces over these functions, so each rule is written once."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Collection, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.fernet import InvalidToken
from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.core.validators import validate_ipv46_address
from django.db import IntegrityError, connection, models, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.db.models.functions import Now
from django.utils import timezone
from django.utils.text import capfirst, get_text_list
from django.utils.translation import gettext, ngettext

from licensing import addresses, errors, keys, lookups, signing, tallies
from licensing.models import (
    Activation,
    ActorKind,
    ApiKey,
    AuditEvent,
    Customer,
    IdempotentRequest,
    License,
    Plan,
    Product,
    RsaKey,
    SigningKey,
    SignInLink,
    add_months,
)


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


# Marks an argument the caller did not give, where None is a meaningful value (unlimited, never expires).
UNSET: Any = _Unset()

MAX_FINGERPRINT_LENGTH = 255
MAX_NAME_LENGTH = 255
MAX_PLATFORM_LENGTH = 100
MAX_REASON_LENGTH = 500
MAX_METADATA_BYTES = 16_384
# Deeper metadata is no one's data, and pages that show it indented (the admin's) would hit
# Python's recursion limit.
MAX_METADATA_NESTING = 32
# The largest value PostgreSQL's integer column (and so every database) holds.
MAX_ACTIVATION_LIMIT = 2_147_483_647
MAX_USAGE_LIMIT = 2**63 - 1
# Uses counted in one call: 32 bits, as apps' SDKs type the field (Polar's, a plain int).
MAX_USAGE_INCREMENT = 2**31 - 1
LAST_SEEN_PRECISION = timedelta(minutes=1)


@dataclasses.dataclass(frozen=True)
class Actor:
    """Who made a change, as the audit trail records it."""

    kind: str
    id: str = ""
    display: str = ""
    ip_address: str | None = None

    @classmethod
    def staff(cls, user: AbstractBaseUser, *, ip_address: str | None = None) -> Actor:
        return cls(ActorKind.STAFF, str(user.pk), user.get_username(), ip_address)

    @classmethod
    def customer(cls, customer: Customer, *, ip_address: str | None = None) -> Actor:
        return cls(ActorKind.CUSTOMER, str(customer.pk), customer.email, ip_address)

    @classmethod
    def app(cls, *, ip_address: str | None = None) -> Actor:
        return cls(ActorKind.APP, "", "app", ip_address)

    @classmethod
    def app_with_key(cls, api_key: ApiKey, *, ip_address: str | None = None) -> Actor:
        """An app calling a vendor dialect with the API key built into it: an app, named by its key."""
        return cls(ActorKind.APP, str(api_key.pk), f"app with API key {api_key}", ip_address)

    @classmethod
    def system(cls, display: str = "system") -> Actor:
        return cls(ActorKind.SYSTEM, "", display)

    @classmethod
    def api_key(cls, api_key: ApiKey, *, ip_address: str | None = None) -> Actor:
        return cls(ActorKind.API_KEY, str(api_key.pk), str(api_key), ip_address)


@dataclasses.dataclass(frozen=True)
class IssuedLicense:
    license: License
    key: str


@dataclasses.dataclass(frozen=True)
class ActivationResult:
    activation: Activation
    created: bool


@dataclasses.dataclass(frozen=True)
class DeactivationResult:
    activation: Activation
    already_inactive: bool


@dataclasses.dataclass(frozen=True)
class IssuedApiKey:
    api_key: ApiKey
    key: str


@dataclasses.dataclass(frozen=True)
class Checkout:
    license: License
    activation: Activation
    key_sha256: str
    issued_at: datetime
    expires_at: datetime


@dataclasses.dataclass(frozen=True)
class ValidationResult:
    valid: bool
    code: str
    detail: str
    license: License | None
    activation: Activation | None
    # Why not valid, with its facts (uses left, expiry), for the faces that answer it as an error.
    problem: errors.LicensingError | None = None


# ---------------------------------------------------------------- audit


@dataclasses.dataclass
class CommittedChanges:
    any: bool = False


# Set only around an app's license call (see noting_committed_changes), like the unknown-key tally.
_committed_changes: contextvars.ContextVar[CommittedChanges | None] = contextvars.ContextVar(
    "committed_changes", default=None
)


def noting_committed_changes() -> contextlib.AbstractContextManager[CommittedChanges]:
    """Note whether the block committed a change (an audited one, or uses counted): a call that did
    must not be run again after a failure."""
    return _set_in_block(_committed_changes, CommittedChanges())


@contextlib.contextmanager
def _set_in_block(variable: contextvars.ContextVar[Any], value: Any) -> Iterator[Any]:
    """`variable` holds `value` while the block runs (in this thread or task only), then what it held."""
    token = variable.set(value)
    try:
        yield value
    finally:
        variable.reset(token)


def _note_change() -> None:
    if (changes := _committed_changes.get()) is not None:
        # Noted once the transaction commits (at once outside one): a rolled-back change never happened.
        transaction.on_commit(lambda: setattr(changes, "any", True))


def record_event(
    *,
    actor: Actor,
    action: str,
    target: models.Model,
    license: License | None = None,
    changes: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one audit event; call it inside the transaction that made the change."""
    _note_change()
    event = AuditEvent(
        actor_kind=actor.kind,
        actor_id=actor.id,
        actor_display=actor.display[:255],
        action=action,
        target_type=target._meta.label_lower,
        target_id=str(target.pk),
        target_display=str(target)[:255],
        license=license,
        changes=changes or {},
        ip_address=actor.ip_address,
    )
    lookups.insert(event)
    return event


def _audited_fields(record: models.Model) -> list[models.Field]:
    return [
        field
        for field in record._meta.concrete_fields
        if field.editable and field.name not in {"created_at", "updated_at"}
    ]


def _diff(before: models.Model | None, after: models.Model) -> dict[str, list[Any]]:
    changes = {}
    for field in _audited_fields(after):
        old = getattr(before, field.attname) if before is not None else None
        new = getattr(after, field.attname)
        if before is None or old != new:
            changes[field.name] = [old, new]
    return changes


# ---------------------------------------------------------------- catalog: products, plans, customers


def save_catalog_record(
    *,
    record: Product | Plan | Customer,
    actor: Actor,
    fields: Collection[str] | None = None,
    unchanged_since: datetime | None = None,
) -> None:
    """Validate, then create or update a product, plan or customer, recording the fields that changed.

    On an update, `fields` names the fields the caller changed: the others keep what the row holds
    once it is locked, not what the caller read earlier, so two edits of different fields made at
    once both stay. None writes every field. See `check_unchanged_since` for `unchanged_since`.
    """
    model = type(record)
    try:
        with transaction.atomic():
            before = (
                None
                if record._state.adding
                else model.objects.select_for_update(no_key=True).filter(pk=record.pk).first()
            )
            if before is not None:
                check_unchanged_since(before, unchanged_since)
            if before is not None and fields is not None:
                for field in model._meta.concrete_fields:
                    if field.name not in fields:
                        setattr(record, field.attname, getattr(before, field.attname))
            _check_model_rules(record)
            if isinstance(before, Plan) and before.product_id != record.product_id and before.licenses.exists():
                # Its licenses would belong to one product while their plan belongs to another.
                raise errors.InvalidInput("A plan with licenses cannot move to another product.", field="product")
            record.save()
            changes = _diff(before, record)
            if before is None or changes:
                verb = "created" if before is None else "changed"
                record_event(actor=actor, action=f"{model._meta.model_name}.{verb}", target=record, changes=changes)
    except IntegrityError:
        # Validation passed, so a concurrent save took the same unique value first: checked again now
        # that it is stored, the refusal names the field, as it would have a moment later.
        _check_model_rules(record)
        raise errors.DuplicateRecord() from None


def check_unchanged_since(record: Product | Plan | Customer | License, unchanged_since: datetime | None) -> None:
    """Refuse a change made from a copy of the record read at `unchanged_since` (an admin page opened
    then) when the record changed after it: saving would put back what the copy still showed.

    Call it with the row locked, so that no change can commit between the check and the save."""
    if unchanged_since is not None and record.updated_at != unchanged_since:
        raise errors.ChangedMeanwhile(
            gettext(
                "This %(record)s was changed by someone else after you opened this page, and saving would undo "
                "that change. Open it again to see it, then make your change."
            )
            % {"record": record._meta.verbose_name}
        )


def _check_model_rules(record: models.Model) -> None:
    """Raise InvalidInput naming the first field that breaks a field rule or a database constraint,
    or DuplicateRecord when the only fault is a value another record holds already (a retry that
    finds its record made, which a caller tells apart from bad input by the status)."""
    try:
        record.full_clean()
    except ValidationError as error:
        field, messages = next(iter(error.message_dict.items()))
        taken = {"unique", "unique_together"} | {
            constraint.violation_error_code
            for constraint in record._meta.constraints
            if isinstance(constraint, models.UniqueConstraint) and constraint.violation_error_code
        }
        faults = [fault for field_faults in error.error_dict.values() for fault in field_faults]
        refusal = errors.DuplicateRecord if all(fault.code in taken for fault in faults) else errors.InvalidInput
        named = None if field == NON_FIELD_ERRORS else field
        raise refusal(messages[0], field=named, errors=error.message_dict) from None


def find_or_create_customer(*, email: str, actor: Actor, name: str = "", external_id: str = "") -> Customer:
    """Return the customer with this e-mail (any case), creating it when there is none.

    A customer found without a name takes the one given (the billing name of a later order); one
    who has a name keeps it, whatever a later order says. With an `external_id` (the billing
    system's id), the customer with that id comes first, whatever its e-mail (billing's id outlives
    an address change); one found by e-mail without an id takes it, and one with another id is
    refused, naming `customer_external_id`.
    """
    if external_id:
        by_id = Customer.objects.filter(external_id=external_id).first()
        if by_id is not None:
            return by_id
    customer = _customer_with_email(email=email, actor=actor, name=name, external_id=external_id)
    if not external_id or customer.external_id == external_id:
        return customer
    with transaction.atomic():
        # Asked again under the row's lock: orders arriving at once give it the id once.
        locked = Customer.objects.select_for_update(no_key=True).filter(pk=customer.pk).first()
        if locked is None:
            # Deleted meanwhile: made again, with the id.
            return find_or_create_customer(email=email, actor=actor, name=name, external_id=external_id)
        if locked.external_id not in ("", external_id):
            raise errors.DuplicateRecord(
                "The customer with this e-mail has another external id.", field="customer_external_id"
            )
        if not locked.external_id:
            locked.external_id = external_id
            try:
                save_catalog_record(record=locked, actor=actor, fields=["external_id"])
            except errors.DuplicateRecord:
                # Another order gave the id to a customer it made meanwhile: that customer is the one.
                return Customer.objects.get(external_id=external_id)
    return locked


def _customer_with_email(*, email: str, actor: Actor, name: str, external_id: str) -> Customer:
    customer = Customer.objects.filter(email__iexact=email.strip()).first()
    if customer is not None and name and not customer.name:
        with transaction.atomic():
            # Asked again under the row's lock: orders arriving at once name the customer once. One
            # deleted meanwhile is made again below.
            customer = Customer.objects.select_for_update(no_key=True).filter(pk=customer.pk).first()
            if customer is not None and not customer.name:
                customer.name = name
                save_catalog_record(record=customer, actor=actor, fields=["name"])
    if customer is None:
        customer = Customer(email=email.strip(), name=name, external_id=external_id)
        try:
            save_catalog_record(record=customer, actor=actor)
        except (errors.DuplicateRecord, errors.InvalidInput):
            # A concurrent request may have made the customer between our look-up and our insert
            # (the checks before the insert see it, or the insert itself); else the refusal stands.
            customer = Customer.objects.filter(email__iexact=email.strip()).first()
            if customer is None:
                raise
    return customer


def delete_catalog_record(*, record: Product | Plan | Customer, actor: Actor) -> None:
    """Delete a product, plan or customer that no license refers to; else raise RecordInUse."""
    try:
        with transaction.atomic():
            # Locked before Django looks for what refers to it: a license being stored for it holds
            # the row until it is (create_license), so this waits for it, and then finds it.
            locked = type(record).objects.select_for_update().filter(pk=record.pk).first()
            if locked is None:
                return  # deleted already, by someone else
            # What was deleted stays readable in the trail, as a change to nothing.
            gone = {field.name: [getattr(locked, field.attname), None] for field in _audited_fields(locked)}
            record_event(actor=actor, action=f"{record._meta.model_name}.deleted", target=locked, changes=gone)
            record.delete()
    except models.ProtectedError as refusal:
        kinds = sorted(
            {str(referrer._meta.verbose_name_plural) for referrer in refusal.protected_objects}, key=str.lower
        )
        raise errors.RecordInUse(
            f"{capfirst(get_text_list(kinds, 'and'))} refer to this {record._meta.verbose_name}, so it cannot be "
            "deleted."
        ) from None


# ---------------------------------------------------------------- licenses


@dataclasses.dataclass
class UnknownKeyLookups:
    count: int = 0


# Set only around an app's license call (see counting_unknown_key_lookups): the services learn
# nothing about requests, and look-ups by staff, customers or API keys are counted nowhere.
_unknown_key_lookups: contextvars.ContextVar[UnknownKeyLookups | None] = contextvars.ContextVar(
    "unknown_key_lookups", default=None
)


def counting_unknown_key_lookups() -> contextlib.AbstractContextManager[UnknownKeyLookups]:
    """Count the look-ups of keys that match nothing while the block runs (the brute-force guard's
    signal): license keys no license has, and API keys that are unknown or revoked."""
    return _set_in_block(_unknown_key_lookups, UnknownKeyLookups())


def _note_unknown_key() -> None:
    if (tally := _unknown_key_lookups.get()) is not None:
        tally.count += 1


def _unknown_license_key() -> errors.LicenseNotFound:
    _note_unknown_key()
    return errors.LicenseNotFound(field="key")


def get_license_by_key(license_key: str) -> License:
    """Return the license with this key, with its relations and live-device count (one indexed
    query on the digest), or raise LicenseNotFound."""
    license, _ = lookups.license_with_device(key_digests=keys.license_key_digests(license_key))
    if license is None:
        raise _unknown_license_key()
    return license


def find_license(
    *, license_key: str, product_public_id: str | None = None, polar_organization_id: uuid.UUID | None = None
) -> License:
    """Return the license with this key, if it belongs to the product or organization an app names.

    Apps built for other vendors send their product or organization id with the key; a key of
    another product answers as an unknown key, so ids cannot be probed.
    """
    license = get_license_by_key(license_key)
    if product_public_id is not None and not hmac.compare_digest(
        license.product.public_id.encode(), product_public_id.encode("utf-8", "surrogatepass")
    ):
        raise errors.LicenseNotFound(field="key")
    if polar_organization_id is not None and license.product.polar_organization_id != polar_organization_id:
        raise errors.LicenseNotFound(field="key")
    return license


def _customer_ids(customer: Customer) -> set[str]:
    return {customer.reference, customer.public_id.hex, str(customer.public_id)}


def license_belongs_to(license: License, customer_id: str) -> bool:
    """Whether an app's customer id names the license's owner: the billing system's id, or ours."""
    return license.customer is not None and customer_id in _customer_ids(license.customer)


def find_customer(customer_id: str) -> Customer | None:
    """The customer an app's customer id names: the billing system's id, or ours (hex or dashed)."""
    match = Q(external_id=customer_id) if customer_id else Q(pk__in=[])
    with contextlib.suppress(ValueError):
        match |= Q(public_id=uuid.UUID(customer_id))
    customer = Customer.objects.filter(match).first()
    return customer if customer is not None and customer_id in _customer_ids(customer) else None


def reveal_license_key(license: License) -> str:
    """Return the plaintext key, for staff and the license's own customer."""
    return keys.decrypt_license_key(license.key_encrypted)


def create_license(
    *,
    product: Product,
    actor: Actor,
    plan: Plan | None = None,
    customer: Customer | None = None,
    customer_email: str | None = None,
    customer_name: str = "",
    customer_external_id: str = "",
    key: str | None = None,
    max_activations: int | None = UNSET,
    expires_at: datetime | None = UNSET,
    metadata: dict[str, Any] | None = None,
    limit_usage: int | None = None,
    usage: int = 0,
) -> IssuedLicense:
    """Issue a license with a generated key, or with a key supplied (imported from another vendor).

    The owner is `customer`, or the customer with `customer_email` (made if there is none, and only
    if the license is made too; with `customer_external_id`, see `find_or_create_customer`). The
    activation limit and expiry default to the plan's; None means unlimited and never expires.
    `usage` carries over the uses an imported key has counted already.
    """
    if key is None:
        key = keys.generate_license_key()
    _check_usage_limit_value(limit_usage)
    if not _is_whole_number(usage, 0, MAX_USAGE_LIMIT):
        raise errors.InvalidInput(f"Uses counted must be a whole number from 0 to {MAX_USAGE_LIMIT}.", field="usage")

    digest = keys.digest_license_key(key)
    try:
        with transaction.atomic():
            # Read with the product's and plan's rows held until the license is stored: a plan
            # moving to another product or changing its defaults, or a product made inactive or
            # deleted, waits for it, or goes first and is seen here.
            product = _held(product, field="product")
            plan = plan and _held(plan, field="plan")
            if max_activations is UNSET:
                max_activations = plan.max_activations if plan else None
            if expires_at is UNSET:
                expires_at = _expiry_of_a_new_license(plan)
            check_new_license(product=product, plan=plan, key=key, max_activations=max_activations, metadata=metadata)
            license = License(
                product=product,
                plan=plan,
                customer=_held_owner(
                    customer, email=customer_email, name=customer_name, external_id=customer_external_id, actor=actor
                ),
                key_digest=digest,
                key_encrypted=keys.encrypt_license_key(key),
                key_suffix=keys.license_key_suffix(key),
                max_activations=max_activations,
                expires_at=expires_at,
                metadata=metadata or {},
                limit_usage=limit_usage,
                usage=usage,
            )
            license.save(force_insert=True)
            record_event(
                actor=actor,
                action="license.created",
                target=license,
                license=license,
                changes=_diff(None, license),
            )
    except IntegrityError:
        if not License.objects.filter(key_digest=digest).exists():
            raise
        # Another request stored the same supplied key between our check and our insert.
        raise errors.DuplicateLicenseKey(field="key") from None
    return IssuedLicense(license=license, key=key)


def _expiry_of_a_new_license(plan: Plan | None) -> datetime | None:
    try:
        return plan.expiry_from(timezone.now()) if plan else None
    except (OverflowError, ValueError):
        raise errors.InvalidInput("The plan's duration reaches past the year 9999.", field="plan") from None


def _held(record: Product | Plan | Customer, *, field: str) -> Product | Plan | Customer:
    """The record as stored now, held until the transaction ends (`lookups.held`)."""
    held = lookups.held(type(record), record.pk)
    if held is None:
        raise errors.InvalidInput(f"This {record._meta.verbose_name} has just been deleted.", field=field)
    return held


def _held_owner(
    customer: Customer | None, *, email: str | None, name: str, external_id: str, actor: Actor
) -> Customer | None:
    """The license's owner, held until the license is stored, so that deleting it waits (and then
    finds the license). A customer named by e-mail and deleted since it was found is made again."""
    if email is None:
        return customer and _held(customer, field="customer")
    customer = find_or_create_customer(email=email, name=name, external_id=external_id, actor=actor)
    if lookups.held(Customer, customer.pk) is None:
        customer = find_or_create_customer(email=email, name=name, external_id=external_id, actor=actor)
        customer = _held(customer, field="customer_email")
    return customer


def check_new_license(
    *,
    product: Product,
    plan: Plan | None,
    key: str | None,
    max_activations: int | None = None,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Raise the first reason a license with these values cannot be created (None key: generated)."""
    if not product.is_active:
        raise errors.ProductInactive("No new licenses can be issued for an inactive product.", field="product")
    if plan is not None and plan.product_id != product.pk:
        raise errors.InvalidInput("This plan belongs to another product.", field="plan")
    if key is not None:
        if not keys.is_valid_supplied_key(key):
            raise errors.InvalidInput(
                f"A license key is 1 to {keys.MAX_KEY_LENGTH} printable characters, without leading "
                "or trailing spaces.",
                field="key",
            )
        if License.objects.filter(key_digest__in=keys.license_key_digests(key)).exists():
            raise errors.DuplicateLicenseKey(field="key")
    _check_activation_limit_value(max_activations)
    check_metadata(metadata, field="metadata")


# The statuses a license may come to each status from: a revoked license stays revoked.
STATUSES_BEFORE = {
    License.Status.SUSPENDED: {License.Status.ACTIVE},
    License.Status.ACTIVE: {License.Status.SUSPENDED},
    License.Status.REVOKED: {License.Status.ACTIVE, License.Status.SUSPENDED},
}


def may_become(license: License, status: str) -> bool:
    """Whether the license may change to `status` now (the admin offers only such changes)."""
    return license.status in STATUSES_BEFORE[status]


def suspend_license(*, license: License, actor: Actor, reason: str = "") -> License:
    """Stop a license from activating and validating until it is reinstated."""
    return _change_status(license, to=License.Status.SUSPENDED, actor=actor, reason=reason)


def reinstate_license(*, license: License, actor: Actor, reason: str = "") -> License:
    """Make a suspended license usable again. A revoked license stays revoked."""
    return _change_status(license, to=License.Status.ACTIVE, actor=actor, reason=reason)


def revoke_license(*, license: License, actor: Actor, reason: str = "") -> License:
    """End a license for good (refunds, chargebacks, abuse)."""
    return _change_status(license, to=License.Status.REVOKED, actor=actor, reason=reason)


def last_status_change(license: License) -> AuditEvent | None:
    """The audit event that gave the license its status (and the reason given), if it changed."""
    events = AuditEvent.objects.filter(license=license, target_type=License._meta.label_lower)
    return events.filter(action__in=_STATUS_ACTIONS.values()).order_by("-created_at", "-id").first()


_STATUS_ACTIONS = {
    License.Status.ACTIVE: "license.reinstated",
    License.Status.SUSPENDED: "license.suspended",
    License.Status.REVOKED: "license.revoked",
}


def _change_status(license: License, *, to: str, actor: Actor, reason: str) -> License:
    # Each change may say why (an unpaid invoice, a chargeback): kept in its audit event, where
    # support reads it when the customer writes.
    reason = reason.strip() if isinstance(reason, str) else reason
    _check_text(reason, MAX_REASON_LENGTH, field="reason")
    with transaction.atomic():
        locked = _lock_license(license.pk)
        if locked.status == to:
            return locked
        if not may_become(locked, to):
            raise errors.InvalidStatusChange(
                f"A {locked.get_status_display()} license cannot become {License.Status(to).label}.",
                field="status",
            )
        changes = {"status": [locked.status, to], **({"reason": reason} if reason else {})}
        locked.status = to
        locked.save(update_fields=["status", "updated_at"])
        record_event(actor=actor, action=_STATUS_ACTIONS[to], target=locked, license=locked, changes=changes)
    return locked


def extend_license(
    *,
    license: License,
    actor: Actor,
    expires_at: datetime | None = UNSET,
    days: int | None = None,
    months: int | None = None,
) -> License:
    """Give a license a new expiry: a moment (None: never expires), or `days` or `months` more.

    Days and months count from the current expiry, or from now when the license has already lapsed,
    so a customer renewing late gets the full period. A month is a calendar month (12 of them are a
    year, leap day included), ending on the same day, or the month's last when it is shorter.
    """
    if [expires_at is not UNSET, days is not None, months is not None].count(True) != 1:
        raise errors.InvalidInput(
            "Give one of a new expiry, a number of days or a number of months.", field="expires_at"
        )
    for name, count in (("days", days), ("months", months)):
        if count is not None and not _is_whole_number(count, 1):
            raise errors.InvalidInput(f"The number of {name} must be a whole number of 1 or more.", field=name)
    field = "days" if days is not None else "months" if months is not None else "expires_at"
    with transaction.atomic():
        locked = _lock_license(license.pk)
        if expires_at is UNSET or expires_at != locked.expires_at:
            _check_terms_may_change(locked, field=field)
        if expires_at is UNSET:
            # Its terms may change (checked above): what is left of may_extend is an expiry to add to.
            if not may_extend(locked):
                raise errors.InvalidInput("This license never expires.", field=field)
            start = max(locked.expires_at, timezone.now())
            try:
                expires_at = start + timedelta(days=days) if days is not None else add_months(start, months)
            except (OverflowError, ValueError):
                raise errors.InvalidInput("That would expire past the year 9999.", field=field) from None
        if expires_at == locked.expires_at:
            return locked
        changes = {"expires_at": [locked.expires_at, expires_at]}
        # An auditor reading the trail must not take a cut short license for a renewed one.
        later = expires_at is None or (locked.expires_at is not None and expires_at > locked.expires_at)
        action = "license.extended" if later else "license.expiry_shortened"
        locked.expires_at = expires_at
        locked.save(update_fields=["expires_at", "updated_at"])
        record_event(actor=actor, action=action, target=locked, license=locked, changes=changes)
    return locked


def change_activation_limit(*, license: License, max_activations: int | None, actor: Actor) -> License:
    """Set how many devices a license may have live (None: unlimited).

    Lowering it below the devices already live keeps them; only new activations are refused.
    """
    _check_activation_limit_value(max_activations)
    with transaction.atomic():
        locked = _lock_license(license.pk)
        if locked.max_activations == max_activations:
            return locked
        _check_terms_may_change(locked, field="max_activations")
        changes = {"max_activations": [locked.max_activations, max_activations]}
        locked.max_activations = max_activations
        locked.save(update_fields=["max_activations", "updated_at"])
        record_event(actor=actor, action="license.limit_changed", target=locked, license=locked, changes=changes)
    return locked


def change_license_plan(*, license: License, plan: Plan, actor: Actor, max_activations: int | None = UNSET) -> License:
    """Move a license to another plan of its product (an upgrade, a downgrade).

    It takes the new plan's activation limit, as a license issued on it would, unless
    `max_activations` is given; its expiry stays (extend it if the move buys time). Devices over a
    lower limit keep working; only new activations are refused. The plan's device-change rules
    (anti-churn) apply from now on. A license of an inactive product may move too, ready for when
    the product is active again.
    """
    with transaction.atomic():
        locked = _lock_license(license.pk)
        # Held until the license is stored, so the plan cannot move to another product meanwhile.
        plan = _held(plan, field="plan")
        if plan.product_id != locked.product_id:
            raise errors.InvalidInput("This plan belongs to another product.", field="plan")
        if plan.pk == locked.plan_id:
            # No move: only a limit given with it changes anything.
            if max_activations is UNSET:
                return locked
            return change_activation_limit(license=locked, max_activations=max_activations, actor=actor)
        _check_terms_may_change(locked, field="plan")
        if max_activations is UNSET:
            max_activations = plan.max_activations
        _check_activation_limit_value(max_activations)
        changes = {"plan": [locked.plan_id, plan.pk]}
        if max_activations != locked.max_activations:
            changes["max_activations"] = [locked.max_activations, max_activations]
        locked.plan, locked.max_activations = plan, max_activations
        locked.save(update_fields=["plan", "max_activations", "updated_at"])
        record_event(actor=actor, action="license.plan_changed", target=locked, license=locked, changes=changes)
    return locked


def update_license_details(
    *,
    license: License,
    actor: Actor,
    customer: Customer | None = UNSET,
    metadata: dict[str, Any] = UNSET,
    limit_usage: int | None = UNSET,
) -> License:
    """Change who owns a license, its metadata or its usage limit."""
    if metadata is not UNSET:
        check_metadata(metadata, field="metadata")
    if limit_usage is not UNSET:
        _check_usage_limit_value(limit_usage)
    with transaction.atomic():
        locked = _lock_license(license.pk)
        changes = {}
        if customer is not UNSET and customer != locked.customer:
            changes["customer"] = [locked.customer_id, customer.pk if customer else None]
            locked.customer = customer
        if metadata is not UNSET and metadata != locked.metadata:
            changes["metadata"] = [locked.metadata, metadata]
            locked.metadata = metadata
        if limit_usage is not UNSET and limit_usage != locked.limit_usage:
            _check_terms_may_change(locked, field="limit_usage")
            changes["limit_usage"] = [locked.limit_usage, limit_usage]
            locked.limit_usage = limit_usage
        if changes:
            locked.save(update_fields=[*changes, "updated_at"])
            record_event(actor=actor, action="license.changed", target=locked, license=locked, changes=changes)
    return locked


def update_license(
    *,
    license: License,
    actor: Actor,
    customer: Customer | None = UNSET,
    customer_email: str | None = UNSET,
    customer_name: str = "",
    customer_external_id: str = "",
    metadata: dict[str, Any] = UNSET,
    limit_usage: int | None = UNSET,
    plan: Plan = UNSET,
    max_activations: int | None = UNSET,
    expires_at: datetime | None = UNSET,
    unchanged_since: datetime | None = None,
) -> License:
    """Apply several changes to a license together: all of them, or none when one is refused.

    A `customer`, or a `customer_email` (made if there is none, with `customer_name`), names the new
    owner; None leaves the license without one. A new
    `plan` brings its activation limit, unless `max_activations` is given too. See
    `check_unchanged_since` for `unchanged_since`.
    """
    with transaction.atomic():
        # The owner first: making a customer must not happen while the license is locked.
        if customer_email is not UNSET:
            customer = (
                find_or_create_customer(
                    email=customer_email, name=customer_name, external_id=customer_external_id, actor=actor
                )
                if customer_email
                else None
            )
        if unchanged_since is not None:
            check_unchanged_since(_lock_license(license.pk), unchanged_since)
        if plan is not UNSET:
            # One change of the limit, not the plan's and then the one given.
            license = change_license_plan(license=license, plan=plan, max_activations=max_activations, actor=actor)
        elif max_activations is not UNSET:
            license = change_activation_limit(license=license, max_activations=max_activations, actor=actor)
        if customer is not UNSET or metadata is not UNSET or limit_usage is not UNSET:
            license = update_license_details(
                license=license, actor=actor, customer=customer, metadata=metadata, limit_usage=limit_usage
            )
        if expires_at is not UNSET:
            license = extend_license(license=license, expires_at=expires_at, actor=actor)
    return license


# What a revoked license keeps as it was when revoked.
LICENSE_TERMS = ("plan", "max_activations", "expires_at", "limit_usage")


def terms_may_change(license: License) -> bool:
    """Whether the license's terms (LICENSE_TERMS) may change: not once it is revoked; its owner
    and metadata still may.

    Revoking ends a license for good, so a later extension would only read as a renewal in the
    trail and in reports while the license stays unusable.
    """
    return license.status != License.Status.REVOKED


def may_extend(license: License) -> bool:
    """Whether days or months may be added to the license's expiry (extend_license): its terms may
    change, and it has an expiry to add them to."""
    return terms_may_change(license) and license.expires_at is not None


def _check_terms_may_change(license: License, *, field: str) -> None:
    if not terms_may_change(license):
        raise errors.RevokedLicenseChange(field=field)


def _lock_license(pk: uuid.UUID) -> License:
    locked = lookups.locked_license(license_id=pk)
    if locked is None:
        raise License.DoesNotExist("License matching query does not exist.")
    return locked


def _lock_license_by_key(license_key: str) -> License:
    license = lookups.locked_license(key_digests=keys.license_key_digests(license_key))
    if license is None:
        raise _unknown_license_key()
    return license


def _is_whole_number(value: Any, low: int, high: int | None = None) -> bool:
    # bool is an int in Python, but true is no number of devices or days.
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        return False
    return high is None or value <= high


def _check_usage_limit_value(limit_usage: int | None) -> None:
    if limit_usage is None:
        return
    if not _is_whole_number(limit_usage, 0, MAX_USAGE_LIMIT):
        raise errors.InvalidInput(
            f"The usage limit must be a whole number from 0 to {MAX_USAGE_LIMIT}, or empty for unlimited.",
            field="limit_usage",
        )


def _check_activation_limit_value(max_activations: int | None) -> None:
    if max_activations is None:
        return
    if not _is_whole_number(max_activations, 0, MAX_ACTIVATION_LIMIT):
        raise errors.InvalidInput(
            f"The activation limit must be a whole number from 0 to {MAX_ACTIVATION_LIMIT}, or empty for unlimited.",
            field="max_activations",
        )


def check_metadata(metadata: Any, *, field: str = "metadata") -> None:
    """Raise InvalidInput unless metadata is a JSON object every database can store.

    The message names the field, as Polar's activation conditions are checked the same way."""
    if metadata is None:
        return
    subject = field.capitalize()
    if not isinstance(metadata, dict):
        raise errors.InvalidInput(f"{subject} must be a JSON object.", field=field)
    try:
        # allow_nan=False: NaN and Infinity are not JSON, and PostgreSQL's jsonb refuses them.
        encoded = json.dumps(metadata, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        raise errors.InvalidInput(f"{subject} must hold only JSON values.", field=field) from None
    if not is_encodable(encoded):
        raise errors.InvalidInput(f"{subject} must be valid Unicode text.", field=field)
    # PostgreSQL's jsonb cannot store the NUL character; SQLite would, so refuse it everywhere.
    if "\\u0000" in encoded:
        raise errors.InvalidInput(f"{subject} must not contain NUL characters.", field=field)
    if len(encoded.encode()) > MAX_METADATA_BYTES:
        raise errors.InvalidInput(f"{subject} must be at most {MAX_METADATA_BYTES} bytes of JSON.", field=field)
    if _nesting(metadata) > MAX_METADATA_NESTING:
        raise errors.InvalidInput(
            f"{subject} must be nested at most {MAX_METADATA_NESTING} objects or arrays deep.", field=field
        )


def _nesting(value: Any) -> int:
    """How many objects or arrays deep a JSON value goes, counted without recursion."""
    depth, level = 0, [value]
    while containers := [item for item in level if isinstance(item, dict | list)]:
        depth += 1
        level = [child for item in containers for child in (item.values() if isinstance(item, dict) else item)]
    return depth


def license_problem(license: License) -> errors.LicensingError | None:
    """Return why a license cannot be used right now, or None when it can."""
    if license.status == License.Status.REVOKED:
        return errors.LicenseRevoked()
    if license.status == License.Status.SUSPENDED:
        return errors.LicenseSuspended()
    if license.is_expired:
        return errors.LicenseExpired(expired_at=license.expires_at)
    if not license.product.is_active:
        return errors.ProductInactive()
    return None


# ---------------------------------------------------------------- activations


def activate_license(
    *,
    license_key: str,
    actor: Actor,
    fingerprint: str | None = None,
    name: str = "",
    platform: str = "",
    metadata: dict[str, Any] | None = None,
    conditions: dict[str, Any] | None = None,
    ip_address: str | None = None,
    customer_id: str | None = None,
) -> ActivationResult:
    """Bind a device to a license, or return the device's live activation if it has one.

    Re-activating a live fingerprint takes no new slot. Without a fingerprint (some vendor APIs send
    none), every call takes a new slot. A `customer_id` the app names must name the license's owner
    (`license_belongs_to`): another customer's key is answered as an unknown one.
    """
    fingerprint = _checked_fingerprint(
        fingerprint, name=name, platform=platform, metadata=metadata, conditions=conditions
    )
    ip_address = ip_address or actor.ip_address
    try:
        if ip_address is not None:
            validate_ipv46_address(ip_address)
    except ValidationError:
        raise errors.InvalidInput("This is not an IP address.", field="ip_address") from None
    if fingerprint is not None:
        # A live device activating again (many apps do at every start) takes no slot: no lock needed.
        license, existing = lookups.license_with_device(
            key_digests=keys.license_key_digests(license_key), fingerprint=fingerprint
        )
        if license is None:
            raise _unknown_license_key()
        _check_owner(license, customer_id)
        if problem := license_problem(license):
            raise problem
        if existing is not None:
            _note_seen(existing)
            return ActivationResult(activation=existing, created=False)
    try:
        with transaction.atomic():
            license = _lock_license_by_key(license_key)
            _check_owner(license, customer_id)
            if problem := license_problem(license):
                raise problem
            used, existing = lookups.live_devices(license, fingerprint=fingerprint)
            license.live_total = used
            if existing is not None:
                _note_seen(existing)
                return ActivationResult(activation=existing, created=False)
            _check_room_for_a_device(license, used=used)
            refusal = _cooldown_refusal(license, used=used, fingerprint=fingerprint)
            if refusal is not None:
                record_event(
                    actor=actor,
                    action="activation.refused",
                    target=license,
                    license=license,
                    changes={"reason": refusal.code},
                )
            else:
                now = timezone.now()
                activation = Activation(
                    license=license,
                    created_at=now,
                    last_seen_at=now,
                    fingerprint=fingerprint,
                    name=name,
                    platform=platform,
                    metadata=metadata or {},
                    conditions=conditions or {},
                    ip_address=ip_address,
                )
                _add_device(activation, actor=actor, action="activation.created")
                license.live_total = used + 1
    except IntegrityError:
        if fingerprint is None:
            raise
        # The license row lock makes this a second line of defence: the live-fingerprint constraint
        # caught the same device activated without that lock (by staff, say). The transaction was
        # rolled back whole, which spares every activation a savepoint around its insert.
        existing = license.activations.live().filter(fingerprint=fingerprint).first()
        if existing is None:
            raise
        return ActivationResult(activation=existing, created=False)
    if refusal is not None:
        # Raised after the block, so the audit event of the refusal is kept.
        raise refusal
    return ActivationResult(activation=activation, created=True)


def import_activation(
    *,
    license: License,
    actor: Actor,
    activation_id: uuid.UUID | None = None,
    fingerprint: str | None = None,
    name: str = "",
    platform: str = "",
    metadata: dict[str, Any] | None = None,
    conditions: dict[str, Any] | None = None,
    created_at: datetime | None = None,
    last_seen_at: datetime | None = None,
) -> Activation:
    """Bring over a device that another license server activated, under the id its app holds.

    An app that moved here from Polar or Kelviq validates with the activation or instance id that
    server gave it; imported under that id, the device keeps working with no new activation. It
    takes a slot within the limit as any device does, whatever the license's status (imports follow
    the old server's state, suspended licenses included). The plan's cooldown does not hold it up:
    moving servers frees no slot and changes no device. Last seen, unless the old server says when,
    is when it was activated: an app in use validates soon and moves it, so a device left unused
    does not look like one in use.
    """
    fingerprint = _checked_fingerprint(
        fingerprint, name=name, platform=platform, metadata=metadata, conditions=conditions
    )
    now = timezone.now()
    created_at = created_at or now
    last_seen_at = last_seen_at or created_at
    for moment, field in ((created_at, "created_at"), (last_seen_at, "last_seen_at")):
        if moment > now:
            raise errors.InvalidInput("This is in the future.", field=field)
        if moment < EARLIEST_IMPORTED_TIME:
            # GetKeyManager's answers give it as Unix time, which apps read as unsigned.
            raise errors.InvalidInput("This must be in 1970 or later.", field=field)
    if last_seen_at < created_at:
        raise errors.InvalidInput("A device is last seen after it was activated.", field="last_seen_at")
    activation = Activation(
        id=activation_id or uuid.uuid4(),
        license=license,
        created_at=created_at,
        last_seen_at=last_seen_at,
        fingerprint=fingerprint,
        name=name,
        platform=platform,
        metadata=metadata or {},
        conditions=conditions or {},
    )
    try:
        with transaction.atomic():
            locked = _lock_license(license.pk)
            if Activation.objects.filter(pk=activation.pk).exists():
                raise _duplicate_activation_id()
            used, existing = lookups.live_devices(locked, fingerprint=fingerprint)
            if existing is not None:
                raise _duplicate_live_fingerprint(existing)
            _check_room_for_a_device(locked, used=used)
            activation.license = locked
            # What apps will be shown as the old server's, beside what every new device records.
            _add_device(
                activation,
                actor=actor,
                action="activation.imported",
                created_at=[None, activation.created_at],
                last_seen_at=[None, activation.last_seen_at],
                metadata=[None, activation.metadata],
                conditions=[None, activation.conditions],
            )
    except IntegrityError:
        # Imported at the same moment by another call, which the license lock does not order when
        # it names another license, or a device activated without the lock (by staff, say).
        if Activation.objects.filter(pk=activation.pk).exists():
            raise _duplicate_activation_id() from None
        existing = _live_activation(license, fingerprint=fingerprint, activation_id=None) if fingerprint else None
        if existing is None:
            raise
        raise _duplicate_live_fingerprint(existing) from None
    return activation


EARLIEST_IMPORTED_TIME = datetime(1970, 1, 1, tzinfo=UTC)


def _check_room_for_a_device(license: License, *, used: int) -> None:
    if license.max_activations is not None and used >= license.max_activations:
        raise errors.ActivationLimitReached(license=license, limit=license.max_activations, used=used)


def _add_device(activation: Activation, *, actor: Actor, action: str, **more_changes: list[Any]) -> None:
    """Insert a new device and its audit event, in the transaction holding its license's lock."""
    lookups.insert(activation)
    record_event(
        actor=actor,
        action=action,
        target=activation,
        license=activation.license,
        changes={
            "fingerprint": [None, activation.fingerprint],
            "name": [None, activation.name],
            "platform": [None, activation.platform],
            **more_changes,
        },
    )


def _duplicate_activation_id() -> errors.DuplicateActivation:
    return errors.DuplicateActivation(field="id")


def _duplicate_live_fingerprint(existing: Activation) -> errors.DuplicateActivation:
    return errors.DuplicateActivation(
        f"This license already has a live activation with this fingerprint: {existing.pk}.", field="fingerprint"
    )


def _checked_fingerprint(fingerprint: Any, *, name: Any, platform: Any, metadata: Any, conditions: Any) -> str | None:
    """The device's fingerprint as stored (trimmed, or None), once it and what else describes the device are valid."""
    fingerprint = _trimmed_fingerprint(fingerprint) or None
    _check_text(fingerprint or "", MAX_FINGERPRINT_LENGTH, field="fingerprint")
    _check_text(name, MAX_NAME_LENGTH, field="name")
    _check_text(platform, MAX_PLATFORM_LENGTH, field="platform")
    check_metadata(metadata, field="metadata")
    check_metadata(conditions, field="conditions")
    return fingerprint


# Said to the person at a device that was never activated, or was freed (from the portal, say).
DEVICE_NOT_ACTIVATED = "This device is not activated on this license, or was deactivated: activate it again to use it."


def _trimmed_fingerprint(fingerprint: Any) -> Any:
    """A fingerprint without the spaces and line ends around it, as every face stores and finds it: a
    machine id read from a file ends with a line end, and the same device must not take a second slot
    by calling through another face. One of spaces only stays as sent: trimmed to nothing, it would
    name no device, and each call would take a new slot."""
    return (fingerprint.strip() or fingerprint) if isinstance(fingerprint, str) else fingerprint


def _check_owner(license: License, customer_id: str | None) -> None:
    if customer_id and not license_belongs_to(license, customer_id):
        raise errors.LicenseNotFound(field="key")


def find_activation(
    *, license_key: str, activation_id: str | None = None, fingerprint: str | None = None
) -> Activation:
    """Return the activation of this key named by id and/or fingerprint, a live one before past ones."""
    fingerprint = _trimmed_fingerprint(fingerprint)
    if not activation_id and not fingerprint:
        raise errors.InvalidInput("Name the activation by its id or its fingerprint.", field="activation_id")
    license = get_license_by_key(license_key)
    activations = _named_activations(license.activations.all(), activation_id=activation_id, fingerprint=fingerprint)
    activation = activations.order_by(F("deactivated_at").desc(nulls_first=True), "-created_at").first()
    if activation is None:
        raise errors.ActivationNotFound(field="activation_id" if activation_id else "fingerprint")
    activation.license = license
    return activation


def deactivate_activation(*, activation: Activation, actor: Actor) -> DeactivationResult:
    """Free a device's slot. A repeat changes nothing and says the device was already inactive."""
    with transaction.atomic():
        license = _lock_license(activation.license_id)
        _refuse_another_customers_license(license, actor)
        locked = Activation.objects.select_for_update(no_key=True).get(pk=activation.pk)
        locked.license = license
        if locked.deactivated_at is not None:
            return DeactivationResult(activation=locked, already_inactive=True)
        refusal = deactivation_refusal(license, actor=actor, count=1)
        if refusal is None:
            _mark_deactivated(locked, actor=actor, at=timezone.now())
            locked.save(update_fields=["deactivated_at", "deactivated_by_kind", "deactivated_by"])
            record_event(actor=actor, action="activation.deactivated", target=locked, license=license)
        else:
            record_event(actor=actor, action="activation.deactivation_refused", target=locked, license=license)
    if refusal is not None:
        # Raised after the block, so the audit event of the refusal is kept.
        raise refusal
    return DeactivationResult(activation=locked, already_inactive=False)


def deactivate_all_activations(*, license: License, actor: Actor) -> list[Activation]:
    """Free every live device of a license; return the activations that were live."""
    with transaction.atomic():
        locked_license = _lock_license(license.pk)
        _refuse_another_customers_license(locked_license, actor)
        # In id order, as the tally writer moves last-seen times: two transactions that lock the
        # same devices in different orders can each wait for the other.
        live = list(locked_license.activations.live().order_by("pk").select_for_update(no_key=True))
        refusal = deactivation_refusal(locked_license, actor=actor, count=len(live)) if live else None
        if refusal is not None:
            record_event(
                actor=actor, action="activation.deactivation_refused", target=locked_license, license=locked_license
            )
            live = []
        now = timezone.now()
        for activation in live:
            _mark_deactivated(activation, actor=actor, at=now)
            activation.license = locked_license
        Activation.objects.bulk_update(live, ["deactivated_at", "deactivated_by_kind", "deactivated_by"])
        for activation in live:
            record_event(actor=actor, action="activation.deactivated", target=activation, license=locked_license)
    if refusal is not None:
        raise refusal
    return live


def _refuse_another_customers_license(license: License, actor: Actor) -> None:
    """A customer acts on their own licenses only, checked again under the license's lock: the
    license may have moved to another customer since the page they acted from was read."""
    if actor.kind == ActorKind.CUSTOMER and str(license.customer_id) != actor.id:
        raise errors.LicenseNotFound()


# Apps (on every face, the dialects' API keys included) and customers. The vendor is never limited,
# so support can always move a license: staff in the admin, its own systems through the
# management API (an API key's kind), and the system.
CHURN_LIMITED_ACTORS = {ActorKind.APP, ActorKind.CUSTOMER}


def _recent_churn(licenses: Collection[License | uuid.UUID], *, since: datetime) -> models.QuerySet[Activation]:
    """Devices of `licenses` that apps or customers freed since `since` (staff's do not count)."""
    return Activation.objects.filter(
        license__in=licenses, deactivated_at__gte=since, deactivated_by_kind__in=CHURN_LIMITED_ACTORS
    )


@dataclasses.dataclass(frozen=True)
class DeviceChanges:
    """How many more devices apps and customers may deactivate now (None: no limit), and, with none
    left, when one comes back (None as well when the plan allows none at all)."""

    remaining: int | None
    back_at: datetime | None = None


def device_changes(license: License) -> DeviceChanges:
    """The license's device changes, from one read of the changes made in the window: read twice,
    a change leaving it in between would make "none left" come with no time it comes back.

    An unlimited license has no limit of changes either: it has no slot that a change would move.
    """
    plan = license.plan
    if plan is None or plan.max_deactivations is None or license.max_activations is None:
        return DeviceChanges(remaining=None)
    window = timedelta(days=plan.deactivation_window_days)
    counted = _recent_churn([license], since=timezone.now() - window).order_by("deactivated_at")
    made = list(counted.values_list("deactivated_at", flat=True))
    remaining = max(plan.max_deactivations - len(made), 0)
    if remaining or not plan.max_deactivations:
        return DeviceChanges(remaining=remaining)
    # Not always the oldest: under a limit lowered below the changes made, several must stop counting.
    return DeviceChanges(remaining=0, back_at=made[len(made) - plan.max_deactivations] + window)


def deactivation_refusal(
    license: License, *, actor: Actor, count: int, changes: DeviceChanges | None = None
) -> errors.LicensingError | None:
    """Why `actor` may not free `count` devices of `license` now, or None: the plan's limit of
    device changes. Asked before a deactivation too, so a page offers none it would refuse; a page
    that shows the changes left passes the `changes` it read, so the two cannot disagree."""
    if actor.kind not in CHURN_LIMITED_ACTORS:
        return None
    changes = changes or device_changes(license)
    remaining = changes.remaining
    if remaining is None or count <= remaining:
        return None
    # Freeing all at once is all or nothing: "no changes left" would be untrue while some are.
    message = None
    if remaining:
        message = ngettext(
            "Freeing %(count)d devices takes %(count)d device changes, and %(remaining)d is left for now: free "
            "the devices no longer used one at a time.",
            "Freeing %(count)d devices takes %(count)d device changes, and %(remaining)d are left for now: free "
            "the devices no longer used one at a time.",
            remaining,
        ) % {"count": count, "remaining": remaining}
    facts = {"limit": license.plan.max_deactivations, "window_days": license.plan.deactivation_window_days}
    if changes.back_at is not None:
        facts["available_at"] = changes.back_at
    return errors.DeactivationLimitReached(message, remaining=remaining, **facts)


# What a plan gives each license when it is issued (the limit also when a license moves onto it),
# and what it decides at every call for the licenses it binds (plan_rules_bind).
PLAN_TERMS_COPIED = frozenset({"max_activations", "duration_unit", "duration_value"})
PLAN_RULES_FOLLOWED = frozenset({"max_deactivations", "deactivation_window_days", "slot_cooldown_minutes"})


def plan_rules_bind(plan: Plan) -> models.QuerySet[License]:
    """The plan's licenses its device-change rules apply to (device_changes, slot_cooldown): those
    with a device limit, as an unlimited one has no slot to move, leaving out revoked ones, whose
    devices work no more."""
    return plan.licenses.exclude(max_activations=None).exclude(status=License.Status.REVOKED)


def slot_cooldown(license: License) -> timedelta | None:
    """How long a slot freed by an app or customer stays taken, or None: the plan's cooldown, which
    only a limited license has (an unlimited one has no slot to keep)."""
    plan = license.plan
    if plan is None or not plan.slot_cooldown_minutes or license.max_activations is None:
        return None
    return timedelta(minutes=plan.slot_cooldown_minutes)


def _freed_and_gone(licenses: Collection[License | uuid.UUID], *, since: datetime) -> models.QuerySet[Activation]:
    """Devices of `licenses` that apps or customers freed since `since` and that are not live again:
    a device that came back holds its live slot again."""
    came_back = Activation.objects.live().filter(license=OuterRef("license"), fingerprint=OuterRef("fingerprint"))
    return _recent_churn(licenses, since=since).exclude(Exists(came_back))


def _freed_times(rows: Iterable[tuple[uuid.UUID, str | None, datetime]]) -> list[datetime]:
    """When each slot was freed, oldest first, from (activation id, fingerprint, deactivated_at)
    rows: a device that left twice holds one slot, freed when it last left."""
    freed_at: dict[str | uuid.UUID, datetime] = {}
    for activation_id, device, at in rows:
        freed_at[device or activation_id] = max(at, freed_at.get(device or activation_id, at))
    return sorted(freed_at.values())


def _cooling_slots(license: License, cooldown: timedelta, *, fingerprint: str | None = None) -> list[datetime]:
    """When each slot still cooling down was freed, oldest first; the device `fingerprint` names
    may come back to its own."""
    recent = _freed_and_gone([license], since=timezone.now() - cooldown)
    if fingerprint is not None:
        recent = recent.exclude(fingerprint=fingerprint)
    return _freed_times(recent.values_list("id", "fingerprint", "deactivated_at"))


def slots_reopening(license: License) -> list[datetime]:
    """When each slot still cooling down takes a new device again, earliest first."""
    return slots_reopening_of([license]).get(license.pk, [])


def slots_reopening_of(licenses: Collection[License]) -> dict[uuid.UUID, list[datetime]]:
    """`slots_reopening` of each license with a slot cooling down, in one query (a customer's list)."""
    cooldowns = {license.pk: cooldown for license in licenses if (cooldown := slot_cooldown(license)) is not None}
    if not cooldowns:
        return {}
    now = timezone.now()
    rows: dict[uuid.UUID, list[tuple[uuid.UUID, str | None, datetime]]] = {}
    recent = _freed_and_gone(list(cooldowns), since=now - max(cooldowns.values()))
    for license_id, activation_id, device, at in recent.values_list(
        "license_id", "id", "fingerprint", "deactivated_at"
    ):
        if at >= now - cooldowns[license_id]:
            rows.setdefault(license_id, []).append((activation_id, device, at))
    return {
        license_id: [freed_at + cooldowns[license_id] for freed_at in _freed_times(freed)]
        for license_id, freed in rows.items()
    }


def activations_remaining(license: License) -> int | None:
    """How many more devices the license takes now (None: no limit): its free slots, less those
    cooling down, so an app that shows the figure is not refused below it."""
    if license.max_activations is None:
        return None
    free = license.max_activations - license.devices_in_use()
    cooldown = slot_cooldown(license)
    if cooldown is not None and free > 0:
        free -= len(_cooling_slots(license, cooldown))
    return max(free, 0)


def _cooldown_refusal(license: License, *, used: int, fingerprint: str | None) -> errors.LicensingError | None:
    """A slot freed by an app or customer stays taken for the plan's cooldown (but the device that
    freed it may come back to it)."""
    cooldown = slot_cooldown(license)
    if cooldown is None:
        return None
    cooling = _cooling_slots(license, cooldown, fingerprint=fingerprint)
    if used + len(cooling) < license.max_activations:
        return None
    # The slot frees when enough of the cooling ones have cooled: the earliest that brings use under the limit.
    available_at = cooling[used + len(cooling) - license.max_activations] + cooldown
    return errors.SlotCoolingDown(
        f"A device was freed too recently: its slot takes a new device from "
        f"{minute_after(available_at):%Y-%m-%d %H:%M} UTC.",
        available_at=available_at,
    )


def minute_after(moment: datetime) -> datetime:
    """`moment` rounded up to the minute, in UTC: a time told to a person, who acts on the minute."""
    rounded = moment.astimezone(UTC).replace(second=0, microsecond=0)
    return rounded if rounded == moment else rounded + timedelta(minutes=1)


def _mark_deactivated(activation: Activation, *, actor: Actor, at: datetime) -> None:
    activation.deactivated_at = at
    activation.deactivated_by_kind = actor.kind
    activation.deactivated_by = actor.display[:255]


def _check_text(value: Any, max_length: int, *, field: str) -> None:
    if not isinstance(value, str):
        raise errors.InvalidInput("This must be text.", field=field)
    if len(value) > max_length:
        raise errors.InvalidInput(f"This must be at most {max_length} characters.", field=field)
    if "\x00" in value:
        raise errors.InvalidInput("This must not contain NUL characters.", field=field)
    if not is_encodable(value):
        raise errors.InvalidInput("This must be valid Unicode text.", field=field)


def is_encodable(text: str) -> bool:
    """Whether text can be stored and sent: JSON lets in lone surrogates that UTF-8 cannot encode."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


# ---------------------------------------------------------------- validation (the hot path)


def validate_license(
    *,
    license_key: str,
    fingerprint: str | None = None,
    activation_id: str | None = None,
    conditions: dict[str, Any] | None = None,
    increment_usage: int = 0,
    with_first_activation: bool = False,
) -> ValidationResult:
    """Tell an app whether a key, and the device it names, may be used now.

    A device activated with conditions validates only with the same ones. `increment_usage`
    counts uses against the license's usage limit; past it, the answer is invalid and nothing
    is counted. `with_first_activation` also reads, in the same query, when the license's first
    device was activated (`lookups.first_activated_at`), for answers that show it.

    Validation is the hot path: one query reads the license and the device, and it takes no lock.
    The validation count and the device's last-seen time are tallied in memory and written every
    second (licensing.tallies); uses, which a limit caps, are counted in one atomic UPDATE that only
    waits, for milliseconds, while an activation of the same license holds that row.
    """
    if not _is_whole_number(increment_usage, 0, MAX_USAGE_INCREMENT):
        raise errors.InvalidInput(
            f"The usage increment must be a whole number from 0 to {MAX_USAGE_INCREMENT}.", field="increment_usage"
        )
    fingerprint = _trimmed_fingerprint(fingerprint)
    device_named = bool(fingerprint or activation_id)
    activation_uuid = _as_uuid(activation_id)
    # An id that is no UUID names no device; the license is still looked up, to say why not.
    look_for_device = device_named and not (activation_id and activation_uuid is None)
    # One query: the license, its relations and device count, and the named device if it is live.
    license, activation = lookups.license_with_device(
        key_digests=keys.license_key_digests(license_key),
        fingerprint=fingerprint if look_for_device else None,
        activation_id=activation_uuid,
        with_first_activation=with_first_activation,
    )
    if license is None:
        return _invalid(_unknown_license_key(), license=None, activation=None)
    if problem := license_problem(license):
        return _invalid(problem, license=license, activation=activation)
    if device_named and activation is None:
        return _invalid(errors.ActivationNotFound(DEVICE_NOT_ACTIVATED), license=license, activation=None)
    if activation is not None and activation.conditions and conditions != activation.conditions:
        return _invalid(errors.ConditionsMismatch(), license=license, activation=activation)

    now = timezone.now()
    if increment_usage:
        usage = lookups.count_usage(license, increment_usage, most=MAX_USAGE_LIMIT)
        if usage is None:
            return _usage_limit_reached(license, activation)
        license.usage = usage
        _note_change()
    _count_validation(license, activation, at=now)
    return ValidationResult(
        valid=True, code="VALID", detail="The license is valid.", license=license, activation=activation
    )


def count_check(activation: Activation) -> None:
    """Count a live device's check of its key as a validation of it.

    For apps of vendors without a validate call (Keymint), which activate again at every start.
    """
    _count_validation(activation.license, activation, at=timezone.now())


def _usage_limit_reached(license: License, activation: Activation | None) -> ValidationResult:
    license.refresh_from_db(fields=["usage", "limit_usage"])
    # Without a limit, only the most uses a license can count stops it.
    most = MAX_USAGE_LIMIT if license.limit_usage is None else license.limit_usage
    remaining = max(most - license.usage, 0)
    return _invalid(
        errors.UsageLimitReached(f"This license has {remaining} uses left.", remaining=remaining),
        license=license,
        activation=activation,
    )


def _count_validation(license: License, activation: Activation | None, *, at: datetime) -> None:
    # A device validating many times a minute is marked seen once a minute, not on every call.
    device_seen = activation is not None and at - activation.last_seen_at >= LAST_SEEN_PRECISION
    tallies.count_validation(license.pk, at=at, device_seen=activation.pk if device_seen else None)
    license.validation_count += 1
    license.last_validated_at = at
    if device_seen:
        activation.last_seen_at = at


def _note_seen(activation: Activation) -> None:
    """A live device activating again (many apps do at every start) is seen, as by a validation:
    customers choose which device to free by when each was last seen."""
    at = timezone.now()
    if at - activation.last_seen_at >= LAST_SEEN_PRECISION:
        tallies.note_device_seen(activation.pk, at=at)
        activation.last_seen_at = at


VALIDATION_CODES = {
    errors.LicenseNotFound: "NOT_FOUND",
    errors.LicenseRevoked: "REVOKED",
    errors.LicenseSuspended: "SUSPENDED",
    errors.LicenseExpired: "EXPIRED",
    errors.ProductInactive: "PRODUCT_INACTIVE",
    errors.ActivationNotFound: "NOT_ACTIVATED",
    errors.ConditionsMismatch: "CONDITIONS_MISMATCH",
    errors.UsageLimitReached: "USAGE_LIMIT_REACHED",
}


def _invalid(
    problem: errors.LicensingError, *, license: License | None, activation: Activation | None
) -> ValidationResult:
    return ValidationResult(
        valid=False,
        code=VALIDATION_CODES[type(problem)],
        detail=str(problem.message),
        license=license,
        activation=activation,
        problem=problem,
    )


def _live_activation(license: License, *, fingerprint: str | None, activation_id: str | None) -> Activation | None:
    activations = _named_activations(license.activations.live(), activation_id=activation_id, fingerprint=fingerprint)
    activation = activations.first()
    if activation is not None:
        activation.license = license
    return activation


def _as_uuid(value: Any) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def _named_activations(
    activations: models.QuerySet[Activation], *, activation_id: str | None, fingerprint: str | None
) -> models.QuerySet[Activation]:
    """Narrow to the activation named by id and/or fingerprint; an id that is no UUID names none."""
    if activation_id:
        activation_uuid = _as_uuid(activation_id)
        if activation_uuid is None:
            return activations.none()
        activations = activations.filter(pk=activation_uuid)
    if fingerprint:
        activations = activations.filter(fingerprint=fingerprint)
    return activations


# ---------------------------------------------------------------- offline license files


def checkout_license(*, license_key: str, fingerprint: str, actor: Actor, ttl: timedelta | None = None) -> Checkout:
    """Allow a live device to run offline until the returned expiry (never past the license's own)."""
    ttl = settings.OFFLINE_LICENSE_DEFAULT_TTL if ttl is None else ttl
    fingerprint = _trimmed_fingerprint(fingerprint)
    if not timedelta(minutes=1) <= ttl <= settings.OFFLINE_LICENSE_MAX_TTL:
        raise errors.InvalidInput(
            f"The time to live must be between 60 and {int(settings.OFFLINE_LICENSE_MAX_TTL.total_seconds())} seconds.",
            field="ttl",
        )
    # The license is locked while the device is checked, so a file is never issued for a device
    # deactivated, or a license revoked, between the check and the file.
    with transaction.atomic():
        license = _lock_license_by_key(license_key)
        _refuse_another_customers_license(license, actor)
        if problem := license_problem(license):
            raise problem
        activation = _live_activation(license, fingerprint=fingerprint, activation_id=None) if fingerprint else None
        if activation is None:
            raise errors.ActivationNotFound(DEVICE_NOT_ACTIVATED, field="fingerprint")
        issued_at = timezone.now()
        expires_at = issued_at + ttl
        if license.expires_at is not None:
            expires_at = min(expires_at, license.expires_at)
        record_event(
            actor=actor,
            action="activation.checked_out",
            target=activation,
            license=license,
            changes={"offline_until": [None, expires_at]},
        )
    return Checkout(
        license=license,
        activation=activation,
        key_sha256=signing.license_key_sha256(license_key),
        issued_at=issued_at,
        expires_at=expires_at,
    )


# ---------------------------------------------------------------- signing keys


# A time typed into a form ("now", to the minute) is already a little past when it arrives.
SIGNS_FROM_LEEWAY = timedelta(minutes=5)
# The least time apps are given to get a new key's public half before it takes over from another.
SIGNING_KEY_LEAD = timedelta(days=1)


def check_signs_from(signs_from: datetime | None, *, replace: bool = False) -> None:
    """Raise InvalidInput unless a new signing key can start signing at this time (None: now).

    A key that takes over from another sooner than SIGNING_KEY_LEAD breaks every app that has not
    got its public key, so it must be asked for (`replace`): for a key that leaked, say.
    """
    now = timezone.now()
    if signs_from is not None and signs_from < now - SIGNS_FROM_LEEWAY:
        raise errors.InvalidInput("A new key cannot sign from a time already past.", field="signs_from")
    signing_now = signing_key_now()
    if signs_from is not None and signs_from > now and signing_now is None:
        # Until then answers would need a key made on the spot, which no shipped app holds.
        raise errors.InvalidInput(
            "No key signs now: first make one that signs from now, then schedule the next.", field="signs_from"
        )
    soon = signs_from is None or signs_from < now + SIGNING_KEY_LEAD
    if signing_now is not None and soon and not replace:
        raise errors.InvalidInput(
            f"Key {signing_now.kid} signs answers now, and apps verify them with its public key: a key that signs "
            "from now, or within a day, breaks every app that has not got the new public key. Give a time at least "
            "a day ahead to publish it first, or replace the key on purpose (admin: tick “Replace the key that "
            "signs now”; create_signing_key: --replace).",
            field="replace",
        )


def create_signing_key(*, actor: Actor, signs_from: datetime | None = None, replace: bool = False) -> SigningKey:
    """Make a new Ed25519 key pair, published at once, that signs from `signs_from` (now if not given).

    A later `signs_from` is how a rotation keeps shipped apps working: they get the new public key
    in an update while the old key still signs, and verify both once the new one takes over.
    Older keys stay published. Taking over sooner than SIGNING_KEY_LEAD while another key signs needs
    `replace`.
    """
    kid, public_pem, private_encrypted = signing.new_key_pair()
    with transaction.atomic():
        # One at a time, so two keys made at once cannot both pass the check against the key that signs.
        _take_turns("signing keys")
        check_signs_from(signs_from, replace=replace)
        now = timezone.now()
        if signs_from is None:
            signs_from = now
        signing_key = SigningKey.objects.create(
            kid=kid,
            public_key_pem=public_pem,
            private_key_encrypted=private_encrypted,
            signs_from=max(signs_from, now),
        )
        record_event(
            actor=actor,
            action="signing_key.created",
            target=signing_key,
            changes={"signs_from": [None, signing_key.signs_from.isoformat()]},
        )
    forget_cached_keys()
    return signing_key


def retire_signing_key(*, signing_key: SigningKey, actor: Actor) -> SigningKey:
    """Stop signing with a key and stop publishing it.

    Apps that fetch the published keys stop trusting it; apps that embedded its public key keep
    trusting it until they get an update without it.
    """
    with transaction.atomic():
        locked = SigningKey.objects.select_for_update().get(pk=signing_key.pk)
        if locked.retired_at is None:
            locked.retired_at = timezone.now()
            locked.save(update_fields=["retired_at"])
            record_event(actor=actor, action="signing_key.retired", target=locked)
    forget_cached_keys()
    return locked


def published_signing_keys() -> models.QuerySet[SigningKey]:
    """Every key not retired, those that sign only later included, newest signer first."""
    return SigningKey.objects.filter(retired_at__isnull=True)


def signing_key_now() -> SigningKey | None:
    """The key that signs answers now (each process may use the one before for SIGNING_KEY_CACHE_SECONDS)."""
    return published_signing_keys().filter(signs_from__lte=timezone.now()).first()


# Every signed answer needs the current key; asking the database each time would cost a query per
# call. Each process keeps it this long, so another process sees a rotation within that time.
SIGNING_KEY_CACHE_SECONDS = 30
_signing_key_cache: dict[str, tuple[float, SigningKey]] = {}


def current_signing_key() -> SigningKey:
    """Return the key that signs now, making the first one if the server has none yet."""
    cached = _signing_key_cache.get("current")
    if cached is not None and time.monotonic() - cached[0] < SIGNING_KEY_CACHE_SECONDS:
        return cached[1]
    signing_key = signing_key_now() or signing_key_made_if_none()
    _signing_key_cache["current"] = (time.monotonic(), signing_key)
    return signing_key


def _take_turns(name: str) -> None:
    """In a transaction: wait for every other open transaction that took a turn under `name` to end.

    For work with no row to lock, such as making the first of something. PostgreSQL takes an
    advisory lock, held until the transaction ends; SQLite needs none, its transactions holding the
    database's write lock from BEGIN (IMMEDIATE, in the settings).
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [advisory_lock_id(name)])


def advisory_lock_id(name: str) -> int:
    """The number of PostgreSQL's advisory lock called `name` (its locks are numbers)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


def signing_key_made_if_none(*, actor: Actor | None = None) -> SigningKey:
    """The key that signs now; if none does, a new one, made once however many processes ask at once."""
    with transaction.atomic():
        _take_turns("the first signing key")
        signing_key = signing_key_now()
        if signing_key is None:
            signing_key = create_signing_key(actor=actor or Actor.system())
    return signing_key


def forget_cached_keys() -> None:
    """Make the next signed answer read its signing or RSA key from the database again."""
    _signing_key_cache.clear()
    _rsa_key_cache.clear()


# ---------------------------------------------------------------- API keys


def create_api_key(
    *,
    name: str,
    actor: Actor,
    read_only: bool = False,
    apps_only: bool = False,
    key: str | None = None,
    expires_at: datetime | None = None,
) -> IssuedApiKey:
    """Make an API key, or import one (`key`) that apps already ship with from another vendor.

    The plaintext is returned here once and never again. An `apps_only` key makes license calls
    and nothing else (`api_key_refusal`). From `expires_at` on, the key no longer works.
    """
    _check_text(name, 200, field="name")
    if not name.strip():
        raise errors.InvalidInput("Give the key a name that says who uses it.", field="name")
    check_api_key_expiry(expires_at, apps_only=apps_only)
    if key is None:
        key = keys.generate_api_key()
    else:
        check_imported_api_key(key)
    try:
        with transaction.atomic():
            api_key = ApiKey.objects.create(
                name=name.strip(),
                prefix=keys.shown_part_of_api_key(key),
                key_digest=keys.digest_api_key(key),
                read_only=read_only,
                apps_only=apps_only,
                expires_at=expires_at,
                created_by=actor.display[:255],
            )
            record_event(
                actor=actor,
                action="api_key.created",
                target=api_key,
                changes={
                    "read_only": [None, read_only],
                    "apps_only": [None, apps_only],
                    "expires_at": [None, expires_at],
                },
            )
    except IntegrityError:
        # The same key imported at the same moment by someone else: the check, made again, says so.
        check_imported_api_key(key)
        raise
    return IssuedApiKey(api_key=api_key, key=key)


def check_api_key_expiry(expires_at: datetime | None, *, apps_only: bool) -> None:
    """Refuse an expiry that would make a key that never works, or one that would stop shipped apps."""
    if expires_at is None:
        return
    if expires_at <= timezone.now():
        raise errors.InvalidInput("An API key's expiry must be in the future.", field="expires_at")
    if apps_only:
        raise errors.InvalidInput(
            "A key for apps does not expire: every app that ships it would stop at once, and no expiry can be "
            "changed. Revoke it when it must stop.",
            field="expires_at",
        )


def api_key_refusal(api_key: ApiKey, *, changes: bool, manages: bool) -> str | None:
    """Why this API key may not make a call, or None when it may.

    `manages`: the call is the vendor's business (the management API, Keymint's create and block),
    not an app's license call, so a key made for apps, which anyone can pull out of one, may not
    make it. `changes`: the call changes something, which a read-only key may not.
    """
    if manages and api_key.apps_only:
        return "This API key is for apps' license calls only; use a key made for your own systems."
    if changes and api_key.read_only:
        return "This API key is read-only."
    return None


def check_imported_api_key(key: str) -> None:
    """Refuse a key to import that is malformed or already in use, before anything is saved."""
    if not (MIN_IMPORTED_API_KEY_LENGTH <= len(key) <= 255 and key.isprintable() and " " not in key):
        raise errors.InvalidInput(
            f"An imported API key is {MIN_IMPORTED_API_KEY_LENGTH} to 255 printable characters without spaces.",
            field="key",
        )
    if ApiKey.objects.filter(key_digest__in=keys.api_key_digests(key)).exists():
        raise errors.InvalidInput(
            "This API key already exists. If apps ship with it, restrict it to apps' license calls instead "
            "(admin: API keys, action Restrict to apps).",
            field="key",
        )


def restrict_api_key_to_apps(*, api_key: ApiKey, actor: Actor) -> ApiKey:
    """Make a key one for apps from now on (`api_key_refusal`), at once, for a key made without it
    that ships in apps. There is no way back: the key may already be in anyone's hands. A revoked
    key, which works for no one, is left as it is."""
    with transaction.atomic():
        locked = ApiKey.objects.select_for_update().get(pk=api_key.pk)
        if not locked.apps_only and locked.revoked_at is None:
            locked.apps_only = True
            locked.save(update_fields=["apps_only"])
            record_event(
                actor=actor, action="api_key.restricted_to_apps", target=locked, changes={"apps_only": [False, True]}
            )
    return locked


def revoke_api_key(*, api_key: ApiKey, actor: Actor) -> ApiKey:
    """Stop an API key from working, at once."""
    with transaction.atomic():
        locked = ApiKey.objects.select_for_update().get(pk=api_key.pk)
        if locked.revoked_at is None:
            locked.revoked_at = timezone.now()
            locked.save(update_fields=["revoked_at"])
            record_event(actor=actor, action="api_key.revoked", target=locked)
    return locked


API_KEY_LAST_USE_PRECISION = timedelta(minutes=1)
# Imported keys were made by other vendors; shorter ones would be guessable.
MIN_IMPORTED_API_KEY_LENGTH = 16


def find_api_key(key: str) -> ApiKey | None:
    """Return the API key matching this secret, revoked, expired or not (some vendor APIs tell them apart).

    While LICENSE_KEY_SECRET is rotated, a key stored under another secret is found too, and
    stored again under LICENSE_KEY_SECRET: only its user holds what its digest is made from."""
    digests = keys.api_key_digests(key)
    if len(digests) == 1:
        api_key = lookups.find_by(ApiKey, "key_digest", digests[0])
    else:
        api_key = ApiKey.objects.filter(key_digest__in=digests).first()
    if api_key is None or not any(hmac.compare_digest(api_key.key_digest, digest) for digest in digests):
        return None
    if api_key.key_digest != digests[0]:
        ApiKey.objects.filter(pk=api_key.pk, key_digest=api_key.key_digest).update(key_digest=digests[0])
        api_key.key_digest = digests[0]
    return api_key


def authenticate_api_key(key: str) -> ApiKey | None:
    """Return the live API key matching this secret (neither revoked nor expired), or None; note
    when it was last used."""
    api_key = find_api_key(key)
    if api_key is None or api_key.is_revoked or api_key.is_expired:
        # In an app's license call, a guessed API key is brute force as much as a guessed license key.
        _note_unknown_key()
        return None
    now = timezone.now()
    # Minute precision is enough to audit keys, and spares a write on every request.
    if api_key.last_used_at is None or now - api_key.last_used_at >= API_KEY_LAST_USE_PRECISION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now
    return api_key


# ---------------------------------------------------------------- idempotency keys

# How long an answer is kept for a retry with the same key (as long as Stripe keeps one).
IDEMPOTENCY_KEY_LIFETIME = timedelta(hours=24)


def claim_idempotency_key(*, api_key: ApiKey, key: str, request_digest: str) -> tuple[IdempotentRequest, bool]:
    """Claim `key` for a management API change, or find the earlier request that claimed it.

    Call it in the transaction that makes the change and keeps its answer (`finish_idempotent_request`):
    the claim is seen by others only with both, and a request claiming the same key meanwhile waits
    for it. Returns the record and whether it holds an earlier answer to send again; raises
    IdempotencyKeyReused when the key came with another request. Keys belong to an API key and last
    IDEMPOTENCY_KEY_LIFETIME.
    """
    # Every key past its lifetime goes, not only this API key's: no other job clears the table.
    IdempotentRequest.objects.filter(created_at__lt=timezone.now() - IDEMPOTENCY_KEY_LIFETIME).delete()
    try:
        with transaction.atomic():
            record = IdempotentRequest.objects.create(api_key=api_key, key=key, request_digest=request_digest)
        return record, False
    except IntegrityError:
        earlier = IdempotentRequest.objects.get(api_key=api_key, key=key)
    if not hmac.compare_digest(earlier.request_digest, request_digest):
        raise errors.IdempotencyKeyReused(field="Idempotency-Key")
    return earlier, True


def finish_idempotent_request(record: IdempotentRequest, *, status_code: int, answer: Any) -> None:
    """Keep a change's answer for retries; a refusal lets the key go, so that a retry with the input
    mended runs: a refused change changed nothing. (A failure rolls the claim back with the change.)"""
    if 200 <= status_code < 300:
        record.status_code = status_code
        record.answer_encrypted = keys.encrypt_stored_answer(json.dumps(answer, cls=DjangoJSONEncoder))
        record.save(update_fields=["status_code", "answer_encrypted"])
    else:
        record.delete()


def stored_answer(record: IdempotentRequest) -> Any:
    """The answer kept by `finish_idempotent_request`."""
    return json.loads(keys.decrypt_stored_answer(record.answer_encrypted))


# ---------------------------------------------------------------- RSA keys (GetKeyManager signatures)


def import_rsa_key(
    *, private_key_pem: str, actor: Actor, product: Product | None = None, replace: bool = False
) -> RsaKey:
    """Store a vendor's existing RSA private key for a product (or globally); it signs from now on.

    Replacing the key that signs those answers now must be asked for (`check_rsa_key_replacement`).
    """
    try:
        public_pem, private_encrypted = signing.rsa_key_from_pem(private_key_pem)
    except ValueError as error:
        raise errors.InvalidInput(str(error), field="private_key_pem") from None
    return _save_rsa_key(
        product=product, public_pem=public_pem, private_encrypted=private_encrypted, actor=actor, replace=replace
    )


def create_rsa_key(*, actor: Actor, product: Product | None = None, replace: bool = False) -> RsaKey:
    """Make a new RSA key pair for a product (or globally); it signs from now on (see `import_rsa_key`)."""
    public_pem, private_encrypted = signing.new_rsa_key()
    return _save_rsa_key(
        product=product, public_pem=public_pem, private_encrypted=private_encrypted, actor=actor, replace=replace
    )


def signing_rsa_key(product: Product | None) -> RsaKey | None:
    """The RSA key that signs a product's GetKeyManager answers now: the product's newest own key,
    else the newest global one (also what signs when no product can be told)."""
    if product is not None:
        own = RsaKey.objects.filter(product=product).first()
        if own is not None:
            return own
    return RsaKey.objects.filter(product__isnull=True).first()


def marking_signing_rsa_keys(rsa_keys: models.QuerySet[RsaKey]) -> models.QuerySet[RsaKey]:
    """`rsa_keys`, each with `signs_now`: `signing_rsa_key`'s rule as a query, for a list of them
    (the newest key of a product, or the newest global key, by RsaKey's ordering)."""
    newer = Q(created_at__gt=models.OuterRef("created_at")) | Q(
        created_at=models.OuterRef("created_at"), pk__gt=models.OuterRef("pk")
    )
    newer_own = RsaKey.objects.filter(newer, product=models.OuterRef("product"))
    newer_global = RsaKey.objects.filter(newer, product__isnull=True)
    newest = models.Case(
        models.When(product__isnull=True, then=~models.Exists(newer_global)), default=~models.Exists(newer_own)
    )
    return rsa_keys.annotate(signs_now=newest)


def check_rsa_key_replacement(*, product: Product | None, replace: bool) -> RsaKey | None:
    """Refuse a new key for answers another key signs now, unless `replace`: apps built for
    GetKeyManager check them with that key's public half, and a new key breaks them until they
    ship the new one. Return the key that signs them now, if one does."""
    signing_now = signing_rsa_key(product)
    if signing_now is not None and not replace:
        raise errors.InvalidInput(
            f"{signing_now} signs these answers now, and apps built for GetKeyManager check them with its public "
            "key: a new key breaks them until they ship its public key. Replace it only on purpose (admin: tick "
            "“Replace the key that signs now”; import_rsa_key: --replace).",
            field="replace",
        )
    return signing_now


def _save_rsa_key(
    *, product: Product | None, public_pem: str, private_encrypted: str, actor: Actor, replace: bool
) -> RsaKey:
    with transaction.atomic():
        # One turn for all RSA keys: a product's first key is checked against the global one.
        _take_turns("RSA keys")
        replaced = check_rsa_key_replacement(product=product, replace=replace)
        rsa_key = RsaKey.objects.create(
            product=product, public_key_pem=public_pem, private_key_encrypted=private_encrypted
        )
        # Which key stopped signing these answers: apps holding its public key refuse them from now.
        changes = {"product": [None, product.pk if product else None], "replaces": [None, replaced and replaced.pk]}
        record_event(actor=actor, action="rsa_key.created", target=rsa_key, changes=changes)
    forget_cached_keys()
    return rsa_key


RSA_KEY_CACHE_SECONDS = 30
_rsa_key_cache: dict[int | None, tuple[float, RsaKey]] = {}


def rsa_key_for(product: Product | None) -> RsaKey:
    """Return the RSA key that signs for a product: its own, else the global one (made if missing).

    Kept per process for a few seconds, like the current signing key: GetKeyManager signs every
    answer, and a key imported on another server process takes over within that time.
    """
    product_id = product.pk if product is not None else None
    cached = _rsa_key_cache.get(product_id)
    if cached is not None and time.monotonic() - cached[0] < RSA_KEY_CACHE_SECONDS:
        return cached[1]
    rsa_key = _stored_rsa_key_for(product)
    _rsa_key_cache[product_id] = (time.monotonic(), rsa_key)
    return rsa_key


def _stored_rsa_key_for(product: Product | None) -> RsaKey:
    signing_now = signing_rsa_key(product)
    if signing_now is not None:
        return signing_now
    # Made before the turn, which holds the database's write lock on SQLite: generating takes a
    # tenth of a second or more. Processes answering their first GetKeyManager calls at once then
    # store one key between them (the others' keys are dropped), or each would sign with its own.
    public_pem, private_encrypted = signing.new_rsa_key()
    with transaction.atomic():
        _take_turns("RSA keys")
        return signing_rsa_key(None) or _save_rsa_key(
            product=None,
            public_pem=public_pem,
            private_encrypted=private_encrypted,
            actor=Actor.system(),
            replace=False,
        )


# ---------------------------------------------------------------- rotating LICENSE_KEY_SECRET


@dataclasses.dataclass
class Rekeyed:
    """What `rekey_stored_secrets` stored again under LICENSE_KEY_SECRET, and what it could not."""

    licenses: int
    signing_keys: int
    rsa_keys: int
    stored_answers: int
    # Records none of the secrets opens, or a key stored twice: named for staff and left as they are.
    failed: list[str]
    # Only their users hold what their digests are made from: each moves at its next use (find_api_key).
    api_keys_in_use: list[ApiKey]


REKEY_BATCH_SIZE = 500


def rekey_stored_secrets() -> Rekeyed:
    """Store again under LICENSE_KEY_SECRET what was stored under one of LICENSE_KEY_SECRET_FALLBACKS:
    license keys' digests and copies, private keys, kept answers.

    In short transactions, so license calls go on meanwhile: each finds a license under either digest.
    A record it cannot move is reported and the rest still moves; run again, it finds nothing left to do.
    A license's `updated_at` does not move: nothing about it changed.
    """
    failed: list[str] = []
    licenses = 0
    last_pk = None
    while True:
        with transaction.atomic():
            # In id order, as the tally writer locks them, so the two never wait for each other in a circle.
            batch = License.objects.order_by("pk").select_for_update().only("pk", "key_digest", "key_encrypted")
            rows = list((batch if last_pk is None else batch.filter(pk__gt=last_pk))[:REKEY_BATCH_SIZE])
            if not rows:
                break
            last_pk = rows[-1].pk
            licenses += sum(_rekey_license(license, failed) for license in rows)
    counts = [
        _reencrypt_column(records, column, purpose, failed)
        for records, column, purpose in [
            (SigningKey.objects.all(), "private_key_encrypted", keys.SIGNING_KEYS),
            (RsaKey.objects.all(), "private_key_encrypted", keys.SIGNING_KEYS),
            (IdempotentRequest.objects.exclude(answer_encrypted=""), "answer_encrypted", keys.STORED_ANSWERS),
        ]
    ]
    in_use = ApiKey.objects.working().order_by("name")
    return Rekeyed(licenses, *counts, failed=failed, api_keys_in_use=list(in_use))


def _rekey_license(license: License, failed: list[str]) -> int:
    try:
        key = keys.decrypt_license_key(license.key_encrypted)
    except InvalidToken:
        failed.append(f"license {license.pk}: none of the secrets opens its key")
        return 0
    digest = keys.digest_license_key(key)
    if license.key_digest == digest and not keys.stored_under_another_secret(license.key_encrypted, keys.LICENSE_KEYS):
        return 0
    try:
        with transaction.atomic():
            License.objects.filter(pk=license.pk).update(key_digest=digest, key_encrypted=keys.encrypt_license_key(key))
    except IntegrityError:
        failed.append(f"license {license.pk}: another license has the same key")
        return 0
    return 1


def _reencrypt_column(records: models.QuerySet, column: str, purpose: bytes, failed: list[str]) -> int:
    count = 0
    for record in records.only("pk", column).iterator():
        token = getattr(record, column)
        try:
            if not keys.stored_under_another_secret(token, purpose):
                continue
            reencrypted = keys.reencrypt(token, purpose)
        except InvalidToken:
            failed.append(f"{record._meta.verbose_name} {record.pk}: none of the secrets opens it")
            continue
        # Unless it changed meanwhile (a kept answer finished): what changed it wrote under the new secret.
        count += type(record).objects.filter(pk=record.pk, **{column: token}).update(**{column: reencrypted})
    return count


# ---------------------------------------------------------------- customer portal

SIGN_IN_LINK_LIFETIME = timedelta(minutes=15)
SIGN_IN_REQUESTS_PER_EMAIL = 3
SIGN_IN_REQUESTS_PER_IP = 10


@dataclasses.dataclass(frozen=True)
class SignInRequest:
    """A recorded request; `token` is set only when the address is a customer's (then e-mail it)."""

    customer: Customer | None
    token: str | None


def request_sign_in_link(*, email: str, ip_address: str | None = None) -> SignInRequest:
    """Record a request for a portal sign-in link, the same way whether or not the address is a customer's.

    Raises TooManyRequests when this address, or this IP (an IPv6 address's /64), asked too often
    within SIGN_IN_LINK_LIFETIME.
    """
    email = email.strip()
    client_network = addresses.network_of(ip_address)
    # By the database's clock, which stamps the links.
    since = Now() - SIGN_IN_LINK_LIFETIME
    # Past its lifetime a link neither signs anyone in nor counts against a limit: without this the
    # table would keep every request ever made, unknown addresses' included. Outside the limit's
    # transaction, whose requests would otherwise queue on these rows' locks and count all at once.
    SignInLink.objects.filter(created_at__lt=since).delete()
    with transaction.atomic():
        # Requests from one network, and requests for one customer's address, take turns, so each
        # counts the links the one before stored: counted at once, they all saw room and went past
        # the limit. An address that is no customer's is mailed nothing and needs no turn of its own.
        if client_network:
            _take_turns(f"sign-in requests from {client_network}")
        customer = Customer.objects.select_for_update().filter(email__iexact=email).first()
        recent = SignInLink.objects.filter(created_at__gte=since)
        if recent.filter(email__iexact=email).count() >= SIGN_IN_REQUESTS_PER_EMAIL or (
            client_network and recent.filter(client_network=client_network).count() >= SIGN_IN_REQUESTS_PER_IP
        ):
            minutes = int(SIGN_IN_LINK_LIFETIME.total_seconds() // 60)
            # The oldest request counted stops counting within a link's lifetime.
            raise errors.TooManyRequests(f"Too many requests. Please wait up to {minutes} minutes and try again.")
        token = keys.generate_sign_in_token()
        SignInLink.objects.create(
            email=email,
            customer=customer,
            token_digest=keys.digest_sign_in_token(token),
            ip_address=ip_address,
            client_network=client_network or "",
        )
    return SignInRequest(customer=customer, token=token if customer else None)


def _sign_in_links(token: str) -> models.QuerySet[SignInLink]:
    # A link mailed to an address the customer no longer has signs no one in: changing it is how
    # support shuts out whoever took over the old mailbox. Its age is told by the database's clock,
    # which stamped it.
    return SignInLink.objects.filter(
        token_digest__in=keys.sign_in_token_digests(token), customer__isnull=False, email__iexact=F("customer__email")
    ).annotate(
        is_expired=models.ExpressionWrapper(
            Q(created_at__lt=Now() - SIGN_IN_LINK_LIFETIME), output_field=models.BooleanField()
        )
    )


def _refuse_unusable(link: SignInLink | None) -> None:
    # Which it is helps the person holding the link, and tells nobody else anything.
    if link is None:
        raise errors.SignInLinkInvalid()
    if link.used_at is not None:
        raise errors.SignInLinkInvalid("This sign-in link was already used. Ask for a new one.")
    ended_at = link.customer.portal_sessions_ended_at
    if ended_at is not None and link.created_at <= ended_at:
        raise errors.SignInLinkInvalid(
            "This sign-in link was sent before every sign-in to this account was ended. Ask for a new one."
        )
    if link.is_expired:
        minutes = int(SIGN_IN_LINK_LIFETIME.total_seconds() // 60)
        raise errors.SignInLinkInvalid(
            f"This sign-in link has expired: links last {minutes} minutes. Ask for a new one."
        )


def check_sign_in_link(*, token: str) -> None:
    """Raise SignInLinkInvalid unless the link can still be used, without using it."""
    _refuse_unusable(_sign_in_links(token).select_related("customer").first())


def end_portal_sessions(*, customer: Customer, actor: Actor) -> Customer:
    """Sign the customer out of the portal everywhere (a lost laptop, a shared computer), and make
    the sign-in links already mailed unusable. The portal checks each session against this time."""
    with transaction.atomic():
        locked = Customer.objects.select_for_update().get(pk=customer.pk)
        locked.portal_sessions_ended_at = Now()
        locked.save(update_fields=["portal_sessions_ended_at"])
        locked.refresh_from_db(fields=["portal_sessions_ended_at"])
        record_event(actor=actor, action="customer.signed_out_everywhere", target=locked)
    return locked


def redeem_sign_in_link(*, token: str, ip_address: str | None = None) -> Customer:
    """Use a sign-in link, once, within SIGN_IN_LINK_LIFETIME of sending; return whose it is."""
    with transaction.atomic():
        link = _sign_in_links(token).select_for_update().select_related("customer").first()
        _refuse_unusable(link)
        now = timezone.now()
        link.used_at = now
        link.save(update_fields=["used_at"])
        record_event(
            actor=Actor.customer(link.customer, ip_address=ip_address),
            action="customer.signed_in",
            target=link.customer,
        )
    return link.customer


def usable_now() -> Q:
    """The licenses that can be used now: `license_problem`'s rule as a query (keep the two in step)."""
    return Q(status=License.Status.ACTIVE, product__is_active=True) & License.unexpired_at(timezone.now())


def count_live_devices(licenses: list[License]) -> None:
    """Set each license's `live_total` from one query, for a page of a list (not in its own query,
    where PostgreSQL counts for every row an OFFSET skips too)."""
    totals = dict(
        License.objects.filter(pk__in=[license.pk for license in licenses])
        .with_live_total()
        .values_list("pk", "live_total")
    )
    for license in licenses:
        license.live_total = totals.get(license.pk, 0)


def licenses_of_customer(customer: Customer) -> models.QuerySet[License]:
    """A customer's licenses, those they can use now first (what they came for), newest first."""
    return (
        License.objects.filter(customer=customer)
        .select_related("product", "plan")
        .with_live_total()
        .order_by(models.Case(models.When(usable_now(), then=0), default=1), "-created_at", "id")
    )


def get_license_for_customer(*, customer: Customer, license_id: Any) -> License:
    """Return one of the customer's licenses; another customer's answers as not found, never as forbidden."""
    license = licenses_of_customer(customer).filter(pk=license_id).first()
    if license is None:
        raise errors.LicenseNotFound()
    return license


def get_activation_for_customer(*, customer: Customer, license_id: Any, activation_id: Any) -> Activation:
    license = get_license_for_customer(customer=customer, license_id=license_id)
    activation = Activation.objects.filter(license=license, pk=activation_id).first()
    if activation is None:
        raise errors.ActivationNotFound()
    activation.license = license
    return activation


def device_history(license: License, *, limit: int = 20) -> models.QuerySet[AuditEvent]:
    """The latest activations, deactivations and offline files of a license, newest first."""
    return AuditEvent.objects.filter(license=license, action__in=DEVICE_HISTORY_ACTIONS).order_by("-created_at", "-id")[
        :limit
    ]


DEVICE_HISTORY_ACTIONS = [
    "activation.created",
    "activation.imported",
    "activation.deactivated",
    "activation.checked_out",
]
