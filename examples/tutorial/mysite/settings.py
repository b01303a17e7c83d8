"""Settings of the Channels tutorial's ``mysite``, ported to Switchboard.

The only change from the tutorial is the app name in ``INSTALLED_APPS`` ("switchboard"
instead of "daphne"/"channels"): the layer is still configured with ``CHANNEL_LAYERS``,
which Switchboard reads when ``SWITCHBOARD["LAYER"]`` is not set.

Environment (used by the end-to-end tests):

- ``TUTORIAL_REDIS_URL``: use channels_redis's ``RedisChannelLayer`` at this URL (split
  mode: ``manage.py rungateway`` + ``manage.py runworker``); default: in-memory layer.
- ``TUTORIAL_REDIS_PREFIX``: its key prefix (tests isolate runs with it).
- ``TUTORIAL_HTTP_BIND``: where the gateway listens (default 127.0.0.1:8000).
- ``TUTORIAL_DB``: the SQLite database file (default db.sqlite3 here).
"""

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("TUTORIAL_SECRET_KEY", "tutorial-only-not-a-secret")
DEBUG = True
ALLOWED_HOSTS: list[str] = []

INSTALLED_APPS = [
    "switchboard",
    "chat",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "mysite.urls"

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
            ],
        },
    },
]

ASGI_APPLICATION = "mysite.asgi.application"

_redis_url = os.environ.get("TUTORIAL_REDIS_URL")
CHANNEL_LAYERS = {
    "default": (
        {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                "hosts": [_redis_url],
                "prefix": os.environ.get("TUTORIAL_REDIS_PREFIX", "asgi"),
            },
        }
        if _redis_url
        else {"BACKEND": "switchboard.layers.InMemoryChannelLayer"}
    ),
}

SWITCHBOARD = {
    "PROTOCOLS": {"http": {"bind": [os.environ.get("TUTORIAL_HTTP_BIND", "127.0.0.1:8000")]}},
}

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("TUTORIAL_DB", str(BASE_DIR / "db.sqlite3")),
    }
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
