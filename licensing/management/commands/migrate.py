"""Django's migrate, run by one host at a time: `make serve` migrates on every host it starts on."""

from contextlib import suppress

from django.core.management.commands import migrate
from django.db import DatabaseError, connections

from licensing import services

MIGRATE_LOCK = services.advisory_lock_id("migrate")


class Command(migrate.Command):
    help = migrate.Command.help + " On PostgreSQL, a second migrate waits for the first to finish."

    def handle(self, *args, **options):
        connection = connections[options["database"]]
        # SQLite serves one host, and its migrations take the database's write lock; --plan and
        # --check only read, and readiness probes call them.
        if connection.vendor != "postgresql" or options["plan"] or options["check_unapplied"]:
            return super().handle(*args, **options)
        # Held by the session, as each migration commits on its own: two hosts starting together
        # would otherwise both apply the first migration missing, and one would fail on the
        # constraint or table the other had just made. A session lock needs the session: through
        # PgBouncer's transaction pooling, migrate must use a direct connection (README).
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [MIGRATE_LOCK])
        try:
            return super().handle(*args, **options)
        finally:
            # A lost connection took the lock with its session.
            with suppress(DatabaseError), connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [MIGRATE_LOCK])
