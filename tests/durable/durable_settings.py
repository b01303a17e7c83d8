"""Settings of the durable-delivery fault tests: Redis layer, PostgreSQL, chosen protocols.

Environment (set by conftest.py): DURABLE_REDIS_URL, DURABLE_REDIS_PREFIX, DURABLE_PG_SCHEMA,
DURABLE_PROTOCOLS (comma-separated: smtp, mqtt, sms), and per protocol its port or broker:
DURABLE_SMTP_BIND, DURABLE_HTTP_BIND, DURABLE_MQTT_BROKER, DURABLE_MQTT_CLIENT_ID,
DURABLE_MQTT_TOPIC. DURABLE_POISON_FLAG names a file whose presence makes poison tasks fail.
"""

import os

SECRET_KEY = "switchboard-durable-e2e"
DEBUG = False
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
INSTALLED_APPS = ["switchboard", "durable_app"]
ASGI_APPLICATION = "durable_routing.application"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "test",
        "HOST": "127.0.0.1",
        "PORT": 5432,
        "USER": "postgres",
        # Each test module's own schema: runs never see each other's rows.
        "OPTIONS": {"options": f"-c search_path={os.environ.get('DURABLE_PG_SCHEMA', 'public')}"},
    }
}
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {"switchboard.layers": {"level": "WARNING"}},
}

# Short timeouts, so a killed worker's messages come back within the tests' patience.
_FAST = {"visibility_timeout": 3.0, "retry_delay": 0.2, "retry_delay_max": 1.0}
_protocols = {name for name in os.environ.get("DURABLE_PROTOCOLS", "").split(",") if name}

PROTOCOLS: dict[str, dict[str, object]] = {}
if "smtp" in _protocols:
    PROTOCOLS["smtp"] = {
        "bind": os.environ["DURABLE_SMTP_BIND"],
        "hostname": "mx.durable.test",
        "domains": ["example.com"],
        "max_sessions_per_ip": None,
    }
if "sms" in _protocols:
    PROTOCOLS["http"] = {"bind": [os.environ["DURABLE_HTTP_BIND"]]}
    PROTOCOLS["sms"] = {
        "auth_token": "durable-auth-token",
        "public_base_url": "https://sms.durable.test",
        "reply_deadline": 0.5,
    }
if "mqtt" in _protocols:
    PROTOCOLS["mqtt"] = {
        "brokers": [os.environ["DURABLE_MQTT_BROKER"]],
        "client_id": os.environ["DURABLE_MQTT_CLIENT_ID"],
        "clean_session": False,
        "subscriptions": [{"topic": os.environ["DURABLE_MQTT_TOPIC"] + "/#", "qos": 1}],
        "reconnect_min_delay": 0.1,
        "reconnect_max_delay": 0.5,
    }

SWITCHBOARD = {
    "LAYER": {
        "BACKEND": "redis",
        "CONFIG": {
            "hosts": [os.environ["DURABLE_REDIS_URL"]],
            "prefix": os.environ["DURABLE_REDIS_PREFIX"],
            "block_timeout": 0.5,
            "durable": {
                "switchboard.email": dict(_FAST),
                "switchboard.sms": dict(_FAST),
                "switchboard.mqtt": dict(_FAST),
                "tasks": {**_FAST, "max_deliveries": 3, "capacity": 20000},
            },
        },
    },
    "PROTOCOLS": PROTOCOLS,
    "WORKER": {"durable_prefetch": 64, "drain_timeout": 20},
}
