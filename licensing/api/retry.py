"""One more try for an app's license call whose database connection dropped under it."""

from __future__ import annotations

import functools
import logging

from django.db import InterfaceError, OperationalError, connection

from licensing import services

logger = logging.getLogger(__name__)


def retry_on_lost_connection(handler):
    """Run a license call again, once, when the database failed it (a dropped connection, a
    deadlock) before the call had committed a change.

    A dropped connection rolls back the transaction it was in, so a second try on a fresh connection
    answers the app instead of failing it. Once the first try has committed a change (a device
    activated or deactivated, uses counted), a second try would make it again, so the error stands.
    A COMMIT whose acknowledgement was lost in flight cannot be told from one that failed: that call
    may be made twice, as an app's own retry would. Management calls never get this.
    """

    @functools.wraps(handler)
    def wrapper(self, request, *args, **kwargs):
        with services.noting_committed_changes() as changes:
            try:
                return handler(self, request, *args, **kwargs)
            except (OperationalError, InterfaceError) as error:
                if connection.in_atomic_block or changes.any:
                    raise
                # Said as the database said it: a deadlock or a lock timeout is retried the same way.
                failure = next(iter(str(error).splitlines()), type(error).__name__)
        logger.warning("Database error during %s (%s); trying again", request.path, failure)
        connection.close()
        return handler(self, request, *args, **kwargs)

    return wrapper
