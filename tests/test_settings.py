from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.checks import ERROR, INFO
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from licensing import checks, models, services
from tests.factories import make_license

PROJECT = Path(__file__).resolve().parent.parent


def settings_with(expression: str, **env: str) -> subprocess.CompletedProcess:
    """Import the settings in a process of its own, with `env` added, and print `expression` of them (`s`)."""
    return subprocess.run(
        [sys.executable, "-c", f"import config.settings as s; print({expression})"],
        cwd=PROJECT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
    )


def import_settings(**env: str) -> subprocess.CompletedProcess:
    return settings_with("s.DEBUG, s.DATABASES['default']['ENGINE']", **env)


@pytest.mark.parametrize("missing", ["DJANGO_SECRET_KEY", "LICENSE_KEY_SECRET"])
def test_production_refuses_to_start_without_its_secrets(missing):
    production = {"DJANGO_DEBUG": "false", "DJANGO_SECRET_KEY": "s" * 50, "LICENSE_KEY_SECRET": "l" * 50}

    result = import_settings(**{**production, missing: ""})

    assert result.returncode != 0
    assert f"Set {missing}" in result.stderr


@pytest.mark.parametrize("fallbacks", ["old, same-secret-as-now", "old, ,older"])
def test_a_fallback_that_is_the_secret_itself_or_empty_stops_the_server_from_starting(fallbacks):
    result = import_settings(LICENSE_KEY_SECRET="same-secret-as-now", LICENSE_KEY_SECRET_FALLBACKS=fallbacks)

    assert result.returncode != 0
    assert "LICENSE_KEY_SECRET_FALLBACKS lists other secrets than LICENSE_KEY_SECRET" in result.stderr


@pytest.mark.parametrize(
    "setting, value",
    [("RATE_LIMIT_PER_IP", "10/x"), ("RATE_LIMIT_PER_KEY", "many"), ("VALIDATION_TALLY_SECONDS", "-1")],
)
def test_a_malformed_limit_stops_the_server_from_starting(setting, value):
    result = import_settings(**{setting: value})

    assert result.returncode != 0
    assert setting in result.stderr


@pytest.mark.parametrize(
    "env",
    [
        {"OFFLINE_LICENSE_DEFAULT_TTL": "59"},
        {"OFFLINE_LICENSE_DEFAULT_TTL": "40000000"},
        {"OFFLINE_LICENSE_DEFAULT_TTL": "7200", "OFFLINE_LICENSE_MAX_TTL": "3600"},
    ],
)
def test_a_default_offline_file_life_outside_the_allowed_range_stops_the_server_from_starting(env):
    result = import_settings(**env)

    most = env.get("OFFLINE_LICENSE_MAX_TTL", "31536000")
    assert result.returncode != 0
    assert f"OFFLINE_LICENSE_DEFAULT_TTL must be a whole number from 60 to {most} (OFFLINE_LICENSE_MAX_TTL), not " in (
        result.stderr
    )


def test_a_maximum_offline_file_life_under_30_days_is_the_default_too_when_none_is_set():
    result = settings_with("s.OFFLINE_LICENSE_DEFAULT_TTL.total_seconds()", OFFLINE_LICENSE_MAX_TTL="604800")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "604800.0"


def test_a_maximum_offline_file_life_under_a_minute_stops_the_server_from_starting():
    result = import_settings(OFFLINE_LICENSE_MAX_TTL="59")

    assert result.returncode != 0
    assert "OFFLINE_LICENSE_MAX_TTL must be a whole number no less than 60, not '59'." in result.stderr


@pytest.mark.parametrize(
    ("env", "message"),
    [
        # django-environ read these as 500 seconds, 1 second and a minute; they now name what is wrong.
        ({"BRUTE_FORCE_MAX_DELAY": "500ms"}, "BRUTE_FORCE_MAX_DELAY must be a number from 0 to 10, not '500ms'."),
        ({"VALIDATION_TALLY_SECONDS": "1m"}, "VALIDATION_TALLY_SECONDS must be a number no less than 0, not '1m'."),
        ({"RATE_LIMIT_PER_IP": "10/month"}, "RATE_LIMIT_PER_IP must look like 600/minute"),
        ({"RATE_LIMIT_PER_KEY": "10/ms"}, "RATE_LIMIT_PER_KEY must look like 600/minute"),
        ({"VALIDATION_TALLY_SECONDS": "inf"}, "VALIDATION_TALLY_SECONDS must be a number no less than 0, not 'inf'."),
        ({"EMAIL_URL": "smtp://u:p@host:port"}, "EMAIL_URL must look like smtp+tls://user:password@host:587"),
        # Accepted, these failed every request, or every sign-in mail, once the server ran.
        ({"DJANGO_NUM_PROXIES": "-1"}, "DJANGO_NUM_PROXIES must be a whole number no less than 0, not '-1'."),
        ({"API_MAX_BODY_BYTES": "0"}, "API_MAX_BODY_BYTES must be a whole number no less than 1024, not '0'."),
        ({"EMAIL_TIMEOUT": "0"}, "EMAIL_TIMEOUT must be a whole number no less than 1, not '0'."),
        ({"REDIS_URL": "127.0.0.1:6379"}, "REDIS_URL must look like redis://host:6379/0"),
        # Read as off: HTTPS redirects, secure cookies or the proxy's header, turned off by a typo.
        ({"DJANGO_SECURE_SSL_REDIRECT": "ture"}, "DJANGO_SECURE_SSL_REDIRECT must be true or false"),
        ({"DJANGO_DEBUG": "maybe"}, "DJANGO_DEBUG must be true or false (or yes/no, on/off, 1/0), not 'maybe'."),
        # Failed with a traceback that named no setting.
        ({"DATABASE_URL": "postgres://u:p@host:port/name"}, "DATABASE_URL must look like postgres://user:password@"),
        ({"DJANGO_SECURE_HSTS_SECONDS": "abc"}, "DJANGO_SECURE_HSTS_SECONDS must be a whole number no less than 0"),
        ({"DJANGO_LOG_LEVEL": "verbose"}, "DJANGO_LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL."),
        (
            {"DATABASE_URL": "postgres://x@127.0.0.1:1/x", "DATABASE_POOL_MIN_SIZE": "30"},
            "DATABASE_POOL_MAX_SIZE must be a whole number no less than 30 (DATABASE_POOL_MIN_SIZE), not 20",
        ),
    ],
)
def test_a_setting_that_cannot_be_read_or_is_out_of_range_stops_the_server_naming_it(env, message):
    result = import_settings(**env)

    assert result.returncode != 0
    assert message in result.stderr


def test_secrets_are_read_as_written_even_when_they_start_with_a_dollar_sign():
    result = settings_with(
        "s.SECRET_KEY, s.LICENSE_KEY_SECRET", DJANGO_SECRET_KEY="$3cret", LICENSE_KEY_SECRET="$ecret"
    )
    # django-environ took this for the value of VAULT_SECRET: taken literally, it would open nothing stored.
    named = import_settings(LICENSE_KEY_SECRET="$VAULT_SECRET", VAULT_SECRET="the-real-secret")

    assert result.stdout.strip() == "$3cret $ecret"
    assert "LICENSE_KEY_SECRET names another variable ($VAULT_SECRET): set it to the secret itself." in named.stderr


def test_an_empty_mail_setting_is_the_default():
    assert (
        settings_with("s.EMAIL_BACKEND", EMAIL_URL="").stdout.strip()
        == "django.core.mail.backends.console.EmailBackend"
    )


@pytest.mark.parametrize("value", ["licenses.example.com", "https://licenses.example.com/portal", "ftp://x"])
def test_a_public_url_that_is_no_scheme_and_host_stops_the_server_from_starting(value):
    result = import_settings(PUBLIC_URL=value)

    assert result.returncode != 0
    assert "PUBLIC_URL must look like https://licenses.example.com" in result.stderr


@pytest.mark.parametrize("value", ["support@example.com", "javascript:alert(1)", "https://"])
def test_a_support_url_that_is_no_mail_or_web_address_stops_the_server_from_starting(value):
    result = import_settings(SUPPORT_URL=value)

    assert result.returncode != 0
    assert "SUPPORT_URL must be a mailto: address or an http(s) address." in result.stderr


@pytest.mark.parametrize("value", ["Photon\nSoftware", "Photon\rSoftware", "Photon\tSoftware"])
def test_a_sellers_name_of_more_than_one_line_stops_the_server_from_starting(value):
    result = import_settings(VENDOR_NAME=value)

    assert result.returncode != 0
    assert "VENDOR_NAME must be one line of text" in result.stderr


@pytest.mark.parametrize("threshold", ["", "0"])
def test_prepared_statements_turn_off_with_an_empty_or_zero_threshold(threshold):
    """The README's advice behind PgBouncer in transaction mode; empty stopped the settings loading."""
    result = settings_with(
        "s.DATABASES['default']['OPTIONS']['prepare_threshold']",
        DATABASE_URL="postgres://x@127.0.0.1:1/x",
        DATABASE_PREPARE_THRESHOLD=threshold,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "None"


def test_a_bad_date_for_a_signing_key_is_a_usage_error_on_the_command_line_not_a_traceback():
    command = [sys.executable, "manage.py", "create_signing_key", "--signs-from", "yesterday"]
    result = subprocess.run(command, cwd=PROJECT, capture_output=True, text=True, check=False)

    assert result.returncode == 2
    assert "argument --signs-from: 'yesterday' is not an ISO 8601 date or date-time." in result.stderr
    assert "Traceback" not in result.stderr


def test_rates_in_drfs_forms_are_accepted():
    assert import_settings(RATE_LIMIT_PER_IP="5/second", RATE_LIMIT_PER_KEY="100/min").returncode == 0


PRODUCTION = {
    "DJANGO_DEBUG": "false",
    "DJANGO_SECRET_KEY": "k3y-" + "x7Qp9Lm2" * 8,
    "LICENSE_KEY_SECRET": "another-long-random-secret-Hq4Wz8",
    "DJANGO_ALLOWED_HOSTS": "licenses.example.com",
    "EMAIL_URL": "smtp+tls://user:password@smtp.example.com:587",
    "PUBLIC_URL": "https://licenses.example.com",
    # A database of its own, empty: the developer's (after `make run`) holds keys, and a short
    # LICENSE_KEY_SECRET under stored keys is only noted.
    "DATABASE_URL": "sqlite://:memory:",
}


def deploy_check(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=PROJECT,
        env={**os.environ, **PRODUCTION, **env},
        capture_output=True,
        text=True,
        check=False,
    )


def test_deploy_check_is_clean_with_production_settings():
    result = deploy_check()

    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize(
    ("env", "warning"),
    [
        ({"LICENSE_KEY_SECRET": "x"}, "licensing.W001"),
        ({"EMAIL_URL": "consolemail://"}, "licensing.W002"),
        # Sign-in links are built from the Host header: any host would let anyone choose where they lead.
        ({"DJANGO_ALLOWED_HOSTS": "licenses.example.com,*"}, "licensing.W003"),
        # Without it the links are built from the Host header, whose port the host check ignores.
        ({"PUBLIC_URL": ""}, "licensing.W004"),
        ({"PUBLIC_URL": "http://licenses.example.com"}, "licensing.W005"),
        ({"PUBLIC_URL": "https://licences.example.com"}, "licensing.W006"),
    ],
)
def test_deploy_check_refuses_a_short_license_key_secret_unsent_mail_and_any_host(env, warning):
    result = deploy_check(**env)

    assert result.returncode != 0
    assert warning in result.stderr


@pytest.mark.django_db
def test_a_short_license_key_secret_already_in_use_is_noted_without_stopping_the_server(settings, issued):
    settings.LICENSE_KEY_SECRET = "x"

    [message] = checks.check_license_key_secret(None)

    assert (message.id, message.level) == ("licensing.I001", INFO)


@pytest.mark.django_db
@pytest.mark.parametrize("stored", ["signing key", "license"])
def test_a_license_key_secret_that_does_not_open_the_stored_keys_stops_the_server(settings, plan, stored):
    if stored == "signing key":
        services.current_signing_key()
    else:
        make_license(plan=plan)
    assert checks.check_license_key_secret_opens_the_stored_keys(None) == []
    stored_under = settings.LICENSE_KEY_SECRET

    settings.LICENSE_KEY_SECRET = "another-long-random-secret-typed-wrong"
    [message] = checks.check_license_key_secret_opens_the_stored_keys(None)

    assert (message.id, message.level) == ("licensing.E001", ERROR)
    # During a rotation the secret before, kept as a fallback, still opens them, and is noted.
    settings.LICENSE_KEY_SECRET_FALLBACKS = [stored_under]
    assert checks.check_license_key_secret_opens_the_stored_keys(None) == []
    [note] = checks.check_no_rotation_left_unfinished(None)
    assert (note.id, note.level) == ("licensing.I002", INFO)


def test_a_portal_that_no_one_uses_may_send_no_mail():
    assert deploy_check(EMAIL_URL="dummymail://").returncode == 0


def test_database_url_chooses_the_database():
    result = import_settings(DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres")

    assert result.returncode == 0, result.stderr
    assert "django.db.backends.postgresql" in result.stdout


@pytest.mark.django_db
def test_models_and_migrations_agree():
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


@pytest.mark.django_db(transaction=True)
def test_upgrading_turns_plans_longer_than_100_years_perpetual_and_says_so():
    executor = MigrationExecutor(connection)
    before, after = [("licensing", "0012_api_key_apps_only")], [("licensing", "0013_plan_duration_at_most_100_years")]
    executor.migrate(before)
    old_models = executor.loader.project_state(before).apps
    product = old_models.get_model("licensing", "Product").objects.create(name="Atlas", slug="atlas", public_id="atlas")
    Plan = old_models.get_model("licensing", "Plan")
    centuries = Plan.objects.create(
        product=product, name="Forever", identifier="forever", duration_unit="year", duration_value=200
    )
    decade = Plan.objects.create(
        product=product, name="Decade", identifier="decade", duration_unit="year", duration_value=10
    )

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(after)
    call_command("migrate", verbosity=0)

    plans = dict(models.Plan.objects.values_list("identifier", "duration_unit"))
    assert plans == {"forever": "perpetual", "decade": "year"}
    event = models.AuditEvent.objects.get(target_type="licensing.plan", target_id=str(centuries.pk))
    assert (event.action, event.changes) == (
        "plan.changed",
        {"duration_unit": ["year", "perpetual"], "duration_value": [200, None]},
    )
    assert not models.AuditEvent.objects.filter(target_type="licensing.plan", target_id=str(decade.pk)).exists()


@pytest.mark.django_db
def test_pages_run_only_this_servers_scripts_and_answers_to_apps_carry_no_page_policy(client, api_client, issued):
    policy = "Content-Security-Policy"

    portal = client.get("/portal/")
    admin_login = client.get("/admin/login/")
    docs = client.get("/api/docs/")
    validated = api_client.post("/api/v1/licenses/validate", {"key": issued.key}, format="json")

    assert "script-src 'self';" in portal[policy]
    assert "frame-ancestors 'none'" in portal[policy]
    assert admin_login[policy] == portal[policy]
    # Swagger UI's own <style>: the docs alone allow inline styles, and still no inline script.
    assert "style-src 'self' 'unsafe-inline'" in docs[policy]
    assert "script-src 'self';" in docs[policy]
    assert policy not in validated
    assert client.get("/favicon.ico").status_code == 204


@pytest.mark.django_db
def test_djangos_debug_pages_keep_their_inline_styles_and_the_sites_missing_page_does_not(client, settings):
    missing = client.get("/portal/no-such-page/")
    settings.DEBUG = True
    debug_page = client.get("/portal/no-such-page/")

    assert "Content-Security-Policy" in missing
    assert "Content-Security-Policy" not in debug_page
