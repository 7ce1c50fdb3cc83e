"""What the admin's own pages show beside Django's."""

from django import template

from licensing.models import ActorKind, AuditEvent

register = template.Library()


@register.simple_tag
def recent_changes_of(user, count: int = 10):
    """The staff member's latest changes from the audit trail, which holds those made by the list
    actions (suspend, extend, free devices...) that Django's own "Recent actions" never sees."""
    return list(
        AuditEvent.objects.filter(actor_kind=ActorKind.STAFF, actor_id=str(user.pk)).order_by("-created_at", "-id")[
            :count
        ]
    )
