"""Django's migrate, run by one host at a time: `make serve` migrates on every host it starts on."""

from django.core.management.commands import migrate
from django.db import connections

from licensing import services

MIGRATE_LOCK = services.advisory_lock_id("migrate")


class Command(migrate.Command):
    help = migrate.Command.help + " On PostgreSQL, a second migrate waits for the first to finish."

    def handle(self, *args, **options):
        connection = connections[options["database"]]
        if connection.vendor != "postgresql":
            # SQLite serves one host, and its migrations take the database's write lock.
            return super().handle(*args, **options)
        # Held by the session, as each migration commits on its own: two hosts starting together
        # would otherwise both apply the first migration missing, and one would fail on the
        # constraint or table the other had just made.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", [MIGRATE_LOCK])
        try:
            return super().handle(*args, **options)
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [MIGRATE_LOCK])
