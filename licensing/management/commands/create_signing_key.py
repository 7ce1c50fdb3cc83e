"""Make a new Ed25519 signing key, published at once; it signs from now, or from --signs-from."""

import argparse
from datetime import UTC, datetime

from django.core.management.base import BaseCommand, CommandError

from licensing import errors, services


def aware_time(value: str) -> datetime:
    """An ISO 8601 date or date-time; without a zone it is UTC (a date alone is midnight UTC)."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        # argparse's own refusal: a usage line on the command line, not a traceback.
        raise argparse.ArgumentTypeError(f"{value!r} is not an ISO 8601 date or date-time.") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Command(BaseCommand):
    help = "Create a new signing key for API answers and offline license files, and print its public key."

    def add_arguments(self, parser):
        when = parser.add_mutually_exclusive_group()
        when.add_argument(
            "--if-none",
            action="store_true",
            help="Make a key only if none signs now (`make serve` runs this before the server starts).",
        )
        when.add_argument(
            "--signs-from",
            type=aware_time,
            help="When the key starts signing (ISO 8601, UTC unless it says otherwise), e.g. 2027-01-15. "
            "Until then it is only published, so apps can ship its public key before it signs.",
        )
        parser.add_argument(
            "--replace",
            action="store_true",
            help="Sign from now although another key signs: apps without the new public key refuse every answer.",
        )

    def handle(self, *args, signs_from=None, if_none=False, replace=False, **options):
        if if_none and replace:
            raise CommandError("--if-none makes a key only if none signs, --replace one that replaces it: give one.")
        actor = services.Actor.system("create_signing_key")
        if if_none:
            signed_before = services.signing_key_now()
            signing_key = services.signing_key_made_if_none(actor=actor)
            if signing_key == signed_before:
                self.stdout.write(f"Signing key {signing_key.kid} signs; no new key made.")
                return
        else:
            try:
                signing_key = services.create_signing_key(actor=actor, signs_from=signs_from, replace=replace)
            except errors.InvalidInput as error:
                raise CommandError(f"--{error.field.replace('_', '-')}: {error.message}") from None
        if signs_from is None:
            self.stdout.write(f"Created signing key {signing_key.kid}. It signs from now on. Public key:")
        else:
            self.stdout.write(
                f"Created signing key {signing_key.kid}, published now; it signs from "
                f"{signing_key.signs_from.isoformat()}. Public key:"
            )
        self.stdout.write(signing_key.public_key_pem.rstrip())
