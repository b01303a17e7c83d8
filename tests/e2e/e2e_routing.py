"""The example's routing plus consumers that exist to fail, for the bad-input tests.

The WebSocket routes are the example's own (``websocket_urlpatterns``) behind the same
origin check and auth stack, plus ``/ws/boom/``.
"""

from __future__ import annotations

from chatsite.routing import application as example_application
from chatsite.routing import websocket_urlpatterns
from django.urls import path

from switchboard.consumers import (
    AllowedHostsOriginValidator,
    AsyncWebsocketConsumer,
    AuthMiddlewareStack,
    ProtocolTypeRouter,
    URLRouter,
)


class BoomConsumer(AsyncWebsocketConsumer):
    """Accepts, then raises on the first message: the worker must close with 1011."""

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        raise RuntimeError("boom (on purpose, for the tests)")


application = ProtocolTypeRouter(
    {
        **example_application.application_mapping,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter([*websocket_urlpatterns, path("ws/boom/", BoomConsumer.as_asgi())]))
        ),
    }
)
