"""Load a small, realistic data set to try the product with. Safe to run again: it adds what is missing."""

from __future__ import annotations

import uuid
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from licensing import keys, services
from licensing.models import Customer, License, Plan, Product

DEMO_STAFF_USERNAME = "admin"
DEMO_STAFF_PASSWORD = "admin"

# Fixed ids, so the README's Keymint and Polar examples work against the demo data.
PRODUCTS = [
    {
        "slug": "photon-editor",
        "name": "Photon Editor",
        "public_id": "prod_photon_editor_demo_01",
        "polar_organization_id": uuid.UUID("5f0c3b1e-2d4a-4c8e-9b7f-6a1d2e3f4a5b"),
    },
    {
        "slug": "atlas-sync",
        "name": "Atlas Sync Server",
        "public_id": "prod_atlas_sync_demo_0002",
        "polar_organization_id": uuid.UUID("5f0c3b1e-2d4a-4c8e-9b7f-6a1d2e3f4a5b"),
    },
]
PLANS = [
    {
        "product": "photon-editor",
        "identifier": "personal",
        "name": "Personal",
        "max_activations": 3,
        "duration_unit": Plan.DurationUnit.YEAR,
        "duration_value": 1,
        "description": "For one person, up to 3 devices.",
    },
    {
        "product": "photon-editor",
        "identifier": "team",
        "name": "Team",
        "max_activations": 10,
        "duration_unit": Plan.DurationUnit.MONTH,
        "duration_value": 1,
        "description": "Monthly, up to 10 devices.",
    },
    {
        "product": "photon-editor",
        "identifier": "lifetime",
        "name": "Lifetime",
        "max_activations": 2,
        "duration_unit": Plan.DurationUnit.PERPETUAL,
        "duration_value": None,
        "description": "Pay once, 2 devices.",
    },
    {
        "product": "atlas-sync",
        "identifier": "standard",
        "name": "Standard",
        "max_activations": None,
        "duration_unit": Plan.DurationUnit.YEAR,
        "duration_value": 1,
        "description": "Unlimited servers, yearly.",
    },
]
CUSTOMERS = [
    {"email": "ada@example.com", "name": "Ada Lovelace", "external_id": "cus_ada"},
    {"email": "grace@example.com", "name": "Grace Hopper", "external_id": "cus_grace"},
    {"email": "linus@example.com", "name": "Linus Torvalds", "external_id": ""},
]
# Readable fixed keys, so the README's examples work against the demo data.
LICENSES = [
    {
        "key": "DEMO-ACTIVE-FREE-SLOTS",
        "plan": "personal",
        "customer": "ada@example.com",
        "devices": ["ada-macbook", "ada-desktop"],
        "state": "active",
    },
    {
        "key": "DEMO-AT-LIMIT",
        "plan": "lifetime",
        "customer": "grace@example.com",
        "devices": ["grace-laptop", "grace-workstation"],
        "state": "active",
    },
    {
        "key": "DEMO-EXPIRED",
        "plan": "personal",
        "customer": "linus@example.com",
        "devices": ["linus-thinkpad"],
        "state": "expired",
    },
    {
        "key": "DEMO-SUSPENDED",
        "plan": "team",
        "customer": "grace@example.com",
        "devices": ["grace-build-agent"],
        "state": "suspended",
    },
    {"key": "DEMO-REVOKED", "plan": "lifetime", "customer": "ada@example.com", "devices": [], "state": "revoked"},
    {
        "key": "DEMO-UNLIMITED",
        "plan": "standard",
        "customer": "linus@example.com",
        "devices": ["sync-eu-1", "sync-eu-2", "sync-us-1", "sync-ap-1"],
        "state": "active",
    },
]


class Command(BaseCommand):
    help = "Load demo products, plans, customers, licenses in every state, and a staff user."

    def add_arguments(self, parser):
        parser.add_argument(
            "--force", action="store_true", help="Load even with DJANGO_DEBUG off (never on a production database)."
        )

    def handle(self, *args, **options):
        if not settings.DEBUG and not options["force"]:
            raise CommandError(
                f"load_demo creates the staff user {DEMO_STAFF_USERNAME!r} with password {DEMO_STAFF_PASSWORD!r}, "
                "so it runs only with DJANGO_DEBUG on. Use --force for a throwaway database."
            )
        actor = services.Actor.system("load_demo")
        with transaction.atomic():
            products = {spec["slug"]: self._product(spec, actor) for spec in PRODUCTS}
            plans = {spec["identifier"]: self._plan(spec, products, actor) for spec in PLANS}
            customers = {spec["email"]: self._customer(spec, actor) for spec in CUSTOMERS}
            for spec in LICENSES:
                self._license(spec, plans, customers, actor)
            self._staff_user()
        self.stdout.write("Demo products (public id, Polar organization id):")
        for product in products.values():
            self.stdout.write(f"  {product.name:<24} {product.public_id}  {product.polar_organization_id}")
        self.stdout.write("Demo license keys:")
        for spec in LICENSES:
            self.stdout.write(f"  {spec['key']:<24} {spec['state']:<10} {spec['customer']}")
        # No address: the server may listen on any port (`make run PORT=...` prints the address).
        self.stdout.write(f"Admin (/admin/): user {DEMO_STAFF_USERNAME!r}, password {DEMO_STAFF_PASSWORD!r}")

    def _product(self, spec, actor):
        product = Product.objects.filter(slug=spec["slug"]).first()
        if product is None:
            product = Product(**spec)
            services.save_catalog_record(record=product, actor=actor)
        return product

    def _plan(self, spec, products, actor):
        product = products[spec["product"]]
        plan = Plan.objects.filter(product=product, identifier=spec["identifier"]).first()
        if plan is None:
            plan = Plan(**{**spec, "product": product})
            services.save_catalog_record(record=plan, actor=actor)
        return plan

    def _customer(self, spec, actor):
        customer = Customer.objects.filter(email__iexact=spec["email"]).first()
        if customer is None:
            customer = Customer(**spec)
            services.save_catalog_record(record=customer, actor=actor)
        return customer

    def _license(self, spec, plans, customers, actor):
        if License.objects.filter(key_digest__in=keys.license_key_digests(spec["key"])).exists():
            return
        plan = plans[spec["plan"]]
        license = services.create_license(
            product=plan.product, plan=plan, customer=customers[spec["customer"]], key=spec["key"], actor=actor
        ).license
        app = services.Actor.app(ip_address="127.0.0.1")
        for fingerprint in spec["devices"]:
            services.activate_license(
                license_key=spec["key"],
                fingerprint=fingerprint,
                name=fingerprint.replace("-", " ").title(),
                platform="macOS" if "mac" in fingerprint else "Linux",
                actor=app,
            )
        if spec["state"] == "expired":
            services.extend_license(license=license, expires_at=timezone.now() - timedelta(days=10), actor=actor)
        elif spec["state"] == "suspended":
            services.suspend_license(license=license, actor=actor, reason="Invoice unpaid for 30 days")
        elif spec["state"] == "revoked":
            services.revoke_license(license=license, actor=actor, reason="Refunded at the customer's request")

    def _staff_user(self):
        User = get_user_model()
        if not User.objects.filter(username=DEMO_STAFF_USERNAME).exists():
            User.objects.create_superuser(DEMO_STAFF_USERNAME, "admin@example.com", DEMO_STAFF_PASSWORD)
