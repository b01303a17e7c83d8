"""Durable channels on real Redis servers: sharding, a killed server, replicas.

Private ``redis-server`` processes on free ports (never the shared server): three shards,
a server with ``appendfsync always`` killed with SIGKILL, one without persistence, and a
primary with a replica for ``durability: replicated``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from support.redis_server import RedisServer
from support.waiting import wait_until

from switchboard.gateway.layers import ChannelLayer, LayerOptions
from switchboard.gateway.layers.durable import DurableMessage, NotReplicated, delivery_of
from switchboard.gateway.layers.durable_channels import DurableReceiver
from switchboard.gateway.layers.redis import RedisStorage
from switchboard.gateway.layers.streams_redis import RedisStreams

pytestmark = [pytest.mark.timeout(90), pytest.mark.redis]

FAST = {"visibility_timeout": 1.0, "retry_delay": 0.05, "retry_delay_max": 0.2, "capacity": 1000}


def durable_layer(hosts: list[str], prefix: str, durable: dict[str, Any] | None = None, **storage: Any) -> ChannelLayer:
    storage.setdefault("socket_timeout", 2)
    storage.setdefault("socket_connect_timeout", 2)
    return ChannelLayer(
        RedisStorage(hosts=hosts, prefix=prefix, **storage),
        LayerOptions(block_timeout=0.2, durable=durable or {"tasks.*": dict(FAST)}),
    )


async def drain(receiver: DurableReceiver, count: int) -> list[DurableMessage]:
    """Take and acknowledge ``count`` deliveries."""
    got: list[DurableMessage] = []
    while len(got) < count:
        for _channel, message in await asyncio.wait_for(receiver.get_batch(count - len(got)), 30):
            delivery = delivery_of(message)
            assert delivery is not None
            receiver.ack(delivery)
            got.append(message)
    await receiver.flush()
    return got


@pytest.fixture
async def sharded(redis_shards: list[Any], unique_prefix: Callable[[], str]) -> AsyncIterator[ChannelLayer]:
    layer = durable_layer([server.url for server in redis_shards], unique_prefix())
    yield layer
    await layer.flush()
    await layer.close()


async def test_durable_channels_spread_over_shards_with_their_dead_letters(
    sharded: ChannelLayer, redis_shards: list[Any]
) -> None:
    channels = [f"tasks.{i}" for i in range(24)]
    for channel in channels:
        for n in range(3):
            await sharded.send(channel, {"channel": channel, "n": n})
    storage = sharded.storage
    assert isinstance(storage, RedisStorage)
    streams = sharded.durable.streams
    assert isinstance(streams, RedisStreams)
    raws = [aioredis.Redis.from_url(server.url) for server in redis_shards]
    try:
        used = set()
        for channel in channels:
            index = storage.shard_index(channel)
            used.add(index)
            assert await raws[index].xlen(streams.stream_key(channel)) == 3
            for other, raw in enumerate(raws):
                if other != index:
                    assert not await raw.exists(streams.stream_key(channel))
        assert used == {0, 1, 2}

        receiver = sharded.durable.receiver(channels, "worker.a")
        try:
            got = await drain(receiver, 72)
            assert sorted((m["channel"], m["n"]) for m in got) == sorted((c, n) for c in channels for n in range(3))
            # A poison message per channel: its dead letter lands on its channel's shard.
            for channel in channels[:6]:
                await sharded.send(channel, {"poison": True})
            failed = 0
            while failed < 6 * 5:  # max_deliveries defaults to 5
                for _channel, message in await asyncio.wait_for(receiver.get_batch(), 30):
                    delivery = delivery_of(message)
                    assert delivery is not None
                    receiver.fail(delivery, "boom")
                    failed += 1
            await receiver.flush()
        finally:
            await receiver.close()
        await wait_until(lambda: sharded.stats.dead_lettered == 6, what="six dead letters")
        assert await sharded.durable.dead_letter_channels() == {channel: 1 for channel in channels[:6]}
        for channel in channels[:6]:
            assert await raws[storage.shard_index(channel)].xlen(streams.dead_key(channel)) == 1
    finally:
        for raw in raws:
            await raw.aclose()


async def test_acknowledged_sends_survive_sigkill_with_appendfsync_always(tmp_path: Path, redis_server_binary: str) -> None:
    server = RedisServer(redis_server_binary, tmp_path / "aof", ["--appendonly", "yes", "--appendfsync", "always"])
    server.start()
    layer = durable_layer([server.url], "sbtest:aof:")
    try:
        sent = [await layer.send_durable("tasks.aof", {"n": n}) for n in range(200)]
        receiver = layer.durable.receiver(["tasks.aof"], "worker.a", prefetch=50)
        finished = {delivery_of(m).event_id for m in await drain(receiver, 50)}  # type: ignore[union-attr]
        await receiver.close()
        receiver.abort()  # as a worker ends: what its pump read ahead (never handed out) is claimed later
        # Read but never finished: must survive as well.
        reader = layer.durable.receiver(["tasks.aof"], "worker.b", prefetch=20)
        in_hand = [delivery_of(m) for _c, m in await asyncio.wait_for(reader.get_batch(20), 30)]
        reader.abort()

        await asyncio.to_thread(server.kill)
        await asyncio.to_thread(server.start)

        survivor = layer.durable.receiver(["tasks.aof"], "worker.c")
        try:
            got = {delivery_of(m).event_id for m in await drain(survivor, 150)}  # type: ignore[union-attr]
        finally:
            await survivor.close()
        assert got == set(sent) - finished
        assert {d.event_id for d in in_hand if d} <= got
        assert await layer.durable.info("tasks.aof") == (0, 0)
    finally:
        await layer.close()
        server.stop()


async def test_without_persistence_a_restart_loses_the_stream_and_the_layer_carries_on(
    redis_server: RedisServer, unique_prefix: Callable[[], str]
) -> None:
    layer = durable_layer([redis_server.url], unique_prefix())
    receiver = layer.durable.receiver(["tasks.gone"], "worker.a")
    try:
        await layer.send("tasks.gone", {"n": "before"})
        assert len(await drain(receiver, 1)) == 1
        await layer.send("tasks.unread", {"n": "lost"})
        await asyncio.to_thread(redis_server.kill)
        await asyncio.to_thread(redis_server.start)
        # Nothing was written to disk: what was stored is gone (docs/delivery.md says so).
        assert await layer.durable.info("tasks.unread") == (0, 0)
        # The stream and its group are gone; the reader makes the group again (NOGROUP).
        await layer.send("tasks.gone", {"n": "after"})
        got = await drain(receiver, 1)
        assert got == [{"n": "after"}]
    finally:
        await receiver.close()
        await layer.close()


async def test_replicated_durability_waits_for_a_replica(tmp_path: Path, redis_server_binary: str) -> None:
    primary = RedisServer(redis_server_binary, tmp_path / "primary")
    primary.start()
    replica = RedisServer(redis_server_binary, tmp_path / "replica", ["--replicaof", "127.0.0.1", str(primary.port)])
    replica.start()
    layer = durable_layer(
        [primary.url], "sbtest:replicated:", {"tasks.safe": {"durability": "replicated", "replica_timeout": 1.0}}
    )
    raw_replica = aioredis.Redis.from_url(replica.url)
    try:

        async def replica_up() -> bool:
            return (await raw_replica.info("replication")).get("master_link_status") == "up"

        await wait_until(replica_up, what="the replica to sync")
        streams = layer.durable.streams
        assert isinstance(streams, RedisStreams)
        for n in range(20):
            await layer.send("tasks.safe", {"n": n})
            # Acknowledged only once the replica has it: it is there the moment send returns.
            assert await raw_replica.xlen(streams.stream_key("tasks.safe")) == n + 1
        await asyncio.to_thread(replica.stop)
        with pytest.raises(NotReplicated):
            await layer.send("tasks.safe", {"n": "alone"})
        assert layer.stats.durable_not_replicated == 1
    finally:
        await raw_replica.aclose()
        await layer.close()
        replica.stop()
        primary.stop()
