"""`make bench`: throughput and latency of the license calls against a raw-psycopg baseline, same run.

Starts the product as production runs it (gunicorn, DJANGO_DEBUG off, PostgreSQL with the connection
pool) and the baseline WSGI app under the same gunicorn settings, both on 127.0.0.1, seeds a data set,
drives each scenario with wrk for a fixed time, checks the activation limit under load, and prints a
Markdown table (also written as JSON under bench/results/). It exits non-zero on any error answer or
over-activation; speed is reported, never asserted.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PYTHON = sys.executable
ADMIN_DSN = os.environ.get("BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
DATABASE = "licensing_bench"
APP_PORT, BASELINE_PORT = 8321, 8322
WARM_UP_SECONDS = 2
GUNICORN = [
    *("--workers", "2", "--worker-class", "gthread", "--threads", "8", "--log-level", "warning"),
    "--no-control-socket",
]
JSON = "Content-Type: application/json"

# (name, request file, port, extra headers, the scenario it is measured against, minimum ratio, p99 ceiling ms)
SCENARIOS = [
    ("baseline (raw psycopg)", "baseline", BASELINE_PORT, [JSON], None, None, None),
    ("native validate", "validate", APP_PORT, [JSON], "baseline (raw psycopg)", 0.5, 50),
    ("native activate", "activate", APP_PORT, [JSON], "baseline (raw psycopg)", 0.4, 100),
    ("Polar validate", "polar", APP_PORT, [JSON], "native validate", 0.8, None),
    ("Kelviq validate", "kelviq", APP_PORT, [JSON, "AUTH"], "native validate", 0.8, None),
    ("Keymint activate (live host)", "keymint", APP_PORT, [JSON, "AUTH"], "native activate", 0.8, None),
    (
        "GetKeyManager verify",
        "getkeymanager",
        APP_PORT,
        ["Content-Type: application/x-www-form-urlencoded"],
        "native validate",
        0.8,
        None,
    ),
    ("portal license page", "portal", APP_PORT, ["COOKIE"], None, None, None),
]


def app_environment() -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_DEBUG": "false",
        "DJANGO_SECRET_KEY": "bench-only-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",
        "LICENSE_KEY_SECRET": "bench-only-license-key-secret",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:5432/{DATABASE}",
        "DJANGO_SECURE_SSL_REDIRECT": "false",
        "DJANGO_SECURE_COOKIES": "false",
        "DJANGO_SECURE_HSTS_SECONDS": "0",
        "DJANGO_LOG_LEVEL": "ERROR",
        # The load comes from one address at thousands of calls a second: measure, do not refuse.
        "RATE_LIMIT_PER_IP": "",
        "RATE_LIMIT_PER_KEY": "",
        "BRUTE_FORCE_SLOW_AFTER": "0",
        "BRUTE_FORCE_BLOCK_AFTER": "0",
    }


def recreate_database() -> None:
    with psycopg.connect(ADMIN_DSN, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{DATABASE}"')


def settle_database() -> None:
    """Vacuum, analyze and checkpoint the seeded database, so the first scenario measured does not
    share the machine with autovacuum and a checkpoint catching up on the seed's writes."""
    with psycopg.connect(make_conninfo(ADMIN_DSN, dbname=DATABASE), autocommit=True) as connection:
        connection.execute("VACUUM (ANALYZE)")
        connection.execute("CHECKPOINT")


def digest_key_hex(env: dict[str, str]) -> str:
    """The key the product's license-key digests use, so the baseline looks keys up the same way."""
    code = (
        "import django; django.setup(); from django.conf import settings; from licensing import keys; "
        "print(keys._derived_key(settings.LICENSE_KEY_SECRET, b'digest').hex())"
    )
    return subprocess.run(
        [PYTHON, "-c", code],
        env={**env, "DJANGO_SETTINGS_MODULE": "config.settings"},
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def start_server(app: str, port: int, env: dict[str, str], chdir: Path) -> subprocess.Popen:
    gunicorn = str(Path(PYTHON).with_name("gunicorn"))
    process = subprocess.Popen(
        [gunicorn, app, "--bind", f"127.0.0.1:{port}", "--chdir", str(chdir), *GUNICORN], env=env, cwd=ROOT
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1)
            return process
        except urllib.error.HTTPError:
            return process
        except OSError:
            time.sleep(0.2)
    process.terminate()
    raise SystemExit(f"{app} did not start on port {port}")


def run_wrk(port: int, requests_file: Path, headers: list[str], duration: float, connections: int) -> dict:
    header_args = [arg for header in headers for arg in ("-H", header)]
    output = subprocess.run(
        [
            "wrk",
            "-t",
            "2",
            "-c",
            str(connections),
            "-d",
            f"{int(duration)}s",
            "--timeout",
            "5s",
            "-s",
            str(BENCH / "load.lua"),
            *header_args,
            f"http://127.0.0.1:{port}",
            "--",
            str(requests_file),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    line = next(line for line in output.splitlines() if line.startswith("WRK_JSON "))
    figures = json.loads(line.removeprefix("WRK_JSON "))
    figures["rps"] = figures["requests"] / (figures["duration_us"] / 1e6)
    return figures


def check_first_answer(name: str, port: int, requests_file: Path, headers: list[str]) -> None:
    """Stop unless the scenario's first request is answered 2xx: wrk counts only 4xx and 5xx as
    errors, so a redirect (a portal session no longer signed in, say) would be measured as the page."""
    method, path, body = (requests_file.read_text().splitlines()[0].split("\t") + [""])[:3]
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request(method, path, body.encode() or None, dict(header.split(": ", 1) for header in headers))
    status = connection.getresponse().status
    connection.close()
    if not 200 <= status < 300:
        raise SystemExit(f"{name}: {method} {path} answers {status}, not 2xx; nothing would be measured")


def race_check(seed: dict, work: Path, headers: list[str], duration: float, connections: int) -> dict:
    """50 activations of new devices on a license with limit 3, while the validate load runs."""
    load = threading.Thread(
        target=run_wrk, args=(APP_PORT, work / "validate.txt", headers, duration, connections), daemon=True
    )
    load.start()
    time.sleep(min(1.0, duration / 3))
    barrier = threading.Barrier(50)
    statuses: list[int] = []

    def activate(n: int) -> None:
        body = json.dumps({"key": seed["race_key"], "fingerprint": f"race-{n}"}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{APP_PORT}/api/v1/licenses/activate", body, {"Content-Type": "application/json"}
        )
        barrier.wait()
        try:
            statuses.append(urllib.request.urlopen(request, timeout=30).status)
        except urllib.error.HTTPError as error:
            statuses.append(error.code)

    threads = [threading.Thread(target=activate, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    load.join()
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:5432/{DATABASE}") as connection:
        live = connection.execute(
            "SELECT count(*) FROM licensing_activation WHERE license_id = %s AND deactivated_at IS NULL",
            (seed["race_license_id"],),
        ).fetchone()[0]
    return {
        "created": statuses.count(201),
        "refused": statuses.count(403),
        "other": len(statuses) - statuses.count(201) - statuses.count(403),
        "live": live,
        "ok": live == 3 and statuses.count(201) == 3 and statuses.count(403) == 47,
    }


def machine_facts() -> dict:
    with psycopg.connect(ADMIN_DSN) as connection:
        postgres = connection.execute("SHOW server_version").fetchone()[0]
    return {
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "postgresql": postgres,
        "platform": platform.platform(),
        "wrk": subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split("\n")[0].strip(),
    }


def summary(rounds: list[dict]) -> dict:
    """One scenario's rounds as one row: the median rate and latencies, the worst maximum, every error."""
    return {
        "rps": statistics.median(r["rps"] for r in rounds),
        "p50_us": statistics.median(r["p50_us"] for r in rounds),
        "p99_us": statistics.median(r["p99_us"] for r in rounds),
        "max_us": max(r["max_us"] for r in rounds),
        "non_2xx": sum(r["non_2xx"] for r in rounds),
        "socket_errors": sum(r["socket_errors"] for r in rounds),
        "rounds": rounds,
    }


def ratio_to(scenario: dict, reference: dict) -> float:
    """The median over rounds of the scenario's rate to its reference's in the same round.

    On a shared two-core machine the whole machine's speed drifts by a fifth within minutes; a round
    measures a scenario and its reference minutes apart at most, so pairing them cancels the drift
    that a ratio of overall medians would keep.
    """
    return statistics.median(
        mine["rps"] / theirs["rps"] for mine, theirs in zip(scenario["rounds"], reference["rounds"], strict=True)
    )


def table(results: dict, race: dict) -> str:
    lines = [
        "| scenario | req/s | p50 ms | p99 ms | max ms | non-2xx | ratio | target |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for name, _file, _port, _headers, against, minimum, ceiling in SCENARIOS:
        r = results[name]
        ratio = ratio_to(r, results[against]) if against else None
        target = []
        if minimum:
            met = ratio >= minimum and (ceiling is None or r["p99_us"] / 1000 < ceiling)
            target.append(("met" if met else "missed") + f": ≥{minimum}× {against}")
            if ceiling:
                target.append(f"p99 < {ceiling} ms")
        lines.append(
            f"| {name} | {r['rps']:.0f} | {r['p50_us'] / 1000:.2f} | {r['p99_us'] / 1000:.2f} | "
            f"{r['max_us'] / 1000:.1f} | {r['non_2xx'] + r['socket_errors']} | "
            f"{f'{ratio:.2f}×' if ratio else '—'} | {', '.join(target) or '—'} |"
        )
    lines.append(
        f"| race: 50 activations, limit 3, under validate load | {race['created']} created | "
        f"{race['refused']} refused | {race['other']} other | live {race['live']} | | | "
        f"{'exactly 3 live' if race['ok'] else 'OVER-ACTIVATION OR ERRORS'} |"
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="Seconds per scenario and round.")
    parser.add_argument(
        "--rounds", type=int, default=3, help="Times every scenario runs, in turn; the table shows the medians."
    )
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--licenses", type=int, default=10_000)
    parser.add_argument("--activations-per-license", type=int, default=5)
    parser.add_argument("--audit-events", type=int, default=3_000)
    args = parser.parse_args()
    if args.rounds < 1 or args.duration < 1:
        parser.error("--rounds and --duration must be at least 1")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")

    env = app_environment()
    recreate_database()
    subprocess.run([PYTHON, "manage.py", "migrate", "--noinput", "-v0"], env=env, cwd=ROOT, check=True)
    # As `make serve` does: WhiteNoise then serves the portal's stylesheet from what it indexed at start.
    subprocess.run([PYTHON, "manage.py", "collectstatic", "--noinput", "-v0"], env=env, cwd=ROOT, check=True)
    work = Path(tempfile.mkdtemp(prefix="bench-"))
    print(f"Seeding {args.licenses} licenses, {args.licenses * args.activations_per_license} activations...")
    subprocess.run(
        [
            PYTHON,
            str(BENCH / "seed.py"),
            str(work),
            str(args.licenses),
            str(args.activations_per_license),
            str(args.audit_events),
        ],
        env=env,
        cwd=ROOT,
        check=True,
    )
    seed = json.loads((work / "seed.json").read_text())
    settle_database()
    baseline_env = {
        **env,
        "BENCH_DIGEST_KEY": digest_key_hex(env),
        "BENCH_DATABASE_DSN": f"postgresql://postgres@127.0.0.1:5432/{DATABASE}",
    }
    servers = [
        start_server("config.wsgi:application", APP_PORT, env, ROOT),
        start_server("baseline:application", BASELINE_PORT, baseline_env, BENCH),
    ]
    try:
        # Unrecorded: every server thread opens its database connection before anything is measured.
        run_wrk(BASELINE_PORT, work / "baseline.txt", [JSON], WARM_UP_SECONDS, args.connections)
        run_wrk(APP_PORT, work / "validate.txt", [JSON], WARM_UP_SECONDS, args.connections)
        placeholders = {
            "AUTH": f"Authorization: Bearer {seed['api_key']}",
            "COOKIE": f"Cookie: sessionid={seed['session_cookie']}",
        }
        scenarios = [
            (name, port, work / f"{request_file}.txt", [placeholders.get(header, header) for header in headers])
            for name, request_file, port, headers, *_ in SCENARIOS
        ]
        for name, port, requests_file, headers in scenarios:
            check_first_answer(name, port, requests_file, headers)
        rounds: dict[str, list[dict]] = {name: [] for name, *_ in SCENARIOS}
        for round_number in range(1, args.rounds + 1):
            print(f"Round {round_number} of {args.rounds}:")
            for name, port, requests_file, headers in scenarios:
                print(f"  {name}...", flush=True)
                rounds[name].append(run_wrk(port, requests_file, headers, args.duration, args.connections))
        results = {name: summary(figures) for name, figures in rounds.items()}
        race = race_check(seed, work, [JSON], max(args.duration, 3), args.connections)
    finally:
        for server in servers:
            server.terminate()
            server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)

    report = table(results, race)
    print()
    print(report)
    facts = machine_facts()
    print(
        f"\n{facts['cores']} cores, Python {facts['python']}, PostgreSQL {facts['postgresql']}, "
        f"{args.duration:g} s per scenario, {args.connections} connections, "
        f"median of {args.rounds} round{'s' if args.rounds > 1 else ''}."
    )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    results_file = BENCH / "results" / f"{stamp}.json"
    results_file.write_text(
        json.dumps(
            {"machine": facts, "settings": vars(args), "scenarios": results, "race": race, "table": report}, indent=2
        )
    )
    print(f"Figures written to {results_file.relative_to(ROOT)}")
    errors = sum(r["non_2xx"] + r["socket_errors"] for r in results.values())
    if errors or not race["ok"]:
        print(f"FAILED: {errors} error answers; race {'ok' if race['ok'] else 'FAILED'}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
