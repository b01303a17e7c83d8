"""Settings for the SMS end-to-end tests: the http and sms plugins, the test routing.

Environment (set by conftest.py): SMS_TEST_HTTP_BIND, SMS_TEST_API_BASE_URL (the Twilio
API stand-in), SMS_TEST_AUTH_TOKEN, SMS_TEST_ACCOUNT_SID, SMS_TEST_PUBLIC_BASE_URL, and in
split mode SMS_TEST_REDIS_URL / SMS_TEST_REDIS_PREFIX (else the in-memory layer).
"""

import os

SECRET_KEY = "switchboard-sms-e2e"
DEBUG = False
INSTALLED_APPS = ["switchboard", "smsdemo"]
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
ASGI_APPLICATION = "sms_routing.application"

_redis_url = os.environ.get("SMS_TEST_REDIS_URL")
SWITCHBOARD = {
    "LAYER": (
        {"BACKEND": "redis", "CONFIG": {"hosts": [_redis_url], "prefix": os.environ["SMS_TEST_REDIS_PREFIX"]}}
        if _redis_url
        else {"BACKEND": "memory"}
    ),
    "PROTOCOLS": {
        "http": {"bind": [os.environ.get("SMS_TEST_HTTP_BIND", "127.0.0.1:8000")]},
        "sms": {
            "auth_token": os.environ.get("SMS_TEST_AUTH_TOKEN", "not-a-real-token"),
            "account_sid": os.environ.get("SMS_TEST_ACCOUNT_SID"),
            "public_base_url": os.environ.get("SMS_TEST_PUBLIC_BASE_URL", "https://sms.example.test"),
            "api_base_url": os.environ.get("SMS_TEST_API_BASE_URL", "https://api.twilio.com"),
            "reply_deadline": 2.0,
        },
    },
}
