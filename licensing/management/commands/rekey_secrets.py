"""Store again under LICENSE_KEY_SECRET what another secret stored, during a rotation (README: Security)."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from licensing import services


class Command(BaseCommand):
    help = (
        "Step 3 of a rotation of LICENSE_KEY_SECRET (the new secret in it, the old one in "
        "LICENSE_KEY_SECRET_FALLBACKS on every host): store license keys, private keys and kept answers again "
        "under the new secret. Safe to run again."
    )

    def handle(self, *args, **options):
        if not settings.LICENSE_KEY_SECRET_FALLBACKS:
            raise CommandError(
                "LICENSE_KEY_SECRET_FALLBACKS is empty: set LICENSE_KEY_SECRET to the new secret and "
                "LICENSE_KEY_SECRET_FALLBACKS to the old one on every host first (README: Rotating "
                "LICENSE_KEY_SECRET)."
            )
        rekeyed = services.rekey_stored_secrets()
        self.stdout.write(
            f"Stored again under LICENSE_KEY_SECRET: {rekeyed.licenses} license key(s), "
            f"{rekeyed.signing_keys} signing key(s), {rekeyed.rsa_keys} RSA key(s), "
            f"{rekeyed.stored_answers} kept answer(s)."
        )
        if rekeyed.failed:
            self.stderr.write(f"Left as they are ({len(rekeyed.failed)}): " + "; ".join(rekeyed.failed))
        self.stdout.write(
            "API keys move to the new secret at their next use: keep LICENSE_KEY_SECRET_FALLBACKS until each "
            "of these was used after every host had the new secret (admin: API keys, Last used), or revoke it; "
            "and for 15 minutes at least, the life of a sign-in link mailed before:"
        )
        for api_key in rekeyed.api_keys_in_use:
            used = f"last used {api_key.last_used_at:%Y-%m-%d %H:%M} UTC" if api_key.last_used_at else "never used"
            self.stdout.write(f"  {api_key} ({used})")
