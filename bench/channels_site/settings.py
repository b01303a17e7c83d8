"""Settings of the Channels 4 benchmark site: no auth, a Redis channel layer, PostgreSQL for /db/.

The harness passes the Redis URL (a db of its own, flushed after each run) and the key
prefix through the environment, so the site never touches data it does not own.
"""

import os

from benchapp.database import databases

SECRET_KEY = "bench-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["channels", "benchapp"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "channels_site.urls"
DATABASES = databases()  # only GET /db/ (http-db) touches it
USE_TZ = True
ASGI_APPLICATION = "channels_site.asgi.application"

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # redis-py 8 sets a 5 s default socket timeout, the same as the 5 s BZPOPMIN
            # of channels-redis 4.3.0, so idle consumers die with "Timeout reading from
            # 127.0.0.1:6379" (redis/redis-py#4091). socket_timeout=None restores the
            # redis-py 7 default, the configuration channels-redis was written for.
            "hosts": [
                {
                    "address": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11"),
                    "socket_timeout": None,
                    "socket_connect_timeout": 5,
                }
            ],
            "prefix": os.environ.get("BENCH_REDIS_PREFIX", "bench-channels:"),
            # Same per-channel capacity as Switchboard's pool channels, so fan-out
            # scenarios are not decided by a default that drops messages earlier.
            "capacity": 10000,
        },
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
