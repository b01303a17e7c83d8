"""ASGI entry point for daphne and uvicorn: Django for HTTP, consumers for WebSockets."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "channels_site.settings")

from django.core.asgi import get_asgi_application

django_http = get_asgi_application()  # set Django up before consumers import anything

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels_site.consumers import EchoConsumer, LongPollConsumer, RoomConsumer  # noqa: E402
from django.urls import path, re_path  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": URLRouter([path("poll/", LongPollConsumer.as_asgi()), re_path(r"", django_http)]),
        "websocket": URLRouter(
            [
                path("ws/echo/", EchoConsumer.as_asgi()),
                path("ws/room/<str:name>/", RoomConsumer.as_asgi()),
            ]
        ),
    }
)
