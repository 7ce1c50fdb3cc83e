"""The vendor staff's back office. Every change goes through licensing.services, so it is audited."""

from __future__ import annotations

import functools
import json
import logging
import math
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django import forms
from django.apps import apps
from django.contrib import admin, messages
from django.contrib.admin import AdminSite
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME, ActionForm
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import unquote
from django.contrib.admin.views.main import ERROR_FLAG, IGNORED_PARAMS, PAGE_VAR, ChangeList
from django.contrib.admin.widgets import AutocompleteSelect, RelatedFieldWidgetWrapper
from django.contrib.auth.admin import GroupAdmin, UserAdmin
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import Group, User
from django.contrib.auth.signals import user_logged_in
from django.core.exceptions import FieldDoesNotExist, PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Count, F, Model, Q, QuerySet
from django.db.models.constants import LOOKUP_SEP
from django.dispatch import receiver
from django.forms.models import BaseInlineFormSet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse, reverse_lazy
from django.utils import timezone
from django.utils.formats import date_format
from django.utils.html import format_html, format_html_join
from django.utils.text import capfirst, get_text_list
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext, ngettext_lazy

from licensing import errors, keys, services, signing
from licensing.addresses import client_ip
from licensing.api.throttling import UnknownKeyWindow, client_ident
from licensing.models import Activation, ApiKey, AuditEvent, Customer, License, Plan, Product, RsaKey, SigningKey

logger = logging.getLogger(__name__)


def staff_actor(request: HttpRequest) -> services.Actor:
    return services.Actor.staff(request.user, ip_address=client_ip(request))


def limit_display(max_activations: int | None) -> str:
    return _("unlimited") if max_activations is None else str(max_activations)


class AutocompleteOfIds(AutocompleteSelect):
    """Django's autocomplete box, except that a value no record could have as its id (typed into a
    hand-made form) shows as no choice, where Django's would fail the page it redisplays."""

    def optgroups(self, name, value, attr=None):
        to_field = self.field.remote_field.model._meta.get_field(self.field.remote_field.field_name)
        return super().optgroups(name, [item for item in value if _is_valid(to_field, item)], attr)


def _is_valid(field, value) -> bool:
    try:
        field.to_python(value)
    except ValidationError:
        return False
    return True


class HandMadeInputMixin:
    """Requests no admin page sends (made by hand, or tampered with) get a message, never a 500."""

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name in self.get_autocomplete_fields(request):
            kwargs.setdefault("widget", AutocompleteOfIds(db_field, self.admin_site, using=kwargs.get("using")))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_search_results(self, request, queryset, search_term):
        # The list's search box refuses a NUL (its form does); the autocomplete's term has no form,
        # and PostgreSQL refuses NUL in text.
        return super().get_search_results(request, queryset, search_term.replace("\x00", ""))

    def changelist_view(self, request, extra_context=None):
        # Django's own answer to a filter it cannot apply (?e=1) for a NUL, which PostgreSQL refuses in text.
        if self._has_nul(request):
            return HttpResponseRedirect(f"{request.path}?{ERROR_FLAG}=1")
        return super().changelist_view(request, extra_context)

    def lookup_allowed(self, lookup, value, request=None):
        # A regular expression is the database's own language, and one it cannot read fails the
        # page's query. No page of the admin filters by one.
        if lookup.rsplit(LOOKUP_SEP, 1)[-1] in {"regex", "iregex"}:
            return False
        return super().lookup_allowed(lookup, value, request)

    def get_changelist_instance(self, request):
        # A filter's value becomes SQL only when the list is read, and one no column or date can
        # hold (the year 99999, an IP address that is none, a date drill-down's day after
        # 31 December 9999) fails it then: that is Django's answer to a filter it cannot apply.
        # A list without filters that fails is a fault of ours, and stays one.
        try:
            return super().get_changelist_instance(request)
        except (ValueError, OverflowError, ValidationError) as error:
            if not set(request.GET) - {*IGNORED_PARAMS, PAGE_VAR, ERROR_FLAG}:
                raise
            logger.warning("Admin list filter not applied: %s", error)
            raise IncorrectLookupParameters(error) from error

    @staticmethod
    def _has_nul(request) -> bool:
        return any("\x00" in key or "\x00" in value for key, values in request.GET.lists() for value in values)

    def response_action(self, request, queryset):
        # Checked before Django filters by them: an id no record could have fails that query, as a
        # ValidationError for a UUID key and a ValueError for a number.
        selected = request.POST.getlist(ACTION_CHECKBOX_NAME)
        if not all(_is_valid(self.model._meta.pk, value) for value in selected):
            self.message_user(request, _("The selection names no record of this list."), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())
        return super().response_action(request, queryset)


class NoDeleteBesideChoicesMixin:
    """No × beside a product, plan or customer chosen on a page: the record the page is for refers to
    it (a protected reference), so deleting it from there is always refused."""

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        formfield = super().formfield_for_dbfield(db_field, request, **kwargs)
        if formfield is not None and isinstance(formfield.widget, RelatedFieldWidgetWrapper):
            formfield.widget.can_delete_related = False
        return formfield


class ServiceErrorsMixin:
    """Show a refusal from the services as a message on the form, never as a server error.

    Forms check what they can beforehand; this catches the rest (a rule that needs the database
    state, a concurrent save), after the admin's transaction has rolled back.
    """

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except errors.LicensingError as error:
            self.message_user(request, str(error.message), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def delete_view(self, request, object_id, extra_context=None):
        try:
            return super().delete_view(request, object_id, extra_context)
        except errors.LicensingError as error:
            # Back to the confirmation page, which now lists what refers to the record.
            self.message_user(request, str(error.message), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())


class NoSecretLookupsMixin:
    """No list filter in the URL on a secret's column (?private_key_encrypted__gte=...): Django
    allows one on any field, and a page that lists a row or not would give the value away one
    comparison at a time, even to view-only staff. Django answers such a filter 400."""

    secret_columns = frozenset({"key_digest", "key_encrypted", "private_key_encrypted"})

    def lookup_allowed(self, lookup, value, request=None):
        if self.secret_columns.intersection(lookup.split(LOOKUP_SEP)):
            return False
        return super().lookup_allowed(lookup, value, request)


def admin_page(
    model_admin: admin.ModelAdmin, request: HttpRequest, template: str, title: str, **context: Any
) -> TemplateResponse:
    """A page of one of these admins beside Django's own (admin/licensing/page.html): a confirmation
    of a list action that cannot be undone (posted again with confirmed=yes, confirm_action.html),
    a device to free, the find-by-key form."""
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": title,
        "action_checkbox_name": ACTION_CHECKBOX_NAME,
        **context,
    }
    return TemplateResponse(request, template, context)


def report_outcome(
    model_admin: admin.ModelAdmin,
    request: HttpRequest,
    *,
    done: int,
    done_message: str,
    unchanged: int,
    unchanged_message: str,
) -> None:
    """Tell staff what an action changed, and separately what was already as asked (nothing to do).

    An action that always changes what it is given passes no `unchanged_message`.
    """
    if done:
        model_admin.message_user(request, done_message % {"count": done}, messages.SUCCESS)
    if unchanged and unchanged_message:
        model_admin.message_user(request, unchanged_message % {"count": unchanged}, messages.INFO)


def report_freed_devices(model_admin: admin.ModelAdmin, request: HttpRequest, freed: int) -> None:
    """Tell staff how many devices a deactivation freed; none is said plainly, not as a success."""
    if not freed:
        model_admin.message_user(request, _("No live device to deactivate: nothing changed."), messages.INFO)
        return
    message = ngettext("%(count)d device deactivated.", "%(count)d devices deactivated.", freed) % {"count": freed}
    model_admin.message_user(request, message, messages.SUCCESS)


class OpenedVersionForm(forms.ModelForm):
    """A change page that does not save over a change made after it was opened.

    Django builds the form from the row as stored when the page is sent back, so every value the page
    still showed from before (another agent's change, the billing system's) would count as changed
    and be put back. So the page carries the record's last change time from when it was opened, and
    each field the value it showed (Django's hidden initial): after someone else's change, what this
    page changed is saved when that change touched none of it, and refused, naming the fields, when
    it did. A page sent without the values it showed (a script's POST) is refused whole.
    """

    opened_version = forms.CharField(widget=forms.HiddenInput, required=False)
    # Set by ReadOnlyByStateMixin for the record the page is sent back for.
    read_only_by_state: tuple[str, ...] = ()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.saved_over_others = False
        if self.instance.pk is None:
            return
        self.fields["opened_version"].initial = self.instance.updated_at.isoformat()
        for name, field in self.fields.items():
            if name != "opened_version" and (not self.is_bound or self._shown_value(name) is not None):
                field.show_hidden_initial = True

    @property
    def changed_data(self) -> list[str]:
        # The page's version is how it was opened, not something it changes.
        return [name for name in super().changed_data if name != "opened_version"]

    def _shown_value(self, name: str) -> Any:
        """What the page showed in the field when it was opened, as sent back; None if not sent."""
        field = self.fields[name]
        value = field.hidden_widget().value_from_datadict(self.data, self.files, self.add_initial_prefix(name))
        if isinstance(value, list | tuple) and all(part is None for part in value):
            return None
        return value

    def clean(self):
        cleaned = super().clean()
        if self.instance.pk is None:
            return cleaned
        # A page opened before the record's state made these read-only still has them, and Django
        # would drop what was typed in them without a word while saying the record was changed.
        changed = [name for name in self.read_only_by_state if self._typed_into(name)]
        if changed:
            raise ValidationError(
                _(
                    "Since you opened this page, this %(record)s's %(fields)s can no longer be changed: nothing "
                    "was saved. Open it again to see why."
                )
                % {
                    "record": self.instance._meta.verbose_name,
                    "fields": get_text_list(
                        [str(self.instance._meta.get_field(name).verbose_name) for name in changed], _("and")
                    ),
                }
            )
        # Refused here, in the form that keeps what was typed; the service checks again with the
        # row locked, for a change that commits while this one is on its way.
        try:
            services.check_unchanged_since(self.instance, self.opened_at())
        except errors.ChangedMeanwhile as refusal:
            changed_by_both = self._changed_by_both()
            if changed_by_both is None:
                raise ValidationError(str(refusal.message)) from None
            if changed_by_both:
                raise ValidationError(
                    _(
                        "Someone else changed %(fields)s of this %(record)s after you opened this page. Open it "
                        "again to see their change, then make yours."
                    )
                    % {
                        "fields": ", ".join(str(self[name].label).lower() for name in changed_by_both),
                        "record": self.instance._meta.verbose_name,
                    }
                ) from None
            self.saved_over_others = True
        return cleaned

    def _typed_into(self, name: str) -> bool:
        """Whether the page sent a field this form no longer has with another value than it showed
        (or without the value it showed: a script's POST). Compared as sent: both come from the
        same page, in the same formats (a date and a time are two inputs)."""
        sent = [key for key in (name, f"{name}_0", f"{name}_1") if key in self.data]
        return any(self.data.getlist(key) != self.data.getlist(self.add_initial_prefix(key)) for key in sent)

    def _changed_by_both(self) -> list[str] | None:
        """The fields this page changed that someone else changed since it was opened; None when the
        page did not send what it showed."""
        names = [name for name in self.fields if name != "opened_version"]
        if not all(self.fields[name].show_hidden_initial for name in names):
            return None
        changed_since = {
            name for name in names if self.fields[name].has_changed(self[name].initial, self._shown_value(name))
        }
        # Both setting the same value is no clash: the record already holds what this page wants.
        return [
            name
            for name in self.changed_data
            if name in changed_since and self.fields[name].has_changed(self[name].initial, self[name].data)
        ]

    def opened_at(self) -> datetime | None:
        """The record's last change as this page knew it; None on an add page. Once the page's
        changes are found clear of someone else's, that is the change it was checked against."""
        if self.instance.pk is None:
            return None
        if self.saved_over_others:
            return self.instance.updated_at
        try:
            return datetime.fromisoformat(self.cleaned_data.get("opened_version") or "")
        except ValueError:
            # A page sent without it (a script's POST) counts as opened before any change.
            return datetime.min.replace(tzinfo=UTC)


class ReadOnlyByStateMixin:
    """Fields that a record's state makes read-only, beside those always read-only: a page opened
    before that state came is refused on saving (OpenedVersionForm), not saved without them."""

    def read_only_by_state(self, obj: Model) -> tuple[str, ...]:
        return ()

    def get_readonly_fields(self, request, obj=None):
        read_only = super().get_readonly_fields(request, obj)
        return read_only if obj is None else [*read_only, *self._state_of(request, obj)]

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        if obj is not None:
            form.read_only_by_state = self._state_of(request, obj)
        return form

    def _state_of(self, request, obj: Model) -> tuple[str, ...]:
        # Asked three times a page, by Django's form and by ours, and it may be a query (a plan's
        # licenses): once a request, which also keeps the form and the page agreeing.
        known = request.__dict__.setdefault("read_only_by_state", {})
        if (type(obj), obj.pk) not in known:
            known[type(obj), obj.pk] = self.read_only_by_state(obj)
        return known[type(obj), obj.pk]


class RecordTrailMixin:
    """History opens the record's audit trail: Django's history knows only saves made through this
    admin's forms, and the trail has every change, from the API, the apps and the portal too."""

    def history_view(self, request, object_id, extra_context=None):
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        if not request.user.has_perm("licensing.view_auditevent"):
            # Django's own history would say the record has none: its changes are in the trail.
            self.message_user(
                request,
                _("The changes to this %(record)s are in the audit trail, which your account may not view.")
                % {"record": self.opts.verbose_name},
                messages.INFO,
            )
            return HttpResponseRedirect(
                reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_change", args=[object_id])
            )
        return HttpResponseRedirect(self.trail_url(object_id))

    def trail_url(self, object_id) -> str:
        return record_trail_url(self.model._meta.label_lower, object_id)


def record_trail_url(target_type: str, target_id: Any) -> str:
    """The audit trail of one record: `target_type` is its model's label ("licensing.customer")."""
    query = urlencode({OneRecordFilter.parameter_name: f"{target_type}:{target_id}"})
    return f"{reverse('admin:licensing_auditevent_changelist')}?{query}"


class CatalogAdmin(
    RecordTrailMixin, NoDeleteBesideChoicesMixin, HandMadeInputMixin, ServiceErrorsMixin, admin.ModelAdmin
):
    """Products, plans and customers, saved and deleted through the services so each change is audited."""

    form = OpenedVersionForm

    def save_model(self, request, obj, form, change):
        services.save_catalog_record(
            record=obj,
            actor=staff_actor(request),
            fields=form.changed_data if change else None,
            unchanged_since=form.opened_at(),
        )

    def delete_model(self, request, obj):
        services.delete_catalog_record(record=obj, actor=staff_actor(request))

    def get_deleted_objects(self, objs, request):
        # Licenses are never deleted, so staff have no delete permission on them; a record they
        # refer to is protected, which is the reason to show, not a missing permission.
        deleted, model_count, _perms_needed, protected = super().get_deleted_objects(objs, request)
        return deleted, model_count, set(), protected

    def delete_queryset(self, request, queryset):
        # In id order, whatever order the list shows: each deletion locks its row until the whole
        # selection is deleted, and two overlapping selections locking in different orders could
        # each wait for the other.
        for record in queryset.order_by("pk"):
            services.delete_catalog_record(record=record, actor=staff_actor(request))

    def response_action(self, request, queryset):
        # "Delete selected" logs the deletions before it makes them: one transaction, so that a
        # deletion refused leaves neither a log entry nor any other record of the selection deleted.
        try:
            with transaction.atomic():
                return super().response_action(request, queryset)
        except errors.LicensingError as error:
            self.message_user(request, str(error.message), messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())


@admin.register(Product)
class ProductAdmin(CatalogAdmin):
    list_display = ["name", "slug", "public_id", "is_active", "plan_count", "license_count", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["name", "slug", "public_id"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["created_at", "updated_at"]
    # Stated here: the counts below make a grouped query, which leaves the model's ordering out,
    # and the product box of a license's page lists its pages unordered otherwise.
    ordering = Product._meta.ordering

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(plan_total=Count("plans", distinct=True), license_total=Count("licenses", distinct=True))
        )

    def save_model(self, request, obj, form, change):
        withdrawing = change and "is_active" in form.changed_data and not obj.is_active
        # Counted while the product is still active: the licenses that work until this save.
        withdrawn = obj.licenses.filter(services.usable_now()).count() if withdrawing else 0
        super().save_model(request, obj, form, change)
        if withdrawing:
            message = ngettext(
                "%(count)d active license of this product stops activating and validating until the product is "
                "active again.",
                "%(count)d active licenses of this product stop activating and validating until the product is "
                "active again.",
                withdrawn,
            )
            self.message_user(request, message % {"count": withdrawn}, messages.WARNING)

    @admin.display(description=_("plans"), ordering="plan_total")
    def plan_count(self, product: Product) -> int:
        return product.plan_total

    @admin.display(description=_("licenses"), ordering="license_total")
    def license_count(self, product: Product) -> int:
        return product.license_total


@admin.register(Plan)
class PlanAdmin(ReadOnlyByStateMixin, CatalogAdmin):
    list_display = ["name", "product", "identifier", "limit", "duration", "created_at"]
    list_filter = ["product", "duration_unit"]
    list_select_related = ["product"]
    search_fields = ["name", "identifier", "product__name"]
    autocomplete_fields = ["product"]
    readonly_fields = ["created_at", "updated_at"]

    def read_only_by_state(self, obj: Plan) -> tuple[str, ...]:
        return ("product",) if obj.licenses.exists() else ()

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        changed = set(form.changed_data) if change else set()
        # A plan's terms are copied into each license it issues, its device-change rules are read at
        # each call: staff changing one would otherwise expect the other behaviour.
        if changed & services.PLAN_TERMS_COPIED and (licenses := obj.licenses.count()):
            message = ngettext(
                "The license already on this plan keeps its device limit and expiry; the new ones apply to "
                "licenses issued on it from now on (the limit also to those moved onto it).",
                "The %(count)d licenses already on this plan keep their device limit and expiry; the new ones "
                "apply to licenses issued on it from now on (the limit also to those moved onto it).",
                licenses,
            )
            self.message_user(request, message % {"count": licenses}, messages.INFO)
        if changed & services.PLAN_RULES_FOLLOWED and (bound := services.plan_rules_bind(obj).count()):
            message = ngettext(
                "The device-change rules apply at once to the license on this plan with a device limit.",
                "The device-change rules apply at once to the %(count)d licenses on this plan with a device limit.",
                bound,
            )
            self.message_user(request, message % {"count": bound}, messages.WARNING)

    @admin.display(description=_("default activation limit"), ordering=F("max_activations").asc(nulls_last=True))
    def limit(self, plan: Plan) -> str:
        return limit_display(plan.max_activations)

    @admin.display(description=_("duration"))
    def duration(self, plan: Plan) -> str:
        return plan.duration_display


class LicenseColumns:
    """What a license's row shows: in the license list, and in its customer's page."""

    @admin.display(description=_("status"), ordering="status")
    def state(self, license: License) -> str:
        # The status is what staff set; an active license that cannot be used must not read as usable.
        problem = services.license_problem(license)
        if isinstance(problem, errors.LicenseExpired):
            return _("active, expired")
        if isinstance(problem, errors.ProductInactive):
            return _("active, product inactive")
        return license.get_status_display()

    @admin.display(description=_("expires"), ordering=F("expires_at").asc(nulls_last=True))
    def expiry(self, license: License) -> Any:
        # The day is enough in the list; the license's page has the time.
        return date_format(timezone.localdate(license.expires_at)) if license.expires_at else _("never")

    # The list's columns are plain text, which wraps (Django keeps a relation's or a date-time's
    # column on one line), so the list fits a laptop's window beside the filters.
    @admin.display(description=_("product"), ordering="product__name")
    def product_name(self, license: License) -> str:
        return license.product.name

    @admin.display(description=_("plan"), ordering="plan__name")
    def plan_name(self, license: License) -> str | None:
        return license.plan.name if license.plan else None

    # Not sortable: sorting by it would count the devices of every license for each page.
    @admin.display(description=_("devices"))
    def devices_used(self, license: License) -> str:
        live = license.devices_in_use()
        return f"{live} / {limit_display(license.max_activations)}"


class FirstRowsFormSet(BaseInlineFormSet):
    """The first rows of an inline, in its order: a site license's thousands of devices, or a
    reseller's thousands of licenses, would make a page take seconds to draw. The rest are a link
    away (the inline's template)."""

    shown = 100

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.total = self.queryset.count()
        self.queryset = self.queryset[: self.shown]


class CustomerLicenseInline(LicenseColumns, admin.TabularInline):
    """A customer's licenses on their page, newest first, each a link to its own page: what support
    looks at first when the customer writes."""

    model = License
    formset = FirstRowsFormSet
    template = "admin/licensing/customer/licenses_inline.html"
    extra = 0
    can_delete = False
    show_change_link = True
    fields = readonly_fields = ["state", "plan_name", "devices_used", "expiry"]
    ordering = ["-created_at"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("product", "plan").with_live_total()

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        # Read here, changed on the license's own page, through the services.
        return False


@admin.register(Customer)
class CustomerAdmin(CatalogAdmin):
    list_display = ["email", "name", "external_id", "license_count", "created_at"]
    search_fields = ["email", "name", "external_id"]
    readonly_fields = ["license_count", "portal_sessions_ended_at", "created_at", "updated_at"]
    # As ProductAdmin's: the count makes a grouped query, which has no order of its own.
    ordering = Customer._meta.ordering
    inlines = [CustomerLicenseInline]
    actions = ["sign_out_everywhere"]

    @admin.action(description=_("Sign selected customers out of the portal everywhere"), permissions=["change"])
    def sign_out_everywhere(self, request, queryset):
        # For a customer whose laptop is lost: their sessions end, and links already sent. (Whoever
        # holds a lost mailbox can ask for a new link: changing the customer's address stops them.)
        actor = staff_actor(request)
        customers = list(queryset.order_by("pk"))
        for customer in customers:
            services.end_portal_sessions(customer=customer, actor=actor)
        message = ngettext(
            "%(count)d customer signed out of the portal everywhere.",
            "%(count)d customers signed out of the portal everywhere.",
            len(customers),
        )
        self.message_user(request, message % {"count": len(customers)}, messages.SUCCESS)

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(license_total=Count("licenses"))

    @admin.display(description=_("licenses"), ordering="license_total")
    def license_count(self, customer: Customer) -> str:
        if customer.pk is None:
            return "-"
        url = reverse("admin:licensing_license_changelist") + f"?customer={customer.pk}"
        return format_html('<a href="{}">{}</a>', url, customer.license_total)


class ExpiryListFilter(admin.SimpleListFilter):
    title = _("expiry")
    parameter_name = "expiry"

    # For renewal reminders: the licenses about to lapse (revoked ones too; the status filter narrows).
    WITHIN_DAYS = {"7d": 7, "30d": 30}

    def lookups(self, request, model_admin):
        return [
            ("expired", _("Expired")),
            ("7d", _("Expires within 7 days")),
            ("30d", _("Expires within 30 days")),
            ("current", _("Not expired")),
            ("never", _("Never expires")),
        ]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "expired":
            return queryset.exclude(License.unexpired_at(now))
        if self.value() in self.WITHIN_DAYS:
            days = self.WITHIN_DAYS[self.value()]
            return queryset.filter(expires_at__gt=now, expires_at__lte=now + timedelta(days=days))
        if self.value() == "current":
            return queryset.filter(License.unexpired_at(now))
        if self.value() == "never":
            return queryset.filter(expires_at__isnull=True)
        return queryset


class PlanListFilter(admin.RelatedFieldListFilter):
    """Plans are named with their product: fetch both in one query rather than one per plan."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Django names the choice of licenses without a plan by the list's empty cell, "-".
        self.empty_value_display = _("No plan")

    def field_choices(self, field, request, model_admin):
        return [(plan.pk, str(plan)) for plan in Plan.objects.select_related("product")]


MONTHS_PER_UNIT = {"months": 1, "years": 12}


# Sent by the license page's actions: once done, back to that page rather than to the list.
FROM_LICENSE_PAGE = "from_license_page"


class LicenseActionForm(ActionForm):
    days = forms.CharField(
        # Plain text: an invalid action form would read "No action selected"; extend explains instead.
        label=_("Extend by:"),
        required=False,
        widget=forms.NumberInput(attrs={"size": 4}),
    )
    # Plain text too, for the same reason: extend says what a unit it does not know is wrong with.
    unit = forms.CharField(
        label="",
        required=False,
        widget=forms.Select(
            # No visible label: it reads on from "Extend by: [n]", and screen readers need a name.
            attrs={"aria-label": _("Unit")},
            choices=[("days", _("days")), ("months", _("months")), ("years", _("years"))],
        ),
    )
    # Plain text too: a reason too long is said by the service, per license.
    reason = forms.CharField(
        label=_("Reason (suspend, reinstate, revoke):"),
        required=False,
        widget=forms.TextInput(attrs={"size": 30, "maxlength": services.MAX_REASON_LENGTH}),
    )


class LicenseAddForm(forms.ModelForm):
    key = forms.CharField(
        label=_("License key"),
        required=False,
        max_length=keys.MAX_KEY_LENGTH,
        strip=False,
        help_text=_("Leave empty to generate one. Fill it in to import a key your customers already have."),
    )
    # An empty limit or expiry means the plan's, so "none" needs a box of its own (a lifetime deal).
    unlimited_devices = forms.BooleanField(label=_("Unlimited devices"), required=False)
    never_expires = forms.BooleanField(label=_("Never expires"), required=False)

    class Meta:
        model = License
        fields = [
            "product",
            "plan",
            "customer",
            "key",
            "max_activations",
            "unlimited_devices",
            "expires_at",
            "never_expires",
            "metadata",
        ]
        help_texts = {
            "max_activations": _("Leave empty to use the plan's limit (unlimited without a plan)."),
            "expires_at": _("Leave empty to use the plan's duration (never expires without a plan)."),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # A plan names its product: staff who pick the plan need not pick the product too.
        self.fields["product"].required = False
        self.fields["product"].help_text = _("Leave empty to use the plan's product.")

    def clean(self):
        cleaned = super().clean()
        for box, field in [("unlimited_devices", "max_activations"), ("never_expires", "expires_at")]:
            if cleaned.get(box) and cleaned.get(field) is not None:
                self.add_error(box, _("Leave %(field)s empty, or untick this.") % {"field": self[field].label})
        if "product" in cleaned and "plan" in cleaned and cleaned["product"] is None:
            if cleaned["plan"] is None:
                self.add_error("product", _("Choose a product, or a plan of it."))
            else:
                cleaned["product"] = cleaned["plan"].product
        if self.errors or "product" not in cleaned:
            return cleaned
        try:
            services.check_new_license(
                product=cleaned["product"],
                plan=cleaned.get("plan"),
                key=cleaned.get("key") or None,
                max_activations=cleaned.get("max_activations"),
                metadata=cleaned.get("metadata"),
            )
        except errors.LicensingError as error:
            self.add_error(error.field if error.field in self.fields else None, str(error.message))
        return cleaned


STATUS_ACTIONS = {
    "suspend": License.Status.SUSPENDED,
    "reinstate": License.Status.ACTIVE,
    "revoke": License.Status.REVOKED,
}
# The list's actions as a license's own page names them: the list's words are for a selection.
ONE_LICENSE_ACTIONS = {
    "suspend": _("Suspend this license"),
    "reinstate": _("Reinstate this license"),
    "revoke": _("Revoke this license"),
    "extend": _("Extend this license by the days, months or years given"),
    "deactivate_all_devices": _("Deactivate all devices of this license"),
}


class LicenseChangeForm(OpenedVersionForm):
    class Meta:
        model = License
        fields = ["customer", "plan", "max_activations", "expires_at", "limit_usage", "metadata"]
        help_texts = {
            "plan": _(
                "Another plan of the same product (an upgrade): the license takes its device limit, unless you "
                "change the limit here too. The expiry stays."
            )
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Not there for staff who may only view the license.
        if self.instance.pk is not None and "plan" in self.fields:
            plan = self.fields["plan"]
            # A product has a handful of plans: a plain list of its own, not a search across every product's.
            plan.widget = forms.Select()
            plan.queryset = Plan.objects.filter(product=self.instance.product_id)
            # A license on a plan moves to another plan, never to none.
            plan.required = self.instance.plan_id is not None
            # Django fills in %(value)s afterwards: a "%" in the product's name must reach it escaped.
            product = str(self.instance.product).replace("%", "%%")
            plan.error_messages["invalid_choice"] = _("Choose a plan of this license's product, %(product)s.") % {
                "product": product
            }

    def clean_metadata(self):
        metadata = self.cleaned_data["metadata"]
        if metadata is None:
            return {}
        if "metadata" not in self.changed_data:
            # Kept as stored: metadata that met an earlier rule must not stop the page saving the rest.
            return metadata
        try:
            services.check_metadata(metadata)
        except errors.LicensingError as error:
            raise ValidationError(str(error.message)) from None
        return metadata


class FindLicenseByKeyForm(forms.Form):
    # Not stripped: spaces a customer pasted are worth telling them about (apps must not send them).
    key = forms.CharField(label=_("License key"), max_length=keys.MAX_KEY_LENGTH, strip=False)


class ActivationInline(admin.TabularInline):
    model = Activation
    formset = FirstRowsFormSet
    template = "admin/licensing/license/devices_inline.html"
    extra = 0
    can_delete = False
    show_change_link = True
    fields = [
        "name",
        "fingerprint",
        "platform",
        "ip_address",
        "created_at",
        "last_seen_at",
        "deactivated_at",
        "deactivated_by",
    ]
    readonly_fields = [*fields, "free_slot"]

    def get_queryset(self, request):
        return super().get_queryset(request).order_by(F("deactivated_at").desc(nulls_first=True), "-created_at")

    def get_fields(self, request, obj=None):
        # The button leads to the license's own deactivation page, which asks the license's admin for
        # change permission: staff who may only view licenses get no button they could not use.
        license_admin = self.admin_site.get_model_admin(self.parent_model)
        may_free_slots = license_admin.has_change_permission(request, obj)
        # Beside the device's name, not past eight columns a narrow screen scrolls away.
        return ["name", "free_slot", *self.fields[1:]] if may_free_slots else self.fields

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        # Rows are read-only (a device changes through the services: the button above), so each
        # row's link to the device's page reads "View", as that page is for reading.
        return False

    @admin.display(description=_("free its slot"))
    def free_slot(self, activation: Activation) -> str:
        if not activation.is_live:
            return "-"
        url = reverse("admin:licensing_license_deactivate_device", args=[activation.license_id, activation.pk])
        device = activation.name or activation.fingerprint or _("an unnamed device")
        # Each row's link says which device, for screen readers listing a page's links.
        label = _("Deactivate %(device)s") % {"device": device}
        return format_html('<a href="{}" aria-label="{}">{}</a>', url, label, _("Deactivate…"))


class LicenseChangeList(ChangeList):
    def get_results(self, request):
        super().get_results(request)
        # Counted for the rows shown only: in the page's own query, for every row before them too.
        self.result_list = list(self.result_list)
        services.count_live_devices(self.result_list)


def audit_trail_url(license_id) -> str:
    return reverse("admin:licensing_auditevent_changelist") + f"?license={license_id}"


@admin.register(License)
class LicenseAdmin(
    LicenseColumns,
    ReadOnlyByStateMixin,
    RecordTrailMixin,
    NoSecretLookupsMixin,
    NoDeleteBesideChoicesMixin,
    HandMadeInputMixin,
    ServiceErrorsMixin,
    admin.ModelAdmin,
):
    list_display = ["masked_key", "state", "product_name", "plan_name", "customer_email", "devices_used", "expiry"]
    list_filter = ["status", "product", ("plan", PlanListFilter), ExpiryListFilter]
    list_select_related = ["product", "plan", "customer"]
    search_fields = ["customer__email", "customer__name", "key_suffix"]
    search_help_text = _(
        "A customer's e-mail or name, or the last characters of a key. To find a license by its whole key, "
        "use “Find by key”."
    )
    form = LicenseChangeForm
    autocomplete_fields = ["product", "plan", "customer"]
    action_form = LicenseActionForm
    actions = ["suspend", "reinstate", "revoke", "extend", "deactivate_all_devices"]
    # Each license is a transaction of its own, a few milliseconds: tens of thousands at once would
    # run past a proxy's timeout, and staff would see a gateway error, not what was done.
    most_licenses_per_action = 1000
    # Licenses an action refused for one reason are named up to this many, then counted.
    refused_licenses_named = 3
    inlines = [ActivationInline]
    readonly_fields = [
        "license_key",
        "product",
        "state",
        "status_changed",
        "devices_used",
        "device_changes",
        "usage",
        "validation_count",
        "last_validated_at",
        "audit_trail",
        "created_at",
        "updated_at",
    ]
    fields = [
        "opened_version",
        "license_key",
        "product",
        "plan",
        "customer",
        "state",
        "status_changed",
        "devices_used",
        "device_changes",
        "max_activations",
        "expires_at",
        "usage",
        "limit_usage",
        "metadata",
        "validation_count",
        "last_validated_at",
        "audit_trail",
        "created_at",
        "updated_at",
    ]

    def get_changelist(self, request, **kwargs):
        return LicenseChangeList

    def get_actions(self, request):
        return {
            name: (self._on_at_most_some_licenses(action), name, description)
            for name, (action, name, description) in super().get_actions(request).items()
        }

    def _on_at_most_some_licenses(self, action):
        @functools.wraps(action)
        def on_at_most_some(modeladmin, request, queryset):
            count = queryset.count()
            if count <= self.most_licenses_per_action:
                return action(modeladmin, request, queryset)
            message = _(
                "%(count)d licenses are selected: act on at most %(most)d at a time. Filter the list (by "
                "product, plan, status or expiry) and act on each part, or use the management API."
            ) % {"count": count, "most": self.most_licenses_per_action}
            self.message_user(request, message, messages.ERROR)
            return None

        return on_at_most_some

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = LicenseAddForm
            kwargs["fields"] = LicenseAddForm.Meta.fields
        return super().get_form(request, obj, change=change, **kwargs)

    def get_fieldsets(self, request, obj=None):
        if obj is None:
            return [(None, {"fields": LicenseAddForm.Meta.fields})]
        return super().get_fieldsets(request, obj)

    def get_readonly_fields(self, request, obj=None):
        return super().get_readonly_fields(request, obj) if obj is not None else []

    def read_only_by_state(self, obj: License) -> tuple[str, ...]:
        return () if services.terms_may_change(obj) else services.LICENSE_TERMS

    def get_inlines(self, request, obj):
        return [] if obj is None else self.inlines

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # The list's actions, for this one license: support acts on the license it has open, and is
        # offered only what it may do to it now (no reinstating an active license).
        license = self.get_object(request, unquote(object_id))
        choices = [
            (name, ONE_LICENSE_ACTIONS.get(name, label))
            for name, label in self.get_action_choices(request)
            if license is None or self._applies(name, license)
        ]
        if len(choices) > 1:
            actions = self.action_form(auto_id=None)
            actions.fields["action"].choices = choices
            offered = {name for name, _label in choices}
            # The inputs of actions not offered go with them: a revoked license asks for no period.
            if "extend" not in offered:
                del actions.fields["days"], actions.fields["unit"]
            if not offered & set(STATUS_ACTIONS):
                del actions.fields["reason"]
            extra_context = {**(extra_context or {}), "license_actions": actions}
        return super().change_view(request, object_id, form_url, extra_context)

    @staticmethod
    def _applies(action_name: str, license: License) -> bool:
        if action_name in STATUS_ACTIONS:
            return services.may_become(license, STATUS_ACTIONS[action_name])
        if action_name == "extend":
            return services.may_extend(license)
        if action_name == "deactivate_all_devices":
            return license.activations.live().exists()
        return True

    def response_action(self, request, queryset):
        response = super().response_action(request, queryset)
        selected = request.POST.getlist(ACTION_CHECKBOX_NAME)
        if (
            request.POST.get(FROM_LICENSE_PAGE)
            and isinstance(response, HttpResponseRedirect)
            and len(selected) == 1
            and _is_valid(self.model._meta.pk, selected[0])
        ):
            return HttpResponseRedirect(reverse("admin:licensing_license_change", args=[selected[0]]))
        return response

    def has_delete_permission(self, request, obj=None):
        return False

    def get_urls(self):
        find = path("find-by-key/", self.admin_site.admin_view(self.find_by_key_view), name="licensing_license_find")
        deactivate = path(
            "<uuid:license_id>/devices/<uuid:activation_id>/deactivate/",
            self.admin_site.admin_view(self.deactivate_device_view),
            name="licensing_license_deactivate_device",
        )
        return [find, deactivate, *super().get_urls()]

    def deactivate_device_view(self, request, license_id, activation_id):
        """Free one device's slot from the license's page: asked on a page of its own, done on POST."""
        if not self.has_change_permission(request):
            raise PermissionDenied
        activation = (
            Activation.objects.select_related("license").filter(license_id=license_id, pk=activation_id).first()
        )
        if activation is None:
            raise Http404
        license_page = reverse("admin:licensing_license_change", args=[license_id])
        if request.method == "POST":
            try:
                result = services.deactivate_activation(activation=activation, actor=staff_actor(request))
            except errors.LicensingError as error:
                self.message_user(request, str(error.message), messages.ERROR)
            else:
                report_freed_devices(self, request, 0 if result.already_inactive else 1)
            return HttpResponseRedirect(license_page)
        return admin_page(
            self,
            request,
            "admin/licensing/license/deactivate_device.html",
            _("Deactivate a device?"),
            activation=activation,
            license_page=license_page,
        )

    def find_by_key_view(self, request):
        """Open a license from its full key, sent by POST so the key stays out of URLs and access logs."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        form = FindLicenseByKeyForm(request.POST or None)
        if form.is_valid():
            typed = form.cleaned_data["key"]
            try:
                license = services.get_license_by_key(typed.strip())
            except errors.LicenseNotFound as error:
                form.add_error("key", f"{error.message} {_('Keys are case-sensitive: check capitals.')}")
            else:
                if typed != typed.strip():
                    # Found for staff, but an app sending the key so is answered as an unknown key.
                    message = _(
                        "The key was typed with spaces or line breaks around it. Apps must send it without them: "
                        "with them it is an unknown key."
                    )
                    self.message_user(request, message, messages.WARNING)
                return HttpResponseRedirect(reverse("admin:licensing_license_change", args=[license.pk]))
        return admin_page(
            self, request, "admin/licensing/license/find_by_key.html", _("Find a license by its key"), form=form
        )

    def save_form(self, request, form, change):
        if change:
            return form.save(commit=False)
        data = form.cleaned_data
        if data.get("unlimited_devices"):
            max_activations = None
        else:
            max_activations = services.UNSET if data.get("max_activations") is None else data["max_activations"]
        issued = services.create_license(
            product=data["product"],
            plan=data.get("plan"),
            customer=data.get("customer"),
            key=data.get("key") or None,
            max_activations=max_activations,
            expires_at=None if data.get("never_expires") else data.get("expires_at") or services.UNSET,
            metadata=data.get("metadata") or {},
            actor=staff_actor(request),
        )
        messages.success(request, _("License created. Its key is %(key)s") % {"key": issued.key})
        return issued.license

    def save_model(self, request, obj, form, change):
        if not change:
            return
        changes = {field: form.cleaned_data[field] for field in form.changed_data}
        obj = services.update_license(
            license=obj, actor=staff_actor(request), unchanged_since=form.opened_at(), **changes
        )
        if not changes.keys() & {"plan", "max_activations"} or obj.max_activations is None:
            return
        live = obj.live_activation_count()
        if live > obj.max_activations:
            message = _(
                "%(live)d devices are in use, more than the new limit of %(limit)d. They keep working; new "
                "activations are refused until enough of them are deactivated."
            )
            self.message_user(request, message % {"live": live, "limit": obj.max_activations}, messages.WARNING)

    def save_related(self, request, form, formsets, change):
        # The service saved the new license; it has no many-to-many fields for save_m2m to save.
        if change:
            super().save_related(request, form, formsets, change)

    @admin.display(description=_("key"))
    def masked_key(self, license: License) -> str:
        return license.masked_key

    def get_search_results(self, request, queryset, search_term):
        # Customers quote more of a key than the list shows ("MX4UT-BVUBQ", "…-BVUBQ"); only its
        # last characters are stored in clear, so those are what is looked for: the last six, or
        # fewer for a short imported key (keys.license_key_suffix), so each length is tried.
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        term = search_term.strip().lstrip("…")
        if term and " " not in term:
            endings = {term[-length:] for length in range(1, min(len(term), keys.SUFFIX_LENGTH) + 1)}
            results |= queryset.filter(key_suffix__in=endings)
        return results, may_have_duplicates

    @admin.display(description=_("license key"))
    def license_key(self, license: License) -> str:
        return services.reveal_license_key(license)

    @admin.display(description=_("customer"), ordering="customer__email")
    def customer_email(self, license: License) -> str | None:
        return license.customer.email if license.customer else None

    @admin.display(description=_("audit trail"))
    def audit_trail(self, license: License) -> str:
        return format_html('<a href="{}">{}</a>', audit_trail_url(license.pk), _("Every change to this license"))

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        # No link that would answer "you may not open this page".
        if not request.user.has_perm("licensing.view_auditevent"):
            return [name for name in fields if name != "audit_trail"]
        return fields

    def trail_url(self, object_id) -> str:
        # The license's own trail holds its devices' events too.
        return audit_trail_url(object_id)

    def _apply(self, request, queryset, change, done_message: str, unchanged_message: str = "") -> None:
        done = unchanged = 0
        refused: dict[str, list[str]] = {}
        for license in queryset:
            try:
                changed = change(license).updated_at != license.updated_at
            except errors.LicensingError as error:
                refused.setdefault(str(error.message), []).append(license.masked_key)
                continue
            done += changed
            unchanged += not changed
        # One line per reason, not per license: a thousand licenses refused alike would bury the page.
        for message, masked_keys in refused.items():
            named = ", ".join(masked_keys[: self.refused_licenses_named])
            more = len(masked_keys) - self.refused_licenses_named
            if more > 0:
                named = ngettext("%(named)s and %(more)d more", "%(named)s and %(more)d more", more) % {
                    "named": named,
                    "more": more,
                }
            self.message_user(request, f"{named}: {message}", messages.WARNING)
        report_outcome(
            self,
            request,
            done=done,
            done_message=done_message,
            unchanged=unchanged,
            unchanged_message=unchanged_message,
        )

    @admin.display(description=_("status changed"))
    def status_changed(self, license: License) -> str:
        # Support's first question when a customer writes: since when, by whom, and why.
        event = services.last_status_change(license)
        if event is None:
            return _("never: active since it was issued")
        said = _("%(when)s, by %(who)s") % {
            "when": date_format(timezone.localtime(event.created_at), "j F Y, H:i T"),
            "who": event.actor_display or event.get_actor_kind_display(),
        }
        reason = event.changes.get("reason")
        return _("%(said)s: %(reason)s") % {"said": said, "reason": reason} if reason else said

    @admin.display(description=_("device changes"))
    def device_changes(self, license: License) -> str:
        # Why the customer or the app cannot free a device, and until when; staff are never limited.
        changes = services.device_changes(license)
        if changes.remaining is None:
            return _("not limited")
        plan = license.plan
        said = ngettext(
            "%(left)d of %(allowed)d left to apps and the customer (a deactivation counts for %(days)d day)",
            "%(left)d of %(allowed)d left to apps and the customer (a deactivation counts for %(days)d days)",
            plan.deactivation_window_days,
        ) % {"left": changes.remaining, "allowed": plan.max_deactivations, "days": plan.deactivation_window_days}
        if changes.back_at is None:
            return said
        at = date_format(timezone.localtime(services.minute_after(changes.back_at)), "j F Y, H:i T")
        return _("%(said)s; the next comes back on %(at)s") % {"said": said, "at": at}

    @staticmethod
    def _reason(request) -> str:
        return request.POST.get("reason", "")

    @admin.action(description=_("Suspend selected licenses"), permissions=["change"])
    def suspend(self, request, queryset):
        actor, reason = staff_actor(request), self._reason(request)
        self._apply(
            request,
            queryset,
            lambda lic: services.suspend_license(license=lic, actor=actor, reason=reason),
            ngettext_lazy("%(count)d license suspended.", "%(count)d licenses suspended.", "count"),
            ngettext_lazy(
                "%(count)d license was already suspended.", "%(count)d licenses were already suspended.", "count"
            ),
        )

    @admin.action(description=_("Reinstate selected licenses"), permissions=["change"])
    def reinstate(self, request, queryset):
        actor, reason = staff_actor(request), self._reason(request)
        self._apply(
            request,
            queryset,
            lambda lic: services.reinstate_license(license=lic, actor=actor, reason=reason),
            ngettext_lazy("%(count)d license reinstated.", "%(count)d licenses reinstated.", "count"),
            ngettext_lazy("%(count)d license was already active.", "%(count)d licenses were already active.", "count"),
        )

    def has_revoke_permission(self, request) -> bool:
        return request.user.has_perm(f"{self.opts.app_label}.revoke_license")

    @admin.action(description=_("Revoke selected licenses"), permissions=["revoke"])
    def revoke(self, request, queryset):
        # For good and next to suspend in the same menu: asked again, like Django's own delete.
        if request.POST.get("confirmed") != "yes":
            return admin_page(
                self,
                request,
                "admin/licensing/license/revoke_confirmation.html",
                ngettext("Revoke this license for good?", "Revoke %(count)d licenses for good?", len(queryset))
                % {"count": len(queryset)},
                licenses=queryset.select_related("product", "customer"),
                max_reason_length=services.MAX_REASON_LENGTH,
            )
        actor, reason = staff_actor(request), self._reason(request)
        self._apply(
            request,
            queryset,
            lambda lic: services.revoke_license(license=lic, actor=actor, reason=reason),
            ngettext_lazy("%(count)d license revoked.", "%(count)d licenses revoked.", "count"),
            ngettext_lazy(
                "%(count)d license was already revoked.", "%(count)d licenses were already revoked.", "count"
            ),
        )

    @admin.action(description=_("Extend selected licenses by the days, months or years given"), permissions=["change"])
    def extend(self, request, queryset):
        unit = request.POST.get("unit") or "days"
        try:
            count = forms.IntegerField(min_value=1).clean(request.POST.get("days"))
            if unit != "days" and unit not in MONTHS_PER_UNIT:
                raise ValidationError(unit)
        except ValidationError:
            self.message_user(
                request, _("Enter a number (1 or more) of days, months or years to extend by."), messages.ERROR
            )
            return
        # Years are calendar years (the same day a year on, leap days included), not 365 days.
        period = {"days": count} if unit == "days" else {"months": count * MONTHS_PER_UNIT[unit]}
        actor = staff_actor(request)
        extended = []

        def extend(license: License) -> License:
            extended.append(services.extend_license(license=license, actor=actor, **period))
            return extended[-1]

        self._apply(
            request,
            queryset,
            extend,
            ngettext_lazy("%(count)d license extended.", "%(count)d licenses extended.", "count"),
        )
        # Support tells the customer the new date; a lapsed license counts from now, not from its old expiry.
        if len(extended) == 1:
            message = _("%(key)s now expires on %(date)s.") % {
                "key": extended[0].masked_key,
                "date": date_format(timezone.localtime(extended[0].expires_at), "j F Y, H:i T"),
            }
            self.message_user(request, message, messages.INFO)

    @admin.action(description=_("Deactivate all devices of selected licenses"), permissions=["change"])
    def deactivate_all_devices(self, request, queryset):
        actor = staff_actor(request)
        freed = sum(len(services.deactivate_all_activations(license=lic, actor=actor)) for lic in queryset)
        report_freed_devices(self, request, freed)


class LiveListFilter(admin.SimpleListFilter):
    title = _("state")
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("live", _("Live")), ("deactivated", _("Deactivated"))]

    def queryset(self, request, queryset):
        if self.value() == "live":
            return queryset.live()
        if self.value() == "deactivated":
            return queryset.filter(deactivated_at__isnull=False)
        return queryset


class OneLicenseFilter(admin.SimpleListFilter):
    """The license a list was opened for (a link on its page: its trail, its devices): shown while
    it filters, with a way out.

    It offers no choice otherwise: a list of every license would be of no use. An id of no license
    is shown too, and finds nothing: Django applies only filters that show, and would otherwise
    answer every license's trail under a link that asked for one.
    """

    title = _("license")
    parameter_name = "license"

    def lookups(self, request, model_admin):
        if not self.value():
            return []
        try:
            license = License.objects.select_related("customer").filter(pk=uuid.UUID(self.value())).first()
        except ValueError:
            license = None
        if license is None:
            return [(self.value(), _("no such license"))]
        # Its owner only to staff who may open it: a label tells as much as its page.
        if not model_admin.admin_site.get_model_admin(License).has_view_or_change_permission(request):
            return [(self.value(), self.value())]
        owner = f" · {license.customer.email}" if license.customer else ""
        return [(self.value(), f"{license.masked_key}{owner}")]

    def queryset(self, request, queryset):
        if not self.value():
            return queryset
        try:
            return queryset.filter(license_id=uuid.UUID(self.value()))
        except ValueError:
            return queryset.none()


@admin.register(Activation)
class ActivationAdmin(RecordTrailMixin, HandMadeInputMixin, admin.ModelAdmin):
    # The biggest tables: counting every row besides the rows filtered cost a second query a page.
    show_full_result_count = False
    list_display = [
        "__str__",
        "license",
        "fingerprint",
        "platform",
        "created_at",
        "last_seen_at",
        "is_live",
        "deactivated_at",
    ]
    list_filter = [OneLicenseFilter, LiveListFilter, "platform", "license__product"]
    list_select_related = ["license__product"]
    search_fields = ["name", "fingerprint", "license__customer__email"]
    search_help_text = _("A device's name, fingerprint or id, or a customer's e-mail.")
    actions = ["deactivate"]
    readonly_fields = [field.name for field in Activation._meta.fields]

    def get_search_results(self, request, queryset, search_term):
        # Polar and Kelviq apps know their device by its id alone (activation_id, instanceId), and
        # that id is what a customer of theirs quotes.
        results, may_have_duplicates = super().get_search_results(request, queryset, search_term)
        try:
            device_id = uuid.UUID(search_term.strip())
        except ValueError:
            return results, may_have_duplicates
        return results | queryset.filter(pk=device_id), may_have_duplicates

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        # A device's page is for reading: saving it would write the row outside the services
        # (no lock, no audit). Change permission on the list is what its action needs.
        return obj is None and super().has_change_permission(request)

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description=_("live"), boolean=True)
    def is_live(self, activation: Activation) -> bool:
        return activation.is_live

    @admin.action(description=_("Deactivate selected devices"), permissions=["change"])
    def deactivate(self, request, queryset):
        actor = staff_actor(request)
        freed = sum(
            not services.deactivate_activation(activation=activation, actor=actor).already_inactive
            for activation in queryset
        )
        report_outcome(
            self,
            request,
            done=freed,
            done_message=ngettext_lazy("%(count)d device deactivated.", "%(count)d devices deactivated.", "count"),
            unchanged=len(queryset) - freed,
            unchanged_message=ngettext_lazy(
                "%(count)d device was already inactive.", "%(count)d devices were already inactive.", "count"
            ),
        )


class OneRecordFilter(admin.SimpleListFilter):
    """The record a trail was opened for (its History button), as `<type>:<id>`: shown while it
    filters, by the name its latest event gave it, so a deleted record's trail still says whose it is."""

    title = _("record")
    parameter_name = "record"

    def lookups(self, request, model_admin):
        if not self.value():
            return []
        # Only from the events this staff member may read: a name is as telling as its changes.
        visible = model_admin.get_queryset(request)
        latest = visible.filter(self._record()).order_by("-created_at", "-id").first()
        return [(self.value(), latest.target_display if latest else _("no such record"))]

    def queryset(self, request, queryset):
        return queryset.filter(self._record()) if self.value() else queryset

    def _record(self) -> Q:
        target_type, separator, target_id = self.value().partition(":")
        return Q(target_type=target_type, target_id=target_id) if separator else Q(pk__in=[])


AUDITED_MODELS = [Product, Plan, Customer, License, Activation, ApiKey, SigningKey, RsaKey, User, Group]


def visible_audited(admin_site: AdminSite, request: HttpRequest) -> list[type[Model]]:
    """The audited records this staff member may see in the admin: their trail, and no other's."""
    return [
        model for model in AUDITED_MODELS if admin_site.get_model_admin(model).has_view_or_change_permission(request)
    ]


class RecordTypeFilter(admin.SimpleListFilter):
    title = _("record type")
    parameter_name = "target_type"

    def lookups(self, request, model_admin):
        # The records events are about, named as the admin names them; not read from the trail,
        # whose every row a DISTINCT would scan.
        return sorted(
            (
                (model._meta.label_lower, capfirst(model._meta.verbose_name))
                for model in visible_audited(model_admin.admin_site, request)
            ),
            key=lambda choice: str(choice[1]),
        )

    def queryset(self, request, queryset):
        return queryset.filter(target_type=self.value()) if self.value() else queryset


@admin.register(AuditEvent)
class AuditEventAdmin(HandMadeInputMixin, admin.ModelAdmin):
    show_full_result_count = False  # as ActivationAdmin's
    # Few enough columns to fit a laptop's screen beside the menu; the event's page has the rest.
    list_display = ["when", "action", "actor", "record", "license_link"]
    list_display_links = ["when", "action"]
    list_filter = [OneLicenseFilter, OneRecordFilter, RecordTypeFilter, "action", "actor_kind", "created_at"]
    list_select_related = ["license"]
    # Ids match whole, not inside others: customer 1 is not every id holding a 1.
    search_fields = ["actor_display", "=actor_id", "target_display", "=target_id"]
    search_help_text = _("An actor or a target: a name or e-mail, or a whole id.")
    date_hierarchy = "created_at"
    fields = readonly_fields = [
        "when",
        "action",
        "actor",
        "ip_address",
        "record_type",
        "record",
        "record_id",
        "license_link",
        "what_changed",
    ]

    @admin.display(description=_("time"), ordering="created_at")
    def when(self, event: AuditEvent) -> str:
        # To the second: what happened first, when several changes fall in one minute, is often the
        # question (Django's own format stops at minutes).
        return date_format(timezone.localtime(event.created_at), "j M Y, H:i:s T")

    def get_queryset(self, request):
        # Support who may not open API keys or staff accounts do not read their changes here either.
        visible = visible_audited(self.admin_site, request)
        hidden = [model._meta.label_lower for model in AUDITED_MODELS if model not in visible]
        return super().get_queryset(request).exclude(target_type__in=hidden)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description=_("changes"))
    def what_changed(self, event: AuditEvent) -> Any:
        """The fields before and after, as a table: records they refer to by name, not id."""
        rows = []
        for name, change in event.changes.items():
            before, after = change if isinstance(change, list) and len(change) == 2 else (None, change)
            if before != after:
                rows.append((name, self._value(event, name, before), self._value(event, name, after)))
        if not rows:
            return "-"
        return format_html(
            "<table><thead><tr><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>{}</tbody></table>",
            _("field"),
            _("before"),
            _("after"),
            format_html_join("", "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", rows),
        )

    @staticmethod
    def _value(event: AuditEvent, name: str, value: Any) -> str:
        if value is None or value == "":
            return "—"
        if isinstance(value, dict | list):
            return json.dumps(value, ensure_ascii=False, sort_keys=True)
        try:
            field = apps.get_model(event.target_type)._meta.get_field(name)
        except (LookupError, FieldDoesNotExist):
            return str(value)
        if field.many_to_one:
            referred = field.related_model.objects.filter(pk=value).first()
            return str(referred) if referred else _("#%(id)s (deleted)") % {"id": value}
        return str(value)

    @admin.display(description=_("actor"), ordering="actor_display")
    def actor(self, event: AuditEvent) -> str:
        kind = event.get_actor_kind_display()
        # An app without a key says only that ("app: app" said nothing more).
        return f"{kind}: {event.actor_display}" if event.actor_display not in ("", event.actor_kind) else kind

    @admin.display(description=_("record"), ordering="target_display")
    def record(self, event: AuditEvent) -> str:
        return event.target_display

    @admin.display(description=_("record id"))
    def record_id(self, event: AuditEvent) -> str:
        return event.target_id

    def history_view(self, request, object_id, extra_context=None):
        # An event has no history of its own: its record's trail is what History would look for.
        event = self.get_object(request, unquote(object_id))
        if event is None:
            raise Http404
        return HttpResponseRedirect(record_trail_url(event.target_type, event.target_id))

    @admin.display(description=_("record type"), ordering="target_type")
    def record_type(self, event: AuditEvent) -> str:
        try:
            return capfirst(apps.get_model(event.target_type)._meta.verbose_name)
        except LookupError:
            return event.target_type

    @admin.display(description=_("license"))
    def license_link(self, event: AuditEvent) -> Any:
        if event.license_id is None:
            return "-"
        url = reverse("admin:licensing_license_change", args=[event.license_id])
        return format_html('<a href="{}">{}</a>', url, event.license.masked_key)


class MadeByServiceAdmin(
    RecordTrailMixin, NoSecretLookupsMixin, HandMadeInputMixin, ServiceErrorsMixin, admin.ModelAdmin
):
    """Secrets made by a service on *Add* and read-only afterwards: signing, API and RSA keys.

    The add form's `save_form` calls the service; the admin must not save the object again. A saved
    key's page is for reading; the list's actions (retire, revoke) are the only changes.
    """

    def get_fields(self, request, obj=None):
        return self.form.Meta.fields if obj is None else self.fields

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.fields

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request)

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        pass

    def save_related(self, request, form, formsets, change):
        pass

    def add_view(self, request, form_url="", extra_context=None):
        # A saved key's page is read-only, and each key is made on purpose: the add form offers
        # only Save.
        extra_context = {**(extra_context or {}), "show_save_and_add_another": False, "show_save_and_continue": False}
        return super().add_view(request, form_url, extra_context)

    def response_add(self, request, obj, post_url_continue=None):
        # The service's message says what was made, and shows a new API key once: Django's "was
        # added successfully" above it would be the one staff read.
        return self.response_post_save_add(request, obj)


class SigningKeyAddForm(forms.ModelForm):
    signs_from = forms.DateTimeField(
        label=_("Signs from"),
        required=False,
        # Typed, year first: "01/03/2027" means January to some and March to others, and a browser's
        # date picker reads as local time, where this time is UTC.
        widget=forms.DateTimeInput(attrs={"placeholder": "2027-03-01 09:00"}, format="%Y-%m-%d %H:%M"),
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d"],
        error_messages={"invalid": _("Write the time year first, in UTC: 2027-03-01 or 2027-03-01 09:00.")},
        help_text=_(
            "In UTC, as 2027-03-01 or 2027-03-01 09:00. Leave empty to sign from now. A later time publishes the "
            "key first, so your apps can ship its public key before it signs, and the apps already out there keep "
            "verifying answers when it takes over."
        ),
    )

    replace = forms.BooleanField(
        label=_("Replace the key that signs now"),
        required=False,
        help_text=_(
            "Needed to sign from now, or within a day, while another key signs: apps that have not got the new "
            "public key then refuse every answer. For a key that leaked; otherwise give a time at least a day ahead."
        ),
    )

    class Meta:
        model = SigningKey
        fields = ["signs_from", "replace"]

    def clean(self):
        cleaned = super().clean()
        if "signs_from" not in self.errors:
            try:
                services.check_signs_from(cleaned.get("signs_from"), replace=cleaned.get("replace", False))
            except errors.InvalidInput as error:
                self.add_error(error.field, str(error.message))
        return cleaned


RETIRING_THE_SIGNER = _(
    "Within %(seconds)d seconds answers are signed by the key left whose signing time came last, or by a new one "
    "made for the next answer if no key left signs yet. Apps that hold only the retired public key cannot verify "
    "answers until they get the new one."
)


@admin.register(SigningKey)
class SigningKeyAdmin(MadeByServiceAdmin):
    """Key pairs that sign answers. The private half is never shown; adding one rotates the signer."""

    list_display = ["kid", "algorithm", "created_at", "signs_from", "signs_now", "retired_at"]
    fields = ["kid", "algorithm", "public_key_pem", "created_at", "signs_from", "retired_at"]
    actions = ["retire"]
    form = SigningKeyAddForm

    def save_form(self, request, form, change):
        signing_key = services.create_signing_key(
            actor=staff_actor(request),
            signs_from=form.cleaned_data.get("signs_from"),
            replace=form.cleaned_data.get("replace", False),
        )
        if signing_key.signs_from > timezone.now():
            message = _("Signing key %(kid)s created and published; it signs from %(time)s.") % {
                "kid": signing_key.kid,
                "time": date_format(timezone.localtime(signing_key.signs_from), "j F Y, H:i T"),
            }
        else:
            message = _("Signing key %(kid)s created; it signs from now on.") % {"kid": signing_key.kid}
        messages.success(request, message)
        return signing_key

    def get_queryset(self, request):
        current = services.signing_key_now()
        return super().get_queryset(request).annotate(is_current=Q(pk=current.pk if current else None))

    @admin.display(description=_("signs now"), boolean=True)
    def signs_now(self, signing_key: SigningKey) -> bool:
        return signing_key.is_current

    @admin.action(description=_("Retire selected keys (stop signing and publishing them)"), permissions=["change"])
    def retire(self, request, queryset):
        signing_now = services.signing_key_now()
        # For good, and the key that signs may be among them: asked again, like revoking a license.
        if request.POST.get("confirmed") != "yes":
            return admin_page(
                self,
                request,
                "admin/licensing/signingkey/retire_confirmation.html",
                _("Retire signing keys for good?"),
                signing_keys=queryset,
                retires_the_signer=signing_now in queryset,
                retiring_the_signer=RETIRING_THE_SIGNER % {"seconds": services.SIGNING_KEY_CACHE_SECONDS},
            )
        retired = []
        for signing_key in queryset:
            after = services.retire_signing_key(signing_key=signing_key, actor=staff_actor(request))
            if after.retired_at != signing_key.retired_at:
                retired.append(signing_key)
        report_outcome(
            self,
            request,
            done=len(retired),
            done_message=ngettext_lazy("%(count)d key retired.", "%(count)d keys retired.", "count"),
            unchanged=len(queryset) - len(retired),
            unchanged_message=ngettext_lazy(
                "%(count)d key was already retired.", "%(count)d keys were already retired.", "count"
            ),
        )
        if signing_now in retired:
            message = _("The key that signed answers is retired.") + " " + RETIRING_THE_SIGNER
            self.message_user(request, message % {"seconds": services.SIGNING_KEY_CACHE_SECONDS}, messages.WARNING)


class ApiKeyAddForm(forms.ModelForm):
    key = forms.CharField(
        label=_("Existing key to import"),
        required=False,
        max_length=255,
        # Spaces around a pasted key are a mistake to show, not to mend into another key.
        strip=False,
        help_text=_(
            "Leave empty to make a new key. To keep apps that ship another vendor's API key working, paste it here."
        ),
    )

    class Meta:
        model = ApiKey
        fields = ["name", "read_only", "apps_only", "expires_at", "key"]

    def clean(self):
        cleaned = super().clean()
        checks = [
            ("key", services.check_imported_api_key),
            ("expires_at", lambda at: services.check_api_key_expiry(at, apps_only=cleaned.get("apps_only", False))),
        ]
        for field, check in checks:
            if cleaned.get(field):
                try:
                    check(cleaned[field])
                except errors.InvalidInput as error:
                    self.add_error(field, str(error.message))
        return cleaned


class ApiKeyStateFilter(admin.SimpleListFilter):
    title = _("status")
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("works", _("Works")), ("expired", _("Expired")), ("revoked", _("Revoked"))]

    def queryset(self, request, queryset):
        match self.value():
            case "works":
                return queryset.working()
            case "expired":
                return queryset.expired()
            case "revoked":
                return queryset.filter(revoked_at__isnull=False)
        return queryset


@admin.register(ApiKey)
class ApiKeyAdmin(MadeByServiceAdmin):
    """Keys for the management API, or for apps. A key is shown once, when it is made; only its digest is kept."""

    # Whether a key still works comes first, beside its name: a leaked key is revoked from this list.
    list_display = ["name", "prefix", "state", "access", "created_at", "last_used_at"]
    list_filter = [ApiKeyStateFilter, "read_only", "apps_only"]
    search_fields = ["name", "prefix"]
    fields = [
        "name",
        "prefix",
        "read_only",
        "apps_only",
        "created_by",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    ]
    actions = ["restrict_to_apps", "revoke"]
    form = ApiKeyAddForm

    def save_form(self, request, form, change):
        issued = services.create_api_key(
            name=form.cleaned_data["name"],
            read_only=form.cleaned_data["read_only"],
            apps_only=form.cleaned_data["apps_only"],
            key=form.cleaned_data["key"] or None,
            expires_at=form.cleaned_data["expires_at"],
            actor=staff_actor(request),
        )
        if form.cleaned_data["key"] and issued.api_key.apps_only:
            # Staff already hold an imported key: showing it again would only spread it further.
            messages.success(request, _("API key imported: the apps that ship with it are let in from now on."))
        elif form.cleaned_data["key"]:
            messages.warning(
                request,
                _(
                    "API key imported with full access, not for apps only: anyone who pulls it out of an app "
                    "that ships it can issue, change and revoke licenses. If apps ship it, restrict it to apps "
                    "(action “Restrict to apps”)."
                ),
            )
        else:
            messages.success(
                request,
                _("API key created: %(key)s — copy it now, it is not shown again.") % {"key": issued.key},
            )
        return issued.api_key

    @admin.action(description=_("Restrict to apps: license calls only, for good"), permissions=["change"])
    def restrict_to_apps(self, request, queryset):
        # For good, and it cuts a billing system off the management API: asked again, as revoking is.
        if request.POST.get("confirmed") != "yes":
            return admin_page(
                self,
                request,
                "admin/licensing/apikey/restrict_confirmation.html",
                ngettext(
                    "Restrict this API key to apps for good?",
                    "Restrict %(count)d API keys to apps for good?",
                    len(queryset),
                )
                % {"count": len(queryset)},
                api_keys=queryset,
            )
        after = [services.restrict_api_key_to_apps(api_key=api_key, actor=staff_actor(request)) for api_key in queryset]
        restricted = sum(now.apps_only != before.apps_only for now, before in zip(after, queryset, strict=True))
        # As the service found them, under its lock: one revoked meanwhile was left alone too.
        revoked = sum(now.revoked_at is not None and not now.apps_only for now in after)
        report_outcome(
            self,
            request,
            done=restricted,
            done_message=ngettext_lazy(
                "%(count)d API key restricted to apps' license calls.",
                "%(count)d API keys restricted to apps' license calls.",
                "count",
            ),
            unchanged=len(queryset) - restricted - revoked,
            unchanged_message=ngettext_lazy(
                "%(count)d API key was already for apps only.",
                "%(count)d API keys were already for apps only.",
                "count",
            ),
        )
        if revoked:
            message = ngettext(
                "%(count)d API key is revoked: it works for no one, so it was left as it is.",
                "%(count)d API keys are revoked: they work for no one, so they were left as they are.",
                revoked,
            ) % {"count": revoked}
            self.message_user(request, message, messages.INFO)
        # Made for the vendor's systems with an expiry, and found shipped in apps: restricting it is
        # still right, but the apps stop when it expires, which a key made for apps never does.
        for api_key in queryset.working().exclude(expires_at=None):
            messages.warning(
                request,
                _("%(key)s expires %(when)s: the apps that ship it stop working then, unless updated with another key.")
                % {"key": api_key, "when": self.expiry(api_key)},
            )

    @staticmethod
    def expiry(api_key: ApiKey) -> str:
        # To the minute, as every time here, not the day: a key made at nine in the evening stops at
        # nine on its last day.
        return date_format(timezone.localtime(api_key.expires_at), "DATETIME_FORMAT")

    @admin.display(description=_("status"), ordering="revoked_at")
    def state(self, api_key: ApiKey) -> str:
        if api_key.revoked_at is not None:
            # The day, in the format of the list's other dates.
            return _("Revoked %(date)s") % {"date": date_format(timezone.localdate(api_key.revoked_at))}
        if api_key.is_expired:
            return _("Expired %(date)s") % {"date": self.expiry(api_key)}
        if api_key.expires_at is not None:
            return _("Works until %(date)s") % {"date": self.expiry(api_key)}
        return _("Works")

    @admin.display(description=_("access"))
    def access(self, api_key: ApiKey) -> str:
        if api_key.apps_only:
            return _("Apps' license calls")
        return _("Read only") if api_key.read_only else _("Full")

    @admin.action(description=_("Revoke selected API keys"), permissions=["change"])
    def revoke(self, request, queryset):
        # For good, and one slip stops a billing system or every app that ships the key: asked again.
        if request.POST.get("confirmed") != "yes":
            return admin_page(
                self,
                request,
                "admin/licensing/apikey/revoke_confirmation.html",
                ngettext("Revoke this API key for good?", "Revoke %(count)d API keys for good?", len(queryset))
                % {"count": len(queryset)},
                api_keys=queryset,
            )
        revoked = sum(
            services.revoke_api_key(api_key=api_key, actor=staff_actor(request)).revoked_at != api_key.revoked_at
            for api_key in queryset
        )
        report_outcome(
            self,
            request,
            done=revoked,
            done_message=ngettext_lazy("%(count)d API key revoked.", "%(count)d API keys revoked.", "count"),
            unchanged=len(queryset) - revoked,
            unchanged_message=ngettext_lazy(
                "%(count)d API key was already revoked.", "%(count)d API keys were already revoked.", "count"
            ),
        )


class RsaKeyAddForm(forms.ModelForm):
    private_key_pem = forms.CharField(
        label=_("Private key (PEM)"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 8, "cols": 70, "autocomplete": "off"}),
        help_text=_(
            "Paste the RSA private key GetKeyManager signed with, so shipped apps keep trusting the answers. "
            "Leave empty to generate a new key."
        ),
    )

    replace = forms.BooleanField(
        label=_("Replace the key that signs now"),
        required=False,
        help_text=_(
            "Needed when a key signs these answers now: the product's own, or the global key, which signs for "
            "products with none."
        ),
    )

    class Meta:
        model = RsaKey
        fields = ["product", "private_key_pem", "replace"]

    def clean_private_key_pem(self):
        pem = self.cleaned_data["private_key_pem"].strip()
        if pem:
            try:
                signing.rsa_key_from_pem(pem)
            except ValueError as error:
                raise ValidationError(str(error)) from None
        return pem

    def clean(self):
        cleaned = super().clean()
        if "product" not in self.errors:
            try:
                services.check_rsa_key_replacement(product=cleaned.get("product"), replace=cleaned.get("replace"))
            except errors.InvalidInput as error:
                self.add_error("replace", str(error.message))
        return cleaned


@admin.register(RsaKey)
class RsaKeyAdmin(MadeByServiceAdmin):
    """GetKeyManager signing keys. The private half is never shown; the newest key of a product signs."""

    list_display = ["__str__", "product", "created_at", "signs_now"]
    list_select_related = ["product"]
    list_filter = [("product", admin.EmptyFieldListFilter)]
    fields = ["product", "public_key_pem", "created_at"]
    form = RsaKeyAddForm

    @admin.display(description=_("signs now"), boolean=True)
    def signs_now(self, rsa_key: RsaKey) -> bool:
        return rsa_key.signs_now

    def get_queryset(self, request):
        return services.marking_signing_rsa_keys(super().get_queryset(request))

    def response_add(self, request, obj, post_url_continue=None):
        # Each server process keeps the key that signs for a while: apps holding only the new key's
        # public half must not be pointed at the server the moment it is saved.
        self.message_user(
            request,
            _("Running servers sign with it within %(seconds)d seconds.") % {"seconds": services.RSA_KEY_CACHE_SECONDS},
            messages.INFO,
        )
        return super().response_add(request, obj, post_url_continue)

    def save_form(self, request, form, change):
        product, pem, replace = (form.cleaned_data[name] for name in ("product", "private_key_pem", "replace"))
        if pem:
            return services.import_rsa_key(
                product=product, private_key_pem=pem, replace=replace, actor=staff_actor(request)
            )
        return services.create_rsa_key(product=product, replace=replace, actor=staff_actor(request))


# ---------------------------------------------------------------- staff sign-in


class StaffSignInForm(AdminAuthenticationForm):
    """The admin's sign-in, under the license calls' brute-force guard: past BRUTE_FORCE_BLOCK_AFTER
    failed sign-ins from one client IP (an IPv6 /64) in a window, every sign-in from it is refused
    until the window ends, a right password too, so a guesser cannot tell when one hit."""

    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "too_many": _("Too many failed sign-ins from your address. Try again in %(minutes)s."),
    }

    def clean(self):
        failures = UnknownKeyWindow(self._client())
        if failures.blocks(failures.failures()):
            minutes = math.ceil(failures.seconds_left / 60)
            wait = ngettext("%(count)d minute", "%(count)d minutes", minutes) % {"count": minutes}
            raise ValidationError(self.error_messages["too_many"], code="too_many", params={"minutes": wait})
        try:
            return super().clean()
        except ValidationError:
            failures.record_failure()
            logger.warning(
                "Failed staff sign-in as %r from %s", self.cleaned_data.get("username"), client_ip(self.request)
            )
            raise

    def _client(self) -> str | None:
        # Its own count: a guessed password is not an unknown license key.
        ident = client_ident(self.request)
        return ident and f"staff-sign-in-{ident}"


def refused_page(request: HttpRequest, title: str, explanation: str, *, status: int = 403) -> HttpResponse:
    context = {**admin.site.each_context(request), "title": title, "explanation": explanation}
    return TemplateResponse(request, "admin/licensing/refused.html", context, status=status).render()


def not_found(request: HttpRequest) -> HttpResponse:
    """An admin address with nothing there (a link to a page that moved): the admin's page, not
    the customers' one with its way to their licenses."""
    return refused_page(
        request, _("There is nothing here"), _("This page does not exist, or it has moved."), status=404
    )


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """Django's 403 page (settings' handler403). Only the admin refuses a page this way (the portal
    answers 404 for what is not a customer's), so it is the admin's page."""
    return refused_page(
        request,
        _("You may not open this page"),
        _(
            "Your account does not have the permission this page needs. Ask whoever manages staff accounts "
            "to give it, if you need it."
        ),
    )


def is_admin_request(request: HttpRequest) -> bool:
    return request.resolver_match is not None and request.resolver_match.namespace == admin.site.name


def csrf_failure(request: HttpRequest) -> HttpResponse:
    """The admin's page for one of its forms sent without its CSRF check (portal.views.csrf_failure)."""
    return refused_page(
        request,
        _("This page has expired"),
        _(
            "Nothing was done: the form was sent without the check this site gives each visit. That happens "
            "when a page stayed open for a long time, or when the browser blocks this site's cookies. Open "
            "the page again and send the form once more."
        ),
    )


admin.site.login_form = StaffSignInForm
admin.site.site_header = _("License server")
admin.site.site_title = _("License server")
# "View site" shows staff what customers see; the site's root is this admin.
admin.site.site_url = reverse_lazy("portal:sign-in")


STAFF_SIGNED_IN = "staff.signed_in"


@receiver(user_logged_in)
def audit_staff_sign_in(sender, request, user, **kwargs):
    actor = services.Actor.staff(user, ip_address=client_ip(request))
    services.record_event(actor=actor, action=STAFF_SIGNED_IN, target=user)


# ---------------------------------------------------------------- staff accounts

# Form fields that carry a password: the trail says a password was set, never what it was.
PASSWORD_FORM_FIELDS = {"password", "password1", "password2", "usable_password"}


def _as_audited(value: Any) -> Any:
    """A form value as the audit trail keeps it: related objects (groups, permissions) by name."""
    if isinstance(value, QuerySet | list | tuple | set):
        return sorted(str(each) for each in value)
    return value


def _password_state(user: AbstractBaseUser) -> str:
    return "set" if user.has_usable_password() else "unusable"


def audited_password_change(request: HttpRequest, user: User, change: Callable[[], HttpResponse]) -> HttpResponse:
    """Run one of Django's password views, which save the new password themselves with no hook
    between: compared before and after, in one transaction with the trail's event."""
    with transaction.atomic():
        before = (user.password, _password_state(user))
        response = change()
        user.refresh_from_db(fields=["password"])
        if user.password != before[0]:
            services.record_event(
                actor=staff_actor(request),
                action="user.password_changed",
                target=user,
                changes={"password": [before[1], _password_state(user)]},
            )
    return response


def _own_password_change(request, extra_context=None):
    return audited_password_change(
        request, request.user, lambda: AdminSite.password_change(admin.site, request, extra_context)
    )


# A staff member changing their own password (the top bar's link) is audited as when another
# member sets it on the user's page.
admin.site.password_change = _own_password_change


class AuditedAccountMixin(RecordTrailMixin):
    """Who may sign in to this admin, and what they may do in it, are the most sensitive changes
    staff make: each goes to the audit trail like any other change, with who made it."""

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        changes = {
            name: [_as_audited(form.initial.get(name)) if change else None, _as_audited(form.cleaned_data.get(name))]
            for name in form.changed_data
            if name not in PASSWORD_FORM_FIELDS
        }
        if not change and isinstance(obj, AbstractBaseUser):
            changes["password"] = [None, _password_state(obj)]
        if change and not changes:
            return
        action = f"{obj._meta.model_name}.{'changed' if change else 'created'}"
        services.record_event(actor=staff_actor(request), action=action, target=obj, changes=changes)

    def delete_model(self, request, obj):
        with transaction.atomic():
            self._record_deletion(request, obj)
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            for obj in queryset:
                self._record_deletion(request, obj)
            super().delete_queryset(request, queryset)

    def _record_deletion(self, request, obj) -> None:
        # What was deleted stays readable in the trail, as a change to nothing: an account's
        # details and rights, a group's permissions and who had them through it.
        gone = {
            field.name: [_as_audited(getattr(obj, field.attname)), None]
            for field in obj._meta.concrete_fields
            if not field.primary_key and field.name not in PASSWORD_FORM_FIELDS
        }
        for field in obj._meta.many_to_many:
            gone[field.name] = [_as_audited(getattr(obj, field.name).all()), None]
        if isinstance(obj, Group):
            gone["members"] = [_as_audited(obj.user_set.all()), None]
        services.record_event(
            actor=staff_actor(request), action=f"{obj._meta.model_name}.deleted", target=obj, changes=gone
        )


admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class StaffUserAdmin(AuditedAccountMixin, HandMadeInputMixin, UserAdmin):
    # Accounts here are staff: made on one page, with what they may do, not half-made on the first.
    add_fieldsets = [
        (
            None,
            {
                "classes": ["wide"],
                "fields": ["username", "email", "usable_password", "password1", "password2", "is_staff", "groups"],
            },
        )
    ]

    # Facts, not settings: editable, every save rewrote the date joined without its microseconds.
    readonly_fields = ["last_login", "date_joined"]

    def user_change_password(self, request, id, form_url=""):
        user = self.get_object(request, unquote(id))
        change = super().user_change_password
        if user is None:
            return change(request, id, form_url)
        return audited_password_change(request, user, lambda: change(request, id, form_url))


@admin.register(Group)
class StaffGroupAdmin(AuditedAccountMixin, HandMadeInputMixin, GroupAdmin):
    pass
