"""Make an API key for the management API or for apps. The key is printed once, alone on the last line."""

from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from licensing import errors, services

# Ten years: policies that rotate keys do so well within it, and far larger counts are typos.
MAX_DAYS = 3653


class Command(BaseCommand):
    help = "Create an API key for the management API, or for apps' license calls, and print it (only this once)."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True, help="Who or what uses the key, e.g. 'billing'.")
        parser.add_argument("--read-only", action="store_true", help="The key may read but never change anything.")
        parser.add_argument(
            "--apps-only",
            action="store_true",
            help="A key to ship inside apps (Kelviq, GetKeyManager, Keymint): license calls only, "
            "no management API, no Keymint create or block.",
        )
        parser.add_argument(
            "--import-key",
            metavar="KEY",
            help="Store this existing key (from Kelviq, Keymint or GetKeyManager) instead of making one.",
        )
        parser.add_argument(
            "--expires-in-days",
            type=int,
            metavar="DAYS",
            help="The key stops working this many days from now (default: until revoked).",
        )

    def handle(self, *args, **options):
        days = options["expires_in_days"]
        if days is not None and not 1 <= days <= MAX_DAYS:
            raise CommandError(f"--expires-in-days takes 1 to {MAX_DAYS} days.")
        try:
            issued = services.create_api_key(
                name=options["name"],
                read_only=options["read_only"],
                apps_only=options["apps_only"],
                key=options["import_key"],
                expires_at=None if days is None else timezone.now() + timedelta(days=days),
                actor=services.Actor.system("create_api_key"),
            )
        except errors.LicensingError as error:
            raise CommandError(str(error.message)) from None
        access = "read-only" if issued.api_key.read_only else "read-write"
        use = "apps' license calls only" if issued.api_key.apps_only else "the management API and license calls"
        until = "" if days is None else f", working until {issued.api_key.expires_at:%Y-%m-%d %H:%M} UTC"
        # Plain, not in the error colour Django gives stderr: nothing went wrong.
        self.stderr.write(
            f"Created {access} API key {issued.api_key} for {use}{until}. Store it now: it is not shown again.",
            style_func=str,
        )
        self.stdout.write(issued.key)
