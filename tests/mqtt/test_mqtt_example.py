"""The example project's MQTT consumers (examples/chatsite/mqttdemo) against the real broker.

The gateway runs with the example's own ``subscriptions`` and ``publish_topics``; devices
and attackers are plain paho clients publishing through the broker. The demo's topic
prefix is fixed, so the tests that check what is *not* published use a private broker:
on the shared one, another test run's stack of the example would answer too.
"""

from __future__ import annotations

import asyncio
import secrets
import sys
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from switchboard.consumers import ProtocolTypeRouter

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "chatsite"
if str(EXAMPLE) not in sys.path:
    sys.path.insert(0, str(EXAMPLE))

from mqttdemo.consumers import PREFIX  # noqa: E402
from mqttdemo.routing import PUBLISH_TOPICS, SUBSCRIPTIONS, mqtt_application  # noqa: E402


async def serve_example(serve: Any, **options: Any) -> Any:
    return await serve(
        ProtocolTypeRouter({"mqtt": mqtt_application}), subscriptions=SUBSCRIPTIONS, publish_topics=PUBLISH_TOPICS, **options
    )


def request_properties(response_topic: str, correlation: bytes) -> Properties:
    properties = Properties(PacketTypes.PUBLISH)
    properties.ResponseTopic = response_topic
    properties.CorrelationData = correlation
    return properties


async def test_rpc_answers_v311_and_v5_clients(serve: Any, mqtt_client: Any) -> None:
    await serve_example(serve, protocol_version="5")
    name = secrets.token_hex(4)  # the demo's prefix is fixed: unique names keep runs apart
    old = mqtt_client()
    old.subscribe(f"{PREFIX}/rpc/{name}/reply")
    old.publish(f"{PREFIX}/rpc/{name}", b"hello")
    assert (await old.aget()).payload == b"HELLO"

    new = mqtt_client(version=5)
    new.subscribe(f"{PREFIX}/replies/{name}")
    request = request_properties(f"{PREFIX}/replies/{name}", b"req-1")
    new.publish(f"{PREFIX}/rpc/{name}", b"mqtt five", qos=1, properties=request)
    reply = await new.aget()
    assert (reply.payload, reply.properties.CorrelationData) == (b"MQTT FIVE", b"req-1")


async def test_rpc_never_answers_where_a_request_points_elsewhere(
    serve: Any, mqtt_client: Any, private_broker: Any
) -> None:
    """``response_topic`` aimed at another device's commands, at the sensors topic (to chain
    into a retained alert), or 60 KB long: no answer goes out, and the RPC keeps serving."""
    stack = await serve_example(serve, protocol_version="5", brokers=[private_broker.url])
    name, room = secrets.token_hex(4), f"room{secrets.token_hex(4)}"
    victim = f"victim-{name}/commands/open-door"
    watcher = mqtt_client(private_broker.port, version=5)
    for topic in (victim, f"{PREFIX}/sensors/{room}/temp", f"{PREFIX}/alerts/{room}", f"{PREFIX}/replies/{name}"):
        watcher.subscribe(topic)
    attacker = mqtt_client(private_broker.port, version=5)
    for target in (victim, f"{PREFIX}/sensors/{room}/temp", f"{PREFIX}/replies/{name}/" + "x" * 60_000):
        attacker.publish(f"{PREFIX}/rpc/{name}", b"99", qos=1, properties=request_properties(target, b"evil"))
    # One consumer instance answers in order: once the honest request's answer is here,
    # the ones before it were refused, not delayed.
    attacker.publish(f"{PREFIX}/rpc/{name}", b"honest", qos=1, properties=request_properties(f"{PREFIX}/replies/{name}", b"ok"))
    reply = await watcher.aget()
    assert (reply.topic, reply.payload, reply.properties.CorrelationData) == (f"{PREFIX}/replies/{name}", b"HONEST", b"ok")
    assert watcher.messages.empty()
    assert stack.plugin.stats()["publish_dropped_topic"] == 0  # the example refused them itself


@pytest.mark.parametrize("reading", [b"inf", b"-inf", b"1e309", b"nan", b"NaN", b"1e5", b"31" + b"0" * 40, b"not a number"])
async def test_implausible_readings_raise_no_alert(
    serve: Any, mqtt_client: Any, private_broker: Any, reading: bytes
) -> None:
    stack = await serve_example(serve, brokers=[private_broker.url])
    room = f"room{secrets.token_hex(4)}"
    watcher = await stack.layer.new_channel("test")
    await stack.layer.group_add("chat.sensors", watcher)
    client = mqtt_client(private_broker.port)
    client.subscribe(f"{PREFIX}/alerts/{room}")
    client.publish(f"{PREFIX}/sensors/{room}/temp", reading, qos=1)
    client.publish(f"{PREFIX}/sensors/{room}/temp", b"20.5", qos=1)  # in order, after the bad one
    message = await asyncio.wait_for(stack.layer.receive(watcher), 20)
    assert message == {"type": "chat.message", "message": f"{room}: 20.5 °C"}
    assert client.messages.empty()  # no alert, retained or not


async def test_temperature_reaches_the_chat_group_and_alerts(serve: Any, mqtt_client: Any) -> None:
    stack = await serve_example(serve)
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
