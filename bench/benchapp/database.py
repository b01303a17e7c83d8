"""``DATABASES`` for the benchmark sites: PostgreSQL on 127.0.0.1:5432, database ``test``.

Every system gets what its own deployment guide recommends, chosen by the harness through
``BENCH_DB_CONNECTIONS``:

- ``persistent`` (``CONN_MAX_AGE = 60``): servers whose threads live across requests,
  gunicorn's and Switchboard's worker pool, keep one connection per thread, the usual
  WSGI set-up.
- ``pool``: servers that run each sync request in a new thread (Django's ASGI handler,
  so uvicorn + Django and Channels) cannot keep a connection in a thread; Django's docs
  tell them to disable persistent connections and use the backend's pool instead, which
  is psycopg's (``OPTIONS["pool"]``, Django >= 5.1, psycopg-pool).
"""

from __future__ import annotations

import os
from typing import Any

#: Our own table name, so the shared ``test`` database's other users are never touched.
TABLE = "switchboard_bench_greeting"
ROWS = 10_000


def databases() -> dict[str, dict[str, Any]]:
    mode = os.environ.get("BENCH_DB_CONNECTIONS", "persistent")
    default: dict[str, Any] = {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": os.environ.get("BENCH_PG_HOST", "127.0.0.1"),
        "PORT": os.environ.get("BENCH_PG_PORT", "5432"),
        "NAME": os.environ.get("BENCH_PG_NAME", "test"),
        "USER": os.environ.get("BENCH_PG_USER", "postgres"),
        "CONN_MAX_AGE": 60,
    }
    if mode == "pool":
        default["CONN_MAX_AGE"] = 0
        default["OPTIONS"] = {"pool": {"min_size": 2, "max_size": 16, "timeout": 10}}
    elif mode != "persistent":
        raise ValueError(f"BENCH_DB_CONNECTIONS must be persistent or pool, got {mode!r}")
    return {"default": default}
