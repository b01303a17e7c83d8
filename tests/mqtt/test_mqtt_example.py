"""The example project's MQTT consumers (examples/chatsite/mqttdemo) against the real broker."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from switchboard.consumers import ProtocolTypeRouter

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "chatsite"
if str(EXAMPLE) not in sys.path:
    sys.path.insert(0, str(EXAMPLE))

from mqttdemo.consumers import PREFIX  # noqa: E402
from mqttdemo.routing import SUBSCRIPTIONS, mqtt_application  # noqa: E402


async def test_rpc_answers_v311_and_v5_clients(serve: Any, mqtt_client: Any) -> None:
    await serve(ProtocolTypeRouter({"mqtt": mqtt_application}), subscriptions=SUBSCRIPTIONS, protocol_version="5")
    name = secrets.token_hex(4)  # the demo's prefix is fixed: unique names keep runs apart
    old = mqtt_client()
    old.subscribe(f"{PREFIX}/rpc/{name}/reply")
    old.publish(f"{PREFIX}/rpc/{name}", b"hello")
    assert (await old.aget()).payload == b"HELLO"

    new = mqtt_client(version=5)
    new.subscribe(f"{PREFIX}/answers/{name}")
    request = Properties(PacketTypes.PUBLISH)
    request.ResponseTopic = f"{PREFIX}/answers/{name}"
    request.CorrelationData = b"req-1"
    new.publish(f"{PREFIX}/rpc/{name}", b"mqtt five", qos=1, properties=request)
    reply = await new.aget()
    assert (reply.payload, reply.properties.CorrelationData) == (b"MQTT FIVE", b"req-1")


async def test_temperature_reaches_the_chat_group_and_alerts(serve: Any, mqtt_client: Any) -> None:
    stack = await serve(ProtocolTypeRouter({"mqtt": mqtt_application}), subscriptions=SUBSCRIPTIONS)
    room = f"room{secrets.token_hex(4)}"
    watcher = await stack.layer.new_channel("test")
    await stack.layer.group_add("chat.sensors", watcher)
    client = mqtt_client()
    client.subscribe(f"{PREFIX}/alerts/{room}")
    client.publish(f"{PREFIX}/sensors/{room}/temp", b"not a number")  # ignored
    client.publish(f"{PREFIX}/sensors/{room}/temp", b"31.25")
    alert = await client.aget()
    assert alert.payload == b"31.2"
    message = await stack.layer.receive(watcher)
    assert message == {"type": "chat.message", "message": f"{room}: 31.2 °C"}
    client.publish(f"{PREFIX}/alerts/{room}", b"", qos=1, retain=True)  # clear the retained alert
