"""Settings of the command-line tests' project: Django views, a WebSocket, a UDP echo.

Environment (set by conftest.py): CLI_HTTP_BIND, CLI_UDP_BIND, CLI_SMTP_BIND; CLI_REDIS_URL
and CLI_REDIS_PREFIX for the Redis layer (else in-memory); CLI_DEBUG=1 for DEBUG (static
files are served in `switchboard run` only then, as runserver does).
"""

import os
from pathlib import Path

SECRET_KEY = "cli-tests-not-secret"
DEBUG = os.environ.get("CLI_DEBUG") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["django.contrib.staticfiles", "switchboard"]
DATABASES: dict[str, dict[str, str]] = {}
ROOT_URLCONF = "cli_urls"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"
STATICFILES_DIRS = [Path(__file__).resolve().parent / "static"]
ASGI_APPLICATION = "cli_routing.application"

_redis_url = os.environ.get("CLI_REDIS_URL")
SWITCHBOARD = {
    "LAYER": (
        {"BACKEND": "redis", "CONFIG": {"hosts": [_redis_url], "prefix": os.environ.get("CLI_REDIS_PREFIX", "sb-cli:")}}
        if _redis_url
        else {"BACKEND": "memory"}
    ),
    "PROTOCOLS": {
        "http": {"bind": [os.environ.get("CLI_HTTP_BIND", "127.0.0.1:8000")], "response_timeout": 10},
        "udp": {"bind": [os.environ.get("CLI_UDP_BIND", "127.0.0.1:0")]},
        "smtp": {"bind": os.environ.get("CLI_SMTP_BIND", "127.0.0.1:0"), "domains": ["cli.example.com"]},
    },
}
