"""Plain builders for test data. They go through the services, as every face does."""

from __future__ import annotations

import itertools
from typing import Any

from licensing import services
from licensing.models import Customer, Plan, Product

_sequence = itertools.count(1)
SYSTEM = services.Actor.system("tests")


def make_product(**overrides: Any) -> Product:
    n = next(_sequence)
    product = Product(**{"name": f"Product {n}", "slug": f"product-{n}", **overrides})
    services.save_catalog_record(record=product, actor=SYSTEM)
    return product


def make_plan(**overrides: Any) -> Plan:
    n = next(_sequence)
    fields = {"name": f"Plan {n}", "identifier": f"plan-{n}", "max_activations": 3, **overrides}
    if "product" not in fields:
        fields["product"] = make_product()
    plan = Plan(**fields)
    services.save_catalog_record(record=plan, actor=SYSTEM)
    return plan


def make_customer(**overrides: Any) -> Customer:
    n = next(_sequence)
    customer = Customer(**{"email": f"customer{n}@example.com", "name": f"Customer {n}", **overrides})
    services.save_catalog_record(record=customer, actor=SYSTEM)
    return customer


def make_license(**overrides: Any) -> services.IssuedLicense:
    """Issue a license (a plan with 3 devices and a fresh product unless told otherwise)."""
    if "product" not in overrides:
        plan = overrides.get("plan") or make_plan()
        overrides = {"plan": plan, "product": plan.product, **overrides}
    return services.create_license(**{"actor": SYSTEM, **overrides})


def activate(issued: services.IssuedLicense, fingerprint: str | None = None, **kwargs: Any):
    return services.activate_license(
        license_key=issued.key, fingerprint=fingerprint, actor=services.Actor.app(), **kwargs
    )


def nested(depth: int) -> dict:
    """A JSON object `depth` objects deep."""
    value: dict = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value
