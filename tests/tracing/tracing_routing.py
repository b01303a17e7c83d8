"""Routing for the tracing tests: Django for HTTP, a WebSocket echo, an inline SMS answer."""

from __future__ import annotations

from django.core.asgi import get_asgi_application

from switchboard.consumers import AsyncWebsocketConsumer, ProtocolTypeRouter
from switchboard.consumers.sms import IncomingSms, SmsConsumer


class Echo(AsyncWebsocketConsumer):
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(text_data=f"echo:{text_data}")


class Answer(SmsConsumer):
    async def message_received(self, sms: IncomingSms) -> None:
        await self.reply(f"got: {sms.body}")


application = ProtocolTypeRouter(
    {"http": get_asgi_application(), "websocket": Echo.as_asgi(), "sms": Answer.as_asgi()}
)
