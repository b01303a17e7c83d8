"""MqttConsumer, SyncMqttConsumer and TopicRouter, run by a worker against the real broker."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from mqtt_helpers import apublish_until_reply
from support.waiting import wait_until

from switchboard.consumers import ProtocolTypeRouter
from switchboard.consumers.mqtt import MqttConsumer, SyncMqttConsumer, TopicRouter, publish_message
from switchboard.gateway.specs import WORKER_TO_GATEWAY, validate_message

Message = dict[str, Any]


class EchoConsumer(MqttConsumer):
    """``<p>/req/<n>`` -> ``<p>/resp/<n>``; ``boom`` raises; ``sub``/``unsub <f>`` at runtime."""

    async def message_received(self, topic: str, payload: bytes, qos: int, retain: bool, properties: dict[str, Any]) -> None:
        prefix, _, number = topic.rpartition("/req/")
        if payload == b"boom":
            raise ValueError("a payload this consumer cannot handle")
        if payload.startswith(b"sub "):
            await self.subscribe(payload[4:].decode(), qos=1)
        elif payload.startswith(b"unsub "):
            await self.unsubscribe(payload[6:].decode())
        await self.publish(f"{prefix}/resp/{number}", b"echo:" + payload, qos=qos)


class SyncTempConsumer(SyncMqttConsumer):
    """``<p>/sensors/<room>/temp`` -> ``<p>/out/temp/<room>`` (runs in a thread)."""

    def message_received(self, topic: str, payload: bytes, qos: int, retain: bool, properties: dict[str, Any]) -> None:
        prefix, _, rest = topic.partition("/sensors/")
        room = rest.split("/")[0]
        self.publish(f"{prefix}/out/temp/{room}", f"{self.scope['topic_filter']}={float(payload):.1f}")


class CommandConsumer(MqttConsumer):
    async def message_received(self, topic: str, payload: bytes, qos: int, retain: bool, properties: dict[str, Any]) -> None:
        prefix = topic.split("/cmd/")[0]
        await self.publish(f"{prefix}/out/cmd", f"{self.scope['topic_filter']}:{topic}", qos=1)


async def test_async_consumer_request_reply(serve: Any, mqtt_client: Any, prefix: str) -> None:
    await serve(ProtocolTypeRouter({"mqtt": EchoConsumer.as_asgi()}), subscriptions=[{"topic": f"{prefix}/req/+", "qos": 1}])
    client = mqtt_client()
    client.subscribe(f"{prefix}/resp/+", qos=1)
    client.publish(f"{prefix}/req/7", b"hi", qos=1)
    reply = await client.aget()
    assert (reply.topic, reply.payload, reply.qos) == (f"{prefix}/resp/7", b"echo:hi", 1)


async def test_exception_in_handler_is_logged_and_the_next_message_served(
    serve: Any, mqtt_client: Any, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    stack = await serve(ProtocolTypeRouter({"mqtt": EchoConsumer.as_asgi()}), subscriptions=[f"{prefix}/req/+"])
    client = mqtt_client()
    client.subscribe(f"{prefix}/resp/+")
    with caplog.at_level(logging.ERROR, logger="switchboard.consumers.mqtt"):
        client.publish(f"{prefix}/req/1", b"boom")
        client.publish(f"{prefix}/req/2", b"fine")
        reply = await client.aget()
    assert reply.payload == b"echo:fine"
    assert "EchoConsumer failed" in caplog.text and "cannot handle" in caplog.text
    assert stack.worker is not None and stack.worker.stats.instances_failed == 0


async def test_topic_router_two_filters_two_consumers(serve: Any, mqtt_client: Any, prefix: str) -> None:
    router = TopicRouter({
        f"{prefix}/sensors/+/temp": SyncTempConsumer.as_asgi(),
        f"{prefix}/cmd/#": CommandConsumer.as_asgi(),
        f"{prefix}/#": EchoConsumer.as_asgi(),  # first match wins: only what the others miss
    })
    subscriptions = [f"{prefix}/sensors/+/temp", f"{prefix}/cmd/#", f"{prefix}/req/+"]
    stack = await serve(ProtocolTypeRouter({"mqtt": router}), subscriptions=subscriptions)
    client = mqtt_client()
    client.subscribe(f"{prefix}/out/#")
    client.subscribe(f"{prefix}/resp/+")
    client.publish(f"{prefix}/sensors/kitchen/temp", b"21.46")
    client.publish(f"{prefix}/cmd/lights/off", b"")
    client.publish(f"{prefix}/req/3", b"other")
    got = {(m.topic, m.payload) for m in [await client.aget() for _ in range(3)]}
    assert got == {
        (f"{prefix}/out/temp/kitchen", f"{prefix}/sensors/+/temp=21.5".encode()),
        (f"{prefix}/out/cmd", f"{prefix}/cmd/#:{prefix}/cmd/lights/off".encode()),
        (f"{prefix}/resp/3", b"echo:other"),
    }
    assert router.stats["routed"] == 3 and router.stats["unmatched"] == 0
    assert stack.worker is not None and stack.worker.stats.instances_started == 1  # one per MQTT connection


async def test_topic_router_unmatched_topics_are_counted_and_dropped(serve: Any, mqtt_client: Any, prefix: str) -> None:
    router = TopicRouter({f"{prefix}/req/+": EchoConsumer.as_asgi()})
    await serve(ProtocolTypeRouter({"mqtt": router}), subscriptions=[f"{prefix}/#"])
    client = mqtt_client()
    client.subscribe(f"{prefix}/resp/+")
    client.publish(f"{prefix}/nobody/listens", b"lost")
    client.publish(f"{prefix}/req/1", b"found")
    assert (await client.aget()).payload == b"echo:found"
    await wait_until(lambda: router.stats["unmatched"] >= 1)
    # The consumer's own reply on <p>/resp/1 also matches <p>/# and is unmatched too.


async def test_topic_router_restarts_a_route_whose_app_failed(serve: Any, mqtt_client: Any, prefix: str) -> None:
    calls: list[str] = []

    async def fragile(scope: Message, receive: Any, send: Any) -> None:
        event = await receive()
        calls.append(event["topic"])
        if event["payload"] == b"crash":
            raise RuntimeError("route app crashed (on purpose)")
        await send(publish_message(f"{prefix}/out", b"ok:" + event["payload"]))

    router = TopicRouter({f"{prefix}/in": fragile})
    await serve(ProtocolTypeRouter({"mqtt": router}), subscriptions=[f"{prefix}/in"])
    client = mqtt_client()
    client.subscribe(f"{prefix}/out")
    client.publish(f"{prefix}/in", b"crash")
    await wait_until(lambda: router.stats["route_failures"] == 1)
    client.publish(f"{prefix}/in", b"again")
    assert (await client.aget()).payload == b"ok:again"


async def test_runtime_subscribe_from_a_consumer(serve: Any, mqtt_client: Any, prefix: str) -> None:
    router = TopicRouter({f"{prefix}/req/+": EchoConsumer.as_asgi(), f"{prefix}/extra/req/+": EchoConsumer.as_asgi()})
    stack = await serve(ProtocolTypeRouter({"mqtt": router}), subscriptions=[f"{prefix}/req/+"])
    client = mqtt_client()
    client.subscribe(f"{prefix}/resp/+")
    client.subscribe(f"{prefix}/extra/resp/+")
    client.publish(f"{prefix}/req/1", f"sub {prefix}/extra/req/+")
    assert (await client.aget()).payload == f"echo:sub {prefix}/extra/req/+".encode()
    assert stack.plugin.subscriptions()[f"{prefix}/extra/req/+"] == 1
    reply = await apublish_until_reply(client, f"{prefix}/extra/req/2", b"new")
    assert (reply.topic, reply.payload) == (f"{prefix}/extra/resp/2", b"echo:new")


async def test_bad_publish_from_a_consumer_is_dropped_and_counted(serve: Any, mqtt_client: Any, prefix: str) -> None:
    class Careless(MqttConsumer):
        async def message_received(self, topic: str, payload: bytes, *args: Any) -> None:
            # Raw sends bypass the helper's checks; the gateway must still refuse them.
            await self.send({"type": "mqtt.publish", "topic": f"{prefix}/out/#", "payload": b"wildcard"})
            await self.send({"type": "mqtt.publish", "topic": f"{prefix}/out", "payload": {"not": "bytes"}})
            await self.publish(f"{prefix}/out", b"good")

    stack = await serve(ProtocolTypeRouter({"mqtt": Careless.as_asgi()}), subscriptions=[f"{prefix}/in"])
    client = mqtt_client()
    client.subscribe(f"{prefix}/out/#")
    client.publish(f"{prefix}/in", b"x")
    assert (await client.aget()).payload == b"good"
    assert stack.plugin.stats()["replies_invalid"] == 2 and stack.plugin.connected


def test_message_builders_check_early() -> None:
    message = publish_message("a/b", "text", qos=1, retain=True, properties={"content_type": "text/plain"})
    validate_message(message, direction=WORKER_TO_GATEWAY)
    with pytest.raises(ValueError, match="wildcards"):
        publish_message("a/+", b"")
    with pytest.raises(ValueError, match="qos"):
        publish_message("a/b", b"", qos=5)
    with pytest.raises(TypeError):
        publish_message("a/b", 42)  # type: ignore[arg-type]


def test_topic_router_rejects_bad_configuration() -> None:
    with pytest.raises(ImproperlyConfigured, match="invalid"):
        TopicRouter({"a/#/b": EchoConsumer.as_asgi()})
    with pytest.raises(ImproperlyConfigured, match="as_asgi"):
        TopicRouter({"a/#": EchoConsumer})
    with pytest.raises(ImproperlyConfigured):
        TopicRouter({})


async def test_topic_router_cancels_route_instances_when_cancelled() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def app(scope: Message, receive: Any, send: Any) -> None:
        started.set()
        try:
            await receive()
            await receive()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    queue: asyncio.Queue[Message] = asyncio.Queue()
    router = TopicRouter({"t/#": app})
    await queue.put({"type": "mqtt.message", "topic": "t/1", "payload": b"", "qos": 0, "retain": False, "properties": {}})
    task = asyncio.get_running_loop().create_task(router({"type": "mqtt"}, queue.get, queue.put))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled.is_set()
