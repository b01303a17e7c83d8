"""Byte capacity: a channel holds at most ``byte_capacity`` bytes of messages, on every backend.

The message count alone does not bound memory (300 one-megabyte requests are 300
messages); these tests fill channels by size and check refusals, counters and that reading
frees room again. The Redis-only tests check the push script's byte account against what
the list really holds, through every way items leave a list.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

import pytest
import redis.asyncio as aioredis

from switchboard.gateway.layers import ChannelFull, ChannelLayer
from switchboard.gateway.layers.core import pack
from switchboard.gateway.layers.redis import RedisStorage

MakeLayer = Callable[..., Awaitable[ChannelLayer]]
pytestmark = pytest.mark.timeout(30)

PAYLOAD = b"x" * 3000


def item_size(layer: ChannelLayer, message: dict[str, object], suffixes: list[str] | None = None) -> int:
    """Bytes one stored message takes (what the byte bound counts)."""
    return len(pack(message, 0.0, suffixes))


async def test_byte_capacity_refuses_past_the_bound_and_reading_frees_room(make_layer: MakeLayer) -> None:
    layer = await make_layer(byte_capacity=10_000)
    size = item_size(layer, {"data": PAYLOAD})
    assert 3 * size <= 10_000 < 4 * size
    for _ in range(3):
        await layer.send("bytes.a", {"data": PAYLOAD})
    with pytest.raises(ChannelFull):
        await layer.send("bytes.a", {"data": PAYLOAD})
    # Small messages still fit in what is left; the count bound is far away.
    await layer.send("bytes.a", {"data": b"small"})
    assert (layer.stats.full, layer.stats.full_bytes) == (1, 1)
    # Another channel has its own bound.
    await layer.send("bytes.b", {"data": PAYLOAD})
    # Reading one message frees its bytes.
    assert await layer.receive("bytes.a") == {"data": PAYLOAD}
    await layer.send("bytes.a", {"data": PAYLOAD})
    with pytest.raises(ChannelFull):
        await layer.send("bytes.a", {"data": PAYLOAD})
    assert (layer.stats.full, layer.stats.full_bytes) == (2, 2)
    received = [await layer.receive("bytes.a") for _ in range(4)]
    assert received == [{"data": PAYLOAD}, {"data": PAYLOAD}, {"data": b"small"}, {"data": PAYLOAD}]


async def test_one_message_larger_than_the_bound_is_refused(make_layer: MakeLayer) -> None:
    layer = await make_layer(byte_capacity=1000)
    with pytest.raises(ChannelFull):
        await layer.send("bytes.huge", {"data": PAYLOAD})
    assert layer.stats.full_bytes == 1
    await layer.send("bytes.huge", {"data": b"fits"})
    assert await layer.receive("bytes.huge") == {"data": b"fits"}


async def test_channel_byte_capacity_patterns_and_count_bound_still_apply(make_layer: MakeLayer) -> None:
    layer = await make_layer(capacity=3, byte_capacity=1_000_000, channel_byte_capacity={"tight.*": 4000})
    assert layer.byte_capacity_for("tight.x") == 4000
    assert layer.byte_capacity_for("other") == 1_000_000
    assert layer.limits_for("tight.x") == (3, 4000)
    await layer.send("tight.x", {"data": PAYLOAD})
    with pytest.raises(ChannelFull):
        await layer.send("tight.x", {"data": PAYLOAD})
    # The message count bound is independent of the byte bound.
    for i in range(3):
        await layer.send("other", {"i": i})
    with pytest.raises(ChannelFull):
        await layer.send("other", {"i": 3})
    assert (layer.stats.full, layer.stats.full_bytes) == (2, 1)


async def test_send_many_and_group_send_skip_a_channel_over_its_byte_bound(make_layer: MakeLayer) -> None:
    layer = await make_layer(byte_capacity=7000)
    await layer.send("bytes.g1", {"data": PAYLOAD})
    await layer.send("bytes.g1", {"data": PAYLOAD})
    results = await layer.send_many([("bytes.g1", {"data": PAYLOAD}), ("bytes.g2", {"data": PAYLOAD})])
    assert results == [False, True]
    await layer.group_add("bytes-room", "bytes.g1")
    await layer.group_add("bytes-room", "bytes.g2")
    await layer.group_send("bytes-room", {"data": PAYLOAD})  # never raises for a full member
    assert layer.stats.group_dropped_full == 1
    assert layer.stats.full_bytes == 2
    assert [await layer.receive("bytes.g2") for _ in range(2)] == [{"data": PAYLOAD}] * 2


async def test_process_local_channels_share_their_prefixs_byte_bound(make_layer: MakeLayer) -> None:
    layer = await make_layer(byte_capacity=7000)
    first = await layer.new_channel("gateway")
    second = await layer.new_channel("gateway")
    await layer.send(first, {"data": PAYLOAD})
    await layer.send(second, {"data": PAYLOAD})
    with pytest.raises(ChannelFull):
        await layer.send(first, {"data": PAYLOAD})
    assert layer.stats.full_bytes == 1


# -- Redis: the byte account matches the list ----------------------------------------


async def account(storage: RedisStorage, key: str) -> tuple[int, int]:
    """``(bytes the account says, bytes the list really holds)`` for list ``key``."""
    client = aioredis.Redis.from_url(storage.hosts[storage.shard_index(key)])
    try:
        totals = [int(total) for total in await client.lrange(f"{storage.prefix}bytes:{key}", 0, -1)]
        said = totals[-1] - totals[0] if totals else 0
        held = sum(len(item) for item in await client.lrange(storage.prefix + key, 0, -1))
        return said, held
    finally:
        await client.aclose()


@pytest.mark.redis
async def test_redis_byte_account_follows_every_kind_of_read(redis_url: str, unique_prefix: Callable[[], str]) -> None:
    storage = RedisStorage(hosts=redis_url, prefix=unique_prefix())
    rng = random.Random(7)
    try:
        for round_ in range(6):
            for _ in range(rng.randrange(1, 40)):
                assert await storage.push("acct", b"i" * rng.randrange(1, 5000), 10_000, 30, 10**9)
            # Reads of every shape: BLMPOP batches, a non-blocking pop, several keys at once.
            if round_ % 3 == 0:
                await storage.pop(["acct"], rng.randrange(1, 20), 1)
            elif round_ % 3 == 1:
                await storage.pop(["acct"], rng.randrange(1, 20), 0)
            else:
                await storage.pop(["other-empty", "acct"], rng.randrange(1, 20), 1)
            # The account settles on the next push; an empty push batch would not, so push one.
            assert await storage.push("acct", b"p", 10_000, 30, 10**9)
            said, held = await account(storage, "acct")
            assert said == held
        while await storage.pop(["acct"], 100, 0) is not None:
            pass
        assert await storage.push("acct", b"last", 10_000, 30, 10**9)
        assert await account(storage, "acct") == (4, 4)
    finally:
        await storage.flush()
        await storage.close()


@pytest.mark.redis
async def test_redis_byte_bound_survives_unsized_items_and_list_expiry(redis_url: str, unique_prefix: Callable[[], str]) -> None:
    """Items pushed without sizes (a writer of an older version during a rolling upgrade)
    are not counted, but never corrupt the account of those that are; an expired list
    resets it."""
    storage = RedisStorage(hosts=redis_url, prefix=unique_prefix())
    raw = aioredis.Redis.from_url(redis_url)
    try:
        await raw.rpush(storage.prefix + "mixed", b"old" * 100, b"old" * 100)
        assert await storage.push("mixed", b"n" * 1000, 100, 30, 2500)
        assert await storage.push("mixed", b"n" * 1000, 100, 30, 2500)
        assert not await storage.push("mixed", b"n" * 1000, 100, 30, 2500)
        assert storage.refused_bytes == 1
        # Reading the two unsized items and one sized one frees exactly one sized item.
        result = await storage.pop(["mixed"], 3, 0)
        assert result is not None and len(result[1]) == 3
        assert await storage.push("mixed", b"n" * 1000, 100, 30, 2500)
        assert await account(storage, "mixed") == (2000, 2000)
        # The list expires (its TTL passes): the next push starts a fresh account.
        assert await storage.push("short", b"s" * 2000, 100, 1, 2500)
        await raw.delete(storage.prefix + "short")  # what expiry does, without waiting for it
        assert await storage.push("short", b"s" * 2000, 100, 1, 2500)
        assert await account(storage, "short") == (2000, 2000)
    finally:
        await storage.flush()
        await storage.close()
        await raw.aclose()


@pytest.mark.redis
async def test_redis_concurrent_writers_never_pass_the_byte_bound(redis_url: str, unique_prefix: Callable[[], str]) -> None:
    """Many clients pushing at once: the check and the append are one atomic step."""
    prefix = unique_prefix()
    storages = [RedisStorage(hosts=redis_url, prefix=prefix) for _ in range(4)]
    try:

        async def writer(storage: RedisStorage) -> int:
            stored = 0
            for _ in range(50):
                stored += await storage.push("race", b"r" * 1000, 10_000, 30, 20_000)
            return stored

        stored = await asyncio.gather(*(writer(storage) for storage in storages))
        assert sum(stored) == 20
        assert await account(storages[0], "race") == (20_000, 20_000)
        assert sum(storage.refused_bytes for storage in storages) == 180
    finally:
        await storages[0].flush()
        for storage in storages:
            await storage.close()
