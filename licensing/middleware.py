"""The health check, and one structured log line per request, so operators can follow traffic
without ever logging a secret."""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime

from django.conf import settings
from django.core.exceptions import MiddlewareNotUsed
from django.db import DatabaseError, connection
from django.http import JsonResponse

from licensing.addresses import client_ip
from licensing.log_format import REQUEST_LOG

logger = logging.getLogger(REQUEST_LOG)
health_logger = logging.getLogger(__name__)

# URL parts that are secrets themselves: the portal's one-time sign-in token.
SECRET_URL_ARGUMENTS = frozenset({"token"})

HEALTH_CHECK_PATH = "/healthz"


class HealthCheckMiddleware:
    """`GET /healthz`: 200 when the app can reach its database, 503 when it cannot.

    Answered first, before the host check and the HTTPS redirect, because load balancers and
    container probes call by IP address over plain HTTP; and left out of the request log, which
    they would fill.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.path_info != HEALTH_CHECK_PATH or request.method not in ("GET", "HEAD"):
            return self.get_response(request)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except DatabaseError as error:
            # Probes call every few seconds: one line each, not a traceback.
            health_logger.warning("Health check: the database does not answer (%s)", error)
            return JsonResponse({"status": "database unavailable"}, status=503)
        return JsonResponse({"status": "ok"})


class RequestLogMiddleware:
    """Log method, path, status and duration of every request as one JSON line.

    The query string is left out on purpose: some vendor APIs (Keymint's GET /key) put the license
    key there; secrets in the path itself are masked. The native license calls add the license's id, never its key.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        if not logger.isEnabledFor(logging.INFO):
            return response
        line = {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "client": client_ip(request),
            "method": request.method,
            "path": logged_path(request),
            "status": response.status_code,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        }
        license_id = getattr(response, "license_id", None)
        if license_id:
            line["license_id"] = license_id
        logger.info(json.dumps(line))
        return response


class HttpsRedirectKeepsMethodMiddleware:
    """Turns the security middleware's redirect of a plain-HTTP call to HTTPS into a 308, which
    has the call resent as it was sent.

    Its 301 makes HTTP clients send a POST again as a GET, so an app given its server's address as
    http:// would be told its activation was a "method not allowed".
    """

    def __init__(self, get_response):
        if not settings.SECURE_SSL_REDIRECT:
            # Nothing to turn: off the chain every request goes through.
            raise MiddlewareNotUsed
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if (
            response.status_code == 301
            and request.method not in ("GET", "HEAD")
            and not request.is_secure()
            and response.get("Location", "").startswith("https://")
        ):
            response.status_code = 308
        return response


class ContentSecurityPolicyMiddleware:
    """Gives every page (the portal, the admin, the API docs) the CONTENT_SECURITY_POLICY header,
    so a script slipped into one by a flaw runs nowhere: pages load scripts and styles only from
    this server's files.

    Only HTML: the license calls' JSON answers are no page to protect, and they are the hot path. A
    view that needs more (the API docs' inline styles) sets its own header, which is left as it is.
    """

    def __init__(self, get_response):
        self.get_response = get_response
        self.policy = content_security_policy()

    def __call__(self, request):
        response = self.get_response(request)
        if response.get("Content-Type", "").startswith("text/html") and not _is_debug_page(response):
            response.headers.setdefault("Content-Security-Policy", self.policy)
        return response


def _is_debug_page(response) -> bool:
    # Django's own error pages under DJANGO_DEBUG (a 400 for an unknown host, 404, 500) style and
    # script themselves inline; in development every error page is let be.
    return settings.DEBUG and response.status_code >= 400


def content_security_policy(**changes: str) -> str:
    """The CONTENT_SECURITY_POLICY header, with `changes` (style_src="...") in place of its directives."""
    changed = {name.replace("_", "-"): value for name, value in changes.items()}
    directives = {**settings.CONTENT_SECURITY_POLICY, **changed}
    return "; ".join(f"{name} {value}" for name, value in directives.items())


def logged_path(request) -> str:
    path = request.path
    match = getattr(request, "resolver_match", None)
    for name, value in match.kwargs.items() if match else ():
        if name in SECRET_URL_ARGUMENTS and value:
            path = path.replace(str(value), "…")
    return path
