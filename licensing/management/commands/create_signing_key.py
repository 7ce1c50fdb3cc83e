"""Make a new Ed25519 signing key; it signs from now on and older keys stay published until retired."""

from django.core.management.base import BaseCommand

from licensing import services


class Command(BaseCommand):
    help = "Create a new signing key for API answers and offline license files, and print its public key."

    def handle(self, *args, **options):
        signing_key = services.create_signing_key(actor=services.Actor.system("create_signing_key"))
        self.stdout.write(f"Created signing key {signing_key.kid}. It signs from now on. Public key:")
        self.stdout.write(signing_key.public_key_pem.rstrip())
