"""Import the RSA private key a vendor used with GetKeyManager, so apps that embed its public key keep working."""

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from licensing import errors, services
from licensing.models import Product


class Command(BaseCommand):
    help = "Import an RSA private key (PEM) for a product, or as the global GetKeyManager key."

    def add_arguments(self, parser):
        parser.add_argument("pem_file", type=Path, help="The unencrypted PEM private key file.")
        parser.add_argument("--product", help="The product's slug; leave out for the global key.")
        parser.add_argument(
            "--replace",
            action="store_true",
            help="Sign with this key instead of the one that signs these answers now (apps holding only "
            "that key's public half stop trusting them).",
        )

    def handle(self, *args, **options):
        product = None
        if options["product"]:
            product = Product.objects.filter(slug=options["product"]).first()
            if product is None:
                raise CommandError(f"No product has the slug {options['product']!r}.")
        try:
            pem = options["pem_file"].read_text()
            rsa_key = services.import_rsa_key(
                product=product,
                private_key_pem=pem,
                replace=options["replace"],
                actor=services.Actor.system("import_rsa_key"),
            )
        except OSError as error:
            raise CommandError(f"Cannot read {options['pem_file']}: {error.strerror}.") from None
        except errors.LicensingError as error:
            raise CommandError(str(error.message)) from None
        self.stdout.write(
            f"Imported {rsa_key}. Running servers sign with it within {services.RSA_KEY_CACHE_SECONDS} seconds. "
            "Its public key:"
        )
        self.stdout.write(rsa_key.public_key_pem.rstrip())
