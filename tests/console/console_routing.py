"""Routing for the console tests: one small consumer per protocol the e2e test drives.

HTTP answers ``hello``; a WebSocket echoes; UDP echoes in upper case; MQTT messages and
e-mails are taken and dropped; an SMS is answered inline. Plain consumers, so the numbers
the console shows can only come from the traffic the tests send.
"""

from __future__ import annotations

from typing import Any

from switchboard.consumers import AsyncHttpConsumer, AsyncWebsocketConsumer, ProtocolTypeRouter
from switchboard.consumers.email import EmailConsumer
from switchboard.consumers.mqtt import MqttConsumer
from switchboard.consumers.sms import IncomingSms, SmsConsumer
from switchboard.consumers.udp import AsyncUdpConsumer


class Hello(AsyncHttpConsumer):
    async def handle(self, body: bytes) -> None:
        await self.send_response(200, b"hello", headers=[(b"content-type", b"text/plain")])


class Echo(AsyncWebsocketConsumer):
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(text_data=f"echo:{text_data}")


class UpperEcho(AsyncUdpConsumer):
    async def datagram_received(self, data: bytes, client: Any) -> None:
        await self.send_datagram(data.upper(), client)


class Sink(MqttConsumer):
    async def message_received(self, topic: str, payload: bytes, qos: int, retain: bool, properties: dict[str, Any]) -> None:
        return None


class Inbox(EmailConsumer):
    async def email_received(self, message: dict[str, Any]) -> None:
        return None


class Answer(SmsConsumer):
    async def message_received(self, sms: IncomingSms) -> None:
        await self.reply(f"got: {sms.body}")


application = ProtocolTypeRouter(
    {
        "http": Hello.as_asgi(),
        "websocket": Echo.as_asgi(),
        "udp": UpperEcho.as_asgi(),
        "mqtt": Sink.as_asgi(),
        "email": Inbox.as_asgi(),
        "sms": Answer.as_asgi(),
    }
)
