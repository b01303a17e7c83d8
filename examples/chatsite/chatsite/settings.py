"""Settings of the Switchboard example: a page, a JSON view, a WebSocket chat with logins,
server-sent events and background thumbnails.

Environment knobs (used by the end-to-end tests and handy for trying split mode):
- SWITCHBOARD_HTTP_BIND   where the gateway listens (default 127.0.0.1:8000)
- SWITCHBOARD_UDP_BIND    the UDP echo socket (default 127.0.0.1:9999)
- SWITCHBOARD_SMTP_BIND   the inbound mail server (default 127.0.0.1:2525)
- SWITCHBOARD_REDIS_URL   use the Redis layer at this URL (default: in-memory layer)
- SWITCHBOARD_REDIS_PREFIX  key prefix in Redis (tests isolate runs with it)
- SWITCHBOARD_EXAMPLE_DB  the SQLite database file (default db.sqlite3 here; run
  ``manage.py migrate`` first: sessions, users and thumbnails live there)
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-secret")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "switchboard",
    "showcase",
    "chat",
    "udpdemo",
    "emaildemo",
    "thumbnails",
    "smsdemo",
    "webrtcdemo",
    "mqttdemo",
    "longpolldemo",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "chatsite.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("SWITCHBOARD_EXAMPLE_DB", str(BASE_DIR / "db.sqlite3")),
    }
}
USE_TZ = True
TIME_ZONE = "UTC"  # also the process time zone Django sets: log times in UTC
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The application workers run: Django views and server-sent events for HTTP, consumers for
# WebSockets, and the named channel "thumbnails" (chatsite/routing.py).
ASGI_APPLICATION = "chatsite.routing.application"

_redis_url = os.environ.get("SWITCHBOARD_REDIS_URL")
SWITCHBOARD = {
    "LAYER": (
        {
            "BACKEND": "redis",
            "CONFIG": {
                "hosts": [_redis_url],
                "prefix": os.environ.get("SWITCHBOARD_REDIS_PREFIX", "switchboard-example:"),
            },
        }
        if _redis_url
        else {"BACKEND": "memory"}
    ),
    "PROTOCOLS": {
        "http": {
            "bind": [os.environ.get("SWITCHBOARD_HTTP_BIND", "127.0.0.1:8000")],
            "max_body_size": 1024 * 1024,
            "max_frame_size": 64 * 1024,
            "response_timeout": float(os.environ.get("SWITCHBOARD_RESPONSE_TIMEOUT", "30")),
        },
        "udp": {"bind": [os.environ.get("SWITCHBOARD_UDP_BIND", "127.0.0.1:9999")]},
        # Mail to <room>@chat.example.com is posted to that chat room.
        "smtp": {"bind": os.environ.get("SWITCHBOARD_SMTP_BIND", "127.0.0.1:2525"), "domains": ["chat.example.com"]},
        # Twilio SMS webhooks on the HTTP port (/sms/inbound, /sms/status); see docs/sms.md.
        "sms": {
            "auth_token": os.environ.get("TWILIO_AUTH_TOKEN", "example-not-a-real-token"),
            "account_sid": os.environ.get("TWILIO_ACCOUNT_SID"),  # unset: inline replies only
            "public_base_url": os.environ.get(
                "SWITCHBOARD_SMS_PUBLIC_URL", "http://" + os.environ.get("SWITCHBOARD_HTTP_BIND", "127.0.0.1:8000")
            ),
            "default_from": os.environ.get("TWILIO_FROM_NUMBER"),
        },
        # WebRTC data channels: signaling at /webrtc/offer/<room>/ on the HTTP port; an
        # offer for a path that is no room name gets 404 before a peer is made.
        "webrtc": {"ice_host_addresses": ["127.0.0.1"], "path_pattern": r"[A-Za-z0-9_-]{1,90}/"},
    },
}

# MQTT is opt-in, so the example runs without a broker: SWITCHBOARD_MQTT_BROKER=mqtt://127.0.0.1:1883
_mqtt_broker = os.environ.get("SWITCHBOARD_MQTT_BROKER")
if _mqtt_broker:
    SWITCHBOARD["PROTOCOLS"]["mqtt"] = {
        "brokers": [_mqtt_broker],
        "subscriptions": ["switchboard-demo/sensors/+/temp", "switchboard-demo/rpc/+"],
        "status_topic": "switchboard-demo/status",
        "protocol_version": "5",
    }

