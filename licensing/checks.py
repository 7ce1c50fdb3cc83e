"""`manage.py check --deploy` warnings for what Django's own deploy checks do not know about."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Tags, Warning, register

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
    return [
        Warning(
            f"LICENSE_KEY_SECRET is shorter than {MIN_LICENSE_KEY_SECRET_LENGTH} characters.",
            hint="It keys every license-key digest and encrypts the private signing keys. Set a long random "
            "value before the first key is stored (it cannot be changed afterwards), e.g. the output of "
            "python -c 'import secrets; print(secrets.token_urlsafe(50))'.",
            id="licensing.W001",
        )
    ]


@register(Tags.security, deploy=True)
def check_email_is_sent(app_configs, **kwargs):
    if settings.EMAIL_BACKEND not in NON_SENDING_EMAIL_BACKENDS:
        return []
    return [
        Warning(
            "E-mail is not sent: portal sign-in links, which sign a customer in, are written to the log.",
            hint="Set EMAIL_URL=smtp+tls://user:password@host:587, or EMAIL_URL=dummymail:// if no customer "
            "uses the portal.",
            id="licensing.W002",
        )
    ]
