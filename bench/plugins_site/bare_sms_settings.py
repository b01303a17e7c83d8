"""Settings of the SMS baseline: plain Django (no Switchboard) served by uvicorn.

The same shape as the other benchmark sites: no database, no middleware, ``DEBUG =
False``, logging at WARNING. Run as ``DJANGO_SETTINGS_MODULE=plugins_site.bare_sms_settings
python -m uvicorn plugins_site.bare_sms_asgi:application``.
"""

SECRET_KEY = "bench-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "plugins_site.bare_sms_urls"
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
