"""The MQTT plugin in one process: real Mosquitto, gateway core, worker, plain ASGI apps.

The worker application here is a hand-written ASGI app (no consumer classes), so these
tests pin the plugin's own contract: scope and events as specs/mqtt.md says, outbound
messages validated, every drop counted, the session never lost to bad input.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from mqtt_helpers import apublish_until_reply
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from support.waiting import deadline, wait_until

from switchboard.gateway.specs import GATEWAY_TO_WORKER, validate_envelope, validate_message, validate_scope
from switchboard.protocols.mqtt import INBOUND_OUTCOMES

Message = dict[str, Any]


class Recorder:
    """A plain ASGI app: records scope and events; runs ``reply(event)`` for each."""

    def __init__(self, reply: Any = None) -> None:
        self.scopes: list[Message] = []
        self.events: list[Message] = []
        self.reply = reply

    async def __call__(self, scope: Message, receive: Any, send: Any) -> None:
        self.scopes.append(scope)
        while True:
            event = await receive()
            self.events.append(event)
            if self.reply is not None:
                for message in self.reply(event):
                    await send(message)


def inbound_balanced(stats: dict[str, int]) -> bool:
    return stats["messages_in"] == stats["queued"] + sum(stats[name] for name in INBOUND_OUTCOMES)


async def test_request_reply_through_worker(serve: Any, mqtt_client: Any, prefix: str) -> None:
    def echo(event: Message) -> list[Message]:
        number = event["topic"].rsplit("/", 1)[1]
        return [{"type": "mqtt.publish", "topic": f"{prefix}/resp/{number}", "payload": b"echo:" + event["payload"]}]

    app = Recorder(echo)
    stack = await serve(app, subscriptions=[f"{prefix}/req/+"])
    assert stack.plugin.connected
    client = mqtt_client()
    client.subscribe(f"{prefix}/resp/+")
    client.publish(f"{prefix}/req/1", b"hello")
    reply = await client.aget()
    assert (reply.topic, reply.payload) == (f"{prefix}/resp/1", b"echo:hello")

    (scope,) = app.scopes
    validate_scope(scope)
    assert scope["type"] == "mqtt" and scope["client_id"] == f"switchboard-{stack.gateway.id}"
    assert scope["broker"] == "mqtt://127.0.0.1:1883" and scope["protocol_version"] == "3.1.1"
    (event,) = app.events
    validate_message(event, direction=GATEWAY_TO_WORKER)
    assert event == {
        "type": "mqtt.message", "topic": f"{prefix}/req/1", "payload": b"hello", "qos": 0, "retain": False, "properties": {},
    }
    stats = stack.plugin.stats()
    assert stats["messages_in"] == stats["delivered"] == 1 and stats["messages_out"] == 1
    assert inbound_balanced(stats)


async def test_binary_payloads_qos_and_retain_pass_through(serve: Any, mqtt_client: Any, prefix: str) -> None:
    client = mqtt_client()
    client.publish(f"{prefix}/retained", b"\x00\xffkept", qos=1, retain=True)
    app = Recorder()
    await serve(app, subscriptions=[{"topic": f"{prefix}/#", "qos": 1}])
    await wait_until(lambda: len(app.events) == 1, what="the retained message")
    client.publish(f"{prefix}/live", bytes(range(256)), qos=1)
    client.publish(f"{prefix}/empty", b"", qos=0)
    await wait_until(lambda: len(app.events) == 3, what="two live messages")
    retained, live, empty = app.events
    assert (retained["payload"], retained["retain"], retained["qos"]) == (b"\x00\xffkept", True, 1)
    assert (live["payload"], live["retain"], live["qos"]) == (bytes(range(256)), False, 1)
    assert (empty["payload"], empty["qos"]) == (b"", 0)
    client.publish(f"{prefix}/retained", b"", qos=1, retain=True)  # clear it again


async def test_mqtt5_properties_both_ways(serve: Any, mqtt_client: Any, prefix: str) -> None:
    def answer(event: Message) -> list[Message]:
        props = event["properties"]
        return [{
            "type": "mqtt.publish",
            "topic": props["response_topic"],
            "payload": event["payload"].upper(),
            "qos": 1,
            "properties": {"correlation_data": props["correlation_data"], "user_properties": [["answered-by", "sb"]]},
        }]

    app = Recorder(answer)
    await serve(app, subscriptions=[f"{prefix}/rpc/req"], protocol_version="5")
    client = mqtt_client(version=5)
    client.subscribe(f"{prefix}/rpc/resp")
    request = Properties(PacketTypes.PUBLISH)
    request.ResponseTopic = f"{prefix}/rpc/resp"
    request.CorrelationData = b"c-42"
    request.ContentType = "text/plain"
    request.UserProperty = [("tenant", "acme"), ("tenant", "other")]
    client.publish(f"{prefix}/rpc/req", b"ping", qos=1, properties=request)
    reply = await client.aget()
    assert reply.payload == b"PING"
    assert reply.properties.CorrelationData == b"c-42"
    assert reply.properties.UserProperty == [("answered-by", "sb")]
    (event,) = app.events
    validate_message(event, direction=GATEWAY_TO_WORKER)
    assert event["properties"] == {
        "content_type": "text/plain",
        "response_topic": f"{prefix}/rpc/resp",
        "correlation_data": b"c-42",
        "user_properties": [["tenant", "acme"], ["tenant", "other"]],
    }


async def test_oversized_inbound_dropped_counted_and_serving_goes_on(serve: Any, mqtt_client: Any, prefix: str) -> None:
    app = Recorder()
    stack = await serve(app, subscriptions=[f"{prefix}/in/#"], max_payload_size=1000)
    client = mqtt_client()
    client.publish(f"{prefix}/in/big", b"x" * 1001, qos=1)
    client.publish(f"{prefix}/in/ok", b"x" * 1000, qos=1)
    await wait_until(lambda: len(app.events) == 1, what="the message within the limit")
    assert app.events[0]["topic"] == f"{prefix}/in/ok"
    stats = stack.plugin.stats()
    assert stats["dropped_oversize"] == 1 and stats["delivered"] == 1 and inbound_balanced(stats)


async def test_bad_outbound_messages_dropped_counted_session_kept(serve: Any, mqtt_client: Any, prefix: str) -> None:
    bad: list[Message] = [
        {"type": "mqtt.publish", "topic": f"{prefix}/out/+", "payload": b"wildcard"},
        {"type": "mqtt.publish", "topic": f"{prefix}/out/#", "payload": b"wildcard"},
        {"type": "mqtt.publish", "topic": f"{prefix}/out/\x00nul", "payload": b"nul"},
        {"type": "mqtt.publish", "topic": f"{prefix}/out/\x07bell", "payload": b"control"},
        {"type": "mqtt.publish", "topic": "", "payload": b"empty topic"},
        {"type": "mqtt.publish", "topic": f"{prefix}/out/x", "payload": 42},
        {"type": "mqtt.publish", "topic": f"{prefix}/out/x"},
        {"type": "mqtt.publish", "topic": f"{prefix}/out/x", "payload": b"", "qos": 3},
        {"type": "mqtt.publish", "topic": f"{prefix}/out/x", "payload": b"", "retain": "yes"},
        {"type": "mqtt.publish", "topic": f"{prefix}/out/x", "payload": b"", "properties": {"content_type": "text/plain"}},
        {"type": "mqtt.subscribe", "topic": f"{prefix}/a#"},
        {"type": "mqtt.subscribe", "topic": f"{prefix}/#/a"},
        {"type": "mqtt.unsubscribe", "topic": ""},
        {"type": "mqtt.message", "topic": f"{prefix}/out/x", "payload": b"wrong direction"},
        {"type": "mqtt.bogus"},
    ]
    big = {"type": "mqtt.publish", "topic": f"{prefix}/out/big", "payload": b"x" * 101}

    def reply(event: Message) -> list[Message]:
        if event["payload"] == b"go":
            return [*bad, big, {"type": "mqtt.publish", "topic": f"{prefix}/out/ok", "payload": b"still here"}]
        return [{"type": "mqtt.publish", "topic": f"{prefix}/out/ok", "payload": b"again"}]

    stack = await serve(Recorder(reply), subscriptions=[f"{prefix}/in"], max_payload_size=100)
    client = mqtt_client()
    client.subscribe(f"{prefix}/out/#")
    client.publish(f"{prefix}/in", b"go")
    reply_message = await client.aget()
    assert (reply_message.topic, reply_message.payload) == (f"{prefix}/out/ok", b"still here")
    stats = stack.plugin.stats()
    # 10 publishes, 2 subscribes, 1 unsubscribe and 2 of unknown or wrong-direction types.
    assert stats["replies_invalid"] == 10 + 2 + 1 + 2
    assert stats["publish_dropped_oversize"] == 1
    # Nothing bad reached the broker: the session was never dropped and keeps serving.
    client.publish(f"{prefix}/in", b"more")
    assert (await client.aget()).payload == b"again"
    assert stack.plugin.stats()["disconnects"] == 0 and stack.plugin.connected
    assert client.messages.empty()


async def test_publishes_outside_publish_topics_are_refused_counted_and_logged(
    serve: Any, mqtt_client: Any, prefix: str, caplog: Any
) -> None:
    """A consumer that publishes wherever a request says (a careless RPC): the gateway sends
    only what ``publish_topics`` allows, whatever the consumer asks for."""

    def careless(event: Message) -> list[Message]:
        return [{"type": "mqtt.publish", "topic": event["payload"].decode(), "payload": b"done"}]

    stack = await serve(Recorder(careless), subscriptions=[f"{prefix}/rpc"], publish_topics=[f"{prefix}/replies/+"])
    watcher = mqtt_client()
    victim = f"{prefix}-victim/commands/open-door"
    watcher.subscribe(victim)
    watcher.subscribe(f"{prefix}/#")
    client = mqtt_client()
    for target in (victim, f"{prefix}/rpc", f"{prefix}/replies/a/deeper", f"{prefix}/replies/ok"):
        client.publish(f"{prefix}/rpc", target.encode(), qos=1)
    # The watcher sees the requests it published itself and the one allowed reply, in order.
    received = [await watcher.aget() for _ in range(5)]
    assert [(m.topic, m.payload) for m in received if m.topic != f"{prefix}/rpc"] == [(f"{prefix}/replies/ok", b"done")]
    assert watcher.messages.empty()
    stats = stack.plugin.stats()
    assert stats["publish_dropped_topic"] == 3 and stats["messages_out"] == 1 and stack.plugin.connected
    assert "publish_dropped_topic" in caplog.text and victim in caplog.text


# The at-most-once pool (durable delivery off): a full pool or queue drops and counts. On
# the durable default, QoS 1 messages wait instead (tests/mqtt/test_mqtt_durable.py).
AT_MOST_ONCE = {"switchboard.mqtt": False}


async def test_channel_full_drops_are_counted(serve: Any, mqtt_client: Any, prefix: str) -> None:
    layer = {
        "BACKEND": "memory",
        "CONFIG": {"block_timeout": 0.05, "channel_capacity": {"switchboard.mqtt": 2}, "durable": AT_MOST_ONCE},
    }
    stack = await serve(None, layer_config=layer, subscriptions=[f"{prefix}/in"])  # no worker reads the pool
    client = mqtt_client()
    for number in range(5):
        client.publish(f"{prefix}/in", str(number), qos=1)
    await wait_until(lambda: stack.plugin.stats()["messages_in"] == 5 and stack.plugin.stats()["queued"] == 0)
    stats = stack.plugin.stats()
    assert stats["delivered"] == 2 and stats["events_full"] == 3 and inbound_balanced(stats)


async def test_inbound_queue_full_drops_are_counted(serve: Any, mqtt_client: Any, prefix: str) -> None:
    layer = {"BACKEND": "memory", "CONFIG": {"block_timeout": 0.05, "durable": AT_MOST_ONCE}}
    stack = await serve(None, layer_config=layer, subscriptions=[f"{prefix}/in"], inbound_queue_size=1)
    client = mqtt_client()
    # Hold the loop so paho's thread keeps handing messages over while nothing drains.
    received = stack.plugin.stats()["messages_in"]
    for number in range(20):
        client.publish(f"{prefix}/in", str(number), qos=1)
    end = time.monotonic() + deadline(10)
    while stack.plugin.stats()["messages_in"] < received + 20 and time.monotonic() < end:
        time.sleep(0.01)  # blocks the loop on purpose: the hand-off queue cannot drain
    await wait_until(lambda: stack.plugin.stats()["queued"] == 0)
    stats = stack.plugin.stats()
    assert stats["messages_in"] == 20 and stats["dropped_queue_full"] >= 1 and inbound_balanced(stats)


async def test_runtime_subscribe_and_unsubscribe(serve: Any, mqtt_client: Any, prefix: str) -> None:
    def control(event: Message) -> list[Message]:
        if event["topic"] == f"{prefix}/ctl":
            kind, _, topic = event["payload"].decode().partition(" ")
            return [{"type": f"mqtt.{kind}", "topic": topic}]
        return [{"type": "mqtt.publish", "topic": f"{prefix}/out", "payload": event["topic"].encode()}]

    stack = await serve(Recorder(control), subscriptions=[f"{prefix}/ctl"])
    client = mqtt_client()
    client.subscribe(f"{prefix}/out")
    client.publish(f"{prefix}/ctl", f"subscribe {prefix}/extra/+")
    await wait_until(lambda: f"{prefix}/extra/+" in stack.plugin.subscriptions(), what="the runtime subscription")
    # The gateway's SUBACK is not observable from here: publish until one is answered.
    reply = await apublish_until_reply(client, f"{prefix}/extra/a", b"x")
    assert reply.payload == f"{prefix}/extra/a".encode()
    client.publish(f"{prefix}/ctl", f"unsubscribe {prefix}/extra/+")
    await wait_until(lambda: f"{prefix}/extra/+" not in stack.plugin.subscriptions(), what="the unsubscribe")
    assert stack.plugin.stats()["subscribed"] == 1 and stack.plugin.stats()["unsubscribed"] == 1


async def test_status_topic_online_then_offline(serve: Any, mqtt_client: Any, prefix: str) -> None:
    client = mqtt_client()
    client.subscribe(f"{prefix}/status")
    stack = await serve(None, status_topic=f"{prefix}/status")
    assert (await client.aget()).payload == b"online"
    await stack.close()
    assert (await client.aget()).payload == b"offline"
    assert stack.gateway.connections == {}
    late = mqtt_client()
    late.subscribe(f"{prefix}/status")
    message = await late.aget()
    assert (message.payload, message.retain) == (b"offline", True)
    late.publish(f"{prefix}/status", b"", qos=1, retain=True)  # clear the retained status


async def test_envelopes_on_the_layer_match_the_spec(serve: Any, mqtt_client: Any, prefix: str) -> None:
    stack = await serve(None, subscriptions=[f"{prefix}/in"], protocol_version="5")  # a test reads the pool itself
    client = mqtt_client(version=5)
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("k", "v")]
    props.PayloadFormatIndicator = 1
    props.MessageExpiryInterval = 60
    client.publish(f"{prefix}/in", "text", qos=1, properties=props)
    envelope = await asyncio.wait_for(stack.layer.receive("switchboard.mqtt"), 10)
    validate_envelope(envelope)
    assert envelope["connection"] == stack.plugin.connection.channel  # type: ignore[union-attr]
    event = envelope["event"]
    assert event["properties"]["user_properties"] == [["k", "v"]]
    assert event["properties"]["payload_format_indicator"] == 1
    assert 0 < event["properties"]["message_expiry_interval"] <= 60
