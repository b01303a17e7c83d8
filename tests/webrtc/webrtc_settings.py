"""Settings for the WebRTC end-to-end tests: the example's chat apps, http + webrtc plugins.

Environment (set by conftest.py): WEBRTC_TEST_BIND, and in split mode WEBRTC_TEST_REDIS_URL
/ WEBRTC_TEST_REDIS_PREFIX (else the in-memory layer).
"""

import os

SECRET_KEY = "switchboard-webrtc-e2e"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
# showcase: the example's page layout (base template, stylesheet) the demo page extends.
INSTALLED_APPS = ["django.contrib.staticfiles", "switchboard", "showcase", "chat", "webrtcdemo"]
STATIC_URL = "static/"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
ROOT_URLCONF = "webrtc_urls"
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]
ASGI_APPLICATION = "webrtc_routing.application"

_redis_url = os.environ.get("WEBRTC_TEST_REDIS_URL")
SWITCHBOARD = {
    "LAYER": (
        {"BACKEND": "redis", "CONFIG": {"hosts": [_redis_url], "prefix": os.environ["WEBRTC_TEST_REDIS_PREFIX"]}}
        if _redis_url
        else {"BACKEND": "memory"}
    ),
    "PROTOCOLS": {
        "http": {"bind": [os.environ.get("WEBRTC_TEST_BIND", "127.0.0.1:8000")], "response_timeout": 10},
        # Loopback host candidates: every peer of these tests is on this machine.
        "webrtc": {"ice_host_addresses": ["127.0.0.1"], "connect_timeout": 15},
    },
}
