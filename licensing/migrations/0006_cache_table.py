from django.core.management import call_command
from django.db import migrations


def create_cache_table(apps, schema_editor):
    # The rate-limit counters live in Django's database cache unless Redis is configured; the
    # command creates its table only for database caches, and only once.
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = [("licensing", "0005_sign_in_links")]

    operations = [migrations.RunPython(create_cache_table, migrations.RunPython.noop)]
