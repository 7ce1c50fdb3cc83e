"""One more try for an app's license call whose database connection dropped under it."""

from __future__ import annotations

import functools
import logging

from django.db import InterfaceError, OperationalError, connection

logger = logging.getLogger(__name__)


def retry_on_lost_connection(handler):
    """Run a license call again, once, when the database connection dropped under it.

    Each service call is one transaction, so a dropped connection rolled back what that call was
    writing, and a second try on a fresh connection answers the app instead of failing it. An earlier
    call of the same handler may have committed (as may a call whose COMMIT was lost in flight), so a
    handler gets this only if running it again answers as a client's own retry would: a live device
    re-activates without a new slot, a check only reads. Management calls never get it.
    """

    @functools.wraps(handler)
    def wrapper(self, request, *args, **kwargs):
        try:
            return handler(self, request, *args, **kwargs)
        except (OperationalError, InterfaceError):
            if connection.in_atomic_block:
                raise
            logger.warning("Database connection lost during %s; trying again", request.path)
            connection.close()
            return handler(self, request, *args, **kwargs)

    return wrapper
