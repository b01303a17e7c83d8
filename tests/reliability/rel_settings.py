"""Settings for the reliability tests' gateway and worker OS processes.

Everything comes from the environment (set by ``conftest.ProcessDeployment``), so one
settings module serves the fuzz pass over Redis, the fault tests (a private Redis), the
flood tests and the secrets test:

- ``REL_REDIS_URL`` / ``REL_REDIS_PREFIX``: the layer (else the in-memory layer);
- ``REL_HTTP_BIND``, ``REL_UDP_BIND``, ``REL_SMTP_BIND``: where to listen;
- ``REL_PROTOCOLS``: comma-separated plugins to enable (default ``http``);
- ``REL_SMS_AUTH_TOKEN``, ``REL_MQTT_BROKER``, ``REL_MQTT_PREFIX``, ``REL_MQTT_USERNAME``,
  ``REL_MQTT_PASSWORD``: credentials and broker of the sms and mqtt plugins;
- ``REL_HTTP_OPTIONS``: JSON merged into the http plugin's options;
- ``REL_LAYER_OPTIONS``, ``REL_GATEWAY_OPTIONS``, ``REL_WORKER_OPTIONS``: JSON merged into
  the layer's ``CONFIG``, ``SWITCHBOARD["GATEWAY"]`` and ``SWITCHBOARD["WORKER"]``.
"""

import json
import os

SECRET_KEY = os.environ.get("REL_SECRET_KEY", "switchboard-reliability-tests")
DEBUG = False
INSTALLED_APPS = ["switchboard"]
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
ASGI_APPLICATION = "rel_app.application"
ROOT_URLCONF = "rel_urls"  # /upload/django/ (rel_uploads.py); the rest is raw ASGI
DATA_UPLOAD_MAX_MEMORY_SIZE = 16 * 1024 * 1024

_enabled = [name for name in os.environ.get("REL_PROTOCOLS", "http").split(",") if name]
_redis_url = os.environ.get("REL_REDIS_URL")
_mqtt_prefix = os.environ.get("REL_MQTT_PREFIX", "sb-rel")

_all_protocols = {
    "http": {
        "bind": [os.environ.get("REL_HTTP_BIND", "127.0.0.1:8000")],
        "response_timeout": 10,
        "max_body_size": 64 * 1024,
        "max_frame_size": 64 * 1024,
        **json.loads(os.environ.get("REL_HTTP_OPTIONS", "{}")),
    },
    "udp": {"bind": [os.environ.get("REL_UDP_BIND", "127.0.0.1:0")], "max_datagram_size": 8192},
    "smtp": {
        "bind": os.environ.get("REL_SMTP_BIND", "127.0.0.1:0"),
        "hostname": "mx.reliability.test",
        "domains": ["example.com"],
        "max_message_size": 64 * 1024,
        "storage_path": os.environ.get("REL_SMTP_STORAGE"),
        "timeout": 30.0,
    },
    "sms": {
        "auth_token": os.environ.get("REL_SMS_AUTH_TOKEN", "not-a-real-token"),
        "account_sid": os.environ.get("REL_SMS_ACCOUNT_SID"),
        "public_base_url": "https://sms.reliability.test",
        "api_base_url": os.environ.get("REL_SMS_API_BASE_URL", "http://127.0.0.1:9"),
        "reply_deadline": 2.0,
        "max_body_size": 16 * 1024,
    },
    "webrtc": {"ice_host_addresses": ["127.0.0.1"], "connect_timeout": 2.0, "max_peers": 500},
    "mqtt": {
        "brokers": [os.environ.get("REL_MQTT_BROKER", "mqtt://127.0.0.1:1883")],
        "subscriptions": [f"{_mqtt_prefix}/in/#"],
        "username": os.environ.get("REL_MQTT_USERNAME"),
        "password": os.environ.get("REL_MQTT_PASSWORD"),
        "reconnect_min_delay": 0.1,
        "reconnect_max_delay": 0.5,
        "max_payload_size": 4096,
    },
}

SWITCHBOARD = {
    "LAYER": (
        {
            "BACKEND": "redis",
            "CONFIG": {
                "hosts": [_redis_url],
                "prefix": os.environ.get("REL_REDIS_PREFIX", "sb-rel:"),
                "block_timeout": 0.5,
                **json.loads(os.environ.get("REL_LAYER_OPTIONS", "{}")),
            },
        }
        if _redis_url
        else {"BACKEND": "memory"}
    ),
    "PROTOCOLS": {name: _all_protocols[name] for name in _enabled},
    "WORKER": {
        "protocols": json.loads(
            os.environ.get("REL_WORKER_PROTOCOLS", '["http", "websocket", "udp", "email", "sms", "webrtc", "mqtt"]')
        ),
        "channels": [],
        **json.loads(os.environ.get("REL_WORKER_OPTIONS", "{}")),
    },
    "GATEWAY": json.loads(os.environ.get("REL_GATEWAY_OPTIONS", "{}")),
}
