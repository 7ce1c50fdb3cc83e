"""The customer portal: sign in by e-mailed link, see licenses and devices, free a device.

Customers are not Django users (staff are): the session holds the signed-in customer's id, set only by
redeeming a one-time link. Every lookup goes through the services' customer-scoped helpers, so another
customer's license or device is a 404.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from email.utils import make_msgid, parseaddr
from urllib.parse import urlencode

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.mail import EmailMessage
from django.core.paginator import Paginator
from django.db import DatabaseError
from django.db.models import Q
from django.http import Http404, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.crypto import constant_time_compare, salted_hmac
from django.utils.formats import date_format
from django.utils.text import slugify
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods
from django.views.defaults import server_error as django_server_error

from licensing import admin as admin_pages
from licensing import errors, services
from licensing.addresses import client_ip
from licensing.api.exceptions import SERVER_ERROR, SERVER_ERROR_MESSAGE, error_body
from licensing.api.views import build_license_file
from licensing.models import Customer, License

logger = logging.getLogger(__name__)

SESSION_KEY = "portal_customer_id"
# A site license can have thousands of devices: its page shows them a page at a time, with a search.
DEVICES_PER_PAGE = 50
# The confirmation of freeing every device names this many, then says how many more.
DEVICES_NAMED_BEFORE_FREEING_ALL = 20
# A digest of the address the customer signed in by: the session ends when the address changes, so
# support changing a taken-over mailbox's address signs out whoever used it, as Django ends staff
# sessions with a new password.
SESSION_ADDRESS_KEY = "portal_customer_address"
# The address a sign-in link was asked for, for the page that says where to look.
SESSION_LINK_SENT_TO_KEY = "portal_link_sent_to"


class SignInForm(forms.Form):
    # Lazy: the label is read when a page is drawn, in that visitor's language, not once at import.
    email = forms.EmailField(
        label=gettext_lazy("E-mail address"),
        max_length=254,
        error_messages={
            "required": gettext_lazy("Enter the e-mail address you bought with."),
            "invalid": gettext_lazy("Enter an e-mail address like name@example.com."),
        },
    )


def signed_in_customer(request) -> Customer | None:
    customer = Customer.objects.filter(pk=request.session.get(SESSION_KEY)).first()
    if customer is None or not constant_time_compare(request.session.get(SESSION_ADDRESS_KEY, ""), _address(customer)):
        return None
    return customer


def start_session(session, customer: Customer) -> None:
    session[SESSION_KEY] = customer.pk
    session[SESSION_ADDRESS_KEY] = _address(customer)
    session.pop(SESSION_LINK_SENT_TO_KEY, None)


def _address(customer: Customer) -> str:
    # The address a session began with, and when the customer was last signed out everywhere: a
    # change of either ends it. (Never signed out everywhere: the address alone, as sessions begun
    # before that option kept it.)
    ended_at = customer.portal_sessions_ended_at
    mark = customer.email if ended_at is None else f"{customer.email}\n{ended_at.isoformat()}"
    return salted_hmac("portal.session-address", mark, algorithm="sha256").hexdigest()


def customer_required(view):
    """Signed-in pages: they show license keys, so no browser or proxy may keep a copy (never_cache)."""

    @never_cache
    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        customer = signed_in_customer(request)
        if customer is None:
            return redirect("portal:sign-in")
        request.customer = customer
        return view(request, *args, **kwargs)

    return wrapper


def page_not_found(request, exception=None):
    """Django's 404 page (settings' handler404): the admin's under the admin, else the portal's,
    whose header says who is signed in, as on every other portal page."""
    if request.path.startswith(reverse("admin:index")):
        return admin_pages.not_found(request)
    request.customer = getattr(request, "customer", None) or _customer_if_known(request)
    return render(request, "404.html", status=404)


def _customer_if_known(request) -> Customer | None:
    # For the error pages' header: the database may be what failed, and the page must still be drawn.
    try:
        return signed_in_customer(request)
    except DatabaseError:
        return None


def server_error(request):
    """Django's 500 page (settings' handler500), for a failure outside the views' own handling (the
    database gone while a license call's answer was signed): JSON under the APIs, which apps read,
    else the portal's page."""
    if request.path_info.startswith(("/api/", "/compat/")):
        return JsonResponse(error_body(SERVER_ERROR, SERVER_ERROR_MESSAGE), status=500)
    return django_server_error(request)


def csrf_failure(request, reason: str = ""):
    """A form sent without its CSRF check (settings' CSRF_FAILURE_VIEW): the admin's page for the
    admin's forms, else the portal's (403_csrf.html), whose header says who is signed in."""
    if admin_pages.is_admin_request(request):
        return admin_pages.csrf_failure(request)
    request.customer = _customer_if_known(request)
    return render(request, "403_csrf.html", status=403)


def not_found_for_others(view):
    """A license or device that is not the customer's is simply not there: 404, never 403."""

    @functools.wraps(view)
    def wrapper(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except (errors.LicenseNotFound, errors.ActivationNotFound):
            raise Http404 from None

    return wrapper


def actor(request) -> services.Actor:
    return services.Actor.customer(request.customer, ip_address=client_ip(request))


@require_http_methods(["GET", "HEAD", "POST"])
def sign_in(request):
    if signed_in_customer(request):
        return redirect("portal:licenses")
    form = SignInForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        email = form.cleaned_data["email"]
        try:
            sign_in_request = services.request_sign_in_link(email=email, ip_address=client_ip(request))
        except errors.TooManyRequests as error:
            return render(request, "portal/sign_in.html", {"form": form, "throttled": error.message}, status=429)
        mail = None
        if customer := sign_in_request.customer:
            path = reverse("portal:redeem", args=[sign_in_request.token])
            link = settings.PUBLIC_URL + path if settings.PUBLIC_URL else request.build_absolute_uri(path)
            mail = functools.partial(send_sign_in_link, customer, link, translation.get_language())
        # The same answer, as fast, whether or not the address is a customer's, so addresses cannot
        # be probed: the mail goes once the answer is sent. A page of its own, so reloading it
        # shows it again instead of asking for another link, which would count against the limit.
        request.session[SESSION_LINK_SENT_TO_KEY] = [email, timezone.now().timestamp()]
        return RedirectThen(reverse("portal:check-email"), then=mail)
    return render(request, "portal/sign_in.html", {"form": form})


@never_cache
@require_http_methods(["GET", "HEAD"])
def check_email(request):
    if signed_in_customer(request):
        return redirect("portal:licenses")
    # Shown while the link can be used, no longer: on a shared computer, the address stays private.
    asked = request.session.get(SESSION_LINK_SENT_TO_KEY)
    email, asked_at = asked if isinstance(asked, list) and len(asked) == 2 else (None, 0)
    if email is None or timezone.now().timestamp() - asked_at > services.SIGN_IN_LINK_LIFETIME.total_seconds():
        request.session.pop(SESSION_LINK_SENT_TO_KEY, None)
        return redirect("portal:sign-in")
    minutes = int(services.SIGN_IN_LINK_LIFETIME.total_seconds() // 60)
    return render(request, "portal/check_email.html", {"email": email, "minutes": minutes})


# Work done after an answer is sent, off the server's threads: a server thread answers a
# connection's requests in turn, so work it did after one answer would delay the client's next.
# A process that stops finishes what is queued first.
after_answers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="portal-after-answer")


class RedirectThen(HttpResponseRedirect):
    """A redirect that starts `then` once the server has sent it (on the WSGI close), so how long
    `then` takes, or whether there was one, shows neither in the client's wait for this answer
    nor in its next request on the same connection.

    `then` runs outside the request, with no database connection of its own: it must not use the
    database, and it logs its own failures (nobody reads what it raises).
    """

    def __init__(self, to: str, *, then: Callable[[], None] | None):
        super().__init__(to)
        self.then = then

    def close(self):
        super().close()
        if self.then is not None:
            after_answers.submit(self.then)


def send_sign_in_link(customer: Customer, link: str, language: str | None) -> None:
    """Write and send the mail, after the answer: writing it in the request made a customer's
    answer slower than a stranger's, which would tell whose address it is."""
    try:
        with translation.override(language):
            vendor = settings.VENDOR_NAME
            body = render_to_string(
                "portal/sign_in_email.txt", {"link": link, "customer": customer, "vendor_name": vendor}
            )
            subject = _("Your %(vendor)s sign-in link") % {"vendor": vendor} if vendor else _("Your sign-in link")
        # Django names a message after the machine (DNS_NAME: "localhost" in most containers), which
        # spam filters hold against it; the sender's own domain is the one that vouches for the mail.
        sender_domain = parseaddr(settings.DEFAULT_FROM_EMAIL)[1].rpartition("@")[2] or None
        headers = {"Message-ID": make_msgid(domain=sender_domain)}
        EmailMessage(subject, body, to=[customer.email], headers=headers).send()
    except Exception:  # smtplib's errors, timeouts, a mail backend set up wrong: all only logged here
        logger.exception("Could not send a portal sign-in link (customer %s)", customer.pk)


@require_http_methods(["GET", "POST"])
def redeem(request, token):
    # GET only shows a button: mail scanners that open links must not use up the one-time link.
    try:
        if request.method == "GET":
            # Said now, not after the button: a used or expired link offers nothing to continue to.
            services.check_sign_in_link(token=token)
            # The header says who is signed in, as a forwarded link would switch accounts.
            request.customer = signed_in_customer(request)
            return render(request, "portal/redeem.html")
        customer = services.redeem_sign_in_link(token=token, ip_address=client_ip(request))
    except errors.SignInLinkInvalid as error:
        # Signed in already (the link was used in this browser), the way on is their licenses.
        request.customer = signed_in_customer(request)
        return render(request, "portal/link_invalid.html", {"message": error.message}, status=400)
    # Another customer's link (one forwarded by a colleague) changes whose licenses are shown: say so.
    signed_in_before = request.session.get(SESSION_KEY)
    request.session.cycle_key()
    start_session(request.session, customer)
    if signed_in_before not in (None, customer.pk):
        messages.info(request, _("You are now signed in as %(email)s.") % {"email": customer.email})
    return redirect("portal:licenses")


@require_http_methods(["GET", "POST"])
def sign_out(request):
    # An address typed or followed (GET) only asks: signing out is a POST, like every change here.
    customer = signed_in_customer(request)
    if request.method == "GET":
        if customer is None:
            return redirect("portal:sign-in")
        request.customer = customer
        return render(request, "portal/sign_out.html")
    request.session.flush()
    if customer is not None and request.POST.get("everywhere"):
        services.end_portal_sessions(
            customer=customer, actor=services.Actor.customer(customer, ip_address=client_ip(request))
        )
        messages.success(request, _("You are signed out everywhere, and sign-in links already sent no longer work."))
    else:
        messages.success(request, _("You are signed out."))
    return redirect("portal:sign-in")


def status_in_words(license: License) -> str:
    # Why it cannot be used is what an app would be told (services.license_problem), in a person's words.
    problem = services.license_problem(license)
    if isinstance(problem, errors.LicenseRevoked):
        return _("Revoked")
    if isinstance(problem, errors.LicenseSuspended):
        return _("Suspended")
    if isinstance(problem, errors.LicenseExpired):
        return _("Expired on %(date)s") % {"date": date_format(timezone.localtime(license.expires_at), "j F Y")}
    if isinstance(problem, errors.ProductInactive):
        return _("No longer available: the product was withdrawn")
    if license.expires_at is None:
        return _("Active, never expires")
    # Calendar days, as a person counts them: a year's license issued today expires in 365 days.
    days = (timezone.localdate(license.expires_at) - timezone.localdate()).days
    expires_at = timezone.localtime(license.expires_at)
    if days == 0:
        return _("Active, expires today at %(time)s") % {"time": date_format(expires_at, "H:i T")}
    if days == 1:
        # Perhaps only minutes away: "in 1 day" would say a day is left.
        return _("Active, expires tomorrow at %(time)s") % {"time": date_format(expires_at, "H:i T")}
    return ngettext(
        "Active, expires in %(days)d day, on %(date)s", "Active, expires in %(days)d days, on %(date)s", days
    ) % {"days": days, "date": date_format(expires_at, "j F Y")}


def duration_in_words(duration: timedelta) -> str:
    """A duration in the largest whole unit it is made of: 30 days, 36 hours, 90 minutes."""
    minutes = int(duration.total_seconds()) // 60
    if minutes % (24 * 60) == 0:
        days = minutes // (24 * 60)
        return ngettext("%(count)d day", "%(count)d days", days) % {"count": days}
    if minutes % 60 == 0:
        hours = minutes // 60
        return ngettext("%(count)d hour", "%(count)d hours", hours) % {"count": hours}
    return ngettext("%(count)d minute", "%(count)d minutes", minutes) % {"count": minutes}


def slots_in_words(license: License) -> str:
    used, limit = license.live_total, license.max_activations
    if limit is None:
        return ngettext("%(used)d device in use", "%(used)d devices in use", used) % {"used": used}
    if used > limit:
        # The limit was lowered under the devices in use: they keep working, and say what it takes.
        over = used - limit
        return ngettext(
            "%(used)d device in use, over the limit of %(limit)d: deactivate %(over)d before another can be activated",
            "%(used)d devices in use, over the limit of %(limit)d: deactivate %(over)d before another can be activated",
            used,
        ) % {"used": used, "limit": limit, "over": over}
    return ngettext("%(used)d of %(limit)d slot in use", "%(used)d of %(limit)d slots in use", limit) % {
        "used": used,
        "limit": limit,
    }


def license_row(license: License, slots_reopening: list[datetime]) -> dict:
    usable = services.license_problem(license) is None
    return {
        "license": license,
        "key": services.reveal_license_key(license),
        "status": status_in_words(license),
        "usable": usable,
        "slots": slots_in_words(license),
        # "0 of 2 slots in use" alone would promise a slot an app is refused while it cools down;
        # a license that cannot be used takes no device anyway.
        "slots_reopening": [services.minute_after(at) for at in slots_reopening] if usable else [],
    }


@customer_required
def license_list(request):
    licenses = list(services.licenses_of_customer(request.customer))
    reopening = services.slots_reopening_of(licenses)
    rows = [license_row(license, reopening.get(license.pk, [])) for license in licenses]
    return render(request, "portal/licenses.html", {"rows": rows})


@customer_required
@not_found_for_others
def license_detail(request, license_id):
    license = services.get_license_for_customer(customer=request.customer, license_id=license_id)
    changes = services.device_changes(license)
    refusal = services.deactivation_refusal(license, actor=actor(request), count=1, changes=changes)
    context = {
        "license": license,
        "row": license_row(license, services.slots_reopening(license)),
        "device_changes_left": changes.remaining,
        "device_change_back_at": services.minute_after(changes.back_at) if changes.back_at else None,
        # Deactivate is offered only where it would be done, not refused after a confirmation.
        "may_deactivate": refusal is None,
        **_devices_page(request, license),
        "history": services.device_history(license),
        "customer_id": str(request.customer.pk),
        "offline_file_life": duration_in_words(settings.OFFLINE_LICENSE_DEFAULT_TTL),
    }
    return render(request, "portal/license_detail.html", context)


def _devices_page(request, license: License) -> dict:
    search, number = _device_search(request), _device_page_number(request)
    devices = license.activations.live().order_by("created_at", "id")
    if search:
        devices = devices.filter(
            Q(name__icontains=search) | Q(fingerprint__icontains=search) | Q(platform__icontains=search)
        )
    paginator = Paginator(devices, DEVICES_PER_PAGE)
    if not search:
        # Counted already, by the query that read the license.
        paginator.count = license.live_total
    page = paginator.get_page(number)
    return {
        "devices": page,
        "search": search,
        # Only a list that does not fit on one page needs a search box.
        "searchable": bool(search) or license.live_total > DEVICES_PER_PAGE,
        "place": _device_list_query(search, page.number),
        "previous_place": _device_list_query(search, page.previous_page_number()) if page.has_previous() else None,
        "next_place": _device_list_query(search, page.next_page_number()) if page.has_next() else None,
    }


def _device_search(request) -> str:
    # A NUL is in no device's name, and PostgreSQL refuses it in a query.
    return request.GET.get("q", "").replace("\x00", "").strip()


def _device_page_number(request) -> int:
    try:
        return max(int(request.GET.get("page", 1)), 1)
    except ValueError:
        return 1


def _device_list_query(search: str, page_number: int) -> str:
    """Where in a license's device list the customer is (its search and page), as the query string
    its page links, and the pages acting on a device, carry and lead back to."""
    return urlencode({**({"q": search} if search else {}), **({"page": page_number} if page_number > 1 else {})})


def _device_list_place(request) -> str:
    return _device_list_query(_device_search(request), _device_page_number(request))


def _license_url(request, license_id) -> str:
    """The license's page at the search and page of its device list the request came from."""
    url = reverse("portal:license", args=[license_id])
    place = _device_list_place(request)
    return f"{url}?{place}" if place else url


def _back_to_license(request, license_id):
    return redirect(_license_url(request, license_id))


def _what_deactivating_costs(request, license: License, *, count: int) -> dict:
    """What the confirmation says deactivating `count` devices uses up (a device change each, and
    a slot's cooldown), or why it would be refused, said before the customer confirms."""
    cooldown = services.slot_cooldown(license)
    changes = services.device_changes(license)
    return {
        "license": license,
        "changes_left": changes.remaining,
        "cooldown": int(cooldown.total_seconds() // 60) if cooldown else 0,
        "refusal": services.deactivation_refusal(license, actor=actor(request), count=count, changes=changes),
    }


def _freed_message(license: License, what: str) -> str:
    license = services.get_license_for_customer(customer=license.customer, license_id=license.pk)
    message = _("%(what)s deactivated. %(slots)s.") % {"what": what, "slots": slots_in_words(license)}
    reopening = services.slots_reopening(license)
    if reopening and services.activations_remaining(license) == 0:
        # Said at once: "1 of 2 slots in use" alone reads as a free slot, which the cooldown keeps.
        at = date_format(timezone.localtime(services.minute_after(reopening[0])), "j F Y, H:i T")
        message += " " + _("A freed slot takes a new device from %(at)s.") % {"at": at}
    return message


@customer_required
@not_found_for_others
@require_http_methods(["GET", "POST"])
def deactivate_device(request, license_id, activation_id):
    activation = services.get_activation_for_customer(
        customer=request.customer, license_id=license_id, activation_id=activation_id
    )
    name = activation.name or activation.fingerprint or _("The device")
    if request.method == "GET":
        context = {
            "activation": activation,
            "name": name,
            # Opened again (the browser's Back after freeing it): nothing to confirm, nor to refuse.
            "already_inactive": not activation.is_live,
            "back_url": _license_url(request, license_id),
            **_what_deactivating_costs(request, activation.license, count=1 if activation.is_live else 0),
        }
        return render(request, "portal/confirm.html", context)
    try:
        result = services.deactivate_activation(activation=activation, actor=actor(request))
    except errors.DeactivationLimitReached as error:
        messages.error(request, error.message)
        return _back_to_license(request, license_id)
    if result.already_inactive:
        messages.info(request, _("%(name)s was already deactivated.") % {"name": name})
    else:
        messages.success(request, _freed_message(activation.license, name))
    return _back_to_license(request, license_id)


@customer_required
@not_found_for_others
@require_http_methods(["GET", "POST"])
def deactivate_all(request, license_id):
    license = services.get_license_for_customer(customer=request.customer, license_id=license_id)
    if request.method == "GET":
        live = license.activations.live()
        count = live.count()
        context = {
            "all_devices": True,
            "devices": live.order_by("created_at", "id")[:DEVICES_NAMED_BEFORE_FREEING_ALL],
            "device_count": count,
            "devices_not_named": max(count - DEVICES_NAMED_BEFORE_FREEING_ALL, 0),
            "back_url": _license_url(request, license_id),
            **_what_deactivating_costs(request, license, count=count),
        }
        return render(request, "portal/confirm.html", context)
    try:
        freed = services.deactivate_all_activations(license=license, actor=actor(request))
    except errors.DeactivationLimitReached as error:
        messages.error(request, error.message)
        return _back_to_license(request, license_id)
    if not freed:
        messages.info(request, _("No device was in use: nothing changed."))
        return _back_to_license(request, license_id)
    what = ngettext("%(count)d device", "%(count)d devices", len(freed)) % {"count": len(freed)}
    messages.success(request, _freed_message(license, what))
    return _back_to_license(request, license_id)


@customer_required
@not_found_for_others
@require_http_methods(["GET", "POST"])
def download_license_file(request, license_id, activation_id):
    # Files are issued by the license page's button (a POST: each is in the audit trail); an
    # address followed on its own leads there.
    if request.method == "GET":
        return _back_to_license(request, license_id)
    activation = services.get_activation_for_customer(
        customer=request.customer, license_id=license_id, activation_id=activation_id
    )
    try:
        checkout = services.checkout_license(
            license_key=services.reveal_license_key(activation.license),
            fingerprint=activation.fingerprint or "",
            actor=actor(request),
        )
    except errors.LicensingError as error:
        messages.error(request, error.message)
        return _back_to_license(request, license_id)
    text, _payload, _signing_key = build_license_file(checkout)
    response = HttpResponse(text, content_type="text/plain; charset=utf-8")
    # Named for what it unlocks, so a customer with several can tell them apart; the id keeps it unique.
    device = slugify(activation.name or activation.fingerprint or "")[:40] or "device"
    filename = f"{activation.license.product.slug}-{device}-{str(activation.pk)[:8]}.lic"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response
