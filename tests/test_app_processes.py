"""Several app processes on one PostgreSQL database keep the activation limit, even when one dies mid-storm.

Each test starts two real gunicorn servers with production settings on pytest-django's test
database, as two hosts behind a load balancer: they share nothing but the database. What only a
real server shows is tested here too (a body sent in chunks).
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.conf import settings
from django.db import connection

from licensing.models import Activation, AuditEvent
from tests.factories import make_license, make_plan
from tests.test_concurrency import run_at_once

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="in production several app processes share PostgreSQL"
    ),
]

ACTIVATE = "/api/v1/licenses/activate"
VALIDATE = "/api/v1/licenses/validate"
START_SECONDS = 30
STOP_SECONDS = 10
# What a client sees when the process it talks to dies: refused, reset, or an answer cut short.
LOST = (ConnectionError, http.client.HTTPException)
# Tags the servers' database sessions, so teardown can wait for exactly those to end.
SERVER_APPLICATION_NAME = f"test-app-server-{os.getpid()}"


@dataclasses.dataclass(frozen=True)
class Answer:
    status: int
    body: bytes

    @property
    def data(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclasses.dataclass
class AppServer:
    process: subprocess.Popen
    port: int
    log: Path

    def call(self, path: str, body: dict[str, Any] | bytes, *, timeout: float = 30, chunked: bool = False) -> Answer:
        client = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            if chunked:
                # In pieces and with no Content-Length, as HTTP clients send a body they stream.
                pieces = [data[start : start + 7] for start in range(0, len(data), 7)]
                client.request("POST", path, iter(pieces), {"Content-Type": "application/json"}, encode_chunked=True)
            else:
                client.request("POST", path, data, {"Content-Type": "application/json"})
            response = client.getresponse()
            return Answer(response.status, response.read())
        finally:
            client.close()

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()

    def output(self) -> str:
        return f"--- server on port {self.port} ---\n{self.log.read_text(errors='replace')}"


def database_url(database: dict[str, Any]) -> str:
    password = f":{quote(database['PASSWORD'], safe='')}" if database["PASSWORD"] else ""
    port = f":{database['PORT']}" if database["PORT"] else ""
    return (
        f"postgres://{quote(database['USER'], safe='')}{password}@{quote(database['HOST'], safe='')}{port}/"
        f"{quote(database['NAME'], safe='')}"
    )


def server_environment() -> dict[str, str]:
    """Production settings (as bench/run.py gives them), on the test database, sharing this test's secrets."""
    return {
        **os.environ,
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "LICENSE_KEY_SECRET": settings.LICENSE_KEY_SECRET,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": database_url(connection.settings_dict),
        "DJANGO_SECURE_SSL_REDIRECT": "false",
        "DJANGO_SECURE_COOKIES": "false",
        "DJANGO_SECURE_HSTS_SECONDS": "0",
        "DJANGO_LOG_LEVEL": "ERROR",
        # As pyproject.toml's filterwarnings: the tests never collect static files.
        "PYTHONWARNINGS": "ignore:No directory at:UserWarning",
        # One address fires the whole storm: the limit under test is the license's, not the rate limit.
        "RATE_LIMIT_PER_IP": "",
        "RATE_LIMIT_PER_KEY": "",
        "PGAPPNAME": SERVER_APPLICATION_NAME,
    }


def start_app_server(env: dict[str, str], log_dir: Path) -> AppServer:
    # The socket is bound here and handed over, so no other program can take the port before
    # gunicorn binds it; the parent's copy is closed, so a killed server refuses connections.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        log = log_dir / f"server-{port}.log"
        with log.open("wb") as log_file:
            process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "gunicorn", "config.wsgi:application"),
                    *("--bind", f"fd://{listener.fileno()}", "--workers", "1", "--worker-class", "gthread"),
                    *("--threads", "4", "--log-level", "warning", "--no-control-socket"),
                ],
                cwd=settings.BASE_DIR,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                pass_fds=[listener.fileno()],
                # Its own process group, so a kill takes the master and its worker together.
                process_group=0,
            )
    return AppServer(process, port, log)


def wait_until_answering(server: AppServer) -> None:
    """Wait for an answer that needed the database (an unknown key's 404), or fail with the server's output."""
    deadline = time.monotonic() + START_SECONDS
    while (code := server.process.poll()) is None and time.monotonic() < deadline:
        try:
            answer = server.call(VALIDATE, {"key": "no-such-key"}, timeout=2)
        except (*LOST, TimeoutError):
            time.sleep(0.1)
            continue
        assert answer.status == 404, server.output()
        return
    reason = f"exited with code {code}" if code is not None else f"did not answer within {START_SECONDS} s"
    pytest.fail(f"The app server on port {server.port} {reason}:\n{server.output()}")


def wait_for_server_sessions_to_end() -> None:
    """pytest-django flushes, then drops, the test database: neither may meet a server's session."""
    deadline = time.monotonic() + STOP_SECONDS
    with connection.cursor() as cursor:
        while True:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [SERVER_APPLICATION_NAME]
            )
            if cursor.fetchone()[0] == 0:
                return
            if time.monotonic() > deadline:
                pytest.fail(f"The app servers' database sessions outlived them by {STOP_SECONDS} s")
            time.sleep(0.1)


@pytest.fixture
def app_servers(transactional_db, tmp_path):
    """Two app processes, each one gunicorn worker of four threads, both on the test database."""
    env = server_environment()
    servers: list[AppServer] = []
    try:
        for _ in range(2):
            servers.append(start_app_server(env, tmp_path))
        for server in servers:
            wait_until_answering(server)
        yield servers
    finally:
        for server in servers:
            server.stop()
        wait_for_server_sessions_to_end()


def logs(servers: list[AppServer]) -> str:
    return "\n".join(server.output() for server in servers)


def kinds(outcomes: list[Answer | Exception]) -> Counter:
    return Counter(outcome.status if isinstance(outcome, Answer) else type(outcome).__name__ for outcome in outcomes)


def assert_refused_at_the_limit(answers: list[Answer], *, limit: int) -> None:
    errors = [answer.data["error"] for answer in answers if answer.status == 403]
    assert {(error["code"], error["limit"], error["used"]) for error in errors} == {
        ("activation_limit_reached", limit, limit)
    }


def live_fingerprints(license_id: Any) -> set[str]:
    return set(Activation.objects.filter(license_id=license_id).live().values_list("fingerprint", flat=True))


def assert_every_activation_is_audited_once(license_id: Any) -> None:
    activations = Activation.objects.filter(license_id=license_id)
    events = AuditEvent.objects.filter(license_id=license_id, action="activation.created")
    assert sorted(event.target_id for event in events) == sorted(str(activation.pk) for activation in activations)


def test_two_app_processes_on_one_database_stop_exactly_at_the_limit(app_servers):
    issued = make_license(plan=make_plan(max_activations=3))

    answers = run_at_once(
        40, lambda n: app_servers[n % 2].call(ACTIVATE, {"key": issued.key, "fingerprint": f"device-{n}"})
    )

    assert kinds(answers) == {201: 3, 403: 37}, logs(app_servers)
    assert_refused_at_the_limit(answers, limit=3)
    created = {answer.data["activation"]["fingerprint"] for answer in answers if answer.status == 201}
    assert live_fingerprints(issued.license.pk) == created
    assert_every_activation_is_audited_once(issued.license.pk)
    for server in app_servers:
        validation = server.call(VALIDATE, {"key": issued.key, "fingerprint": sorted(created)[0]}).data
        assert (validation["code"], validation["license"]["activations_used"]) == ("VALID", 3)
        assert validation["license"]["activations_remaining"] == 0
    # Each server holds its validation's tally until its next write; a clean stop writes it.
    for server in app_servers:
        server.stop()
    issued.license.refresh_from_db()
    assert issued.license.validation_count == 2


def test_an_app_process_killed_mid_storm_leaves_no_half_written_activation(app_servers):
    survivor, victim = app_servers
    issued = make_license(plan=make_plan(max_activations=3))
    victim_busy = threading.Event()

    def activate(n: int) -> Answer:
        server = app_servers[n % 2]
        try:
            return server.call(ACTIVATE, {"key": issued.key, "fingerprint": f"device-{n}"})
        finally:
            if server is victim:
                victim_busy.set()

    def kill_the_victim_while_it_serves() -> None:
        # Its first answer means it is working through the storm, with more requests in flight.
        victim_busy.wait(timeout=30)
        victim.kill()

    killer = threading.Thread(target=kill_the_victim_while_it_serves)
    killer.start()
    outcomes = run_at_once(40, activate)
    killer.join(timeout=30)

    assert set(kinds(outcomes[0::2])) <= {201, 403}, logs(app_servers)
    assert all(isinstance(outcome, LOST) or outcome.status in {201, 403} for outcome in outcomes[1::2]), kinds(outcomes)
    lost = [n for n, outcome in enumerate(outcomes) if isinstance(outcome, LOST)]
    assert lost, "the victim answered every request before it was killed"
    answers = [outcome for outcome in outcomes if isinstance(outcome, Answer)]
    assert_refused_at_the_limit(answers, limit=3)

    # A client whose server died tries again on another: it learns whether its device got a slot.
    retries = {n: survivor.call(ACTIVATE, {"key": issued.key, "fingerprint": f"device-{n}"}) for n in lost}
    assert set(kinds(list(retries.values()))) <= {200, 403}, logs(app_servers)
    assert_refused_at_the_limit(list(retries.values()), limit=3)

    live = live_fingerprints(issued.license.pk)
    answered_created = {answer.data["activation"]["fingerprint"] for answer in answers if answer.status == 201}
    created_before_the_kill = {f"device-{n}" for n, retry in retries.items() if retry.status == 200}
    assert live == answered_created | created_before_the_kill
    assert len(live) == 3
    assert_every_activation_is_audited_once(issued.license.pk)

    validation = survivor.call(VALIDATE, {"key": issued.key, "fingerprint": sorted(live)[0]}).data
    assert (validation["code"], validation["license"]["activations_used"]) == ("VALID", 3)
    refusal = survivor.call(ACTIVATE, {"key": issued.key, "fingerprint": "one-more-device"})
    assert refusal.status == 403
    assert_refused_at_the_limit([refusal], limit=3)


def test_a_body_sent_in_chunks_is_read_like_one_with_a_length(app_servers):
    issued = make_license()
    server = app_servers[0]

    activated = server.call(ACTIVATE, {"key": issued.key, "fingerprint": "streamed-body"}, chunked=True)
    too_large = server.call(VALIDATE, b'{"key": "' + b"x" * settings.API_MAX_BODY_BYTES + b'"}', chunked=True)

    assert activated.status == 201, activated.body
    assert live_fingerprints(issued.license.pk) == {"streamed-body"}
    assert too_large.status == 413
    assert too_large.data["error"]["code"] == "request_too_large"
