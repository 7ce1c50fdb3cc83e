"""How the console log looks; named in settings.LOGGING, so it imports nothing of Django."""

from __future__ import annotations

import logging

REQUEST_LOG = "licensing.requests"


class ConsoleFormatter(logging.Formatter):
    """Plain lines, except the request log's: those are JSON objects already, time included, so a
    log shipper can parse each line whole."""

    def format(self, record: logging.LogRecord) -> str:
        if record.name == REQUEST_LOG:
            return record.getMessage()
        return super().format(record)


class WithoutTraceback(logging.Filter):
    """Drop a record's traceback: for expected refusals whose message says all there is to say."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.exc_info = None
        record.exc_text = None
        return True
