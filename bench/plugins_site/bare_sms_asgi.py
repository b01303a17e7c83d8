"""ASGI entry point of the SMS baseline (uvicorn imports this)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "plugins_site.bare_sms_settings")
application = get_asgi_application()
