"""The example's routing plus consumers that exist to fail, for the bad-input tests."""

from __future__ import annotations

from chat.consumers import ChatConsumer
from chatsite.routing import application as example_application
from django.urls import path

from switchboard.consumers import AsyncWebsocketConsumer, ProtocolTypeRouter, URLRouter


class BoomConsumer(AsyncWebsocketConsumer):
    """Accepts, then raises on the first message: the worker must close with 1011."""

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        raise RuntimeError("boom (on purpose, for the tests)")


application = ProtocolTypeRouter(
    {
        "http": example_application.application_mapping["http"],
        "websocket": URLRouter(
            [
                path("ws/chat/<str:room>/", ChatConsumer.as_asgi()),
                path("ws/boom/", BoomConsumer.as_asgi()),
            ]
        ),
        **{k: v for k, v in example_application.application_mapping.items() if k not in ("http", "websocket")},
    }
)
