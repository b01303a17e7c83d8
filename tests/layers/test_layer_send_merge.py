"""Sends that travel together: identical messages merged per process, and ``send(wait=)``.

The Redis layer coalesces the sends of one event-loop pass into one storage call; among
them, identical messages to channels of one process-local prefix become one item naming
all of their suffixes (what a chat room's members answering one group message send).
These tests check that merging saves items and capacity and never reorders a channel.
``send(wait=)`` runs on both backends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from itertools import pairwise
from typing import Any

import pytest

from switchboard.gateway.layers import ChannelFull, ChannelLayer
from switchboard.gateway.layers.names import split_local

MakeLayer = Callable[..., Awaitable[ChannelLayer]]
StoredCount = Callable[[ChannelLayer, str], Awaitable[int]]
pytestmark = pytest.mark.timeout(30)


async def read(layer: ChannelLayer, prefix: str, count: int) -> dict[str, list[Any]]:
    """``count`` messages from the process-local ``prefix``, by channel, in arrival order."""
    receiver = layer.receiver([prefix])
    got: dict[str, list[Any]] = {}
    try:
        for _ in range(count):
            channel, message = await asyncio.wait_for(receiver.get(), 10)
            got.setdefault(channel, []).append(message)
    finally:
        await receiver.close()
    return got


@pytest.fixture
async def redis_layer(make_layer: MakeLayer, backend: str) -> ChannelLayer:
    if backend != "redis":
        pytest.skip("only the Redis layer batches sends")
    return await make_layer(channel_capacity={"gateway.*": 3})


async def test_identical_replies_of_one_loop_pass_are_one_item(redis_layer: ChannelLayer, stored_count: StoredCount) -> None:
    layer = redis_layer
    channels = [await layer.new_channel("gateway") for _ in range(20)]
    prefix = split_local(channels[0])[0]
    text = {"type": "websocket.send", "text": "hello room"}
    # Capacity of gateway.* is 3 items here: 20 separate items would not fit.
    await asyncio.gather(*(layer.send(channel, text) for channel in channels))
    assert await stored_count(layer, prefix) == 1
    got = await read(layer, prefix, 20)
    assert got == {channel: [text] for channel in channels}
    assert layer.stats.full == 0


async def test_merging_never_reorders_a_channel(redis_layer: ChannelLayer, stored_count: StoredCount) -> None:
    layer = redis_layer
    one, two, three = [await layer.new_channel("gateway") for _ in range(3)]
    prefix = split_local(one)[0]
    a, b = {"type": "x", "v": "A"}, {"type": "x", "v": "B"}
    layer.options.channel_capacity = {}
    layer._capacity_patterns = []
    layer._limits_cache.clear()
    layer.options.capacity = 100
    sends = [(one, a), (two, b), (two, a), (three, a), (one, a)]
    await asyncio.gather(*(layer.send(channel, message) for channel, message in sends))
    # A to "two" may not join the first A item (it would overtake B): it starts a second
    # A item, which A to "three" and the second A to "one" join (both stay in order).
    assert await stored_count(layer, prefix) == 3
    got = await read(layer, prefix, 5)
    assert got == {one: [a, a], two: [b, a], three: [a]}


# -- send(wait=) on both backends ------------------------------------------------------


async def test_send_with_wait_succeeds_once_a_reader_makes_room(make_layer: MakeLayer) -> None:
    layer = await make_layer(capacity=2)
    for i in range(2):
        await layer.send("wait.full", {"i": i})
    sending = asyncio.ensure_future(layer.send("wait.full", {"i": 2}, wait=30))
    await asyncio.sleep(0.05)
    assert not sending.done()
    assert await layer.receive("wait.full") == {"i": 0}
    await asyncio.wait_for(sending, 20)
    assert [await layer.receive("wait.full") for _ in range(2)] == [{"i": 1}, {"i": 2}]
    assert layer.stats.full == 0  # tries that were refused and then stored are not drops


async def test_send_with_wait_raises_once_the_wait_is_over(make_layer: MakeLayer) -> None:
    layer = await make_layer(capacity=1)
    await layer.send("wait.gone", {"i": 0})
    with pytest.raises(ChannelFull):
        await layer.send("wait.gone", {"i": 1}, wait=0.3)
    assert layer.stats.full == 1  # one message lost, counted once


async def test_send_soon_keeps_the_order_of_calls_awaited_in_call_order(layer: ChannelLayer) -> None:
    channel = await layer.new_channel("gateway")
    sends = [layer.send_soon(channel, {"type": "part", "n": n}) for n in range(4)]
    for send in sends:
        await send
    got = await read(layer, split_local(channel)[0], 4)
    assert [message["n"] for message in got[channel]] == [0, 1, 2, 3]


async def test_send_soon_queues_when_called_not_when_awaited(layer: ChannelLayer) -> None:
    """The message is queued by the call (a batch on Redis, stored in memory): awaits in any order keep it.

    A worker's replies (a Django response's start and body) rely on it: the body cannot
    overtake the start whatever else the loop does between the calls and the awaits.
    """
    assert layer.queues_at_call
    channel = await layer.new_channel("gateway")
    first = layer.send_soon(channel, {"type": "part", "n": 1})
    later = layer.send(channel, {"type": "part", "n": 3})  # a coroutine: it queues when awaited
    second = layer.send_soon(channel, {"type": "part", "n": 2})
    await second
    await later
    await first
    got = await read(layer, split_local(channel)[0], 3)
    assert [message["n"] for message in got[channel]] == [1, 2, 3]


async def test_send_soon_raises_channel_full_on_await(make_layer: MakeLayer) -> None:
    layer = await make_layer(channel_capacity={"full.*": 1})
    await layer.send("full.one", {"type": "a"})
    pending = layer.send_soon("full.one", {"type": "b"})
    with pytest.raises(ChannelFull):
        await pending
    assert layer.stats.full == 1


async def test_a_storage_whose_push_is_overridden_is_pushed_through_it() -> None:
    """The in-memory storage pushes at the call (``push_now``), unless a subclass changed ``push``."""
    from switchboard.gateway.layers.core import ChannelLayer as CoreLayer
    from switchboard.gateway.layers.memory import MemoryStorage

    class CountingStorage(MemoryStorage):
        def __init__(self) -> None:
            super().__init__()
            self.pushes = 0

        async def push(self, key: str, item: bytes, capacity: int, ttl: float, max_bytes: int | None = None) -> bool:
            self.pushes += 1
            return await super().push(key, item, capacity, ttl, max_bytes)

    assert CoreLayer(MemoryStorage()).queues_at_call
    storage = CountingStorage()
    layer = CoreLayer(storage)
    assert not layer.queues_at_call
    await layer.send_soon("chat.a", {"type": "x"})
    await layer.send("chat.a", {"type": "y"})
    assert storage.pushes == 2


async def test_sends_a_local_route_takes_let_the_loop_run_now_and_then(layer: ChannelLayer) -> None:
    """A sender in a tight loop of sends that a local route takes (in ``switchboard run``,
    every reply) still lets its receivers run: one send in every ``LOCAL_YIELD_EVERY``
    yields, so what it can pile up before they do is bounded."""
    from switchboard.gateway.layers.core import LOCAL_YIELD_EVERY

    taken: list[str] = []
    layer.add_local_route(lambda channel, message, item: taken.append(message["text"]) is None)
    turns: list[int] = []  # how many messages the route had taken when the other task ran

    async def receiver_side() -> None:
        while len(taken) < 10 * LOCAL_YIELD_EVERY:
            turns.append(len(taken))
            await asyncio.sleep(0)

    other = asyncio.ensure_future(receiver_side())
    await asyncio.sleep(0)
    for number in range(10 * LOCAL_YIELD_EVERY):
        await layer.send("specific.local!c", {"type": "x", "text": str(number)})
    await other
    assert taken == [str(number) for number in range(10 * LOCAL_YIELD_EVERY)]
    assert len(turns) >= 10
    assert all(later - earlier <= LOCAL_YIELD_EVERY for earlier, later in pairwise(turns))
