"""MQTT demo consumers.

Run the gateway with the ``mqtt`` protocol enabled (``docs/mqtt.md``), then, with the
mosquitto command-line clients:

    # readings show up in the WebSocket chat room "sensors" (open /chat/sensors/)
    mosquitto_pub -t switchboard-demo/sensors/kitchen/temp -m 21.5

    # request/response: MQTT 5 response topic, or "<topic>/reply" for MQTT 3.1.1 clients
    mosquitto_sub -t 'switchboard-demo/rpc/+/reply' &
    mosquitto_pub -t switchboard-demo/rpc/upper -m 'hello'

Both consumers are stateless, as MQTT consumers must be: one instance serves every
device of the broker session, and each worker may run one of its own.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import async_to_sync
from paho.mqtt.client import topic_matches_sub
from showcase.feed import publish_sync

from switchboard.consumers.mqtt import MqttConsumer, SyncMqttConsumer

PREFIX = "switchboard-demo"
ALERT_ABOVE = 30.0


class TemperatureConsumer(SyncMqttConsumer):
    """``<prefix>/sensors/<room>/temp``: relay readings to the chat room ``sensors``.

    Sync on purpose: this is where a real project would save the reading with the ORM.
    A reading above ``ALERT_ABOVE`` is also published, retained, on
    ``<prefix>/alerts/<room>`` so a dashboard connecting later still sees the alert.
    """

    def message_received(self, topic: str, payload: bytes, qos: int, retain: bool, properties: dict[str, Any]) -> None:
        room = topic.split("/")[-2]
        try:
            celsius = float(payload)
        except ValueError:
            return  # not a reading; MQTT has no error reply, so ignore it
        # The chat consumers of the WebSocket protocol receive this like any chat line.
        async_to_sync(self.channel_layer.group_send)(
            "chat.sensors", {"type": "chat.message", "message": f"{room}: {celsius:.1f} °C"}
        )
        publish_sync(self.channel_layer, "mqtt", f"{topic}: {celsius:.1f} °C")
        if celsius > ALERT_ABOVE:
            self.publish(f"{PREFIX}/alerts/{room}", f"{celsius:.1f}", qos=1, retain=True)


class UpperRpcConsumer(MqttConsumer):
    """``<prefix>/rpc/<name>``: answer in upper case, MQTT 5 request/response style.

    An MQTT 5 client names its ``response_topic`` and a ``correlation_data`` to match the
    answer to its request; both are echoed back. Older clients get ``<topic>/reply``.
    """

    async def message_received(
        self, topic: str, payload: bytes, qos: int, retain: bool, properties: dict[str, Any]
    ) -> None:
        if retain:
            return  # an old request replayed by the broker, not a live one
        reply_to = properties.get("response_topic") or f"{topic}/reply"
        if topic_matches_sub(self.scope.get("topic_filter", "#"), reply_to):
            return  # answering there would come straight back to us: a loop
        reply_properties = {}
        if "correlation_data" in properties:
            reply_properties["correlation_data"] = properties["correlation_data"]
        await self.publish(reply_to, payload.upper(), qos=qos, properties=reply_properties)
