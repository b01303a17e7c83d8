"""The example's routing plus consumers that exist to fail, for the bad-input tests.

The WebSocket routes are the example's own (``websocket_urlpatterns``) behind the same
origin check and auth stack, plus ``/ws/boom/`` and ``/ws/relay/``.
"""

from __future__ import annotations

from typing import Any

from chatsite.routing import application as example_application
from chatsite.routing import websocket_urlpatterns
from django.urls import path

from switchboard.consumers import (
    AllowedHostsOriginValidator,
    AsyncJsonWebsocketConsumer,
    AsyncWebsocketConsumer,
    AuthMiddlewareStack,
    ProtocolTypeRouter,
    URLRouter,
)


class BoomConsumer(AsyncWebsocketConsumer):
    """Accepts, then raises on the first message: the worker must close with 1011."""

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        raise RuntimeError("boom (on purpose, for the tests)")


class RelayConsumer(AsyncJsonWebsocketConsumer):
    """Passes whatever JSON a client sends to its group as the group message, ``type`` included.

    A careless consumer on purpose: it lets a client choose the message type, so the test
    can check that no type reaches a private method however it is spelled.
    """

    groups = ["relay"]

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.channel_layer.group_send("relay", content)

    async def relay_message(self, message: dict[str, Any]) -> None:
        await self.send_json({"relayed": message.get("text")})

    async def _my_private_handler(self, message: dict[str, Any]) -> None:
        await self.send_json({"leaked": "_my_private_handler ran"})


application = ProtocolTypeRouter(
    {
        **example_application.application_mapping,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(
                URLRouter(
                    [
                        *websocket_urlpatterns,
                        path("ws/boom/", BoomConsumer.as_asgi()),
                        path("ws/relay/", RelayConsumer.as_asgi()),
                    ]
                )
            )
        ),
    }
)
