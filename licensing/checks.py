"""`manage.py check --deploy` warnings for what Django's own deploy checks do not know about."""

from __future__ import annotations

from urllib.parse import urlsplit

from cryptography.fernet import InvalidToken
from django.conf import settings
from django.core.checks import Error, Info, Tags, Warning, register
from django.db import DatabaseError
from django.http.request import validate_host

MIN_LICENSE_KEY_SECRET_LENGTH = 32
# Back ends that do not send: they print or store each message, sign-in links included.
NON_SENDING_EMAIL_BACKENDS = {
    "django.core.mail.backends.console.EmailBackend",
    "django.core.mail.backends.filebased.EmailBackend",
    "django.core.mail.backends.locmem.EmailBackend",
}


@register(Tags.security, deploy=True)
def check_license_key_secret(app_configs, **kwargs):
    if len(settings.LICENSE_KEY_SECRET) >= MIN_LICENSE_KEY_SECRET_LENGTH:
        return []
    message = f"LICENSE_KEY_SECRET is shorter than {MIN_LICENSE_KEY_SECRET_LENGTH} characters."
    if _keys_are_stored():
        # Changing it now would make every stored key unreadable: say so, but let the server start.
        return [
            Info(
                message,
                hint="Keys are stored under it: replace it only by a rotation (README: Rotating LICENSE_KEY_SECRET).",
                id="licensing.I001",
            )
        ]
    return [
        Warning(
            message,
            hint="It keys every license-key digest and encrypts the private signing keys, and once a key is stored "
            "it changes only by a rotation. Set a long random value now, e.g. the output of "
            "python -c 'import secrets; print(secrets.token_urlsafe(50))'.",
            id="licensing.W001",
        )
    ]


@register(Tags.security, deploy=True)
def check_license_key_secret_opens_the_stored_keys(app_configs, **kwargs):
    from licensing import keys
    from licensing.models import License, SigningKey

    try:
        signing_key = SigningKey.objects.order_by("pk").first()
        license = None if signing_key else License.objects.order_by("pk").first()
        if signing_key:
            keys.decrypt_private_key(signing_key.private_key_encrypted)
        elif license:
            keys.decrypt_license_key(license.key_encrypted)
    except DatabaseError:
        return []
    except InvalidToken:
        return [
            Error(
                "LICENSE_KEY_SECRET does not open the keys stored in the database: it is not the secret they "
                "were stored under.",
                hint="Set the LICENSE_KEY_SECRET this database was set up with (or, during a rotation, keep the one "
                "before in LICENSE_KEY_SECRET_FALLBACKS), the same on every host: under "
                "another one every license call fails.",
                id="licensing.E001",
            )
        ]
    return []


@register(Tags.security, deploy=True)
def check_no_rotation_left_unfinished(app_configs, **kwargs):
    if not settings.LICENSE_KEY_SECRET_FALLBACKS:
        return []
    # Info, not a warning: `make serve` must start while a rotation runs.
    return [
        Info(
            "LICENSE_KEY_SECRET_FALLBACKS is set: a secret besides LICENSE_KEY_SECRET still opens stored keys.",
            hint="Finish the rotation (README: Rotating LICENSE_KEY_SECRET): run rekey_secrets, and remove it once "
            "each API key it lists was used since every host had the new secret, or was revoked.",
            id="licensing.I002",
        )
    ]


def _keys_are_stored() -> bool:
    from licensing.models import License, SigningKey

    try:
        return License.objects.exists() or SigningKey.objects.exists()
    except DatabaseError:
        # No tables yet: `make serve` checks before it migrates a new database.
        return False


@register(Tags.security, deploy=True)
def check_email_is_sent(app_configs, **kwargs):
    if settings.EMAIL_BACKEND not in NON_SENDING_EMAIL_BACKENDS:
        return []
    return [
        Warning(
            "E-mail is not sent: portal sign-in links, which sign a customer in, are written to the log or to files.",
            hint="Set EMAIL_URL=smtp+tls://user:password@host:587, or EMAIL_URL=dummymail:// if no customer "
            "uses the portal.",
            id="licensing.W002",
        )
    ]


@register(Tags.security, deploy=True)
def check_hosts_are_named(app_configs, **kwargs):
    if "*" not in settings.ALLOWED_HOSTS:
        return []
    return [
        Warning(
            "DJANGO_ALLOWED_HOSTS is *: the server answers to any host name.",
            hint="Name each host, e.g. DJANGO_ALLOWED_HOSTS=licenses.example.com: Django's protection from "
            "forged Host headers rests on the list. Load balancers' checks of /healthz need no host name.",
            id="licensing.W003",
        )
    ]


@register(Tags.security, deploy=True)
def check_public_url_is_set(app_configs, **kwargs):
    if settings.PUBLIC_URL:
        return _public_url_problems(urlsplit(settings.PUBLIC_URL))
    return [
        Warning(
            "PUBLIC_URL is not set: portal sign-in links are built from the request's Host header.",
            hint="The host check ignores the port, so anyone could have a customer mailed links to a port of "
            "their choosing, and use up the customer's three links a quarter hour. Set "
            "PUBLIC_URL=https://licenses.example.com.",
            id="licensing.W004",
        )
    ]


def _public_url_problems(url) -> list[Warning]:
    problems = []
    if url.scheme != "https":
        problems.append(
            Warning(
                "PUBLIC_URL is not https: the portal's sign-in links, which sign a customer in, would travel in clear.",
                hint="Set PUBLIC_URL=https://licenses.example.com.",
                id="licensing.W005",
            )
        )
    if not validate_host(url.hostname or "", settings.ALLOWED_HOSTS):
        problems.append(
            Warning(
                f"PUBLIC_URL's host {url.hostname!r} is not in DJANGO_ALLOWED_HOSTS: the sign-in links mailed to "
                "customers would be refused.",
                hint="Name the same host in both (a typo in one is the usual cause).",
                id="licensing.W006",
            )
        )
    return problems
