"""Rules the vendor APIs need, kept in the services: conditions, usage quotas, scoped keys, RSA keys."""

from __future__ import annotations

import io
import re
import uuid

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from licensing import errors, services, signing
from licensing.models import ApiKey, AuditEvent, License, RsaKey
from tests.factories import activate, make_customer, make_license, make_plan, make_product

pytestmark = pytest.mark.django_db


def rsa_pem(key=None) -> str:
    key = key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()


# ---------------------------------------------------------------- activation conditions


def test_a_device_activated_with_conditions_validates_only_with_the_same(issued):
    activation = activate(issued, None, conditions={"major_version": 4}).activation

    same = services.validate_license(
        license_key=issued.key, activation_id=str(activation.pk), conditions={"major_version": 4}
    )
    other = services.validate_license(
        license_key=issued.key, activation_id=str(activation.pk), conditions={"major_version": 5}
    )
    missing = services.validate_license(license_key=issued.key, activation_id=str(activation.pk))

    assert same.code == "VALID"
    assert (other.valid, other.code) == (False, "CONDITIONS_MISMATCH")
    assert missing.code == "CONDITIONS_MISMATCH"
    assert License.objects.get(pk=issued.license.pk).validation_count == 1


def test_a_device_without_conditions_ignores_them(issued):
    activation = activate(issued, "d").activation

    result = services.validate_license(license_key=issued.key, activation_id=str(activation.pk), conditions={"x": 1})

    assert result.code == "VALID"


def test_conditions_must_be_an_object(issued):
    with pytest.raises(errors.InvalidInput) as raised:
        activate(issued, "d", conditions=["not", "an", "object"])

    assert raised.value.field == "conditions"


# ---------------------------------------------------------------- usage quota


def test_usage_counts_up_to_the_limit_and_no_further(issued, actor):
    services.update_license(license=issued.license, limit_usage=5, actor=actor)

    first = services.validate_license(license_key=issued.key, increment_usage=3)
    too_many = services.validate_license(license_key=issued.key, increment_usage=3)
    rest = services.validate_license(license_key=issued.key, increment_usage=2)

    assert first.code == rest.code == "VALID"
    assert (too_many.valid, too_many.code) == (False, "USAGE_LIMIT_REACHED")
    assert too_many.detail == "This license has 2 uses left."
    license = License.objects.get(pk=issued.license.pk)
    assert (license.usage, license.validation_count) == (5, 2)


def test_usage_without_a_limit_just_counts(issued):
    for _ in range(3):
        services.validate_license(license_key=issued.key, increment_usage=10)

    assert License.objects.get(pk=issued.license.pk).usage == 30


@pytest.mark.parametrize("bad", [-1, 2**63, "5", True])
def test_usage_limit_must_be_a_whole_number(issued, actor, bad):
    with pytest.raises(errors.InvalidInput) as raised:
        services.update_license(license=issued.license, limit_usage=bad, actor=actor)

    assert raised.value.field == "limit_usage"


def test_a_license_can_be_issued_with_a_usage_limit(plan):
    license = make_license(plan=plan, limit_usage=100).license

    assert License.objects.get(pk=license.pk).limit_usage == 100


# ---------------------------------------------------------------- keys scoped to a product or organization


def test_a_key_is_found_only_with_its_own_product_or_organization(plan, actor):
    product = plan.product
    product.public_id = "prod_9f8e7d6c5b4a39281706f5"
    product.polar_organization_id = uuid.UUID("3f1c2a5e-8d4b-4e6f-9a7b-1c2d3e4f5a6b")
    services.save_catalog_record(record=product, actor=actor)
    issued = make_license(plan=plan)

    assert services.find_license(license_key=issued.key, product_public_id="prod_9f8e7d6c5b4a39281706f5")
    assert services.find_license(license_key=issued.key, polar_organization_id=product.polar_organization_id)
    with pytest.raises(errors.LicenseNotFound):
        services.find_license(license_key=issued.key, product_public_id="prod_someone_elses_product")
    with pytest.raises(errors.LicenseNotFound):
        services.find_license(license_key=issued.key, polar_organization_id=uuid.uuid4())


def test_a_product_without_an_organization_id_answers_no_polar_organization(issued):
    with pytest.raises(errors.LicenseNotFound):
        services.find_license(license_key=issued.key, polar_organization_id=uuid.uuid4())


def test_customer_reference_is_the_billing_id_or_ours():
    with_billing_id = make_customer(external_id="cus_ada")
    without = make_customer()

    assert with_billing_id.reference == "cus_ada"
    assert without.reference == without.public_id.hex


# ---------------------------------------------------------------- RSA keys


def test_an_imported_rsa_key_signs_for_its_product(actor):
    product = make_product()
    private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    services.import_rsa_key(product=product, private_key_pem=rsa_pem(private_key), actor=actor)
    rsa_key = services.rsa_key_for(product)
    signature = signing.rsa_sign(b"payload", private_key_encrypted=rsa_key.private_key_encrypted)

    private_key.public_key().verify(signature, b"payload", padding.PKCS1v15(), hashes.SHA256())
    assert "PRIVATE" not in rsa_key.private_key_encrypted
    assert rsa_key.public_key_pem.startswith("-----BEGIN PUBLIC KEY-----")


def test_without_its_own_key_a_product_uses_the_global_one(actor):
    product = make_product()

    made = services.rsa_key_for(product)
    imported = services.import_rsa_key(private_key_pem=rsa_pem(), replace=True, actor=actor)

    assert made.product is None
    assert services.rsa_key_for(product) == imported
    assert services.rsa_key_for(None) == imported


@pytest.mark.parametrize(
    "pem",
    [
        "not a key",
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode(),
    ],
)
def test_only_an_rsa_private_key_can_be_imported(actor, pem):
    with pytest.raises(errors.InvalidInput) as raised:
        services.import_rsa_key(private_key_pem=pem, actor=actor)

    assert raised.value.field == "private_key_pem"
    assert RsaKey.objects.count() == 0


# Made with `openssl genrsa 512`: too short to trust, and cryptography no longer makes such keys.
WEAK_RSA_PEM = """\
-----BEGIN PRIVATE KEY-----
MIIBVAIBADANBgkqhkiG9w0BAQEFAASCAT4wggE6AgEAAkEA22JaDasK8QrOnFf4
eEp+rR3fWzk8kktmZanuGyZTaJ8aLuwsIFeq00GWfuO1TrLfTWCU3iS3zoAOLNKq
QpRRcwIDAQABAkAr4PwKB8/kbjjs5Ft6E8xKa9Mkt8n5qMMOSnKpU30TS4BezSU8
9O/Ohazoh6vcUUS4eFvr/kzWHXm86ADNtv8hAiEA9inKvpV+fmDa5Y8FYLmDRZ/v
4mUBuZkhhEZig31GNI0CIQDkJp1TaL7VCnjnf/0uJdex3F6Qy+aXAOfMfX0WBPod
/wIhANNtR77zpaakR759XdAa5j4Jxb68pIOlm50B2yE2mvMNAiAB4T+SnF5WKwvr
/GX9p1oroQE2eDeiLuO6D56kO85DyQIgG0gLoh+H+ihW/W/8gFok/SA0wS9/fx5Q
woxsJeODOe8=
-----END PRIVATE KEY-----
"""


def test_an_rsa_key_under_1024_bits_cannot_be_imported(actor):
    with pytest.raises(errors.InvalidInput) as raised:
        services.import_rsa_key(private_key_pem=WEAK_RSA_PEM, actor=actor)

    assert raised.value.message == "This RSA key has 512 bits; it must have at least 1024."
    assert RsaKey.objects.count() == 0


def test_import_rsa_key_command(tmp_path):
    product = make_product(slug="photon")
    pem_file = tmp_path / "gkm.pem"
    pem_file.write_text(rsa_pem())
    out = io.StringIO()

    call_command("import_rsa_key", str(pem_file), "--product", "photon", stdout=out)

    assert RsaKey.objects.get().product == product
    assert "Running servers sign with it within 30 seconds." in out.getvalue()
    assert "BEGIN PUBLIC KEY" in out.getvalue()
    with pytest.raises(CommandError, match="No product"):
        call_command("import_rsa_key", str(pem_file), "--product", "nope")


def test_staff_import_and_generate_rsa_keys_in_the_admin(staff_client):
    product = make_product()

    imported = staff_client.post(
        reverse("admin:licensing_rsakey_add"), {"product": product.pk, "private_key_pem": rsa_pem()}, follow=True
    )
    staff_client.post(reverse("admin:licensing_rsakey_add"), {"product": "", "private_key_pem": ""})
    refused = staff_client.post(reverse("admin:licensing_rsakey_add"), {"product": "", "private_key_pem": "junk"})

    assert RsaKey.objects.filter(product=product).count() == 1
    assert RsaKey.objects.filter(product__isnull=True).count() == 1
    assert "This is not an unencrypted PEM private key." in refused.content.decode()
    assert "Running servers sign with it within 30 seconds." in imported.content.decode()
    page = staff_client.get(reverse("admin:licensing_rsakey_change", args=[RsaKey.objects.first().pk]))
    assert "PRIVATE" not in page.content.decode()


def test_a_second_rsa_key_for_the_same_answers_needs_staff_to_say_it_replaces_the_first(staff_client):
    add = reverse("admin:licensing_rsakey_add")
    staff_client.post(add, {"product": "", "private_key_pem": rsa_pem()})
    first = RsaKey.objects.get()

    refused = staff_client.post(add, {"product": "", "private_key_pem": ""})

    assert refused.status_code == 200
    assert "Global RSA key signs these answers now" in refused.content.decode()
    assert list(RsaKey.objects.all()) == [first]

    staff_client.post(add, {"product": "", "private_key_pem": "", "replace": "on"})

    second = RsaKey.objects.exclude(pk=first.pk).get()
    assert services.rsa_key_for(None) == second
    events = AuditEvent.objects.filter(action="rsa_key.created").order_by("id")
    assert [event.changes for event in events] == [
        {"product": [None, None], "replaces": [None, None]},
        {"product": [None, None], "replaces": [None, first.pk]},
    ]
    page = staff_client.get(reverse("admin:licensing_rsakey_changelist")).content.decode()
    newest_first = re.findall(r'<td class="field-signs_now"><img src="[^"]*" alt="(True|False)"', page)
    assert newest_first == ["True", "False"]


def test_a_products_first_rsa_key_replaces_the_global_one_there_only_when_asked(staff_client, actor, tmp_path):
    product = make_product(name="Photon", slug="photon")
    global_key = services.import_rsa_key(private_key_pem=rsa_pem(), actor=actor)
    pem_file = tmp_path / "product.pem"
    pem_file.write_text(rsa_pem())

    refused = staff_client.post(reverse("admin:licensing_rsakey_add"), {"product": product.pk, "private_key_pem": ""})
    with pytest.raises(CommandError, match="Global RSA key signs these answers now"):
        call_command("import_rsa_key", str(pem_file), "--product", "photon", stdout=io.StringIO())

    assert "Global RSA key signs these answers now" in refused.content.decode()
    assert services.rsa_key_for(product) == global_key
    call_command("import_rsa_key", str(pem_file), "--product", "photon", "--replace", stdout=io.StringIO())
    assert services.rsa_key_for(product).product == product
    assert services.rsa_key_for(None) == global_key


def test_the_rsa_key_list_marks_what_signs_in_the_same_number_of_queries_for_any_number_of_keys(staff_client, actor):
    changelist = reverse("admin:licensing_rsakey_changelist")
    services.create_rsa_key(actor=actor)
    with CaptureQueriesContext(connection) as one_key:
        staff_client.get(changelist)
    for product in (make_product(), make_product()):
        services.create_rsa_key(product=product, replace=True, actor=actor)
    services.create_rsa_key(replace=True, actor=actor)

    with CaptureQueriesContext(connection) as four_keys:
        page = staff_client.get(changelist).content.decode()

    assert len(four_keys) == len(one_key)
    newest_first = re.findall(r'<td class="field-signs_now"><img src="[^"]*" alt="(True|False)"', page)
    assert sorted(newest_first) == ["False", "True", "True", "True"]


def test_unlimited_plan_license_with_usage_limit_in_the_api(management_client):
    plan = make_plan(max_activations=None)

    response = management_client.post(
        "/api/v1/licenses", {"product": plan.product.pk, "plan": plan.pk, "limit_usage": 10}, format="json"
    )

    assert response.status_code == 201
    assert (response.json()["usage"], response.json()["limit_usage"]) == (0, 10)


# ---------------------------------------------------------------- moving apps' identifiers here


def test_an_api_key_apps_already_ship_can_be_imported(actor, api_client):
    out = io.StringIO()
    call_command(
        "create_api_key", "--name", "keymint apps", "--import-key", "at_shipped_in_every_app_0123456789", stdout=out
    )

    api_key = services.authenticate_api_key("at_shipped_in_every_app_0123456789")

    assert api_key is not None
    assert api_key.prefix == "at_s"
    api_client.credentials(HTTP_AUTHORIZATION="Bearer at_shipped_in_every_app_0123456789")
    assert api_client.get("/api/v1/products").status_code == 200


@pytest.mark.parametrize("key", ["short", "has a space in it 123", "x" * 256])
def test_an_imported_api_key_must_be_long_and_printable(actor, key):
    with pytest.raises(errors.InvalidInput) as raised:
        services.create_api_key(name="old", key=key, actor=actor)

    assert raised.value.field == "key"


def test_an_api_key_cannot_be_imported_twice(actor):
    services.create_api_key(name="old", key="at_shipped_in_every_app_0123456789", actor=actor)

    with pytest.raises(errors.InvalidInput):
        services.create_api_key(name="again", key="at_shipped_in_every_app_0123456789", actor=actor)


def test_staff_import_an_api_key_in_the_admin(staff_client):
    response = staff_client.post(
        reverse("admin:licensing_apikey_add"),
        {"name": "gkm apps", "key": "2964c3c9-0b5d-4d89-b3ac-4668f30bc492"},
        follow=True,
    )

    assert services.authenticate_api_key("2964c3c9-0b5d-4d89-b3ac-4668f30bc492").name == "gkm apps"
    page = response.content.decode()
    assert "API key imported" in page
    assert "2964c3c9-0b5d-4d89-b3ac-4668f30bc492" not in page


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("short", "An imported API key is 16 to 255 printable characters without spaces."),
        ("abcdefgh ijklmnopq", "An imported API key is 16 to 255 printable characters without spaces."),
        ("  padded-key-0123456789  ", "An imported API key is 16 to 255 printable characters without spaces."),
        (
            "at_shipped_in_every_app_0123456789",
            "This API key already exists. If apps ship with it, restrict it to apps' license calls instead "
            "(admin: API keys, action Restrict to apps).",
        ),
    ],
)
def test_the_admin_shows_why_it_cannot_import_an_api_key_on_the_form(staff_client, actor, key, message):
    services.create_api_key(name="old", key="at_shipped_in_every_app_0123456789", actor=actor)

    response = staff_client.post(reverse("admin:licensing_apikey_add"), {"name": "gkm apps", "key": key})

    assert response.status_code == 200
    assert response.context["adminform"].form.errors["key"] == [message]
    assert list(ApiKey.objects.values_list("name", flat=True)) == ["old"]


def test_a_license_belongs_to_its_customer_by_any_of_their_ids(plan):
    customer = make_customer(external_id="cus_ada")
    license = make_license(plan=plan, customer=customer).license

    for customer_id in ["cus_ada", customer.public_id.hex, str(customer.public_id)]:
        assert services.license_belongs_to(license, customer_id)
    assert not services.license_belongs_to(license, "cus_grace")
    assert not services.license_belongs_to(make_license(plan=plan).license, "cus_ada")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_metadata_refuses_numbers_json_cannot_hold(issued, value):
    with pytest.raises(errors.InvalidInput) as raised:
        activate(issued, "d", metadata={"x": value})

    assert raised.value.field == "metadata"


@pytest.mark.parametrize("increment", [-1, 2**31, True, "1"])
def test_usage_increments_are_bounded(issued, increment):
    with pytest.raises(errors.InvalidInput) as raised:
        services.validate_license(license_key=issued.key, increment_usage=increment)

    assert raised.value.field == "increment_usage"


def test_the_management_api_sets_a_products_polar_organization_id(management_client, product):
    organization_id = "5f0c3b1e-2d4a-4c8e-9b7f-6a1d2e3f4a5b"

    response = management_client.patch(
        f"/api/v1/products/{product.pk}", {"polar_organization_id": organization_id}, format="json"
    )

    assert response.json()["polar_organization_id"] == organization_id
    product.refresh_from_db()
    assert str(product.polar_organization_id) == organization_id
