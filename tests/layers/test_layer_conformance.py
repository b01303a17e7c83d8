"""Conformance tests: every storage backend must give the layer the same behaviour.

Each test runs once per backend (the ``backend`` fixture in conftest.py), so a semantic
difference between the in-memory layer and Redis shows up as one variant failing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from support.clock import FakeClock
from support.waiting import wait_until

from switchboard.gateway.layers import ChannelFull, ChannelLayer, InvalidName, LayerClosed, check_channel_name
from switchboard.gateway.layers.core import unpack
from switchboard.gateway.layers.memory import MemoryStorage
from switchboard.gateway.layers.names import split_local

#: Also on a Redis Cluster and a Sentinel-managed primary (conftest.py).
TOPOLOGIES = True

MakeLayer = Callable[..., Awaitable[ChannelLayer]]
StoredCount = Callable[[ChannelLayer, str], Awaitable[int]]
pytestmark = pytest.mark.timeout(30)


async def drain(layer: ChannelLayer, key: str) -> list[dict[str, Any]]:
    """Pop and unpack everything still stored under ``key`` (no expiry filtering)."""
    messages: list[dict[str, Any]] = []
    while (result := await layer.storage.pop([key], 100, 0.05)) is not None:
        messages.extend(unpack(item)[2] for item in result[1])
    return messages


async def local_prefix(layer: ChannelLayer, name: str = "gateway") -> str:
    """The storage key shared by this layer's process-local channels."""
    return split_local(await layer.new_channel(name))[0]


# -- Send and receive -----------------------------------------------------------------


async def test_roundtrip_keeps_types(layer: ChannelLayer) -> None:
    message = {
        "type": "test.message",
        "text": "héllo ☃",
        "bytes": b"\x00\xff binary \x80",
        "int": -(2**40),
        "float": 1.5,
        "bool": True,
        "none": None,
        "list": [1, "two", b"three", [4.0, {"five": 5}]],
        "nested": {"a": {"b": {"c": [b"", {}]}}},
    }
    await layer.send("test.roundtrip", message)
    assert await layer.receive("test.roundtrip") == message
    assert layer.stats.sent == 1
    assert layer.stats.received == 1


async def test_fifo_order(layer: ChannelLayer) -> None:
    for i in range(50):
        await layer.send("test.fifo", {"i": i})
    assert [(await layer.receive("test.fifo"))["i"] for _ in range(50)] == list(range(50))


async def test_a_tracked_send_is_still_queued_until_read(layer: ChannelLayer) -> None:
    """What the gateway asks when a claim is late: is my envelope still in the pool?"""
    first = await layer.send_tracked("test.tracked", {"n": 1})
    second = await layer.send_tracked("test.tracked", {"n": 1})  # same message, another item
    assert await layer.still_queued("test.tracked", first)
    assert (await layer.receive("test.tracked")) == {"n": 1}
    assert (await layer.receive("test.tracked")) == {"n": 1}
    assert not await layer.still_queued("test.tracked", first)
    assert not await layer.still_queued("test.tracked", second)
    assert not await layer.still_queued("test.never-used", first)


async def test_channels_are_independent(layer: ChannelLayer) -> None:
    await layer.send("test.one", {"to": "one"})
    await layer.send("test.two", {"to": "two"})
    assert await layer.receive("test.two") == {"to": "two"}
    assert await layer.receive("test.one") == {"to": "one"}


async def test_capacity_raises_channel_full_and_stores_nothing(make_layer: MakeLayer, stored_count: StoredCount) -> None:
    layer = await make_layer(capacity=3)
    for i in range(3):
        await layer.send("test.full", {"i": i})
    with pytest.raises(ChannelFull):
        await layer.send("test.full", {"i": 3})
    assert layer.stats.full == 1
    assert layer.stats.sent == 3
    assert await stored_count(layer, "test.full") == 3
    assert [m["i"] for m in await drain(layer, "test.full")] == [0, 1, 2]
    # Room again once read.
    await layer.send("test.full", {"i": 4})
    assert await layer.receive("test.full") == {"i": 4}


async def test_channel_capacity_patterns(make_layer: MakeLayer) -> None:
    layer = await make_layer(capacity=5, channel_capacity={"small.*": 2, "gateway.*": 3})
    for i in range(2):
        await layer.send("small.x", {"i": i})
    with pytest.raises(ChannelFull):
        await layer.send("small.x", {"i": 2})
    for i in range(5):
        await layer.send("other.x", {"i": i})
    with pytest.raises(ChannelFull):
        await layer.send("other.x", {"i": 5})
    # Process-local channels share their prefix's list, and so its capacity.
    first = await layer.new_channel("gateway")
    second = await layer.new_channel("gateway")
    await layer.send(first, {"n": 1})
    await layer.send(first, {"n": 2})
    await layer.send(second, {"n": 3})
    with pytest.raises(ChannelFull):
        await layer.send(second, {"n": 4})
    assert layer.capacity_for("small.y") == 2
    assert layer.capacity_for("unmatched") == 5
    assert layer.stats.full == 3


def on_fake_clock(layer: ChannelLayer) -> FakeClock:
    """Decide ``layer``'s expiry by a fake clock the test advances, instead of sleeping.

    The core decides message and membership expiry on both backends, so it reads the fake
    clock on both; in memory the storage's own expiry (marks, idle lists) does too. Redis'
    own key TTLs (whole seconds, at least one) stay on real time: these tests take
    milliseconds, so those never fire during them.
    """
    clock = FakeClock()
    layer.clock = clock
    if isinstance(layer.storage, MemoryStorage):
        layer.storage.clock = clock
    return clock


async def test_expired_messages_are_not_delivered(make_layer: MakeLayer) -> None:
    layer = await make_layer(expiry=0.2)
    clock = on_fake_clock(layer)
    await layer.send("test.expiry", {"n": "old"})
    await layer.send("test.expiry", {"n": "old2"})
    clock.advance(0.4)
    await layer.send("test.expiry", {"n": "fresh"})
    assert await layer.receive("test.expiry") == {"n": "fresh"}
    assert layer.stats.expired == 2
    assert layer.stats.received == 1


async def test_expired_messages_skipped_by_receiver(make_layer: MakeLayer) -> None:
    layer = await make_layer(expiry=0.2)
    clock = on_fake_clock(layer)
    channel = await layer.new_channel("gateway")
    await layer.send("test.rexpiry", {"n": "old"})
    await layer.send(channel, {"n": "old-local"})
    clock.advance(0.4)
    await layer.send("test.rexpiry", {"n": "fresh"})
    receiver = layer.receiver(["test.rexpiry", split_local(channel)[0]])
    try:
        assert await asyncio.wait_for(receiver.get(), 5) == ("test.rexpiry", {"n": "fresh"})
        await layer.send(channel, {"n": "fresh-local"})
        assert await asyncio.wait_for(receiver.get(), 5) == (channel, {"n": "fresh-local"})
    finally:
        assert await receiver.close() == []
    assert layer.stats.expired == 2


async def test_new_channel_names(layer: ChannelLayer) -> None:
    names = [await layer.new_channel() for _ in range(200)]
    assert len(set(names)) == len(names)
    for name in names:
        assert check_channel_name(name) == name
        assert name.startswith("specific.")
        key, suffix = split_local(name)
        assert suffix
        assert key == f"specific.{layer.client_prefix}!"
    gateway = await layer.new_channel("gateway.ws")
    assert gateway.startswith("gateway.ws.") and "!" in gateway


async def test_process_local_channels_via_receive(layer: ChannelLayer) -> None:
    first = await layer.new_channel()
    second = await layer.new_channel()
    await layer.send(first, {"to": 1, "n": 1})
    await layer.send(second, {"to": 2})
    await layer.send(first, {"to": 1, "n": 2})
    assert await asyncio.wait_for(layer.receive(second), 5) == {"to": 2}
    assert await asyncio.wait_for(layer.receive(first), 5) == {"to": 1, "n": 1}
    assert await asyncio.wait_for(layer.receive(first), 5) == {"to": 1, "n": 2}


async def test_receive_waits_for_a_later_send(layer: ChannelLayer) -> None:
    waiter = asyncio.ensure_future(layer.receive("test.later"))
    await asyncio.sleep(0.3)  # longer than one blocking pop, so receive() has to loop
    assert not waiter.done()
    await layer.send("test.later", {"late": True})
    assert await asyncio.wait_for(waiter, 5) == {"late": True}


# -- Groups ---------------------------------------------------------------------------


async def test_group_add_send_discard(layer: ChannelLayer) -> None:
    local = await layer.new_channel()
    await layer.group_add("room", "test.member.a")
    await layer.group_add("room", local)
    await layer.group_add("room", "test.member.a")  # adding twice is a refresh
    await layer.group_send("room", {"text": "hi"})
    assert await layer.receive("test.member.a") == {"text": "hi"}
    assert await asyncio.wait_for(layer.receive(local), 5) == {"text": "hi"}

    await layer.group_discard("room", "test.member.a")
    await layer.group_discard("room", "test.member.absent")  # not an error
    await layer.group_send("room", {"text": "second"})
    assert await asyncio.wait_for(layer.receive(local), 5) == {"text": "second"}
    assert await drain(layer, "test.member.a") == []
    assert await layer.storage.group_members("room", 0, 1e12) == [local]
    assert layer.stats.group_sent == 3


async def test_group_send_to_empty_or_unknown_group(layer: ChannelLayer) -> None:
    await layer.group_send("nobody-here", {"x": 1})
    await layer.group_add("emptied", "test.gone")
    await layer.group_discard("emptied", "test.gone")
    await layer.group_send("emptied", {"x": 1})
    assert await drain(layer, "test.gone") == []
    assert layer.stats.group_sent == 0


async def test_group_expiry(make_layer: MakeLayer) -> None:
    layer = await make_layer(group_expiry=0.2)
    clock = on_fake_clock(layer)
    await layer.group_add("short", "test.stale")
    await layer.group_add("short", "test.refreshed")
    clock.advance(0.3)
    await layer.group_add("short", "test.refreshed")
    await layer.group_send("short", {"x": 1})
    assert await drain(layer, "test.stale") == []
    assert await layer.receive("test.refreshed") == {"x": 1}
    assert await layer.storage.group_members("short", 0, 1e12) == ["test.refreshed"]


async def test_group_send_to_many_local_members_is_one_item(layer: ChannelLayer, stored_count: StoredCount) -> None:
    channels = [await layer.new_channel("proc") for _ in range(60)]
    key = split_local(channels[0])[0]
    for channel in channels:
        await layer.group_add("big-room", channel)
    await layer.group_add("big-room", "test.outsider")
    await layer.group_send("big-room", {"text": "everyone"})
    assert await stored_count(layer, key) == 1
    assert await stored_count(layer, "test.outsider") == 1
    assert layer.stats.group_sent == 2
    received = await asyncio.gather(*(asyncio.wait_for(layer.receive(c), 5) for c in channels))
    assert received == [{"text": "everyone"}] * len(channels)
    assert await layer.receive("test.outsider") == {"text": "everyone"}


async def test_group_send_skips_full_channel(make_layer: MakeLayer) -> None:
    layer = await make_layer(capacity=1)
    await layer.send("test.busy", {"n": "first"})
    await layer.group_add("mixed", "test.busy")
    await layer.group_add("mixed", "test.idle")
    await layer.group_send("mixed", {"n": "group"})
    assert layer.stats.group_dropped_full == 1
    assert layer.stats.group_sent == 1
    assert await layer.receive("test.idle") == {"n": "group"}
    assert await layer.receive("test.busy") == {"n": "first"}
    assert await drain(layer, "test.busy") == []


async def test_flush_removes_messages_and_groups(layer: ChannelLayer) -> None:
    local = await layer.new_channel()
    await layer.send("test.flush", {"x": 1})
    await layer.send(local, {"x": 2})
    await layer.group_add("flushed", "test.flush")
    await layer.flush()
    assert await drain(layer, "test.flush") == []
    assert await drain(layer, split_local(local)[0]) == []
    assert await layer.storage.group_members("flushed", 0, 1e12) == []
    # Still usable afterwards.
    await layer.send("test.flush", {"x": 3})
    assert await layer.receive("test.flush") == {"x": 3}


# -- Markers --------------------------------------------------------------------------


async def test_mark_is_true_once_until_unmarked(layer: ChannelLayer) -> None:
    assert await layer.mark("sms:SM0001:", 60) is True
    assert await layer.mark("sms:SM0001:", 60) is False
    assert await layer.mark("sms:SM0001:delivered", 60) is True  # another key
    await layer.unmark("sms:SM0001:")
    await layer.unmark("sms:never-set")  # absent is not an error
    assert await layer.mark("sms:SM0001:", 60) is True


async def test_concurrent_marks_of_one_key_let_exactly_one_through(layer: ChannelLayer) -> None:
    results = await asyncio.gather(*(layer.mark("race", 60) for _ in range(20)))
    assert results.count(True) == 1


async def test_marks_expire(layer: ChannelLayer) -> None:
    in_memory = isinstance(layer.storage, MemoryStorage)
    clock = on_fake_clock(layer)
    assert await layer.mark("short-lived", 0.2) is True
    assert await layer.mark("long-lived", 60) is True
    # Once the short marker has expired, marking it again succeeds; the long one holds.
    if in_memory:
        assert await layer.mark("short-lived", 0.2) is False  # not yet
        clock.advance(0.3)
        assert await layer.mark("short-lived", 0.2) is True
    else:
        # Redis expires the key itself (SET PX), on real time: wait for it.
        await wait_until(lambda: layer.mark("short-lived", 0.2), timeout=10, what="the marker to expire")
    assert await layer.mark("long-lived", 60) is False


async def test_flush_removes_markers(layer: ChannelLayer) -> None:
    assert await layer.mark("flushed", 60)
    await layer.flush()
    assert await layer.mark("flushed", 60)


@pytest.mark.parametrize("key", ["", "has space", "tab\t", "ünïcode", "x" * 201, b"bytes", 7, None], ids=repr)
async def test_invalid_marker_keys(layer: ChannelLayer, key: Any) -> None:
    with pytest.raises(InvalidName):
        await layer.mark(key, 60)
    with pytest.raises(InvalidName):
        await layer.unmark(key)


@pytest.mark.parametrize("ttl", [0, -1, float("inf"), float("nan"), "60", None], ids=repr)
async def test_invalid_marker_ttl(layer: ChannelLayer, ttl: Any) -> None:
    with pytest.raises(ValueError):
        await layer.mark("ok", ttl)


# -- Bad input ------------------------------------------------------------------------

BAD_CHANNELS = ["", "has space", "ünïcode", "a" * 101, "semi;colon", "x!", "bad!suf!fix", "colon:name", 42, None]
BAD_GROUPS = ["", "has space", "g!", "a" * 101, "colon:name", b"bytes", 7]


@pytest.mark.parametrize("name", BAD_CHANNELS, ids=repr)
async def test_invalid_channel_names(layer: ChannelLayer, name: Any) -> None:
    with pytest.raises(InvalidName):
        await layer.send(name, {"x": 1})
    with pytest.raises(InvalidName):
        await layer.group_add("valid", name)
    if name != "x!":  # the prefix form is valid for reading
        with pytest.raises(InvalidName):
            await layer.receive(name)
        with pytest.raises(InvalidName):
            layer.receiver(["test.ok", name])


@pytest.mark.parametrize("name", BAD_GROUPS, ids=repr)
async def test_invalid_group_names(layer: ChannelLayer, name: Any) -> None:
    with pytest.raises(InvalidName):
        await layer.group_add(name, "test.ok")
    with pytest.raises(InvalidName):
        await layer.group_discard(name, "test.ok")
    with pytest.raises(InvalidName):
        await layer.group_send(name, {"x": 1})


@pytest.mark.parametrize("message", [["list"], "text", b"bytes", None, 1], ids=repr)
async def test_non_dict_message_raises_type_error(layer: ChannelLayer, message: Any) -> None:
    with pytest.raises(TypeError):
        await layer.send("test.types", message)
    with pytest.raises(TypeError):
        await layer.group_send("any", message)
    assert await drain(layer, "test.types") == []


async def test_unserializable_message_stores_nothing(layer: ChannelLayer, stored_count: StoredCount) -> None:
    local = await layer.new_channel()
    await layer.group_add("ser", "test.ser")
    unserializable: list[dict[Any, Any]] = [{"x": object()}, {"nested": [{"set": {1, 2}}]}, {1.5: "ok", "v": object()}]
    for bad in unserializable:
        with pytest.raises(TypeError):
            await layer.send("test.ser", bad)
        with pytest.raises(TypeError):
            await layer.send(local, bad)
        with pytest.raises(TypeError):
            await layer.group_send("ser", bad)
    assert await stored_count(layer, "test.ser") == 0
    assert await stored_count(layer, split_local(local)[0]) == 0
    assert layer.stats.sent == 0


# -- Receiver ------------------------------------------------------------------------


async def test_receiver_over_channels_and_local_prefix(layer: ChannelLayer) -> None:
    local_a = await layer.new_channel("gateway")
    local_b = await layer.new_channel("gateway")
    prefix = split_local(local_a)[0]
    targets = ["test.rx.one", "test.rx.two", local_a, local_b]
    receiver = layer.receiver(["test.rx.one", "test.rx.two", prefix])
    try:
        for i in range(40):
            for target in targets:
                await layer.send(target, {"i": i})
        got: dict[str, list[int]] = {target: [] for target in targets}
        total = 0
        while total < 40 * len(targets):
            for channel, message in await asyncio.wait_for(receiver.get_batch(), 5):
                got[channel].append(message["i"])
                total += 1
        assert got == {target: list(range(40)) for target in targets}
        assert receiver.pending() == 0
    finally:
        assert await receiver.close() == []
    assert layer.stats.received == 160
    with pytest.raises(LayerClosed):
        await receiver.get_batch()


async def test_receiver_close_returns_leftovers_and_loses_nothing(make_layer: MakeLayer) -> None:
    layer = await make_layer(capacity=1000, batch_size=32)
    for i in range(500):
        await layer.send("test.leftover", {"i": i})
    receiver = layer.receiver(["test.leftover"], max_buffered=100)
    read: list[int] = []
    while len(read) < 120:
        read.extend(message["i"] for _channel, message in await asyncio.wait_for(receiver.get_batch(25), 5))
    await asyncio.sleep(0.05)  # let the pump refill its buffer, so there is something left over
    leftover = [message["i"] for _channel, message in await receiver.close()]
    remaining = [message["i"] for message in await drain(layer, "test.leftover")]
    assert read + leftover + remaining == list(range(500))


async def test_competing_receivers_deliver_each_message_once(make_layer: MakeLayer) -> None:
    layer = await make_layer(capacity=1000, batch_size=8)
    total = 300
    receivers = [layer.receiver(["test.shared"], max_buffered=16) for _ in range(2)]
    got: list[list[int]] = [[], []]
    done = asyncio.Event()

    async def consume(index: int) -> None:
        while True:
            for _channel, message in await receivers[index].get_batch(4):
                got[index].append(message["i"])
            if sum(map(len, got)) >= total:
                done.set()
            await asyncio.sleep(0)

    consumers = [asyncio.ensure_future(consume(i)) for i in range(2)]
    try:
        for i in range(total):
            await layer.send("test.shared", {"i": i})
        await asyncio.wait_for(done.wait(), 15)
    finally:
        for task in consumers:
            task.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)
        leftovers = [[m["i"] for _c, m in await receiver.close()] for receiver in receivers]
    delivered = got[0] + got[1] + leftovers[0] + leftovers[1]
    assert len(delivered) == len(set(delivered)), "a message was delivered twice"
    assert sorted(delivered) == list(range(total))
    # Each receiver sees its share in order (FIFO per channel).
    for index in range(2):
        assert got[index] == sorted(got[index])
    assert await drain(layer, "test.shared") == []


async def test_receiver_waits_for_sends(layer: ChannelLayer) -> None:
    receiver = layer.receiver(["test.wait"])
    try:
        getter = asyncio.ensure_future(receiver.get())
        await asyncio.sleep(0.3)
        assert not getter.done()
        await layer.send("test.wait", {"x": 1})
        assert await asyncio.wait_for(getter, 5) == ("test.wait", {"x": 1})
    finally:
        assert await receiver.close() == []


async def test_an_integer_beyond_64_bits_is_a_type_error_naming_where(layer: ChannelLayer) -> None:
    with pytest.raises(TypeError, match=r"\['payload'\]\['n'\]\[1\]"):
        await layer.send("test.bigint", {"type": "x", "payload": {"n": [1, 2**70]}})
    await layer.send("test.bigint", {"type": "x", "n": 2**64 - 1, "m": -(2**63)})  # the edges still fit
    assert (await layer.receive("test.bigint"))["n"] == 2**64 - 1


async def test_group_add_many_and_discard_many(layer: ChannelLayer) -> None:
    """The batched membership calls a gateway restores, refreshes and drops memberships with."""
    members = [f"test.member{i}" for i in range(1200)]  # more than one command's worth
    await layer.group_add_many({"many-a": members, "many-b": members[:3], "many-empty": []})
    assert sorted(await layer.storage.group_members("many-a", 0, 1e12)) == sorted(members)
    await layer.group_discard_many({"many-a": members[:1100], "many-b": members[:1]})
    assert sorted(await layer.storage.group_members("many-a", 0, 1e12)) == sorted(members[1100:])
    assert sorted(await layer.storage.group_members("many-b", 0, 1e12)) == sorted(members[1:3])


async def test_markers_are_kept_and_lost_with_the_data(layer: ChannelLayer) -> None:
    assert await layer.storage.keep_marker("test-marker", 60) is True
    assert await layer.storage.keep_marker("test-marker", 60) is False
    await layer.flush()
    assert await layer.storage.keep_marker("test-marker", 60) is True
