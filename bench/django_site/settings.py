"""Settings of the plain Django site: the same views, middleware and database as the others."""

from benchapp.database import databases

SECRET_KEY = "bench-only-not-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["benchapp"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "django_site.urls"
DATABASES = databases()
USE_TZ = True
WSGI_APPLICATION = "django_site.wsgi.application"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
