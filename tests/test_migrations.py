"""Upgrading a running installation: migrate from several hosts, servers of the release before, going back."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import psycopg
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.db.migrations.recorder import MigrationRecorder
from django.utils import timezone

from licensing import lookups, services
from licensing.management.commands.migrate import MIGRATE_LOCK
from licensing.models import Activation, ApiKey, AuditEvent, SignInLink
from tests.factories import activate, make_license

pytestmark = pytest.mark.django_db(transaction=True)


def latest_migration() -> str:
    return MigrationRecorder.Migration.objects.filter(app="licensing").latest("id").name


@pytest.fixture
def migrated_forward_again():
    """Tests here take the schema back; whatever happens, the next test gets the whole schema."""
    latest = latest_migration()
    yield
    call_command("migrate", "licensing", latest, verbosity=0)


@pytest.fixture
def migrate_running():
    """Another host's migrate, holding the lock (a connection of its own)."""
    params = connection.get_connection_params()
    running = psycopg.connect(
        **{name: params[name] for name in ("dbname", "user", "password", "host", "port") if name in params}
    )
    running.execute("SELECT pg_advisory_lock(%s)", [MIGRATE_LOCK])
    yield running
    running.close()


def migrate_in_a_thread(outcome: list, **options) -> threading.Thread:
    def another_host():
        try:
            call_command("migrate", verbosity=0, **options)
            outcome.append("migrated")
        except Exception as error:
            outcome.append(error)
        finally:
            connection.close()

    thread = threading.Thread(target=another_host)
    thread.start()
    return thread


postgresql_only = pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite serves one host")


@postgresql_only
def test_a_second_migrate_waits_for_the_one_running(migrate_running):
    running = migrate_running
    outcome = []
    second = migrate_in_a_thread(outcome)
    try:
        deadline = time.monotonic() + 20
        waiting = 0
        while not waiting and time.monotonic() < deadline:
            waiting = running.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND wait_event = 'advisory' "
                "AND datname = current_database()"
            ).fetchone()[0]
            time.sleep(0.05)
        assert waiting == 1
        assert outcome == []
    finally:
        running.close()
        second.join(60)

    assert outcome == ["migrated"]


@postgresql_only
@pytest.mark.parametrize("option", ["check_unapplied", "plan"])
def test_migrate_check_and_plan_do_not_wait_for_a_running_migrate(migrate_running, option):
    outcome = []

    reader = migrate_in_a_thread(outcome, **{option: True})
    reader.join(20)

    assert outcome == ["migrated"]


def as_the_release_before(record, missing_field: str) -> None:
    """Insert the record as a server of the release before `missing_field` was added would: without it."""
    fields = [
        field for field in type(record)._meta.concrete_fields if field.name != missing_field and not field.primary_key
    ]
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    values = [field.get_db_prep_save(field.pre_save(record, add=True), connection) for field in fields]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {connection.ops.quote_name(type(record)._meta.db_table)} ({columns}) "
            f"VALUES ({', '.join(['%s'] * len(fields))})",
            values,
        )


def test_servers_of_the_release_before_keep_working_while_the_next_one_migrates():
    as_the_release_before(ApiKey(name="made by the old server", prefix="lic_abc", key_digest="a" * 64), "apps_only")
    as_the_release_before(
        SignInLink(email="ada@example.com", token_digest="b" * 64, created_at=timezone.now()), "client_network"
    )

    assert ApiKey.objects.get(name="made by the old server").apps_only is False
    assert SignInLink.objects.get(email="ada@example.com").client_network == ""


def test_the_insert_built_once_keeps_a_value_whose_column_has_a_database_default():
    # lookups.insert writes activations and audit events; the next column they gain gets a database
    # default, as these did.
    lookups.insert(ApiKey(name="shipped in the app", prefix="lic_abc", key_digest="c" * 64, apps_only=True))
    lookups.insert(SignInLink(email="ada@example.com", token_digest="d" * 64, client_network="203.0.113.0"))
    lookups.insert(SignInLink(email="grace@example.com", token_digest="e" * 64))

    assert ApiKey.objects.get(name="shipped in the app").apps_only is True
    assert SignInLink.objects.get(email="ada@example.com").client_network == "203.0.113.0"
    assert SignInLink.objects.get(email="grace@example.com").client_network == ""


def test_going_back_before_apps_only_keys_is_refused_while_one_works(migrated_forward_again):
    key = services.create_api_key(name="shipped in the app", apps_only=True, actor=services.Actor.system("tests"))

    with pytest.raises(CommandError, match="1 API key\\(s\\) are for apps only.*Revoke them"):
        call_command("migrate", "licensing", "0011", verbosity=0)

    assert latest_migration() == "0012_api_key_apps_only"
    # Only the columns of 0012's schema.
    assert ApiKey.objects.filter(pk=key.api_key.pk).values_list("apps_only", flat=True).get() is True


def test_going_back_before_apps_only_keys_is_allowed_once_they_are_revoked(migrated_forward_again):
    key = services.create_api_key(name="shipped in the app", apps_only=True, actor=services.Actor.system("tests"))
    services.revoke_api_key(api_key=key.api_key, actor=services.Actor.system("tests"))

    call_command("migrate", "licensing", "0011", verbosity=0)

    assert latest_migration() == "0011_sign_in_client_network"


def test_going_back_before_keys_expire_is_refused_while_one_with_an_expiry_is_unrevoked(migrated_forward_again):
    next_year = timezone.now() + timedelta(days=365)
    key = services.create_api_key(name="billing", expires_at=next_year, actor=services.Actor.system("tests"))
    ApiKey.objects.filter(pk=key.api_key.pk).update(expires_at=timezone.now() - timedelta(days=1))

    with pytest.raises(
        CommandError, match=rf"1 API key\(s\) have an expiry.*work for good: billing \({key.api_key.prefix}…\)\. Revoke"
    ):
        call_command("migrate", "licensing", "0024", verbosity=0)

    assert latest_migration() == "0025_api_key_expiry"
    assert services.authenticate_api_key(key.key) is None


def test_going_back_before_keys_expire_is_allowed_once_they_are_revoked(migrated_forward_again):
    next_year = timezone.now() + timedelta(days=365)
    key = services.create_api_key(name="billing", expires_at=next_year, actor=services.Actor.system("tests"))
    services.revoke_api_key(api_key=key.api_key, actor=services.Actor.system("tests"))

    call_command("migrate", "licensing", "0024", verbosity=0)

    assert latest_migration() == "0024_sign_in_link_database_clock"


def test_upgrading_makes_every_device_first_seen_when_it_was_activated(migrated_forward_again):
    activation = activate(make_license(), "device-1").activation
    stamped_later = activation.last_seen_at + timedelta(microseconds=120)
    call_command("migrate", "licensing", "0013", verbosity=0)
    Activation.objects.filter(pk=activation.pk).update(created_at=stamped_later)

    call_command("migrate", "licensing", verbosity=0)

    activation.refresh_from_db()
    assert activation.created_at == activation.last_seen_at


def test_upgrading_trims_the_fingerprints_the_dialects_stored_as_sent(migrated_forward_again):
    issued = make_license(max_activations=5)
    alone, gone, kept, twin, spaces = (activate(issued, name).activation for name in ["a", "b", "c", "d", "e"])
    call_command("migrate", "licensing", "0017", verbosity=0)
    Activation.objects.filter(pk=alone.pk).update(fingerprint=" a\n")
    Activation.objects.filter(pk=gone.pk).update(fingerprint="b\t", deactivated_at=timezone.now())
    Activation.objects.filter(pk=twin.pk).update(fingerprint="c ")
    Activation.objects.filter(pk=spaces.pk).update(fingerprint="   ")

    call_command("migrate", "licensing", verbosity=0)

    stored = {record.pk: Activation.objects.get(pk=record.pk) for record in (alone, gone, kept, twin, spaces)}
    assert [stored[record.pk].fingerprint for record in (alone, gone, spaces)] == ["a", "b", "   "]
    # The same device live twice keeps one slot; the other is freed, in the audit trail.
    assert (stored[kept.pk].is_live, stored[twin.pk].is_live) == (True, False)
    event = AuditEvent.objects.get(action="activation.deactivated", target_id=str(twin.pk))
    assert (event.actor_display, event.license_id) == ("migration 0018", issued.license.pk)


def test_upgrading_keeps_revoking_with_staff_who_could_and_makes_a_support_group(migrated_forward_again):
    call_command("migrate", "licensing", "0019", verbosity=0)
    Group.objects.filter(name="Support").delete()
    may_change_licenses = Permission.objects.get(content_type__app_label="licensing", codename="change_license")
    lead = get_user_model().objects.create_user("lead", is_staff=True)
    lead.user_permissions.add(may_change_licenses)
    managers = Group.objects.create(name="Managers")
    managers.permissions.add(may_change_licenses)
    get_user_model().objects.create_user("manager", is_staff=True).groups.add(managers)

    call_command("migrate", "licensing", verbosity=0)

    assert get_user_model().objects.get(username="lead").has_perm("licensing.revoke_license")
    assert get_user_model().objects.get(username="manager").has_perm("licensing.revoke_license")
    support = Group.objects.get(name="Support")
    may = set(support.permissions.values_list("codename", flat=True))
    assert {"change_license", "add_license", "change_customer", "view_auditevent"} <= may
    assert not may & {"revoke_license", "delete_license", "view_apikey", "change_apikey", "view_signingkey"}
    event = AuditEvent.objects.get(action="group.created", target_id=str(support.pk))
    assert event.actor_display == "migration 0020"


def test_upgrading_leaves_a_support_group_of_the_vendors_own_as_it_is(migrated_forward_again):
    call_command("migrate", "licensing", "0019", verbosity=0)
    Group.objects.filter(name="Support").delete()
    Group.objects.create(name="Support")

    call_command("migrate", "licensing", verbosity=0)

    assert not Group.objects.get(name="Support").permissions.exists()
