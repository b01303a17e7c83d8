"""switchboard.testing: a consumer of every protocol unit-tested in a few lines.

The communicators check what goes in and what comes out against specs/, so these tests
also show that a consumer sending the gateway something it would refuse fails at once.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test import TestCase
from support.waiting import deadline, wait_until

from switchboard.consumers import AsyncJsonWebsocketConsumer, AsyncUdpConsumer, MqttConsumer, SmsConsumer
from switchboard.consumers.email import EmailConsumer, ReceivedEmail
from switchboard.consumers.sms import IncomingSms
from switchboard.consumers.webrtc import AsyncWebrtcConsumer
from switchboard.db import database_sync_to_async
from switchboard.gateway.specs import SpecError
from switchboard.generic.http import AsyncHttpConsumer
from switchboard.testing import (
    EmailCommunicator,
    HttpCommunicator,
    MqttCommunicator,
    SmsCommunicator,
    UdpCommunicator,
    WebRTCCommunicator,
    WebsocketCommunicator,
)

pytestmark = pytest.mark.timeout(60)
WAIT = deadline(10)  # communicator timeouts (scaled): a safety net on a loaded machine, never a speed check


class Echo(AsyncUdpConsumer):
    groups = ["echoes"]

    async def datagram_received(self, data: bytes, client: Any) -> None:
        await self.send_datagram(data.upper(), client)
        if data == b"join":
            await self.channel_layer.group_add("echoes", self.channel_name)

    async def echo_note(self, event: dict[str, Any]) -> None:
        await self.send_datagram(event["text"].encode(), event["to"])


async def test_udp_consumer_round_trip_and_group_messages(memory_layer: Any) -> None:
    communicator = UdpCommunicator(Echo.as_asgi())
    await communicator.send_datagram(b"ping", client=("127.0.0.1", 40000))
    assert await communicator.receive_datagram(WAIT) == (b"PING", ["127.0.0.1", 40000])
    assert communicator.scope["reply_channel"].startswith("gateway.")
    await communicator.send_datagram(b"join")
    await communicator.receive_datagram(WAIT)
    # A group message reaches the consumer's handler, as the gateway forwards it.
    await memory_layer.group_send("echoes", {"type": "echo.note", "text": "hi", "to": ["127.0.0.1", 1]})
    assert await communicator.receive_datagram(WAIT) == (b"hi", ["127.0.0.1", 1])
    await communicator.stop_consumer()


class Thermostat(MqttConsumer):
    async def message_received(self, topic: str, payload: bytes, qos: int, retain: bool, properties: dict[str, Any]) -> None:
        if float(payload) > 25:
            await self.publish("hvac/cool", b"on", qos=1)


class BadPublisher(MqttConsumer):
    async def message_received(self, topic: str, payload: bytes, qos: int, retain: bool, properties: dict[str, Any]) -> None:
        await self.send({"type": "mqtt.publish", "topic": "x", "payload": b"", "qos": 7})


async def test_mqtt_consumer_and_spec_checked_output(memory_layer: Any) -> None:
    communicator = MqttCommunicator(Thermostat.as_asgi())
    await communicator.publish("sensors/kitchen/temp", "27.5")
    published = await communicator.receive_publish(WAIT)
    assert (published["topic"], published["payload"], published["qos"]) == ("hvac/cool", b"on", 1)
    await communicator.publish("sensors/kitchen/temp", "20")
    assert await communicator.receive_nothing(0.2)
    await communicator.stop_consumer()

    bad = MqttCommunicator(BadPublisher.as_asgi())
    await bad.publish("t", b"1")
    with pytest.raises(SpecError, match="qos"):
        await bad.receive_output(WAIT)
    await bad.stop_consumer()
    with pytest.raises(SpecError):  # events going in are checked too
        await MqttCommunicator(Thermostat.as_asgi()).publish("t", b"1", qos=3)


class Helpdesk(EmailConsumer):
    seen: list[ReceivedEmail] = []

    async def email_received(self, message: dict[str, Any]) -> None:
        self.seen.append(ReceivedEmail.from_message(message))


async def test_email_consumer_gets_the_gateways_parsed_event(memory_layer: Any, tmp_path: Any) -> None:
    Helpdesk.seen = []
    communicator = EmailCommunicator(Helpdesk.as_asgi())
    event = await communicator.send_email(
        subject="Printer on fire",
        text="Please help",
        attachments=[("photo.png", "image/png", b"\x89PNG...")],
        storage_dir=tmp_path,
    )
    assert event["subject"] == "Printer on fire" and event["rcpt_tos"] == ["inbox@example.com"]
    await wait_until(lambda: bool(Helpdesk.seen), 10, "the consumer got the e-mail")
    (email,) = Helpdesk.seen
    assert email.subject == "Printer on fire" and email.text is not None and email.text.strip() == "Please help"
    assert [attachment.filename for attachment in email.attachments] == ["photo.png"]
    await communicator.stop_consumer()


class AutoReply(SmsConsumer):
    async def message_received(self, sms: IncomingSms) -> None:
        await self.reply(f"You said: {sms.body}")


async def test_sms_consumer_replies(memory_layer: Any) -> None:
    communicator = SmsCommunicator(AutoReply.as_asgi())
    await communicator.send_sms("hello", from_="+15557654321")
    assert await communicator.receive_reply(WAIT) == {"body": "You said: hello", "media": []}
    await communicator.stop_consumer()


class Chat(AsyncWebrtcConsumer):
    async def channel_message(self, label: str, text: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(label, text=f"echo {text}")


class Refuse(AsyncWebrtcConsumer):
    async def connect(self) -> None:
        await self.close()


async def test_webrtc_consumer_data_channels(memory_layer: Any) -> None:
    communicator = WebRTCCommunicator(Chat.as_asgi(), path="/rtc/room/")
    assert await communicator.connect(0.2)
    await communicator.open_channel("chat")
    await communicator.send_to("chat", text_data="hi")
    assert await communicator.receive_from(WAIT) == ("chat", "echo hi")
    await communicator.disconnect(timeout=WAIT)
    refused = WebRTCCommunicator(Refuse.as_asgi())
    assert not await refused.connect(WAIT)
    await refused.stop_consumer()


# -- Channels' communicators inside Django's TestCase ------------------------------------


@database_sync_to_async
def select_one() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        return int(cursor.fetchone()[0])


class QueryOnConnect(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept("v1")
        await self.send_json({"one": await select_one()})


class QueryView(AsyncHttpConsumer):
    async def handle(self, body: bytes) -> None:
        await self.send_response(200, str(await select_one()).encode(), headers={b"Content-Type": b"text/plain"})


class CommunicatorsInsideTestCase(TestCase):
    """Regression: database_sync_to_async closed the TestCase's connection between calls
    ("connection already closed"); under a communicator it is left alone."""

    async def test_websocket_then_more_queries(self) -> None:
        communicator = WebsocketCommunicator(QueryOnConnect.as_asgi(), "/ws/?x=1")
        self.assertEqual(await communicator.connect(WAIT), (True, "v1"))
        self.assertEqual(await communicator.receive_json_from(WAIT), {"one": 1})
        await communicator.disconnect(timeout=WAIT)
        self.assertEqual(await select_one(), 1)  # the test's connection still works

    async def test_http(self) -> None:
        response = await HttpCommunicator(QueryView.as_asgi(), "GET", "/q/").get_response(WAIT)
        self.assertEqual((response["status"], response["body"]), (200, b"1"))
        self.assertEqual(response["headers"], [(b"Content-Type", b"text/plain")])
