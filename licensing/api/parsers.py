from __future__ import annotations

import codecs
import json

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from rest_framework import exceptions, parsers, status


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "request_too_large"


def too_large_body_as_api_error(exc: Exception) -> Exception:
    """Django's refusal of a body past DATA_UPLOAD_MAX_MEMORY_SIZE, as the parsers' own 413.

    DRF reads a JSON or form body whole (`request.body`) before a parser sees it, so past Django's
    limit (2.5 MB) Django refuses it first, with an error no face's handler knew: a 500, or Django's
    HTML 400 page. Every face's exception handler passes its error through this first.
    """
    if isinstance(exc, RequestDataTooBig):
        limit = min(settings.API_MAX_BODY_BYTES, settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
        return RequestTooLarge(f"The request body must be at most {limit} bytes.")
    return exc


class LimitedJSONParser(parsers.JSONParser):
    """JSON with a size cap below Django's upload limit, which is sized for the admin's forms."""

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.API_MAX_BODY_BYTES
        body = stream.read(limit + 1) if stream is not None else b""
        if len(body) > limit:
            raise RequestTooLarge(f"The request body must be at most {limit} bytes.")
        # RFC 8259 lets a parser ignore a leading UTF-8 byte order mark, which some Windows clients send.
        body = body.removeprefix(codecs.BOM_UTF8)
        try:
            return json.loads(body.decode((parser_context or {}).get("encoding") or settings.DEFAULT_CHARSET))
        except (ValueError, UnicodeDecodeError, LookupError):
            raise exceptions.ParseError("The request body is not valid JSON.") from None
        except RecursionError:
            raise exceptions.ParseError("The request body is nested too deeply.") from None
