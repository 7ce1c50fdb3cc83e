"""Seed the benchmark database and write the request files the load generator replays.

Run by bench/run.py with the benchmark's environment (DATABASE_URL and secrets already set).
Bulk inserts skip the audit trail on purpose: this is a data set, not a history of changes.
"""

from __future__ import annotations

import json
import os
import random
import sys
import uuid
from pathlib import Path
from urllib.parse import urlencode

import django

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django.setup()

from django.contrib.sessions.backends.db import SessionStore  # noqa: E402
from django.utils import timezone  # noqa: E402

from licensing import keys, services  # noqa: E402
from licensing.models import Activation, ActorKind, AuditEvent, Customer, License, Plan, Product  # noqa: E402
from portal.views import start_session  # noqa: E402

ORGANIZATION_ID = uuid.UUID("7a1e0c4b-3f2d-4e5a-8b6c-9d0e1f2a3b4c")
LINES_PER_FILE = 5000


def main(out_dir: Path, licenses: int, activations_per_license: int, audit_events: int) -> None:
    rng = random.Random(7)
    actor = services.Actor.system("bench")
    products = [
        Product.objects.create(
            name=f"Bench product {n}",
            slug=f"bench-{n}",
            public_id=f"prod_bench_product_{n:04d}_xyz",
            polar_organization_id=ORGANIZATION_ID,
        )
        for n in range(2)
    ]
    limited = [
        Plan.objects.create(product=p, name="Limited", identifier="limited", max_activations=10) for p in products
    ]
    unlimited = [Plan.objects.create(product=p, name="Site", identifier="site", max_activations=None) for p in products]
    customers = Customer.objects.bulk_create(
        Customer(email=f"customer{n}@bench.example", name=f"Customer {n}") for n in range(max(licenses // 10, 1))
    )

    license_rows, plain_keys = [], []
    for n in range(licenses):
        key = keys.generate_license_key()
        product_index = n % 2
        plan = unlimited[product_index] if n % 5 == 0 else limited[product_index]
        plain_keys.append(key)
        license_rows.append(
            License(
                product=products[product_index],
                plan=plan,
                customer=customers[n % len(customers)],
                key_digest=keys.digest_license_key(key),
                key_encrypted=keys.encrypt_license_key(key),
                key_suffix=keys.license_key_suffix(key),
                max_activations=plan.max_activations,
            )
        )
    License.objects.bulk_create(license_rows, batch_size=2000)

    live = []  # (key, fingerprint, license, product public id)
    activation_rows = []
    for license, key in zip(license_rows, plain_keys, strict=True):
        for k in range(activations_per_license):
            fingerprint = f"fp-{license.pk.hex[:12]}-{k}"
            activation_rows.append(Activation(license=license, fingerprint=fingerprint, name=f"Device {k}"))
            live.append((key, fingerprint, license))
    Activation.objects.bulk_create(activation_rows, batch_size=5000)
    now = timezone.now()
    AuditEvent.objects.bulk_create(
        (
            AuditEvent(
                created_at=now,
                actor_kind=ActorKind.APP,
                actor_display="app",
                action="activation.created",
                target_type="licensing.activation",
                target_id=str(a.pk),
                license=a.license,
            )
            for a in activation_rows[:audit_events]
        ),
        batch_size=2000,
    )

    api_key = services.create_api_key(name="bench", actor=actor).key
    services.current_signing_key()
    services.rsa_key_for(None)
    race = services.create_license(product=products[0], max_activations=3, actor=actor)
    session = SessionStore()
    start_session(session, customers[0])
    session.create()
    portal_license = License.objects.filter(customer=customers[0]).first()

    unlimited_keys = [(k, lic) for k, lic in zip(plain_keys, license_rows, strict=True) if lic.max_activations is None]

    def write(name: str, lines: list[str]) -> None:
        (out_dir / f"{name}.txt").write_text("\n".join(lines) + "\n")

    def sample(population, count=LINES_PER_FILE):
        return [rng.choice(population) for _ in range(count)]

    write(
        "validate",
        ["POST\t/api/v1/licenses/validate\t" + json.dumps({"key": k, "fingerprint": fp}) for k, fp, _ in sample(live)],
    )
    activate_lines = []
    for n, (key, license) in enumerate(sample(unlimited_keys)):
        fingerprint = "NEWDEVICE" if n % 2 else f"fp-{license.pk.hex[:12]}-0"
        activate_lines.append(
            "POST\t/api/v1/licenses/activate\t" + json.dumps({"key": key, "fingerprint": fingerprint})
        )
    write("activate", activate_lines)
    write(
        "polar",
        [
            "POST\t/compat/polar/v1/customer-portal/license-keys/validate\t"
            + json.dumps({"key": k, "organization_id": str(ORGANIZATION_ID)})
            for k, _, _ in sample(live)
        ],
    )
    write(
        "kelviq",
        ["POST\t/compat/kelviq/api/v1/license/validate/\t" + json.dumps({"licenseKey": k}) for k, _, _ in sample(live)],
    )
    write(
        "keymint",
        [
            "POST\t/compat/keymint/key/activate\t"
            + json.dumps({"productId": lic.product.public_id, "licenseKey": k, "hostId": fp})
            for k, fp, lic in sample(live)
        ],
    )
    write(
        "getkeymanager",
        [
            "POST\t/compat/getkeymanager/api/v1/verify\t"
            + urlencode({"api_key": api_key, "license_key": k, "identifier": fp})
            for k, fp, _ in sample(live)
        ],
    )
    write("portal", [f"GET\t/portal/licenses/{portal_license.pk}/\t"])
    write("baseline", ["POST\t/validate\t" + json.dumps({"key": k}) for k, _, _ in sample(live)])
    (out_dir / "seed.json").write_text(
        json.dumps(
            {
                "api_key": api_key,
                "race_key": race.key,
                "race_license_id": str(race.license.pk),
                "session_cookie": session.session_key,
            }
        )
    )


if __name__ == "__main__":
    main(
        Path(sys.argv[1]),
        licenses=int(sys.argv[2]),
        activations_per_license=int(sys.argv[3]),
        audit_events=int(sys.argv[4]),
    )
