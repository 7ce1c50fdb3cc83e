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
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


class ConsoleFormatter(logging.Formatter):
    """Plain lines, except the request log's: those are JSON objects already, time included, so a
    log shipper can parse each line whole. No line shows a sign-in link's token or, from the
    development server, a query string."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        # Messages quote what clients sent (a Host header, a query parameter): a line break in one
        # would start a forged line, a NUL would make the log binary to grep.
        record.message = CONTROL_CHARACTER.sub(lambda match: f"\\x{ord(match.group()):02x}", record.message)
        return super().formatMessage(record)

    def format(self, record: logging.LogRecord) -> str:
        line = record.getMessage() if record.name == REQUEST_LOG else super().format(record)
        if record.name == DEVELOPMENT_SERVER_LOG:
            line = QUERY_STRING.sub("?…", line)
        return SIGN_IN_TOKEN.sub(r"\1…", line)


class RefusalsAsWarnings(logging.Filter):
    """Django's `django.security.*` records are requests it refused with a 400 (an unknown Host, too
    many form fields, a tampered admin URL), which scanners send all day: a warning line each, not
    an error with a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("django.security."):
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        return True
