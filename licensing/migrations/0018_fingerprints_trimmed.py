from django.db import migrations


def trim_fingerprints(apps, schema_editor):
    """Store fingerprints as every face now finds them, without spaces and line ends around them.

    The GetKeyManager and Keymint faces stored them as sent; left so, a device would take a second
    slot at its next call. A live device whose trimmed fingerprint is already live on its license
    (it took that second slot before this release) is left as it is, for staff to free one of them.
    """
    Activation = apps.get_model("licensing", "Activation")
    to_trim = [
        (activation_id, license_id, fingerprint, deactivated_at)
        for activation_id, license_id, fingerprint, deactivated_at in Activation.objects.filter(
            fingerprint__isnull=False
        )
        .values_list("id", "license_id", "fingerprint", "deactivated_at")
        .iterator(chunk_size=2000)
        if fingerprint != fingerprint.strip()
    ]
    for activation_id, license_id, fingerprint, deactivated_at in to_trim:
        trimmed = fingerprint.strip() or None
        if deactivated_at is None and trimmed is not None:
            live = Activation.objects.filter(license_id=license_id, fingerprint=trimmed, deactivated_at__isnull=True)
            if live.exists():
                continue
        Activation.objects.filter(pk=activation_id).update(fingerprint=trimmed)


class Migration(migrations.Migration):
    dependencies = [
        ("licensing", "0017_plan_duration_value_range"),
    ]

    operations = [
        migrations.RunPython(trim_fingerprints, migrations.RunPython.noop, elidable=True),
    ]
