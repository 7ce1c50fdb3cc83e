"""Errors every face (admin, native API, vendor dialects, portal) renders from the same facts."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _


class LicensingError(Exception):
    code = "error"
    status = 400
    message = _("The request could not be completed.")

    def __init__(self, message: str | None = None, *, field: str | None = None, **facts: Any) -> None:
        self.message = message or self.message
        self.field = field
        self.facts = facts
        super().__init__(str(self.message))


class InvalidInput(LicensingError):
    code = "invalid_input"
    message = _("The input is not valid.")


class DuplicateRecord(LicensingError):
    code = "duplicate_record"
    status = 409
    message = _("A record with these values was saved at the same moment. Try again.")


class RecordInUse(LicensingError):
    code = "record_in_use"
    status = 409
    message = _("Other records refer to this one, so it cannot be deleted.")


class LicenseNotFound(LicensingError):
    code = "license_not_found"
    status = 404
    message = _("No license has this key.")


class DuplicateLicenseKey(LicensingError):
    code = "duplicate_license_key"
    status = 409
    message = _("A license with this key already exists.")


class LicenseSuspended(LicensingError):
    code = "license_suspended"
    status = 403
    message = _("This license is suspended.")


class LicenseRevoked(LicensingError):
    code = "license_revoked"
    status = 403
    message = _("This license has been revoked.")


class LicenseExpired(LicensingError):
    code = "license_expired"
    status = 403
    message = _("This license has expired.")


class ProductInactive(LicensingError):
    code = "product_inactive"
    status = 403
    message = _("This product is no longer available.")


class ActivationLimitReached(LicensingError):
    code = "activation_limit_reached"
    status = 403
    message = _("This license has reached its activation limit.")


class DuplicateActivation(LicensingError):
    code = "duplicate_activation"
    status = 409
    message = _("An activation with this id already exists.")


class ActivationNotFound(LicensingError):
    code = "activation_not_found"
    status = 404
    message = _("This license has no such activation.")


class ConditionsMismatch(LicensingError):
    code = "conditions_mismatch"
    status = 403
    message = _("This device was activated with other conditions.")


class UsageLimitReached(LicensingError):
    code = "usage_limit_reached"
    status = 400
    message = _("This license has not that many uses left.")


class DeactivationLimitReached(LicensingError):
    code = "deactivation_limit_reached"
    status = 403
    message = _("This license has no device changes left for now. Contact support to move it.")


class SlotCoolingDown(LicensingError):
    code = "slot_cooling_down"
    status = 403
    message = _("A device was freed too recently; its slot can be used again soon.")


class RevokedLicenseChange(LicensingError):
    code = "license_revoked"
    status = 409
    message = _("A revoked license's terms (plan, limits, expiry) cannot change: issue a new license instead.")


class InvalidStatusChange(LicensingError):
    code = "invalid_status_change"
    status = 409
    message = _("The license cannot change to that status.")


class TooManyRequests(LicensingError):
    code = "too_many_requests"
    status = 429
    message = _("Too many requests. Please wait a few minutes and try again.")


class SignInLinkInvalid(LicensingError):
    code = "sign_in_link_invalid"
    status = 400
    message = _("This sign-in link is invalid, already used or expired. Ask for a new one.")


class ChangedMeanwhile(LicensingError):
    code = "changed_meanwhile"
    status = 409
    message = _("This record was changed by someone else meanwhile: open it again to see the change, then make yours.")


class IdempotencyKeyReused(LicensingError):
    code = "idempotency_key_reused"
    status = 422
    message = _("This Idempotency-Key was sent with another request: use a new key for each change.")
