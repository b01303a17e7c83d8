"""Settings for the UDP end-to-end tests: only the udp plugin, the test routing below.

Environment (set by conftest.py): UDP_TEST_BIND, UDP_TEST_STATS_FILE, and in split mode
UDP_TEST_REDIS_URL / UDP_TEST_REDIS_PREFIX (else the in-memory layer); UDP_TEST_OPTIONS,
JSON merged into the plugin options.
"""

import json
import os

SECRET_KEY = "switchboard-udp-e2e"
DEBUG = False
INSTALLED_APPS = ["switchboard", "udpdemo"]
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
ASGI_APPLICATION = "udp_routing.application"

_redis_url = os.environ.get("UDP_TEST_REDIS_URL")
SWITCHBOARD = {
    "LAYER": (
        {"BACKEND": "redis", "CONFIG": {"hosts": [_redis_url], "prefix": os.environ["UDP_TEST_REDIS_PREFIX"]}}
        if _redis_url
        else {"BACKEND": "memory"}
    ),
    "PROTOCOLS": {
        "udp": {
            "bind": [os.environ.get("UDP_TEST_BIND", "127.0.0.1:9999")],
            "receive_buffer_size": 4 * 1024 * 1024,
            "stats_file": os.environ.get("UDP_TEST_STATS_FILE"),
            **json.loads(os.environ.get("UDP_TEST_OPTIONS", "{}")),
        },
    },
}
