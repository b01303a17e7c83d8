"""MQTT QoS 1 on the durable pool: acknowledged to the broker only once stored.

Through the shared Mosquitto with a real paho publisher. The gateway's PUBACK is not
visible to the publisher, so the tests show it the way it matters: a message stored is
acknowledged (the broker never sends it again), one not stored is not (a new session of
the same client id gets it again).
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest
from support.waiting import wait_until

from switchboard.gateway.layers.durable import delivery_of
from switchboard.protocols.mqtt import INBOUND_OUTCOMES

pytestmark = [pytest.mark.mosquitto, pytest.mark.timeout(60)]


def inbound_balanced(stats: dict[str, int]) -> bool:
    """Every message received is queued or has exactly one outcome."""
    return stats["messages_in"] == stats["queued"] + sum(stats[name] for name in INBOUND_OUTCOMES)


def layer_config(**config: Any) -> dict[str, Any]:
    return {"BACKEND": "memory", "CONFIG": {"block_timeout": 0.05, **config}}


async def test_qos1_is_stored_durably_and_qos0_at_most_once(serve: Any, mqtt_client: Any, prefix: str) -> None:
    stack = await serve(None, subscriptions=[{"topic": f"{prefix}/in", "qos": 1}])
    client = mqtt_client()
    client.publish(f"{prefix}/in", b"durable", qos=1)
    client.publish(f"{prefix}/in", b"fast", qos=0)
    await wait_until(lambda: stack.plugin.stats()["delivered"] == 2, what="both handed to the layer")
    assert await stack.layer.durable.info("switchboard.mqtt") == (1, 0)
    durable = await asyncio.wait_for(stack.layer.durable.receive("switchboard.mqtt"), 10)
    assert durable["event"]["payload"] == b"durable" and delivery_of(durable) is not None
    # The QoS 0 one took the pool's list (receive reads both).
    plain = await asyncio.wait_for(stack.layer.receive("switchboard.mqtt"), 10)
    assert plain["event"]["payload"] == b"fast" and delivery_of(plain) is None


async def test_a_full_pool_holds_the_acknowledgement_until_there_is_room(serve: Any, mqtt_client: Any, prefix: str) -> None:
    config = layer_config(channel_capacity={"switchboard.mqtt": 2})
    stack = await serve(None, layer_config=config, subscriptions=[{"topic": f"{prefix}/in", "qos": 1}])
    client = mqtt_client()
    for number in range(5):
        client.publish(f"{prefix}/in", str(number), qos=1)
    await wait_until(lambda: stack.plugin.stats()["deferred_full"] == 3, what="three messages waiting for room")
    stats = stack.plugin.stats()
    assert stats["delivered"] == 2 and stats["queued"] == 3 and stats["events_full"] == 0
    # Room again: the three are stored (and only then acknowledged), nothing lost.
    got = []
    while len(got) < 5:
        message = await asyncio.wait_for(stack.layer.durable.receive("switchboard.mqtt"), 20)
        got.append(message["event"]["payload"])
    assert sorted(got) == [b"0", b"1", b"2", b"3", b"4"]
    await wait_until(lambda: stack.plugin.stats()["delivered"] == 5, what="all five delivered")
    assert inbound_balanced(stack.plugin.stats())


async def test_unacknowledged_messages_come_again_in_the_next_session(serve: Any, mqtt_client: Any, prefix: str) -> None:
    client_id = f"sb-durable-{secrets.token_hex(4)}"
    session = {"client_id": client_id, "clean_session": False, "subscriptions": [{"topic": f"{prefix}/in", "qos": 1}]}
    full = layer_config(channel_capacity={"switchboard.mqtt": 1})
    first = await serve(None, layer_config=full, **session)
    client = mqtt_client()
    for number in range(3):
        client.publish(f"{prefix}/in", f"m{number}", qos=1)
    await wait_until(lambda: first.plugin.stats()["deferred_full"] == 2, what="two waiting for room")
    await first.close()  # stops with two not stored: not acknowledged
    assert first.plugin.stats()["left_for_redelivery"] == 2 and inbound_balanced(first.plugin.stats())

    # The same session again: the broker sends the two unacknowledged messages again.
    second = await serve(None, layer_config=layer_config(), **session)
    await wait_until(lambda: second.plugin.stats()["delivered"] >= 2, what="the redelivery")
    got = sorted([(await asyncio.wait_for(second.layer.durable.receive("switchboard.mqtt"), 10))["event"]["payload"]
                  for _ in range(second.plugin.stats()["delivered"])])
    assert b"m0" not in got  # stored and acknowledged the first time: not sent again
    assert got == [b"m1", b"m2"]
    # Clean up the broker's session for this client id.
    await second.close()
    cleanup = await serve(None, client_id=client_id, clean_session=True)
    await cleanup.close()


async def test_too_large_for_the_pool_is_acknowledged_and_counted(serve: Any, mqtt_client: Any, prefix: str) -> None:
    config = layer_config(durable={"switchboard.mqtt": {"max_message_size": 2048}})
    stack = await serve(None, layer_config=config, subscriptions=[{"topic": f"{prefix}/in", "qos": 1}])
    client = mqtt_client()
    client.publish(f"{prefix}/in", b"x" * 4096, qos=1)
    client.publish(f"{prefix}/in", b"small", qos=1)
    await wait_until(lambda: stack.plugin.stats()["delivered"] == 1, what="the small one")
    stats = stack.plugin.stats()
    assert stats["events_too_large"] == 1 and inbound_balanced(stats)
    assert stack.layer.stats.durable_too_large == 1


async def test_topic_router_routes_settle_their_own_messages(serve: Any, mqtt_client: Any, prefix: str) -> None:
    """Through TopicRouter, a message is acknowledged when its route's handler finished."""
    from switchboard.consumers.mqtt import MqttConsumer, SyncMqttConsumer, TopicRouter

    runs: list[tuple[str, int]] = []
    gate = asyncio.Event()

    class Slow(MqttConsumer):
        async def mqtt_message(self, message: dict[str, Any]) -> None:
            delivery = delivery_of(message)
            assert delivery is not None
            runs.append(("slow", delivery.count))
            await gate.wait()

    class Flaky(SyncMqttConsumer):
        def mqtt_message(self, message: dict[str, Any]) -> None:
            delivery = delivery_of(message)
            assert delivery is not None
            runs.append(("flaky", delivery.count))
            if delivery.count == 1:
                raise RuntimeError("first time fails")

    router = TopicRouter({f"{prefix}/slow": Slow.as_asgi(), f"{prefix}/flaky": Flaky.as_asgi()})
    config = layer_config(durable={"switchboard.mqtt": {"visibility_timeout": 30, "retry_delay": 0.05}})
    stack = await serve(router, layer_config=config, subscriptions=[{"topic": f"{prefix}/#", "qos": 1}])
    client = mqtt_client()
    client.publish(f"{prefix}/slow", b"s", qos=1)
    client.publish(f"{prefix}/flaky", b"f", qos=1)
    await wait_until(lambda: ("flaky", 2) in runs and ("slow", 1) in runs, what="the retry and the slow start")
    await wait_until(lambda: stack.layer.stats.durable_acked == 1, what="the flaky one acknowledged")
    # The slow one's router asked for the next message long ago; its route has not finished.
    assert await stack.layer.durable.info("switchboard.mqtt") == (1, 1)
    gate.set()
    await wait_until(lambda: stack.layer.stats.durable_acked == 2, what="the slow one acknowledged")
    assert await stack.layer.durable.info("switchboard.mqtt") == (0, 0)
