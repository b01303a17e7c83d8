"""Durable channels in the layer: stored until finished, retried, dead-lettered, claimed.

Every test runs on the in-memory layer and on Redis (the ``backend`` fixture), so the two
durable backends keep one behaviour. Timings are short options (visibility timeouts of
a fraction of a second), and every wait is a ``wait_until`` with a generous deadline:
nothing here asserts how fast something happened, only that it did.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from support.waiting import wait_until

from switchboard.gateway.config import ConfigError
from switchboard.gateway.layers import ChannelFull, ChannelLayer
from switchboard.gateway.layers.durable import (
    DurableMessage,
    DurableOptions,
    MessageTooLarge,
    NotReplicated,
    delivery_of,
)
from switchboard.gateway.layers.durable_channels import DurableReceiver

#: Also on a Redis Cluster and a Sentinel-managed primary (conftest.py).
TOPOLOGIES = True

MakeLayer = Callable[..., Awaitable[ChannelLayer]]
pytestmark = pytest.mark.timeout(60)

FAST = {"visibility_timeout": 0.5, "retry_delay": 0.05, "retry_delay_max": 0.2}


async def durable_layer(make_layer: MakeLayer, **channels: Any) -> ChannelLayer:
    """A layer whose ``tasks`` channel (and any named in ``channels``) is durable with FAST options."""
    config = {"tasks": dict(FAST)}
    config.update({name.replace("_", "."): options for name, options in channels.items()})
    return await make_layer(durable=config)


async def take(receiver: DurableReceiver, count: int = 1) -> list[DurableMessage]:
    """The next ``count`` deliveries (bounded wait)."""
    got: list[DurableMessage] = []
    while len(got) < count:
        batch = await asyncio.wait_for(receiver.get_batch(count - len(got)), 20)
        got.extend(message for _channel, message in batch)
    return got


async def settled(layer: ChannelLayer, channel: str, stored: int, pending: int | None = None) -> None:
    async def check() -> bool:
        info = await layer.durable.info(channel)
        return info[0] == stored and (pending is None or info[1] == pending)

    await wait_until(check, what=f"{channel} to hold {stored} message(s)")


# -- Storing and acknowledging -------------------------------------------------------


async def test_send_stores_until_acknowledged(make_layer: MakeLayer) -> None:
    layer = await durable_layer(make_layer)
    event_id = await layer.send_durable("tasks", {"type": "task.run", "n": 1, "delivery": "parcel"})
    assert event_id.startswith("tasks:")
    assert await layer.durable.info("tasks") == (1, 0)
    receiver = layer.durable.receiver(["tasks"], "worker.a")
    try:
        (message,) = await take(receiver)
        # The message keeps exactly its keys (its own "delivery" too); the delivery is an attribute.
        assert message == {"type": "task.run", "n": 1, "delivery": "parcel"}
        delivery = delivery_of(message)
        assert delivery is not None
        assert (delivery.channel, delivery.event_id, delivery.count, delivery.redelivered) == ("tasks", event_id, 1, False)
        assert await layer.durable.info("tasks") == (1, 1)  # read, pending: still stored
        receiver.ack(delivery)
        await receiver.flush()
        assert await layer.durable.info("tasks") == (0, 0)
        assert layer.stats.durable_sent == 1 and layer.stats.durable_acked == 1
    finally:
        await receiver.close()


async def test_plain_send_to_a_durable_channel_is_durable(make_layer: MakeLayer) -> None:
    layer = await durable_layer(make_layer)
    await layer.send("tasks", {"type": "task.run"})
    assert await layer.durable.info("tasks") == (1, 0)
    assert layer.stats.durable_sent == 1


async def test_defaults_make_the_acknowledged_protocols_durable(make_layer: MakeLayer) -> None:
    layer = await make_layer()
    for channel in ("switchboard.email", "switchboard.sms", "switchboard.mqtt"):
        assert layer.durable.options_for(channel) == DurableOptions()
    for channel in ("switchboard.websocket", "switchboard.udp", "switchboard.http", "thumbnails", "gateway.x!y"):
        assert layer.durable.options_for(channel) is None
    # A pattern never makes a connection protocol's pool durable.
    layer = await make_layer(durable={"switchboard.*": {}})
    assert layer.durable.options_for("switchboard.websocket") is None
    assert layer.durable.options_for("switchboard.email") is not None
    # Opting out, patterns, exact names over patterns.
    layer = await make_layer(durable={"switchboard.mqtt": False, "jobs.*": {"max_deliveries": 2}, "jobs.fast": True})
    assert layer.durable.options_for("switchboard.mqtt") is None
    assert layer.durable.options_for("jobs.slow") == DurableOptions(max_deliveries=2)
    assert layer.durable.options_for("jobs.fast") == DurableOptions()


async def test_at_most_once_on_request_and_for_other_channels(make_layer: MakeLayer) -> None:
    layer = await durable_layer(make_layer)
    await layer.send("tasks", {"n": "qos0"}, durable=False)
    assert await layer.durable.info("tasks") == (0, 0)
    await layer.send("plain", {"n": 1})
    assert layer.stats.durable_sent == 0
    with pytest.raises(ValueError, match="not durable"):
        await layer.send("plain", {"n": 2}, durable=True)
    with pytest.raises(ValueError, match="not durable"):
        await layer.send_durable("plain", {"n": 3})


async def test_receive_on_a_durable_channel_acknowledges_at_once(make_layer: MakeLayer) -> None:
    layer = await durable_layer(make_layer)
    await layer.send("tasks", {"n": 1})
    message = await asyncio.wait_for(layer.receive("tasks"), 20)
    assert message == {"n": 1}
    assert delivery_of(message) is not None
    assert await layer.durable.info("tasks") == (0, 0)


async def test_send_many_stores_durable_ones_durably(make_layer: MakeLayer) -> None:
    layer = await durable_layer(make_layer, small={"capacity": 1})
    results = await layer.send_many(
        [("plain", {"n": 1}), ("tasks", {"n": 2}), ("small", {"n": 3}), ("small", {"n": 4}), ("plain", {"n": 5})]
    )
    assert results == [True, True, True, False, True]
    assert await layer.durable.info("tasks") == (1, 0)
    assert await layer.durable.info("small") == (1, 0)
    assert [await layer.receive("plain") for _ in range(2)] == [{"n": 1}, {"n": 5}]


# -- Limits ---------------------------------------------------------------------------


async def test_capacity_refuses_new_messages_and_keeps_the_stored_ones(make_layer: MakeLayer) -> None:
    layer = await durable_layer(make_layer, small={**FAST, "capacity": 3})
    for n in range(3):
        await layer.send("small", {"n": n})
    with pytest.raises(ChannelFull):
        await layer.send("small", {"n": 3})
    assert layer.stats.full == 1
    receiver = layer.durable.receiver(["small"], "worker.a")
    try:
        messages = await take(receiver, 3)
        assert [m["n"] for m in messages] == [0, 1, 2]  # the oldest were kept, not trimmed
        # Read but not finished still counts: the bound is on what is stored.
        with pytest.raises(ChannelFull):
            await layer.send("small", {"n": 3})
        for message in messages:
            delivery = delivery_of(message)
            assert delivery is not None
            receiver.ack(delivery)
        await receiver.flush()
        await layer.send("small", {"n": 3})
    finally:
        await receiver.close()


async def test_capacity_defaults_to_the_channels_capacity(make_layer: MakeLayer) -> None:
    layer = await make_layer(capacity=2, channel_capacity={"big.*": 5}, durable={"big.one": {}, "small": {}})
    for n in range(5):
        await layer.send("big.one", {"n": n})
    with pytest.raises(ChannelFull):
        await layer.send("big.one", {"n": 5})
    for n in range(2):
        await layer.send("small", {"n": n})
    with pytest.raises(ChannelFull):
        await layer.send("small", {"n": 2})


async def test_too_large_is_refused_with_a_clear_error(make_layer: MakeLayer) -> None:
    layer = await durable_layer(make_layer, small={"max_message_size": 2048})
    with pytest.raises(MessageTooLarge, match="max_message_size 2048 of durable channel 'small'"):
        await layer.send("small", {"blob": b"x" * 4096})
    assert await layer.durable.info("small") == (0, 0)
    assert layer.stats.durable_too_large == 1


async def test_replicated_without_replicas_is_not_acknowledged(make_layer: MakeLayer, backend: str) -> None:
    # The cluster and Sentinel setups have one replica per primary: ask for one more.
    replicas = 2 if backend in ("redis-cluster", "redis-sentinel") else 1
    safe = {"durability": "replicated", "replicas": replicas, "replica_timeout": 0.1}
    layer = await durable_layer(make_layer, safe=safe)
    with pytest.raises(NotReplicated):
        await layer.send("safe", {"n": 1})
    # Stored all the same (at least once: the source retries, the consumer deduplicates).
    assert (await layer.durable.info("safe"))[0] == 1
    assert layer.stats.durable_not_replicated == 1


async def test_replicated_with_a_replica_is_acknowledged(make_layer: MakeLayer, backend: str) -> None:
    if backend not in ("redis-cluster", "redis-sentinel"):
        pytest.skip("needs a primary with a replica (the cluster and Sentinel setups)")
    layer = await durable_layer(make_layer, safe={"durability": "replicated", "replica_timeout": 5.0})
    for n in range(20):
        await layer.send("safe", {"n": n})
    assert layer.stats.durable_not_replicated == 0
    assert (await layer.durable.info("safe"))[0] == 20


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"x": {"retry_delay_max": 60, "visibility_timeout": 30}}, "over visibility_timeout"),
        ({"x": {"max_deliveries": 0}}, "max_deliveries"),
        ({"x": {"durability": "fsync"}}, "durability"),
        ({"x": {"nope": 1}}, "unknown option"),
        ({"x!y": {}}, "no '!'"),
        ({"x": 3}, "expected an options mapping"),
        ({"switchboard.websocket": {}}, "at most once"),
    ],
)
async def test_bad_durable_config_is_refused_at_build(make_layer: MakeLayer, options: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        await make_layer(durable=options)


# -- Failures, retries, dead letters ----------------------------------------------------


async def test_a_failed_delivery_comes_back_with_a_higher_count(make_layer: MakeLayer) -> None:
    layer = await durable_layer(make_layer)
    event_id = await layer.send_durable("tasks", {"n": 1})
    receiver = layer.durable.receiver(["tasks"], "worker.a")
    try:
        (first,) = await take(receiver)
        delivery = delivery_of(first)
        assert delivery is not None
        receiver.fail(delivery, "ValueError: boom")
        (second,) = await take(receiver)
        again = delivery_of(second)
        assert again is not None
        assert (again.event_id, again.count, again.redelivered) == (event_id, 2, True)
        assert second == first
        receiver.ack(again)
        await receiver.flush()
        assert await layer.durable.info("tasks") == (0, 0)
        assert layer.stats.durable_retried == 1 and layer.stats.durable_redelivered == 1
    finally:
        await receiver.close()


async def test_poison_message_ends_in_dead_letters_and_can_be_replayed(make_layer: MakeLayer) -> None:
    layer = await durable_layer(make_layer, poison={**FAST, "max_deliveries": 3})
    event_id = await layer.send_durable("poison", {"type": "task.run", "n": 7})
    receiver = layer.durable.receiver(["poison"], "worker.a")
    try:
        counts = []
        for _ in range(3):
            (message,) = await take(receiver)
            delivery = delivery_of(message)
            assert delivery is not None
            counts.append(delivery.count)
            receiver.fail(delivery, f"Traceback...\nRuntimeError: attempt {delivery.count}")
        assert counts == [1, 2, 3]
        await receiver.flush()
        await settled(layer, "poison", 0)
        assert await layer.durable.dead_letter_channels() == {"poison": 1}
        (letter,) = await layer.durable.dead_letters("poison")
        assert (letter.channel, letter.event_id, letter.deliveries) == ("poison", event_id, 3)
        assert letter.error.endswith("RuntimeError: attempt 3")
        assert letter.message == {"type": "task.run", "n": 7}
        assert layer.stats.dead_lettered == 1
        assert await layer.durable.dead_letter("poison", letter.id) == letter
        assert await layer.durable.dead_letter("poison", "1-1") is None

        # Replayed: same event id, counted from 1 again, out of the dead letters.
        assert await layer.durable.replay("poison") == (1, 0)
        assert await layer.durable.dead_letter_channels() == {}
        (replayed,) = await take(receiver)
        delivery = delivery_of(replayed)
        assert delivery is not None
        assert (delivery.event_id, delivery.count) == (event_id, 1)
        assert replayed == {"type": "task.run", "n": 7}
        receiver.ack(delivery)
        await receiver.flush()
        await settled(layer, "poison", 0)
    finally:
        await receiver.close()


async def test_dead_letters_drop_and_replay_by_id(make_layer: MakeLayer) -> None:
    layer = await durable_layer(make_layer, poison={**FAST, "max_deliveries": 1, "capacity": 1})
    for n in range(3):
        await layer.send("poison", {"n": n})
        receiver = layer.durable.receiver(["poison"], f"worker.{n}")
        (message,) = await take(receiver)
        delivery = delivery_of(message)
        assert delivery is not None
        receiver.fail(delivery, "boom")
        await receiver.flush()
        await receiver.close()
    letters = await layer.durable.dead_letters("poison")
    assert [letter.message["n"] for letter in letters] == [0, 1, 2]
    assert await layer.durable.drop("poison", [letters[0].id, "1-1"]) == 1
    # The channel holds one message at most: the second replay is refused, stays dead.
    assert await layer.durable.replay("poison", [letters[1].id, letters[2].id]) == (1, 1)
    assert [letter.message["n"] for letter in await layer.durable.dead_letters("poison")] == [2]
    assert await layer.durable.drop("poison") == 1
    assert await layer.durable.dead_letter_channels() == {}


async def test_full_dead_letters_keep_the_message_pending(make_layer: MakeLayer) -> None:
    layer = await durable_layer(make_layer, poison={**FAST, "max_deliveries": 1, "dead_letter_capacity": 1})
    await layer.send("poison", {"n": 1})
    await layer.send("poison", {"n": 2})
    receiver = layer.durable.receiver(["poison"], "worker.a")
    try:
        for message in await take(receiver, 2):
            delivery = delivery_of(message)
            assert delivery is not None
            receiver.fail(delivery, "boom")
        await receiver.flush()
        await wait_until(lambda: layer.stats.dead_letter_full >= 1, what="the full dead letters to refuse one")
        assert await layer.durable.dead_letter_channels() == {"poison": 1}
        # Not lost: still stored, delivered again.
        assert (await layer.durable.info("poison"))[0] == 1
        (again,) = await take(receiver)
        assert delivery_of(again) is not None
    finally:
        await receiver.close()


# -- Lost and stopping workers ------------------------------------------------------


async def test_a_lost_workers_messages_are_claimed_after_the_visibility_timeout(make_layer: MakeLayer) -> None:
    layer = await durable_layer(make_layer)
    event_ids = [await layer.send_durable("tasks", {"n": n}) for n in range(3)]
    lost = layer.durable.receiver(["tasks"], "worker.lost")
    assert len(await take(lost, 3)) == 3
    lost.abort()  # killed: no ack, no release
    survivor = layer.durable.receiver(["tasks"], "worker.survivor")
    try:
        messages = await take(survivor, 3)
        deliveries = [delivery_of(m) for m in messages]
        assert sorted(d.event_id for d in deliveries if d) == sorted(event_ids)
        assert {d.count for d in deliveries if d} == {2}
        for delivery in deliveries:
            assert delivery is not None
            survivor.ack(delivery)
        await survivor.flush()
        await settled(layer, "tasks", 0)
    finally:
        await survivor.close()


async def test_a_slow_handler_keeps_its_message_past_the_visibility_timeout(make_layer: MakeLayer) -> None:
    """The lease: a reader still working on a message renews it, so a handler (or a deploy's
    drain, or a loaded machine) taking several visibility timeouts is never handed to a
    second worker: that was a duplicate per message held too long. Only a reader that
    stops renewing (killed) loses its messages to the others, as the test above shows."""
    # A 2 s visibility: renewals every 0.67 s keep the lease unless this process stalls for
    # over 1.3 s, which a loaded machine does not do to a test this small.
    layer = await make_layer(durable={"tasks": {**FAST, "visibility_timeout": 2.0}})
    event_id = await layer.send_durable("tasks", {"n": 1})
    slow = layer.durable.receiver(["tasks"], "worker.slow")
    other = None
    try:
        (message,) = await take(slow)
        delivery = delivery_of(message)
        assert delivery is not None and delivery.event_id == event_id
        # Started once the message is out, so only its claimer could get it.
        other = layer.durable.receiver(["tasks"], "worker.other")
        # Three visibility timeouts of "handling", while the other reader's claimer looks
        # for idle messages many times a second.
        await asyncio.sleep(3 * 2.0)
        assert other.pending() == 0 and other.outstanding == 0
        slow.ack(delivery)
        await slow.flush()
        await settled(layer, "tasks", 0)
        assert other.pending() == 0 and layer.stats.durable_redelivered == 0
    finally:
        await slow.close()
        if other is not None:
            await other.close()


async def test_lost_too_often_goes_to_the_dead_letters(make_layer: MakeLayer) -> None:
    layer = await durable_layer(make_layer, crashy={**FAST, "max_deliveries": 2})
    await layer.send("crashy", {"n": 1})
    for name in ("worker.a", "worker.b"):
        receiver = layer.durable.receiver(["crashy"], name)
        await take(receiver)
        receiver.abort()
    watcher = layer.durable.receiver(["crashy"], "worker.c")
    try:
        await wait_until(lambda: layer.stats.dead_lettered == 1, what="the claimer to dead-letter it")
        (letter,) = await layer.durable.dead_letters("crashy")
        assert letter.deliveries == 3
        assert "without finishing" in letter.error
        assert watcher.pending() == 0
    finally:
        await watcher.close()


async def test_released_messages_go_to_another_worker_at_once(make_layer: MakeLayer) -> None:
    # A visibility timeout far beyond the test's deadline: only a release can explain a delivery.
    layer = await durable_layer(make_layer, slow={"visibility_timeout": 3600, "retry_delay": 0.05, "retry_delay_max": 0.05})
    await layer.send("slow", {"n": 1})
    stopping = layer.durable.receiver(["slow"], "worker.stopping")
    (message,) = await take(stopping)
    leftovers = await stopping.close()
    delivery = delivery_of(message)
    assert delivery is not None and leftovers == []
    stopping.release([delivery])
    await stopping.flush()
    other = layer.durable.receiver(["slow"], "worker.next")
    try:
        (again,) = await take(other)
        assert again == {"n": 1}
        assert layer.stats.durable_released == 1
    finally:
        await other.close()


async def test_prefetch_bounds_the_deliveries_out(make_layer: MakeLayer) -> None:
    layer = await durable_layer(make_layer)
    for n in range(10):
        await layer.send("tasks", {"n": n})
    receiver = layer.durable.receiver(["tasks"], "worker.a", prefetch=3)
    try:
        first = await take(receiver, 3)
        # Three out and unacknowledged: the receiver reads no more until one is settled.
        assert receiver.outstanding == 3
        assert receiver.pending() == 0
        for message in first:
            delivery = delivery_of(message)
            assert delivery is not None
            receiver.ack(delivery)
        rest = await take(receiver, 3)
        assert [m["n"] for m in first + rest] == list(range(6))
    finally:
        await receiver.close()


async def test_closing_the_layer_ends_a_receiver_left_open(make_layer: MakeLayer) -> None:
    """A receiver closed but never aborted (its owner forgot, or was a test) ends with the
    layer: no lease renewal, claimer or ack keeps running on a storage that is gone, to be
    collected half-done on a loop that has ended (CI saw one as an unraisable exception)."""
    layer = await durable_layer(make_layer)
    await layer.send("tasks", {"n": 1})
    await layer.send("tasks", {"n": 2})
    receiver = layer.durable.receiver(["tasks"], "worker.forgetful")
    first, _second = await take(receiver, 2)
    delivery = delivery_of(first)
    assert delivery is not None
    receiver.ack(delivery)  # queued: it may still be on its way when the layer closes
    await receiver.close()
    await layer.close()
    await asyncio.sleep(0)  # a cancelled task ends on the next loop pass

    def receivers_tasks() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if not t.done() and "DurableReceiver" in repr(t.get_coro())]

    await wait_until(lambda: not receivers_tasks(), what="the receiver's tasks to end")


async def test_many_messages_each_handled_once_by_two_workers(make_layer: MakeLayer) -> None:
    layer = await durable_layer(make_layer, bulk={**FAST, "capacity": 1000})
    sent = await asyncio.gather(*(layer.send_durable("bulk", {"n": n}) for n in range(300)))
    assert len(set(sent)) == 300
    receivers = [layer.durable.receiver(["bulk"], f"worker.{i}", prefetch=50) for i in range(2)]
    seen: list[str] = []

    async def work(receiver: DurableReceiver) -> None:
        while True:
            for _channel, message in await receiver.get_batch():
                delivery = delivery_of(message)
                assert delivery is not None
                seen.append(delivery.event_id)
                receiver.ack(delivery)

    tasks = [asyncio.ensure_future(work(receiver)) for receiver in receivers]
    try:
        await wait_until(lambda: len(seen) >= 300, what="300 deliveries")
        assert sorted(seen) == sorted(sent)
        for receiver in receivers:
            await receiver.flush()
        await settled(layer, "bulk", 0)
    finally:
        for task in tasks:
            task.cancel()
        for receiver in receivers:
            await receiver.close()


async def test_the_consoles_dead_letter_view_works_on_the_real_store(make_layer: MakeLayer) -> None:
    """The console reaches dead letters through a duck-typed seam (switchboard/console/
    deadletters.py); this pins that seam to the durable store itself, on both backends, so a
    renamed method cannot leave the console's page saying "needs durable channels"."""
    from switchboard.console.deadletters import dead_letters_of

    layer = await durable_layer(make_layer, poison={**FAST, "max_deliveries": 1})
    view = dead_letters_of(layer)
    assert view is not None
    for n in range(2):
        await layer.send("poison", {"type": "task.run", "n": n})
    receiver = layer.durable.receiver(["poison"], "worker.a")
    try:
        for message in await take(receiver, 2):
            delivery = delivery_of(message)
            assert delivery is not None
            receiver.fail(delivery, "RuntimeError: boom")
        await receiver.flush()

        async def both_dead() -> bool:
            return await view.counts() == {"poison": 2}

        await wait_until(both_dead, what="both messages to be dead letters")
        shown = await view.inspect("poison")
        assert [letter["message"]["n"] for letter in shown] == [0, 1]
        assert all(letter["error"] == "RuntimeError: boom" and letter["deliveries"] == 1 for letter in shown)
        assert await view.drop("poison", [shown[0]["id"]]) == {"dropped": 1}
        assert await view.replay("poison", None) == {"replayed": 1, "left": 0}
        assert await view.counts() == {}
        (replayed,) = await take(receiver)
        assert replayed == {"type": "task.run", "n": 1}
    finally:
        await receiver.close()
