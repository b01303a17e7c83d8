"""ASGI entry point for uvicorn: Django's own ASGI handler, no Channels."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_site.settings")
application = get_asgi_application()
