"""How the console log looks; named in settings.LOGGING, so it imports nothing of Django."""

from __future__ import annotations

import logging
import re

REQUEST_LOG = "licensing.requests"
DEVELOPMENT_SERVER_LOG = "django.server"

# A portal sign-in link signs its holder in for 15 minutes, and Django's own lines print the path it
# is in: a CSRF refusal of a link posted without the cookie, an error, the development server's.
SIGN_IN_TOKEN = re.compile(r"(/portal/sign-in/)[^/\s\"']+")
# The development server logs whole request lines, whose query string can hold a license key
# (Keymint's GET /key); the request log leaves query strings out for that reason.
QUERY_STRING = re.compile(r"\?[^\s\"]*")


class ConsoleFormatter(logging.Formatter):
    """Plain lines, except the request log's: those are JSON objects already, time included, so a
    log shipper can parse each line whole. No line shows a sign-in link's token or, from the
    development server, a query string."""

    def format(self, record: logging.LogRecord) -> str:
        line = record.getMessage() if record.name == REQUEST_LOG else super().format(record)
        if record.name == DEVELOPMENT_SERVER_LOG:
            line = QUERY_STRING.sub("?…", line)
        return SIGN_IN_TOKEN.sub(r"\1…", line)


class WithoutTraceback(logging.Filter):
    """Drop a record's traceback: for expected refusals whose message says all there is to say."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = None
        record.exc_text = None
        return True
