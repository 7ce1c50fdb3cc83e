import io
import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")


class ChunkedRequestBody:
    """Hands Django a request body sent in chunks, with no Content-Length, which it would read as
    empty: an app whose HTTP client streams its JSON would be told its license key is missing.

    Only where the server has ended the body for the app (gunicorn says so with
    `wsgi.input_terminated`); a body over the size limits is cut one byte past them, so Django and
    the API's parser still refuse it as too large.
    """

    def __init__(self, application):
        self.application = application

    def __call__(self, environ, start_response):
        if (
            environ.get("wsgi.input_terminated")
            and not environ.get("CONTENT_LENGTH")
            and "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        ):
            limit = max(settings.API_MAX_BODY_BYTES, settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 0)
            body = environ["wsgi.input"].read(limit + 1)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
        return self.application(environ, start_response)


application = ChunkedRequestBody(get_wsgi_application())
