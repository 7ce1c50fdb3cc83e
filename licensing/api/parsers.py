from __future__ import annotations

import codecs
import json

from django.conf import settings
from rest_framework import exceptions, parsers, status


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "The request body is too large."
    default_code = "request_too_large"


class LimitedJSONParser(parsers.JSONParser):
    """JSON with a size cap: DRF reads the stream directly, past Django's upload limits."""

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
