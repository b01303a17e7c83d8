"""Django settings for the MQTT end-to-end tests (gateway, worker and run processes).

Environment knobs, set by the test fixture:
- SB_MQTT_BROKER          broker URL (the shared Mosquitto or a private one)
- SB_MQTT_PREFIX          topic prefix unique to the test
- SB_MQTT_STATS           where the plugin writes its counters when it stops
- SWITCHBOARD_REDIS_URL   use the Redis layer (split mode); absent: in-memory (run mode)
- SWITCHBOARD_REDIS_PREFIX  key prefix in Redis, unique to the test
"""

import os

SECRET_KEY = "switchboard-mqtt-e2e"
DEBUG = False
INSTALLED_APPS = ["switchboard"]
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
USE_TZ = True

PREFIX = os.environ.get("SB_MQTT_PREFIX", "sb-test-manual")

_redis_url = os.environ.get("SWITCHBOARD_REDIS_URL")
SWITCHBOARD = {
    "APPLICATION": "mqtt_e2e_routing.application",
    "LAYER": (
        {"BACKEND": "redis", "CONFIG": {"hosts": [_redis_url], "prefix": os.environ["SWITCHBOARD_REDIS_PREFIX"]}}
        if _redis_url
        else {"BACKEND": "memory"}
    ),
    "PROTOCOLS": {
        "mqtt": {
            "brokers": [os.environ.get("SB_MQTT_BROKER", "mqtt://127.0.0.1:1883")],
            "subscriptions": [
                f"{PREFIX}/req/+",
                f"{PREFIX}/sensors/+/temp",
                {"topic": f"{PREFIX}/cmd/#", "qos": 1},
            ],
            "publish_topics": [f"{PREFIX}/resp/+", f"{PREFIX}/out/#"],
            "status_topic": f"{PREFIX}/status",
            "max_payload_size": 1024,
            "reconnect_min_delay": 0.1,
            "reconnect_max_delay": 0.5,
            "stats_file": os.environ.get("SB_MQTT_STATS"),
        },
    },
}
