"""Settings for the console's end-to-end test: five protocols over Redis, a staff-aware site.

Environment (set by the test): CONSOLE_E2E_REDIS_URL / _PREFIX, _HTTP_BIND, _UDP_BIND,
_SMTP_BIND, _MQTT_BROKER, _MQTT_PREFIX, _CONSOLE_BIND, _DB (the SQLite file the staff
users and sessions live in).

The gateway also mounts the console at /console/ on its HTTP port, as a site would, so
the test can check Django staff sessions there. Heartbeats are fast and the worker
timeout short, so a killed worker leaves the page within seconds.
"""

import os

from console_tokens import READ_TOKEN, WRITE_TOKEN

SECRET_KEY = "switchboard-console-e2e"
DEBUG = False
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "django.contrib.sessions", "switchboard"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ.get("CONSOLE_E2E_DB", ":memory:")}}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast: the test logs users in
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
USE_TZ = True
ASGI_APPLICATION = "console_routing.application"

WORKER_TIMEOUT = 3.0
CONSOLE_INTERVAL = 0.5
PREFIX = os.environ.get("CONSOLE_E2E_MQTT_PREFIX", "sb-console")

SWITCHBOARD = {
    "LAYER": {
        "BACKEND": "redis",
        "CONFIG": {"hosts": [os.environ["CONSOLE_E2E_REDIS_URL"]], "prefix": os.environ["CONSOLE_E2E_REDIS_PREFIX"]},
    },
    "PROTOCOLS": {
        "http": {"bind": [os.environ["CONSOLE_E2E_HTTP_BIND"]]},
        "udp": {"bind": [os.environ["CONSOLE_E2E_UDP_BIND"]]},
        "smtp": {"bind": os.environ["CONSOLE_E2E_SMTP_BIND"], "hostname": "mx.console.test", "domains": ["console.test"]},
        "mqtt": {
            "brokers": [os.environ.get("CONSOLE_E2E_MQTT_BROKER", "mqtt://127.0.0.1:1883")],
            "subscriptions": [f"{PREFIX}/in/+"],
        },
    },
    "GATEWAY": {"worker_timeout": WORKER_TIMEOUT},
    "WORKER": {"heartbeat_interval": 0.5},
    "METRICS": {"interval": CONSOLE_INTERVAL},
    "CONSOLE": {
        "bind": os.environ.get("CONSOLE_E2E_CONSOLE_BIND", "127.0.0.1:9180"),
        "mount": "/console/",
        "interval": CONSOLE_INTERVAL,
        "tokens": [{"name": "viewer", "token": READ_TOKEN}, {"name": "ops", "token": WRITE_TOKEN, "manage": True}],
    },
}
