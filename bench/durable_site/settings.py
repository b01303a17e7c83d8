"""Settings of the durable-delivery benchmark's Switchboard processes (bench/durable.py).

Environment: BENCH_REDIS_URL, BENCH_PREFIX, BENCH_DURABLE ("1": the task channel and the
SMTP/MQTT pools durable; "0": all at most once), BENCH_OUT (where consumers record),
BENCH_PREFETCH (the workers' durable_prefetch),
and for the protocol runs BENCH_SMTP_BIND or BENCH_MQTT_BROKER / BENCH_MQTT_PREFIX /
BENCH_MQTT_CLIENT_ID.
"""

import os

SECRET_KEY = "switchboard-bench-durable"
DEBUG = False
USE_TZ = True
INSTALLED_APPS = ["switchboard"]
DATABASES: dict[str, dict[str, str]] = {}
ASGI_APPLICATION = "durable_site.routing.application"
LOGGING = {"version": 1, "disable_existing_loggers": False, "root": {"level": "WARNING"}}

_durable = os.environ.get("BENCH_DURABLE", "1") == "1"
PROTOCOLS: dict[str, dict[str, object]] = {}
if os.environ.get("BENCH_SMTP_BIND"):
    PROTOCOLS["smtp"] = {
        "bind": os.environ["BENCH_SMTP_BIND"], "hostname": "mx.bench.test", "domains": ["example.com"],
        "max_sessions_per_ip": None, "max_sessions": 1000,
    }
if os.environ.get("BENCH_MQTT_BROKER"):
    PROTOCOLS["mqtt"] = {
        "brokers": [os.environ["BENCH_MQTT_BROKER"]],
        "client_id": os.environ["BENCH_MQTT_CLIENT_ID"],
        "clean_session": False,
        "subscriptions": [{"topic": os.environ["BENCH_MQTT_PREFIX"] + "/#", "qos": 1}],
    }

SWITCHBOARD = {
    "LAYER": {
        "BACKEND": "redis",
        "CONFIG": {
            "hosts": [os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")],
            "prefix": os.environ.get("BENCH_PREFIX", "bench-durable:"),
            "channel_capacity": {"bench.tasks": 200000, "switchboard.*": 200000},
            "durable": (
                {"bench.tasks": {}}
                if _durable
                else {"switchboard.email": False, "switchboard.sms": False, "switchboard.mqtt": False}
            ),
        },
    },
    "PROTOCOLS": PROTOCOLS,
    # 256 for the no-op tasks (fewer, larger reads); the 10 ms runs set 4 (Celery's default
    # prefetch multiplier), so one worker does not read ahead what idle ones could run.
    "WORKER": {"durable_prefetch": int(os.environ.get("BENCH_PREFETCH", "256"))},
}
