"""Settings of the Switchboard benchmark site: no auth, the Redis layer, PostgreSQL for /db/.

The harness passes the bind address, the Redis URL (a db of its own, flushed after each
run; a ``redis+cluster://`` seed for the cluster systems) and the key prefix through the
environment. ``switchboard run`` ignores the Redis layer and uses the in-memory one, by
design.
"""

import json
import os

from benchapp.database import databases

SECRET_KEY = "bench-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["switchboard", "benchapp"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "switchboard_site.urls"
DATABASES = databases()  # only GET /db/ (http-db) touches it
USE_TZ = True
ASGI_APPLICATION = "switchboard_site.routing.application"

SWITCHBOARD = {
    "LAYER": {
        "BACKEND": "redis",
        "CONFIG": {
            "hosts": [os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")],
            "prefix": os.environ.get("BENCH_REDIS_PREFIX", "bench-switchboard:"),
            # bench/faults.py sets layer options of its own (a byte capacity) here.
            **json.loads(os.environ.get("BENCH_LAYER_OPTIONS", "{}")),
        },
    },
    "PROTOCOLS": {
        "http": {
            "bind": [os.environ.get("BENCH_BIND", "127.0.0.1:8765")],
            # The parsers uvicorn picks by itself on the Channels side (its "auto"), so both
            # sides frame HTTP and WebSocket with the same code.
            "http": "httptools",
            "ws": "websockets",
            # Systems with several gateways (switchboard-split-2g...) share the port.
            "reuse_port": os.environ.get("BENCH_REUSE_PORT") == "1",
        }
    },
    # BENCH_LOCAL_DELIVERY=0 measures the group path through the gateway (specs/layer.md,
    # Local delivery) for comparison; the harness leaves it on, the default.
    # BENCH_DJANGO_THREADS sizes the worker's pool for sync Django views (docs/http.md,
    # Django views); the harness leaves the default.
    "WORKER": {
        "local_delivery": os.environ.get("BENCH_LOCAL_DELIVERY", "1") != "0",
        "django_threads": int(os.environ.get("BENCH_DJANGO_THREADS", "8")),
    },
}

# bench/console.py: the operator's console mounted on the gateway's port (off otherwise).
if os.environ.get("BENCH_CONSOLE_MOUNT"):
    SWITCHBOARD["CONSOLE"] = {"mount": os.environ["BENCH_CONSOLE_MOUNT"], "interval": 1.0}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    # bench/faults.py reads the processes' INFO lines (a worker listening, a worker lost).
    "root": {"handlers": ["console"], "level": os.environ.get("BENCH_LOG_LEVEL", "WARNING")},
}
