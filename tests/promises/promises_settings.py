"""Settings of the promises deployments (long-poll, ordering, deploys): a test project, not the example.

Environment (set by conftest.py):
- PROMISES_HTTP_BIND          where the gateway's http plugin listens
- PROMISES_UDP_BINDS          comma-separated UDP binds (no udp plugin when unset)
- PROMISES_RESPONSE_TIMEOUT   the http plugin's response_timeout (seconds, default 30)
- PROMISES_REDIS_URL / PROMISES_REDIS_PREFIX  Redis layer and cache (else in-memory layer and
  a local-memory cache: one-process mode)
"""

import os

SECRET_KEY = "switchboard-promises-tests"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
# longpolldemo: the example's demo app, served here too (its page and its consumer).
# showcase: the example's page layout (base template, stylesheet) the demo page extends.
INSTALLED_APPS = ["switchboard", "showcase", "longpolldemo"]
STATIC_URL = "static/"
MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]
ROOT_URLCONF = "promises_urls"
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "DIRS": [], "APP_DIRS": True}]
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
ASGI_APPLICATION = "promises_routing.application"

_redis_url = os.environ.get("PROMISES_REDIS_URL")
_prefix = os.environ.get("PROMISES_REDIS_PREFIX", "sb-promises:")

# The long-poll ring buffer lives in Django's cache: shared (Redis) across processes, else
# the local-memory cache of the one `switchboard run` process.
CACHES = {
    "default": (
        {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": _redis_url, "KEY_PREFIX": _prefix}
        if _redis_url
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}
    )
}

_protocols: dict[str, dict[str, object]] = {
    "http": {
        "bind": [os.environ.get("PROMISES_HTTP_BIND", "127.0.0.1:8000")],
        "response_timeout": float(os.environ.get("PROMISES_RESPONSE_TIMEOUT", "30")),
        "backlog": 4096,
    }
}
if os.environ.get("PROMISES_UDP_BINDS"):
    _protocols["udp"] = {
        "bind": os.environ["PROMISES_UDP_BINDS"].split(","),
        # One sender per socket: several would put datagrams on the layer in any order,
        # and an ordered consumer can only keep the order the gateway gives it.
        "layer_senders": 1,
        "receive_buffer_size": 4 * 1024 * 1024,
    }

SWITCHBOARD = {
    "LAYER": (
        {"BACKEND": "redis", "CONFIG": {"hosts": [_redis_url], "prefix": _prefix}}
        if _redis_url
        else {"BACKEND": "memory"}
    ),
    "PROTOCOLS": _protocols,
}
