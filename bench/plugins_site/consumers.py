"""The consumers of the plugin benchmarks: each answers with exactly what it was sent.

The load generators check every reply against the request, so an echo that changed the
payload (or answered the wrong request) counts as an error, not as a sample.
"""

from __future__ import annotations

from typing import Any

from plugins_site.common import SMS_REPLY_PREFIX, mqtt_reply_topic

from switchboard.consumers.mqtt import MqttConsumer
from switchboard.consumers.sms import IncomingSms, SmsConsumer
from switchboard.consumers.udp import AsyncUdpConsumer
from switchboard.consumers.webrtc import AsyncWebrtcConsumer


class UdpEchoConsumer(AsyncUdpConsumer):
    """Each datagram straight back to its sender, through the socket it came in on."""

    async def datagram_received(self, data: bytes, client: tuple[str, int]) -> None:
        await self.send_datagram(data, client)


class MqttEchoConsumer(MqttConsumer):
    """``<prefix>/req/<n>`` is answered on ``<prefix>/resp/<n>`` with the same payload."""

    prefix = ""  # set by the routing: as_asgi(prefix=...)

    async def message_received(self, topic: str, payload: bytes, qos: int, retain: bool, properties: dict[str, Any]) -> None:
        await self.publish(mqtt_reply_topic(self.prefix, topic.rsplit("/", 1)[1]), payload)


class WebrtcEchoConsumer(AsyncWebrtcConsumer):
    """Every data channel message back on the channel it came from."""

    async def channel_message(self, label: str, text: str | None = None, bytes_data: bytes | None = None) -> None:
        if text is not None:
            await self.send(label, text=text)
        else:
            await self.send(label, bytes_data=bytes_data)


class SmsEchoConsumer(SmsConsumer):
    """An inline TwiML reply (no REST call): ``echo: <body>``."""

    async def message_received(self, sms: IncomingSms) -> None:
        await self.reply(SMS_REPLY_PREFIX + sms.body)
