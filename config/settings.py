"""Settings for the licensing server, driven by environment variables (and `.env` when present)."""

from __future__ import annotations

import math
import os
import re
from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
# Real environment variables win over the file: environ only fills what is unset.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)


def number(
    name: str,
    default: float,
    *,
    minimum: float,
    maximum: float | None = None,
    whole: bool = True,
    bounded_by: str = "",
) -> float:
    """A number setting, or a start-up error naming it and its range. Not django-environ's parsing,
    which drops whatever is not a digit ("500ms" was 500 seconds) and fails without naming the setting.
    Empty is unset; a default is checked too, as a bound may come from another setting (`bounded_by`)."""
    text = os.environ.get(name, "").strip()
    try:
        value = default if not text else int(text) if whole else float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and minimum <= value <= (math.inf if maximum is None else maximum)):
        kind = "a whole number" if whole else "a number"
        bounds = f"from {minimum} to {maximum}" if maximum is not None else f"no less than {minimum}"
        given = repr(text) if text else f"{default} (its default)"
        raise ImproperlyConfigured(f"{name} must be {kind} {bounds}{bounded_by}, not {given}.")
    return value


FLAG_WORDS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}


def flag(name: str, default: bool) -> bool:
    """An on/off setting, or a start-up error naming it: django-environ reads any other word as off,
    so "ture" turned HTTPS redirects off without a word."""
    text = os.environ.get(name, "").strip().lower()
    if not text:
        return default
    if text not in FLAG_WORDS:
        raise ImproperlyConfigured(f"{name} must be true or false (or yes/no, on/off, 1/0), not {text!r}.")
    return FLAG_WORDS[text]


def secret(name: str) -> str:
    """A secret as written. django-environ read one starting with "$" as another variable's name:
    a setting that relied on that is refused, as taken literally it would no longer open what the
    secret stored."""
    value = os.environ.get(name, "")
    if value.startswith("$") and value[1:] in os.environ:
        raise ImproperlyConfigured(f"{name} names another variable ({value}): set it to the secret itself.")
    return value


DEBUG = flag("DJANGO_DEBUG", False)

SECRET_KEY = secret("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("Set DJANGO_SECRET_KEY (it is required when DJANGO_DEBUG is off).")
    SECRET_KEY = "insecure-development-only-secret-key"

# Keyed digests and encrypted copies of license keys derive from this secret. It is separate from
# DJANGO_SECRET_KEY so that rotating session signing never makes stored license keys unreadable.
LICENSE_KEY_SECRET = secret("LICENSE_KEY_SECRET")
if not LICENSE_KEY_SECRET:
    if not DEBUG:
        raise ImproperlyConfigured("Set LICENSE_KEY_SECRET (it is required when DJANGO_DEBUG is off).")
    LICENSE_KEY_SECRET = "insecure-development-only-license-key-secret"
# Other secrets, only while a rotation runs (see the README): what was stored under them is still
# read, and `manage.py rekey_secrets` stores it again under LICENSE_KEY_SECRET.
_fallbacks = secret("LICENSE_KEY_SECRET_FALLBACKS")
LICENSE_KEY_SECRET_FALLBACKS = [fallback.strip() for fallback in _fallbacks.split(",")] if _fallbacks.strip() else []
if LICENSE_KEY_SECRET in LICENSE_KEY_SECRET_FALLBACKS or "" in LICENSE_KEY_SECRET_FALLBACKS:
    raise ImproperlyConfigured(
        "LICENSE_KEY_SECRET_FALLBACKS lists other secrets than LICENSE_KEY_SECRET, comma-separated, none empty."
    )

# Offline license files: how long one lets a device run without the server, at most and by default.
OFFLINE_LICENSE_MAX_TTL = timedelta(seconds=number("OFFLINE_LICENSE_MAX_TTL", 365 * 24 * 3600, minimum=60))
# Unset, never past the maximum: lowering only the maximum must not stop the server. Checked here,
# not at the first checkout: a default outside the range would refuse every file an app or customer
# asks for without a ttl, blaming a ttl they never sent.
_most_seconds = int(OFFLINE_LICENSE_MAX_TTL.total_seconds())
OFFLINE_LICENSE_DEFAULT_TTL = timedelta(
    seconds=number(
        "OFFLINE_LICENSE_DEFAULT_TTL",
        min(30 * 24 * 3600, _most_seconds),
        minimum=60,
        maximum=_most_seconds,
        bounded_by=" (OFFLINE_LICENSE_MAX_TTL)",
    )
)
# Validation counts and devices' last-seen times are written this often (0: with each validation).
VALIDATION_TALLY_SECONDS = number("VALIDATION_TALLY_SECONDS", 1.0, minimum=0, whole=False)

ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
# Where customers reach the server, e.g. https://licenses.example.com: portal sign-in links lead
# there. Without it (development) a link is built from the request's Host header, whose port
# ALLOWED_HOSTS does not check, so anyone could have a customer mailed links to another port.
PUBLIC_URL = env.str("PUBLIC_URL", default="").rstrip("/")
if PUBLIC_URL and not re.fullmatch(r"https?://[^/?#@\s]+", PUBLIC_URL):
    raise ImproperlyConfigured("PUBLIC_URL must look like https://licenses.example.com, with no path.")
# Where the portal sends customers for help (a suspended or expired license, a device change refused):
# a mailto: address or a web page. Empty: the portal shows no contact.
SUPPORT_URL = env.str("SUPPORT_URL", default="")
if SUPPORT_URL and not re.fullmatch(r"(https?://|mailto:)\S+", SUPPORT_URL):
    raise ImproperlyConfigured("SUPPORT_URL must be a mailto: address or an http(s) address.")
# The seller's name, as its customers know it: the portal's pages and sign-in mails carry it, so a
# customer can tell whose licenses these are (and a tab or a mail from whom). Empty: none shown.
VENDOR_NAME = env.str("VENDOR_NAME", default="").strip()
if re.search(r"[\x00-\x1f\x7f]", VENDOR_NAME):
    # A line break would be refused in the mails' subject, and every sign-in mail with it.
    raise ImproperlyConfigured("VENDOR_NAME must be one line of text, with no control characters.")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "licensing",
    "portal",
]

MIDDLEWARE = [
    "licensing.middleware.HealthCheckMiddleware",
    "licensing.middleware.RequestLogMiddleware",
    "licensing.middleware.HttpsRedirectKeepsMethodMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "licensing.middleware.ContentSecurityPolicyMiddleware",
    # Static files (admin, API docs, portal stylesheet) straight from the app server in production.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "portal.context_processors.support",
            ],
        },
    },
]

WSGI_APPLICATION = "config.wsgi.application"

try:
    _database = env.db_url_config(os.environ.get("DATABASE_URL", "").strip() or f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
except (ValueError, KeyError, ImproperlyConfigured):
    _database = {}
if "ENGINE" not in _database:
    raise ImproperlyConfigured("DATABASE_URL must look like postgres://user:password@host:5432/name or sqlite:///path.")
DATABASES = {"default": _database}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            # SQLite ignores row locks: IMMEDIATE makes every transaction take the write lock at
            # BEGIN, so concurrent activations queue behind each other instead of racing.
            "transaction_mode": "IMMEDIATE",
            "timeout": number("SQLITE_BUSY_TIMEOUT", 20, minimum=0),
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
    # The in-memory test database shares one cache between threads, where a lock fails at once
    # instead of waiting; a file lets the concurrency tests behave as production does.
    database_file = Path(DATABASES["default"]["NAME"])
    DATABASES["default"]["TEST"] = {"NAME": str(database_file.with_name(f"test-{database_file.name}"))}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "pool": {
                "min_size": (_pool_min := number("DATABASE_POOL_MIN_SIZE", 2, minimum=0)),
                "max_size": number(
                    "DATABASE_POOL_MAX_SIZE", 20, minimum=max(1, _pool_min), bounded_by=" (DATABASE_POOL_MIN_SIZE)"
                ),
                "timeout": number("DATABASE_POOL_TIMEOUT", 10, minimum=1),
            },
            # Server-side prepared statements after a query's 5th run: planning the license look-up
            # costs more than running it. Django turns them off for PgBouncer in transaction mode;
            # set DATABASE_PREPARE_THRESHOLD= (empty: 0 here, not the default) or 0 behind such a pooler.
            "prepare_threshold": number(
                "DATABASE_PREPARE_THRESHOLD", 0 if "DATABASE_PREPARE_THRESHOLD" in os.environ else 5, minimum=0
            )
            or None,
            "server_side_binding": True,
        }
    )

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["licensing.api.authentication.ApiKeyAuthentication"],
    # The strictest: a view that names no permission is never open to a key made for apps.
    "DEFAULT_PERMISSION_CLASSES": ["licensing.api.authentication.ManagementPermission"],
    "DEFAULT_PARSER_CLASSES": ["licensing.api.parsers.LimitedJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "licensing.api.negotiation.ContentNegotiation",
    "DEFAULT_SCHEMA_CLASS": "licensing.api.schema.LicensingAutoSchema",
    "EXCEPTION_HANDLER": "licensing.api.exceptions.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
    # ASCII output escapes anything, so no stored string can make an answer fail to render.
    "UNICODE_JSON": False,
    # Proxies in front of the app whose X-Forwarded-For to trust for the client IP of rate limits;
    # 0 uses the connection's address, so a client cannot pick its own IP.
    "NUM_PROXIES": number("DJANGO_NUM_PROXIES", 0, minimum=0),
}
# Rate limits of the public license calls (native and every vendor dialect), as "N/second|minute|
# hour|day"; empty turns one off. Counters are shared through the cache below.
LICENSE_RATE_LIMITS = {
    "per_ip": env.str("RATE_LIMIT_PER_IP", default="600/minute"),
    "per_key": env.str("RATE_LIMIT_PER_KEY", default="120/minute"),
}
for _scope, _rate in LICENSE_RATE_LIMITS.items():
    # Checked here, not on the first license call, which would otherwise fail on every request.
    # DRF's periods: only their first letter is read, so anything else ("month") would be misread.
    if _rate and not re.fullmatch(r"[1-9][0-9]*/(s|m|h|d|(sec|second|min|minute|hour|day)s?)", _rate):
        raise ImproperlyConfigured(
            f"RATE_LIMIT_{_scope.upper()} must look like 600/minute (a count from 1 per second, minute, hour or day), "
            "or be empty for no limit."
        )
# Brute-force guard of the same calls and the management API: once a client IP has named
# `slow_after` unknown keys (license keys, or the API keys vendor faces and the management API
# take) within a `window` (seconds), each of its calls waits a little longer, up to `max_delay`
# seconds; after `block_after` it is refused (429) until the window ends. 0 turns a stage off.
BRUTE_FORCE = {
    "slow_after": number("BRUTE_FORCE_SLOW_AFTER", 10, minimum=0),
    "block_after": number("BRUTE_FORCE_BLOCK_AFTER", 30, minimum=0),
    "window": number("BRUTE_FORCE_WINDOW", 15 * 60, minimum=1),
    # A waiting call holds a server thread: a long wait would let a few guessers hold them all.
    "max_delay": number("BRUTE_FORCE_MAX_DELAY", 1.0, minimum=0, maximum=10, whole=False),
}
# Shared by every process and host: a database table by default (no extra service to run), Redis
# when REDIS_URL is set.
if REDIS_URL := os.environ.get("REDIS_URL", "").strip():
    # Checked here: a malformed one would otherwise fail every license call, not the start.
    if not re.fullmatch(r"(rediss?|unix)://\S+", REDIS_URL):
        raise ImproperlyConfigured("REDIS_URL must look like redis://host:6379/0 (or rediss://, unix://).")
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            # Out of reach, it is given up on quickly: the license calls then go on without limits
            # (licensing.api.throttling), rather than each wait for the system's connect timeout.
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
else:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.db.DatabaseCache",
            "LOCATION": "licensing_cache",
            # Django's database cache counts its rows on every write and deletes expired ones only
            # once it holds more than MAX_ENTRIES: a bound of 20,000 keeps that count cheap (a few
            # ms) while holding every counter of 20,000 clients and keys a minute. Django's default
            # of 300 would cull live counters, letting a caller reset its own. Busier: use Redis.
            "OPTIONS": {"MAX_ENTRIES": 20_000},
        }
    }

# Under a kilobyte, a license call with a long key and a device's metadata would be refused as too large.
API_MAX_BODY_BYTES = number("API_MAX_BODY_BYTES", 64 * 1024, minimum=1024)

SPECTACULAR_SETTINGS = {
    "TITLE": "Licensing server API",
    "DESCRIPTION": (
        "License calls for apps (activate, validate, deactivate, checkout), signed with Ed25519, and the "
        "management API for the vendor's own systems (Bearer API key)."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # OpenAPI 3.1 says "an object or null" as oneOf [object, null]; 3.0's nullable beside a $ref does
    # not allow null, so strict validators refused answers without an owner, plan or device.
    "OAS_VERSION": "3.1.0",
    # Who made a change (the audit trail) and who freed a device: one set of kinds, named once.
    "ENUM_NAME_OVERRIDES": {"ActorKindEnum": "licensing.models.ActorKind"},
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
FORMAT_MODULE_PATH = ["config.formats"]

# E-mail (the portal's sign-in links). The default prints messages on the console, so `make run`
# users can sign in as a demo customer; set EMAIL_URL=smtp+tls://user:password@host:587 in production.
try:
    vars().update(env.email_url_config(os.environ.get("EMAIL_URL", "").strip() or "consolemail://"))
except (ValueError, KeyError, ImproperlyConfigured) as error:
    raise ImproperlyConfigured(f"EMAIL_URL must look like smtp+tls://user:password@host:587 ({error}).") from None
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="licenses@localhost")
# Seconds an SMTP server may take to answer: a sign-in link waits that long on a silent one, in
# a queue of its own (portal.views.after_answers), before its failure is logged.
EMAIL_TIMEOUT = number("EMAIL_TIMEOUT", 10, minimum=1)

# Server-side: a message may carry a secret shown once (a new API or license key), and the
# default cookie storage would put it, signed but readable, in the browser's cookies.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
# Collected files are named by their content (portal.3f2a1b9c0d4e.css), so browsers may keep them
# for good and an upgrade's stylesheet is never mixed with the last one's page. Pages then need the
# collected files' list (`make serve` collects them) unless debug is on.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

LOG_LEVEL = os.environ.get("DJANGO_LOG_LEVEL", "").strip().upper() or "INFO"
if LOG_LEVEL not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
    raise ImproperlyConfigured("DJANGO_LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "console": {
            "()": "licensing.log_format.ConsoleFormatter",
            "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
        }
    },
    "filters": {"refusals_as_warnings": {"()": "licensing.log_format.RefusalsAsWarnings"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "console", "filters": ["refusals_as_warnings"]}
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Django's own console handler would print every line a second time through the root logger.
        "django": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False},
        # The development server's access lines too, so they pass through the console's redaction.
        "django.server": {"handlers": ["console"], "level": "INFO", "propagate": False},
        # Each 4xx would be a second line beside its request line; apps send unknown keys all day.
        "django.request": {"handlers": ["console"], "level": "ERROR", "propagate": False},
    },
}

# HTTPS everywhere outside development. Behind a proxy that terminates TLS, gunicorn marks the
# proxy's requests as HTTPS (FORWARDED_ALLOW_IPS); DJANGO_SECURE_PROXY_SSL_HEADER=true makes Django
# trust X-Forwarded-Proto from whoever connects, for a proxy whose address gunicorn cannot know.
SECURE_SSL_REDIRECT = flag("DJANGO_SECURE_SSL_REDIRECT", not DEBUG)
SESSION_COOKIE_SECURE = flag("DJANGO_SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_HSTS_SECONDS = number("DJANGO_SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = flag("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
SECURE_HSTS_PRELOAD = flag("DJANGO_SECURE_HSTS_PRELOAD", False)
if flag("DJANGO_SECURE_PROXY_SSL_HEADER", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])
# The admin's forms get the admin's page, the portal's the portal's (templates/403_csrf.html).
CSRF_FAILURE_VIEW = "portal.views.csrf_failure"
# Pages run only this server's own script and style files (licensing.middleware). data: images are
# the admin's and the API docs' icons; forms post only here, and no other site may frame a page.
CONTENT_SECURITY_POLICY = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    "object-src": "'none'",
    "base-uri": "'none'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}
# Joining the browsers' HSTS preload list binds the whole domain for months: that is the
# operator's decision (DJANGO_SECURE_HSTS_PRELOAD), not a default to nag about.
SILENCED_SYSTEM_CHECKS = ["security.W021"]
