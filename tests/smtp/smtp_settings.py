"""Settings for the SMTP end-to-end tests: only the smtp plugin, the test routing below.

Environment (set by conftest.py): SMTP_TEST_BIND, SMTP_TEST_STORAGE, SMTP_TEST_OUT_DIR, and
in split mode SMTP_TEST_REDIS_URL / SMTP_TEST_REDIS_PREFIX (else the in-memory layer).
SMTP_TEST_HTTP_BIND adds the http plugin (a tiny app answers every request), for the tests
that check HTTP is served while the SMTP side is under attack.
"""

import os

SECRET_KEY = "switchboard-smtp-e2e"
DEBUG = False
INSTALLED_APPS = ["switchboard", "emaildemo"]
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
ASGI_APPLICATION = "smtp_routing.application"

_redis_url = os.environ.get("SMTP_TEST_REDIS_URL")
SWITCHBOARD = {
    "LAYER": (
        {"BACKEND": "redis", "CONFIG": {"hosts": [_redis_url], "prefix": os.environ["SMTP_TEST_REDIS_PREFIX"]}}
        if _redis_url
        else {"BACKEND": "memory"}
    ),
    "PROTOCOLS": {
        "smtp": {
            "bind": os.environ.get("SMTP_TEST_BIND", "127.0.0.1:2525"),
            "hostname": "mx.e2e.test",
            "domains": ["chat.example.com"],
            "attachment_inline_limit": 1024,
            "storage_path": os.environ.get("SMTP_TEST_STORAGE"),
            # The tests set it from the one timeout knob: a loaded machine must not turn a
            # refusal they assert (552, too many parts) into a parse timeout (451).
            "parse_timeout": float(os.environ.get("SMTP_TEST_PARSE_TIMEOUT", "15")),
        },
    },
}
if os.environ.get("SMTP_TEST_HTTP_BIND"):
    SWITCHBOARD["PROTOCOLS"]["http"] = {"bind": [os.environ["SMTP_TEST_HTTP_BIND"]]}
