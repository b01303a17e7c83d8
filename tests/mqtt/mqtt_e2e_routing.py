"""The worker application of the MQTT end-to-end tests: a TopicRouter of four consumers."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from switchboard.consumers import ProtocolTypeRouter
from switchboard.consumers.mqtt import MqttConsumer, SyncMqttConsumer, TopicRouter

P = settings.PREFIX


class EchoConsumer(MqttConsumer):
    """``<p>/req/<n>`` -> ``<p>/resp/<n>``; a few payloads are commands for the tests."""

    async def message_received(self, topic: str, payload: bytes, qos: int, retain: bool, properties: dict[str, Any]) -> None:
        number = topic.rsplit("/", 1)[1]
        if payload.startswith(b"sub "):
            await self.subscribe(payload[4:].decode())
        elif payload == b"badpub":
            # A raw message the helpers would refuse: the gateway must drop and count it.
            await self.send({"type": "mqtt.publish", "topic": f"{P}/resp/#", "payload": b"wildcard"})
        elif payload.startswith(b"to "):
            # Publishes where the request says, like an RPC honouring any response topic:
            # the gateway's publish_topics decides what actually goes out.
            await self.publish(payload[3:].decode(), b"redirected")
        elif payload == b"boom":
            raise ValueError("cannot handle this payload (on purpose, for the tests)")
        await self.publish(f"{P}/resp/{number}", b"echo:" + payload)


class TemperatureConsumer(SyncMqttConsumer):
    """``<p>/sensors/<room>/temp`` -> ``<p>/out/temp/<room>``; a non-number payload raises."""

    def message_received(self, topic: str, payload: bytes, qos: int, retain: bool, properties: dict[str, Any]) -> None:
        room = topic.split("/")[-2]
        self.publish(f"{P}/out/temp/{room}", f"{float(payload):.1f}")


class CommandConsumer(MqttConsumer):
    async def message_received(self, topic: str, payload: bytes, qos: int, retain: bool, properties: dict[str, Any]) -> None:
        await self.publish(f"{P}/out/cmd", f"{self.scope['topic_filter']} {topic}", qos=1)


class ExtraConsumer(MqttConsumer):
    """Serves the runtime-subscribed ``<p>/extra/#`` topics."""

    async def message_received(self, topic: str, payload: bytes, qos: int, retain: bool, properties: dict[str, Any]) -> None:
        await self.publish(f"{P}/out/extra", b"extra:" + payload)


application = ProtocolTypeRouter(
    {
        "mqtt": TopicRouter(
            {
                f"{P}/req/+": EchoConsumer.as_asgi(),
                f"{P}/sensors/+/temp": TemperatureConsumer.as_asgi(),
                f"{P}/cmd/#": CommandConsumer.as_asgi(),
                f"{P}/extra/#": ExtraConsumer.as_asgi(),
            }
        ),
    }
)
