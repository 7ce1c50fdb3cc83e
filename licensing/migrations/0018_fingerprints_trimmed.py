from django.db import migrations
from django.utils import timezone


def trim_fingerprints(apps, schema_editor):
    """Store fingerprints as every face now finds them, without spaces and line ends around them.

    The GetKeyManager and Keymint faces stored them as sent; left so, a device would take a second
    slot at its next call. One of spaces only stays as it is (services._trimmed_fingerprint). A
    live device whose trimmed fingerprint is already live on its license took that second slot
    before this release: it is the same device, so it is deactivated, in the audit trail.
    """
    Activation = apps.get_model("licensing", "Activation")
    AuditEvent = apps.get_model("licensing", "AuditEvent")
    to_trim = [
        (activation_id, license_id, fingerprint, deactivated_at)
        for activation_id, license_id, fingerprint, deactivated_at in Activation.objects.filter(
            fingerprint__isnull=False
        )
        .values_list("id", "license_id", "fingerprint", "deactivated_at")
        .iterator(chunk_size=2000)
        if fingerprint.strip() and fingerprint != fingerprint.strip()
    ]
    for activation_id, license_id, fingerprint, deactivated_at in to_trim:
        trimmed = fingerprint.strip()
        twin = Activation.objects.filter(license_id=license_id, fingerprint=trimmed, deactivated_at__isnull=True)
        if deactivated_at is None and twin.exists():
            now = timezone.now()
            Activation.objects.filter(pk=activation_id).update(
                deactivated_at=now, deactivated_by_kind="system", deactivated_by="migration 0018"
            )
            AuditEvent.objects.create(
                actor_kind="system",
                actor_display="migration 0018",
                action="activation.deactivated",
                target_type="licensing.activation",
                target_id=str(activation_id),
                target_display=trimmed,
                license_id=license_id,
                changes={"reason": "The same device was live twice, once with spaces around its fingerprint."},
            )
        else:
            Activation.objects.filter(pk=activation_id).update(fingerprint=trimmed)


class Migration(migrations.Migration):
    dependencies = [
        ("licensing", "0017_plan_duration_value_range"),
    ]

    operations = [
        migrations.RunPython(trim_fingerprints, migrations.RunPython.noop, elidable=True),
    ]
