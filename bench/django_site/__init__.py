"""A plain Django project (no Channels, no Switchboard): for gunicorn (WSGI) and uvicorn (ASGI)."""
