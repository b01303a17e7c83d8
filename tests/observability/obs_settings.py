"""Settings for the observability tests' OS processes: HTTP + WebSocket, Redis or memory.

Environment (set by conftest.py): OBS_HTTP_BIND; OBS_REDIS_URL and OBS_REDIS_PREFIX in
split mode (else the in-memory layer); OBS_METRICS, JSON for SWITCHBOARD["METRICS"];
OBS_REDIS_PW and OBS_UPSTREAM_KEY, the secrets (named unlike secrets on purpose, so that
their redaction must come from the configuration, not from the environment).

The Redis URL carries a password (Redis accepts any for its password-less default user)
and this module logs the whole configuration carelessly, as a project might while
debugging: the log tests check that neither the password, the auth token nor the
SECRET_KEY reaches the output.
"""

import json
import logging
import os

SECRET_KEY = "obs-secret-key-do-not-log-7f3a"
DEBUG = False
INSTALLED_APPS: list[str] = []
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
ASGI_APPLICATION = "obs_routing.application"

REDIS_PASSWORD = os.environ.get("OBS_REDIS_PW", "hunter2-redis-pw-5b1f")
_redis_url = os.environ.get("OBS_REDIS_URL")
if _redis_url:
    _redis_url = _redis_url.replace("redis://", f"redis://default:{REDIS_PASSWORD}@", 1)

SWITCHBOARD = {
    "LAYER": (
        {"BACKEND": "redis", "CONFIG": {"hosts": [_redis_url], "prefix": os.environ["OBS_REDIS_PREFIX"]}}
        if _redis_url
        else {"BACKEND": "memory"}
    ),
    "PROTOCOLS": {"http": {"bind": [os.environ.get("OBS_HTTP_BIND", "127.0.0.1:8000")]}},
    "WORKER": {"auth_token": os.environ.get("OBS_UPSTREAM_KEY", "tok-obs-9c2d1e77")},
    "METRICS": json.loads(os.environ.get("OBS_METRICS", "{}")),
}

# Careless on purpose (see the module docstring).
logging.getLogger("obs.settings").warning("loaded SWITCHBOARD = %r, SECRET_KEY=%s", SWITCHBOARD, SECRET_KEY)
