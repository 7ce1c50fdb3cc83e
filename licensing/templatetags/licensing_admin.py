"""What the admin's own pages show beside Django's."""

from django import template
from django.contrib import admin

from licensing.admin import STAFF_SIGNED_IN
from licensing.models import ActorKind, AuditEvent

register = template.Library()


@register.simple_tag(takes_context=True)
def recent_changes_of_this_user(context, count: int = 10) -> dict:
    """The staff member's latest changes from the audit trail, which holds those made by the list
    actions (suspend, extend, free devices...) that Django's own "Recent actions" never sees: only
    the events the audit trail would show them, linked when they may open it."""
    request = context["request"]
    trail = admin.site.get_model_admin(AuditEvent)
    mine = trail.get_queryset(request).filter(actor_kind=ActorKind.STAFF, actor_id=str(request.user.pk))
    return {
        # Signing in is in the trail, but changes nothing.
        "events": list(mine.exclude(action=STAFF_SIGNED_IN).order_by("-created_at", "-id")[:count]),
        "linked": trail.has_view_permission(request),
    }
