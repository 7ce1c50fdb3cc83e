"""The floor the Django code is measured against: the same key lookup with raw psycopg, nothing else.

Served by gunicorn with the same settings as the product: POST /validate {"key": "..."} looks the key up
by its keyed digest (one indexed query) and answers a small JSON body.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os

from psycopg_pool import ConnectionPool

DIGEST_KEY = bytes.fromhex(os.environ["BENCH_DIGEST_KEY"])
pool = ConnectionPool(os.environ["BENCH_DATABASE_DSN"], min_size=2, max_size=8, open=True)

QUERY = "SELECT id, status, expires_at, max_activations FROM licensing_license WHERE key_digest = %s"


def application(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    try:
        key = json.loads(environ["wsgi.input"].read(length))["key"]
    except (ValueError, KeyError, TypeError):
        start_response("400 Bad Request", [("Content-Type", "application/json")])
        return [b'{"error": "bad request"}']
    digest = hmac.new(DIGEST_KEY, key.encode(), hashlib.sha256).hexdigest()
    with pool.connection() as connection:
        row = connection.execute(QUERY, (digest,)).fetchone()
    if row is None:
        start_response("404 Not Found", [("Content-Type", "application/json")])
        return [b'{"valid": false, "code": "NOT_FOUND"}']
    body = json.dumps(
        {"valid": row[1] == "active", "license": {"id": str(row[0]), "status": row[1], "max_activations": row[3]}}
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
