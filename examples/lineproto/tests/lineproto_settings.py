"""Settings for the line-protocol OS-process tests: only the third-party plugin, by its entry-point name.

Environment (set by conftest.py): LINE_TEST_BIND, LINE_TEST_STATS_FILE, and in split mode
LINE_TEST_REDIS_URL / LINE_TEST_REDIS_PREFIX (else the in-memory layer).
"""

import os

SECRET_KEY = "switchboard-lineproto-e2e"
DEBUG = False
INSTALLED_APPS = ["switchboard"]
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
ASGI_APPLICATION = "lineproto_routing.application"

_redis_url = os.environ.get("LINE_TEST_REDIS_URL")
SWITCHBOARD = {
    "LAYER": (
        {"BACKEND": "redis", "CONFIG": {"hosts": [_redis_url], "prefix": os.environ["LINE_TEST_REDIS_PREFIX"]}}
        if _redis_url
        else {"BACKEND": "memory"}
    ),
    "PROTOCOLS": {
        "lineproto": {
            "bind": [os.environ.get("LINE_TEST_BIND", "127.0.0.1:7777")],
            "max_line_length": 64,
            "stats_file": os.environ.get("LINE_TEST_STATS_FILE"),
        },
    },
}
