"""Settings of the Switchboard side of the plugin benchmarks: one plugin per run.

The harness passes everything through the environment:

- ``BENCH_PLUGIN``: ``udp``, ``mqtt``, ``webrtc`` or ``sms`` (only that plugin, plus the
  ``http`` plugin that WebRTC signaling and SMS webhooks are served on);
- ``BENCH_UDP_BIND`` / ``BENCH_BIND`` (HTTP) / ``BENCH_MQTT_BROKER`` + ``BENCH_MQTT_PREFIX``;
- ``BENCH_REDIS_URL`` and ``BENCH_REDIS_PREFIX`` (a db of its own, flushed after each run).
  ``switchboard run`` ignores the Redis layer and uses the in-memory one, by design.

No database, no middleware, ``DEBUG = False``, logging at WARNING, as in
bench/switchboard_site.
"""

import os

from plugins_site.common import SMS_AUTH_TOKEN, SMS_PUBLIC_BASE_URL, mqtt_reply_topic, mqtt_request_topic

PLUGIN = os.environ.get("BENCH_PLUGIN", "udp")
MQTT_PREFIX = os.environ.get("BENCH_MQTT_PREFIX", "bench-plugins")

SECRET_KEY = "bench-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["switchboard"]
MIDDLEWARE: list[str] = []
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
ASGI_APPLICATION = "plugins_site.routing.application"

# The same parsers as bench/switchboard_site (uvicorn's own choice), for the HTTP port
# that WebRTC signaling and SMS webhooks arrive on.
_HTTP = {"bind": [os.environ.get("BENCH_BIND", "127.0.0.1:8765")], "http": "httptools", "ws": "websockets"}

_PROTOCOLS: dict[str, dict[str, object]] = {
    "udp": {"udp": {"bind": [os.environ.get("BENCH_UDP_BIND", "127.0.0.1:9999")]}},
    "mqtt": {
        "mqtt": {
            "brokers": [os.environ.get("BENCH_MQTT_BROKER", "mqtt://127.0.0.1:1883")],
            "subscriptions": [mqtt_request_topic(MQTT_PREFIX, "+")],
            "publish_topics": [mqtt_reply_topic(MQTT_PREFIX, "+")],
            "reconnect_min_delay": 0.2,
            "reconnect_max_delay": 1.0,
        }
    },
    "webrtc": {
        "http": _HTTP,
        # Loopback host candidates: every peer of the benchmark is on this machine.
        # Every benchmark peer signals from 127.0.0.1: no per-address limits.
        "webrtc": {"ice_host_addresses": ["127.0.0.1"], "max_peers_per_ip": None, "max_offers_per_second_per_ip": None},
    },
    "sms": {
        "http": _HTTP,
        "sms": {"auth_token": SMS_AUTH_TOKEN, "public_base_url": SMS_PUBLIC_BASE_URL, "reply_deadline": 5.0},
    },
}

SWITCHBOARD = {
    "LAYER": {
        "BACKEND": "redis",
        "CONFIG": {
            "hosts": [os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")],
            "prefix": os.environ.get("BENCH_REDIS_PREFIX", "bench-plugins:"),
        },
    },
    "PROTOCOLS": _PROTOCOLS[PLUGIN],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
