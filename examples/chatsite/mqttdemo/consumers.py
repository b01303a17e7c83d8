"""MQTT demo consumers.

Run the gateway with the ``mqtt`` protocol enabled (``docs/mqtt.md``), then, with the
mosquitto command-line clients:

    # readings show up in the WebSocket chat room "sensors" (open /chat/sensors/)
    mosquitto_pub -t switchboard-demo/sensors/kitchen/temp -m 21.5

    # request/response: "<topic>/reply", or an MQTT 5 response topic under
    # switchboard-demo/replies/
    mosquitto_sub -t 'switchboard-demo/rpc/+/reply' &
    mosquitto_pub -t switchboard-demo/rpc/upper -m 'hello'

Both consumers are stateless, as MQTT consumers must be: one instance serves every
device of the broker session, and each worker may run one of its own.

Everything in a message is the sender's choice, so both check what they act on: the
gateway publishes under its own broker account, and a reply topic taken from a request
unchecked would let any client make it publish anywhere that account may (another
device's command topic, a retained alert by way of the sensors topic). The gateway's
``publish_topics`` option (mqttdemo.routing.PUBLISH_TOPICS) is the second line of defence.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any

from asgiref.sync import async_to_sync
from paho.mqtt.client import topic_matches_sub
from showcase.feed import publish_sync

from switchboard.consumers.mqtt import MqttConsumer, SyncMqttConsumer
from switchboard.gateway.plugins import RateLimitedLog

PREFIX = "switchboard-demo"
ALERT_ABOVE = 30.0
#: Readings outside this range (°C) are not temperatures any sensor here reports.
PLAUSIBLE = (-90.0, 150.0)
#: Longest reading payload: a number, not a document.
MAX_READING_BYTES = 32
#: Room names, from the topic level: letters, digits, ``_`` and ``-``, as chat rooms are.
ROOM = re.compile(r"[\w-]{1,40}")
#: MQTT 5 response topics the RPC answers on (besides ``<request topic>/reply``).
REPLIES = f"{PREFIX}/replies/#"
MAX_REPLY_TOPIC = 200

logger = logging.getLogger("mqttdemo")
_log = RateLimitedLog(logger, "mqttdemo")


def parse_reading(payload: bytes) -> float | None:
    """The temperature in a payload, or None when it is not a plausible finite number.

    ``float()`` alone accepts ``inf``, ``nan`` and ``1e309`` (which overflows to inf).
    """
    if len(payload) > MAX_READING_BYTES:
        return None
    try:
        celsius = float(payload)
    except ValueError:
        return None
    if not math.isfinite(celsius) or not PLAUSIBLE[0] <= celsius <= PLAUSIBLE[1]:
        return None
    return celsius


class TemperatureConsumer(SyncMqttConsumer):
    """``<prefix>/sensors/<room>/temp``: relay readings to the chat room ``sensors``.

    Sync on purpose: this is where a real project would save the reading with the ORM.
    A reading above ``ALERT_ABOVE`` is also published, retained, on
    ``<prefix>/alerts/<room>`` so a dashboard connecting later still sees the alert.
    """

    def message_received(self, topic: str, payload: bytes, qos: int, retain: bool, properties: dict[str, Any]) -> None:
        room = topic.split("/")[-2]
        celsius = parse_reading(payload)
        if celsius is None or not ROOM.fullmatch(room):
            # MQTT has no error reply: drop it, and say so (at most once a second).
            _log.warning("bad reading", f"{len(payload)}-byte payload on {topic[:100]!r} is no plausible reading; ignored")
            return
        # The chat consumers of the WebSocket protocol receive this like any chat line.
        async_to_sync(self.channel_layer.group_send)(
            "chat.sensors", {"type": "chat.message", "message": f"{room}: {celsius:.1f} °C"}
        )
        publish_sync(self.channel_layer, "mqtt", f"{topic}: {celsius:.1f} °C")
        if celsius > ALERT_ABOVE:
            self.publish(f"{PREFIX}/alerts/{room}", f"{celsius:.1f}", qos=1, retain=True)


class UpperRpcConsumer(MqttConsumer):
    """``<prefix>/rpc/<name>``: answer in upper case, MQTT 5 request/response style.

    An MQTT 5 client names its ``response_topic`` (under ``<prefix>/replies/``) and a
    ``correlation_data`` to match the answer to its request; both are echoed back. Older
    clients, and requests without a response topic, get ``<topic>/reply``.
    """

    async def message_received(
        self, topic: str, payload: bytes, qos: int, retain: bool, properties: dict[str, Any]
    ) -> None:
        if retain:
            return  # an old request replayed by the broker, not a live one
        reply_to = properties.get("response_topic") or f"{topic}/reply"
        if not self.may_reply_to(reply_to, topic):
            _log.warning("bad response topic", f"request on {topic[:100]!r} asked for {str(reply_to)[:100]!r}; not answered")
            return
        reply_properties = {}
        if "correlation_data" in properties:
            reply_properties["correlation_data"] = properties["correlation_data"]
        await self.publish(reply_to, payload.upper(), qos=qos, properties=reply_properties)

    def may_reply_to(self, reply_to: Any, topic: str) -> bool:
        """Only ``<topic>/reply`` or a short topic under ``<prefix>/replies/``.

        Never one this consumer's own filter matches (the answer would come straight back
        as a request: a loop), nor any other topic a request names.
        """
        if not isinstance(reply_to, str) or len(reply_to) > MAX_REPLY_TOPIC:
            return False
        if topic_matches_sub(self.scope.get("topic_filter", "#"), reply_to):
            return False
        return reply_to == f"{topic}/reply" or topic_matches_sub(REPLIES, reply_to)
