"""Redis backend specifics on the shared server: key layout, TTLs, pops, pools, loops."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgpack
import pytest
import redis.asyncio as aioredis
from asgiref.sync import async_to_sync

from switchboard.gateway.layers import ChannelLayer, LayerOptions, build_layer
from switchboard.gateway.layers.redis import RedisStorage

pytestmark = [pytest.mark.redis, pytest.mark.timeout(30)]

MakeStorage = Callable[..., RedisStorage]
BLOCK_TIMEOUT = 0.2


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A plain client on the shared server, to look at what the storage wrote."""
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def make_storage(redis_url: str, unique_prefix: Callable[[], str]) -> AsyncIterator[MakeStorage]:
    storages: list[RedisStorage] = []

    def make(**options: Any) -> RedisStorage:
        options.setdefault("hosts", redis_url)
        options.setdefault("prefix", unique_prefix())
        storage = RedisStorage(**options)
        storages.append(storage)
        return storage

    yield make
    for storage in storages:
        await storage.flush()
        await storage.close()


@pytest.fixture
async def storage(make_storage: MakeStorage) -> RedisStorage:
    return make_storage()


def item(n: int) -> bytes:
    return msgpack.packb(n)


async def test_build_layer_passes_storage_options(redis_url: str, unique_prefix: Callable[[], str]) -> None:
    prefix = unique_prefix()
    layer = build_layer(
        {"BACKEND": "redis", "CONFIG": {"hosts": [redis_url], "prefix": prefix, "capacity": 7, "max_connections": 9}}
    )
    try:
        assert isinstance(layer.storage, RedisStorage)
        assert layer.storage.prefix == prefix
        assert layer.storage.hosts == [redis_url]
        assert layer.options.capacity == 7
    finally:
        await layer.close()


def test_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError):
        RedisStorage(hosts=[])
    with pytest.raises(ValueError):
        RedisStorage(hosts=["127.0.0.1:6379"])
    with pytest.raises(ValueError):
        RedisStorage(hosts=["redis://a:6379/0", "redis://:secret@a:6379/0"])
    with pytest.raises(ValueError):
        RedisStorage(prefix="")


async def test_keys_are_prefixed_and_expire(storage: RedisStorage, raw: aioredis.Redis) -> None:
    assert await storage.push("chan.a", item(1), 10, 2.5)
    await storage.group_add("room", "chan.a", 1000.0, 30)
    keys = sorted(key.decode() for key in await raw.keys(storage.prefix + "*"))
    # The list, its byte account and the group.
    names = ["bytes:chan.a", "chan.a", "group:room"]
    assert keys == [storage.prefix + name for name in names]
    # TTLs are rounded up to whole seconds; the byte account lives as long as its list.
    for name in ("chan.a", "bytes:chan.a"):
        assert 1 <= await raw.ttl(storage.prefix + name) <= 3
    assert 1 <= await raw.ttl(storage.prefix + "group:room") <= 30
    assert await raw.zscore(storage.prefix + "group:room", "chan.a") == 1000.0
    # A sub-second TTL still gives the list a second (EXPIRE 0 would delete it).
    assert await storage.push("chan.b", item(1), 10, 0.01)
    assert await raw.ttl(storage.prefix + "chan.b") == 1


async def test_flush_only_deletes_own_prefix(
    make_storage: MakeStorage, raw: aioredis.Redis, unique_prefix: Callable[[], str]
) -> None:
    mine = make_storage(prefix=unique_prefix() + "we*ird[pre]fix?:")
    theirs = make_storage()
    for i in range(1200):  # more than one SCAN page and UNLINK batch
        assert await mine.push(f"chan.{i}", item(i), 10, 30)
    assert await theirs.push("chan.0", item(0), 10, 30)
    await mine.flush()
    assert await raw.keys(mine.prefix.replace("*", "\\*").replace("[", "\\[").replace("?", "\\?") + "*") == []
    assert await raw.llen(theirs.prefix + "chan.0") == 1


async def test_push_respects_capacity(storage: RedisStorage, raw: aioredis.Redis) -> None:
    assert [await storage.push("cap", item(i), 2, 10) for i in range(3)] == [True, True, False]
    assert await raw.lrange(storage.prefix + "cap", 0, -1) == [item(0), item(1)]
    assert await storage.push("zero", item(0), 0, 10) is False
    results = await storage.push_many([("cap", item(9), 2, None), ("m.a", item(1), 1, None), ("m.a", item(2), 1, None)], 10)
    assert results == [False, True, False]


async def test_pop_batches_oldest_first(storage: RedisStorage) -> None:
    for i in range(10):
        await storage.push("batch", item(i), 100, 10)
    first = await storage.pop(["empty", "batch"], 4, 1)
    assert first == ("batch", [item(i) for i in range(4)])
    rest = await storage.pop(["batch"], 100, 1)
    assert rest == ("batch", [item(i) for i in range(4, 10)])
    assert await storage.pop(["batch", "empty"], 10, 0.05) is None


async def test_pop_first_non_empty_key_in_order(storage: RedisStorage) -> None:
    await storage.push("k.two", item(2), 10, 10)
    await storage.push("k.one", item(1), 10, 10)
    assert await storage.pop(["k.one", "k.two"], 10, 1) == ("k.one", [item(1)])
    assert await storage.pop(["k.one", "k.two"], 10, 1) == ("k.two", [item(2)])


async def test_pop_without_waiting(storage: RedisStorage) -> None:
    # Guarded by wait_for: Redis treats a 0 block timeout as "forever".
    assert await asyncio.wait_for(storage.pop(["none"], 5, 0), 5) is None
    assert await asyncio.wait_for(storage.pop(["none"], 5, 0.0001), 5) is None
    await storage.push("now", item(1), 10, 10)
    await storage.push("now", item(2), 10, 10)
    assert await asyncio.wait_for(storage.pop(["none", "now"], 5, 0), 5) == ("now", [item(1), item(2)])


@pytest.mark.parametrize("version", [(6, 2, 7), (5, 0, 14)], ids=["redis6", "redis5"])
async def test_pop_falls_back_to_blpop_on_old_servers(storage: RedisStorage, version: tuple[int, ...]) -> None:
    storage._server_versions[0] = version  # pretend the server predates BLMPOP
    for i in range(3):
        await storage.push("old", item(i), 10, 10)
    assert [await storage.pop(["other", "old"], 10, 0.5) for _ in range(3)] == [("old", [item(i)]) for i in range(3)]
    assert await storage.pop(["old"], 10, 0.05) is None


async def test_server_version_detected_once(storage: RedisStorage) -> None:
    await storage.pop(["x"], 1, 0.01)
    version = storage._server_versions[0]
    assert version >= (1,)
    storage._server_versions[0] = (99,)
    await storage.pop(["x"], 1, 0)
    assert storage._server_versions[0] == (99,)


async def test_blocking_pops_do_not_starve_other_commands(make_storage: MakeStorage, raw: aioredis.Redis) -> None:
    storage = make_storage(max_connections=1)
    channels = [f"starve.{i}" for i in range(5)]
    baseline = int((await raw.info("clients"))["blocked_clients"])
    pops = [asyncio.ensure_future(storage.pop([channel], 1, 10)) for channel in channels]
    try:
        while int((await raw.info("clients"))["blocked_clients"]) < baseline + len(pops):
            await asyncio.sleep(0.01)
        # All five pops are blocked in Redis; pushes must still get a connection.
        for i, channel in enumerate(channels):
            assert await asyncio.wait_for(storage.push(channel, item(i), 10, 10), 5)
        results = await asyncio.wait_for(asyncio.gather(*pops), 5)
    finally:
        for pop in pops:
            pop.cancel()
    assert results == [(channel, [item(i)]) for i, channel in enumerate(channels)]


async def test_group_members_expire_and_discard(storage: RedisStorage, raw: aioredis.Redis) -> None:
    await storage.group_add("g", "a", 100.0, 60)
    await storage.group_add("g", "b", 150.0, 60)
    await storage.group_add("g", "c", 200.0, 60)
    await storage.group_discard("g", "c")
    await storage.group_discard("g", "never-added")
    # cutoff 150: "a" (added 100) is stale, "b" (added exactly at the cutoff) is not.
    assert await storage.group_members("g", 210.0, 60) == ["b"]
    assert await raw.zrange(storage.prefix + "group:g", 0, -1) == [b"b"]
    await storage.group_discard("g", "b")
    assert await raw.exists(storage.prefix + "group:g") == 0
    assert await storage.group_members("g", 210.0, 60) == []


async def test_group_send_fan_out_is_one_list_item(make_storage: MakeStorage, raw: aioredis.Redis) -> None:
    storage = make_storage()
    layer = ChannelLayer(storage, LayerOptions(block_timeout=BLOCK_TIMEOUT))
    channels = [await layer.new_channel("proc") for _ in range(25)]
    for channel in channels:
        await layer.group_add("lobby", channel)
    await layer.group_send("lobby", {"text": "hi"})
    prefix_key = channels[0].split("!")[0] + "!"
    assert await raw.llen(storage.prefix + prefix_key) == 1
    receiver = layer.receiver([prefix_key])
    try:
        batch = await asyncio.wait_for(receiver.get_batch(), 5)
    finally:
        await receiver.close()
    assert sorted(batch, key=lambda pair: pair[0]) == sorted((c, {"text": "hi"}) for c in channels)
    await layer.close()


async def test_use_from_other_event_loops(make_storage: MakeStorage) -> None:
    """A thread without a loop (asgiref async_to_sync, asyncio.run) gets its own clients."""
    storage = make_storage()
    layer = ChannelLayer(storage, LayerOptions(block_timeout=BLOCK_TIMEOUT))
    await layer.send("loops.main", {"from": "main"})

    def in_thread() -> list[Any]:
        assert threading.current_thread() is not threading.main_thread()
        results: list[Any] = []
        for n in range(3):  # a fresh loop per call, as async_to_sync does without an outer loop
            async_to_sync(layer.send)("loops.thread", {"n": n})
        results.append(async_to_sync(layer.receive)("loops.main"))

        async def several() -> None:
            await layer.group_add("loops", "loops.grouped")
            await layer.group_send("loops", {"via": "group"})

        asyncio.run(several())
        return results

    assert await asyncio.to_thread(in_thread) == [{"from": "main"}]
    assert [await layer.receive("loops.thread") for _ in range(3)] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert await layer.receive("loops.grouped") == {"via": "group"}
    # The thread's loops closed their clients on the way out; only ours remains.
    assert list(storage._loops) == [asyncio.get_running_loop()]
    await layer.close()
    assert storage._loops == {}


async def test_close_then_reuse(storage: RedisStorage) -> None:
    await storage.push("reuse", item(1), 10, 10)
    await storage.close()
    assert storage._loops == {}
    # A closed storage reconnects when used again (a process-wide layer outlives close()).
    assert await storage.pop(["reuse"], 10, 1) == ("reuse", [item(1)])


async def test_pop_rejects_keys_of_several_shards() -> None:
    storage = RedisStorage(hosts=[f"redis://127.0.0.1:{port}/0" for port in (1, 2, 3)], prefix="unused:")
    keys = [f"key.{i}" for i in range(30)]
    assert len(storage.partition(keys)) == 3
    with pytest.raises(ValueError):
        await storage.pop(keys, 1, 0.1)
    assert await storage.pop([], 1, 0.01) is None
