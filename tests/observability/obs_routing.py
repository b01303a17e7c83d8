"""Routing for the observability tests: an HTTP hello and a WebSocket echo.

The HTTP consumer logs the configured auth token in a sentence, with no key name next to
it, so only the redaction of configured secret values can catch it.
"""

from __future__ import annotations

import logging

from django.conf import settings

from switchboard.consumers import AsyncHttpConsumer, AsyncWebsocketConsumer, ProtocolTypeRouter

logger = logging.getLogger("obs.routing")


class Hello(AsyncHttpConsumer):
    async def handle(self, body: bytes) -> None:
        token = (getattr(settings, "SWITCHBOARD", None) or {}).get("WORKER", {}).get("auth_token", "no-token")
        logger.info("answering %s; calling upstream with %s", self.scope["path"], token, extra={"password": token})
        await self.send_response(200, b"hello", headers=[(b"content-type", b"text/plain")])


class Echo(AsyncWebsocketConsumer):
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(text_data=f"echo:{text_data}")


application = ProtocolTypeRouter({"http": Hello.as_asgi(), "websocket": Echo.as_asgi()})
