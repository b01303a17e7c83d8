"""Sharding over several Redis servers, and the consistent-hash ring behind it.

The multi-server tests run against three private ``redis-server`` processes (see the
``redis_shards`` fixture), never against the shared server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from support.waiting import deadline

from switchboard.gateway.layers import ChannelLayer, LayerOptions
from switchboard.gateway.layers.core import _LaneRouter
from switchboard.gateway.layers.names import split_local
from switchboard.gateway.layers.redis import HashRing, RedisStorage, node_identity, stable_hash

pytestmark = pytest.mark.timeout(30)

HOSTS = [f"redis://10.0.0.{i}:6379/0" for i in range(1, 4)]
KEYS = [f"gateway.{i:05d}.abcdef!" if i % 2 else f"worker.channel.{i}" for i in range(20000)]


# -- The hash ring (no servers needed) ------------------------------------------------


def test_ring_spreads_keys_evenly() -> None:
    ring = HashRing(HOSTS)
    shares = Counter(ring.node_for(key) for key in KEYS)
    assert set(shares) == {0, 1, 2}
    for count in shares.values():
        assert 0.25 < count / len(KEYS) < 0.42


def test_adding_a_host_moves_only_a_minority_of_keys() -> None:
    before = HashRing(HOSTS)
    after = HashRing([*HOSTS, "redis://10.0.0.4:6379/0"])
    moved = [key for key in KEYS if before.node_for(key) != after.node_for(key)]
    # Ideally 1/4 of the keys move, and only onto the new host.
    assert 0.15 < len(moved) / len(KEYS) < 0.35
    assert {after.node_for(key) for key in moved} == {3}


def test_removing_a_host_only_moves_its_keys() -> None:
    before = HashRing(HOSTS)
    after = HashRing(HOSTS[:2])
    for key in KEYS[:5000]:
        if before.node_for(key) != 2:
            assert after.node_for(key) == before.node_for(key)


def test_credentials_do_not_change_placement() -> None:
    assert node_identity("redis://:s3cret@10.0.0.1:6379/0") == node_identity("redis://10.0.0.1:6379/0")
    plain = RedisStorage(hosts=HOSTS)
    with_password = RedisStorage(hosts=[url.replace("//", "//user:pw@") for url in HOSTS])
    assert [plain.shard_index(k) for k in KEYS[:500]] == [with_password.shard_index(k) for k in KEYS[:500]]


def test_placement_is_the_same_in_every_process() -> None:
    """Python's hash() is salted per process; the ring must not depend on it."""
    code = (
        "from switchboard.gateway.layers.redis import HashRing, stable_hash\n"
        f"ring = HashRing({HOSTS!r})\n"
        f"print(([ring.node_for(k) for k in {KEYS[:200]!r}], stable_hash('x')))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    output = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    ring = HashRing(HOSTS)
    assert output.stdout.strip() == str(([ring.node_for(k) for k in KEYS[:200]], stable_hash("x")))


def test_single_host_ring() -> None:
    ring = HashRing(["redis://127.0.0.1:6379/0"])
    assert {ring.node_for(key) for key in KEYS[:100]} == {0}
    with pytest.raises(ValueError):
        HashRing([])


# -- Three real servers ---------------------------------------------------------------


@pytest.fixture
async def sharded(redis_shards: list[Any], unique_prefix: Callable[[], str]) -> AsyncIterator[ChannelLayer]:
    storage = RedisStorage(hosts=[server.url for server in redis_shards], prefix=unique_prefix())
    layer = ChannelLayer(storage, LayerOptions(block_timeout=0.2, capacity=1000))
    await layer.flush()
    yield layer
    await layer.flush()
    await layer.close()


@pytest.fixture
async def raws(redis_shards: list[Any]) -> AsyncIterator[list[aioredis.Redis]]:
    clients = [aioredis.Redis.from_url(server.url) for server in redis_shards]
    yield clients
    for client in clients:
        await client.aclose()


def storage_of(layer: ChannelLayer) -> RedisStorage:
    assert isinstance(layer.storage, RedisStorage)
    return layer.storage


async def channels_on_every_shard(layer: ChannelLayer, count_per_shard: int = 3) -> list[str]:
    """Plain channels plus process-local ones, with some of each kind on every shard."""
    storage = storage_of(layer)
    plain: dict[int, list[str]] = {0: [], 1: [], 2: []}
    local: dict[int, list[str]] = {0: [], 1: [], 2: []}
    i = 0
    while min(map(len, plain.values())) < count_per_shard:
        name = f"shard.test.{i}"
        plain[storage.shard_index(name)].append(name)
        i += 1
    while min(map(len, local.values())) < 1:
        name = await layer.new_channel(f"proc.n{i}")
        local[storage.shard_index(split_local(name)[0])].append(name)
        i += 1
    return [name for names in (*plain.values(), *local.values()) for name in names]


async def test_keys_spread_over_all_shards(sharded: ChannelLayer, raws: list[aioredis.Redis]) -> None:
    storage = storage_of(sharded)
    names = [f"spread.{i}" for i in range(60)]
    for name in names:
        await sharded.send(name, {"name": name})
    for index, client in enumerate(raws):
        stored = {key.decode().removeprefix(storage.prefix) for key in await client.keys(storage.prefix + "*")}
        assert stored, f"shard {index} got no keys"
        # Each list sits with its byte account (bytes:) on the shard its name picks.
        lists = {name for name in names if storage.shard_index(name) == index}
        assert stored == lists | {f"bytes:{name}" for name in lists}
    assert len(storage.partition(names)) == 3
    assert sorted(name for part in storage.partition(names) for name in part) == sorted(names)


async def test_receiver_over_all_shards(sharded: ChannelLayer) -> None:
    targets = await channels_on_every_shard(sharded)
    prefixes = sorted({split_local(name)[0] for name in targets if "!" in name})
    plain = [name for name in targets if "!" not in name]
    receiver = sharded.receiver([*plain, *prefixes])
    assert len(receiver._pumps) == 3  # one blocking pop per server
    try:
        for i in range(10):
            for target in targets:
                await sharded.send(target, {"i": i})
        got: dict[str, list[int]] = {target: [] for target in targets}
        remaining = 10 * len(targets)
        while remaining:
            for channel, message in await asyncio.wait_for(receiver.get_batch(), 5):
                got[channel].append(message["i"])
                remaining -= 1
    finally:
        assert await receiver.close() == []
    assert got == {target: list(range(10)) for target in targets}


async def test_group_send_reaches_every_shard(sharded: ChannelLayer, raws: list[aioredis.Redis]) -> None:
    storage = storage_of(sharded)
    targets = await channels_on_every_shard(sharded)
    for target in targets:
        await sharded.group_add("everywhere", target)
    group_shard = storage.group_shard_index("everywhere")
    assert await raws[group_shard].exists(storage.prefix + "group:everywhere") == 1
    await sharded.group_send("everywhere", {"hello": "all"})
    assert sharded.stats.group_sent == len(targets)
    for target in targets:
        assert await asyncio.wait_for(sharded.receive(target), 5) == {"hello": "all"}


async def test_push_many_keeps_input_order_across_shards(sharded: ChannelLayer) -> None:
    storage = storage_of(sharded)
    targets = [name for name in await channels_on_every_shard(sharded, 2) if "!" not in name]
    full = set(targets[::2])
    for name in full:
        assert await storage.push(name, b"filler", 1, 10)
    results = await storage.push_many([(name, b"x", 1, None) for name in targets], 10)
    assert results == [name not in full for name in targets]


async def test_flush_clears_every_shard(sharded: ChannelLayer, raws: list[aioredis.Redis]) -> None:
    storage = storage_of(sharded)
    for target in await channels_on_every_shard(sharded):
        await sharded.send(target, {"x": 1})
        await sharded.group_add(f"g{abs(hash(target)) % 5}", target)
    await sharded.flush()
    for client in raws:
        assert await client.keys(storage.prefix + "*") == []


# -- A server that hangs holds up only its own sends ----------------------------------


@contextlib.contextmanager
def hung(server: Any) -> Iterator[None]:
    """``server`` stops answering (SIGSTOP: it keeps its sockets, reads nothing) until the
    block ends, like a primary that died and whose replica is not yet promoted."""
    os.kill(server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.pid, signal.SIGCONT)


@pytest.fixture
async def patient(redis_shards: list[Any], unique_prefix: Callable[[], str]) -> AsyncIterator[ChannelLayer]:
    """The three servers, with a socket timeout longer than any test here waits: a send to
    a hung server stays pending until the server is let go, however slow the machine."""
    storage = RedisStorage(hosts=[server.url for server in redis_shards], prefix=unique_prefix(), socket_timeout=600)
    layer = ChannelLayer(storage, LayerOptions(block_timeout=0.2, capacity=1000))
    await layer.flush()
    yield layer
    await layer.flush()
    await layer.close()


async def one_channel_per_shard(layer: ChannelLayer) -> list[str]:
    names = [name for name in await channels_on_every_shard(layer, 1) if "!" not in name]
    by_shard = {storage_of(layer).shard_index(name): name for name in names}
    for name in by_shard.values():  # connected, so the hung send is in flight, not connecting
        await layer.send(name, {"n": 0})
    return [by_shard[index] for index in range(3)]


@pytest.mark.timeout(120)
async def test_a_hung_server_holds_up_only_the_sends_bound_for_it(patient: ChannelLayer, redis_shards: list[Any]) -> None:
    on_hung, *elsewhere = await one_channel_per_shard(patient)
    with hung(redis_shards[0]):
        first = asyncio.ensure_future(patient.send(on_hung, {"n": 1}))
        await asyncio.sleep(0)  # its batch is on the wire
        # Every other server's sends go on (one batcher per server: layers/core.py).
        await asyncio.wait_for(asyncio.gather(*(patient.send(name, {"n": 1}) for name in elsewhere)), deadline(30))
        # A later send to the hung server's channel waits behind the first one.
        second = asyncio.ensure_future(patient.send(on_hung, {"n": 2}))
        await asyncio.sleep(0)
        assert not first.done() and not second.done()
    await asyncio.wait_for(asyncio.gather(first, second), deadline(30))
    for name in [on_hung, *elsewhere]:
        got = [(await asyncio.wait_for(patient.receive(name), deadline(10)))["n"] for _ in range(2 if name != on_hung else 3)]
        assert got == ([0, 1, 2] if name == on_hung else [0, 1])


@pytest.mark.timeout(120)
async def test_a_channel_stays_on_its_lane_while_sends_to_it_are_pending(
    patient: ChannelLayer, redis_shards: list[Any]
) -> None:
    """A key whose lane changes (a cluster slot moving to its promoted replica) while its
    earlier sends are pending keeps their lane: a new send never overtakes them."""
    on_hung, elsewhere, _ = await one_channel_per_shard(patient)
    router = patient._batcher()
    assert isinstance(router, _LaneRouter)
    storage = storage_of(patient)
    with hung(redis_shards[0]):
        first = asyncio.ensure_future(patient.send(on_hung, {"n": 1}))
        await asyncio.sleep(0)
        # The channel's server is now the one of ``elsewhere`` (for the lanes, not the storage).
        router.lane_of = lambda key: storage.shard_index(elsewhere) if key == on_hung else storage.shard_index(key)
        second = asyncio.ensure_future(patient.send(on_hung, {"n": 2}))
        await asyncio.wait_for(patient.send(elsewhere, {"n": 1}), deadline(30))  # that lane flows
        assert not first.done() and not second.done()  # the channel's second send waits with its first
    await asyncio.wait_for(asyncio.gather(first, second), deadline(30))
    assert [(await asyncio.wait_for(patient.receive(on_hung), deadline(10)))["n"] for _ in range(3)] == [0, 1, 2]
    assert router.pending_keys == {}
    # With nothing pending, the channel takes its new lane.
    third = asyncio.ensure_future(patient.send(on_hung, {"n": 3}))
    await asyncio.sleep(0)
    assert router.pending_keys[on_hung][0] == storage.shard_index(elsewhere)
    await asyncio.wait_for(third, deadline(10))
