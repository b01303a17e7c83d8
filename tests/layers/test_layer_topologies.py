"""The Redis layer on a Redis Cluster and behind Sentinel: start-up checks and failover.

The conformance suites (test_layer_conformance.py, test_layer_durable.py) run on both
topologies already; this module covers what only they have:

* misconfiguration found at start-up, as one line (``cli.verify_layer``): unreachable
  seeds or Sentinels, a cluster URL for a server that is not a cluster, a wrong master
  name, cluster seeds mixed with other servers;
* a primary killed (SIGKILL) under traffic: the layer resumes once the topology has
  promoted the replica; at-most-once sends that failed meanwhile are counted
  (``LayerStats.send_failed``) and lost only then; a durable channel with
  ``durability: replicated`` loses nothing it acknowledged.

The failover tests kill a primary of the session's cluster / Sentinel setup and start it
again afterwards (``restore``), so later tests find the setup whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from support.redis_topologies import ClusterOfServers, SentinelSetup, port_range
from support.waiting import deadline, wait_until

from switchboard.gateway.cli import verify_layer
from switchboard.gateway.config import ConfigError
from switchboard.gateway.layers import ChannelLayer, build_layer
from switchboard.gateway.layers.durable import NotReplicated, delivery_of
from switchboard.gateway.layers.redis_cluster import RedisClusterStorage

pytestmark = [pytest.mark.redis, pytest.mark.timeout(180)]

#: The failover window is seconds (node timeout 1 s); the deadline is only a safety net.
FAILOVER_WAIT = 60.0


def unused_port() -> int:
    """A port of this engineer's cluster range that nothing listens on."""
    ports = port_range("SWITCHBOARD_TEST_CLUSTER_PORTS", "27000-27999")
    import socket

    for port in reversed(ports):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise RuntimeError("no unused port")


def redis_layer(hosts: list[Any], **config: Any) -> ChannelLayer:
    prefix = f"sbtopo:{secrets.token_hex(4)}:"
    return build_layer({"BACKEND": "redis", "CONFIG": {"hosts": hosts, "prefix": prefix, "block_timeout": 0.2, **config}})


# -- Start-up checks --------------------------------------------------------------------


async def refused(layer: ChannelLayer) -> str:
    try:
        with pytest.raises(ConfigError) as caught:
            await verify_layer(layer)
    finally:
        await layer.close()
    message = str(caught.value)
    assert "\n" not in message
    return message


async def test_unreachable_cluster_seeds_are_refused_at_start() -> None:
    message = await refused(redis_layer([f"redis+cluster://127.0.0.1:{unused_port()}"]))
    assert "no Redis Cluster seed" in message and "answered" in message


async def test_a_cluster_url_for_a_plain_server_is_refused_at_start(redis_url: str) -> None:
    plain = redis_url.replace("redis://", "redis+cluster://", 1)
    message = await refused(redis_layer([plain]))
    assert "is not a Redis Cluster" in message


async def test_a_wrong_master_name_is_refused_at_start(redis_sentinel: SentinelSetup) -> None:
    entry = {**redis_sentinel.hosts_entry, "master_name": "no-such-primary"}
    message = await refused(redis_layer([entry]))
    assert "know no healthy primary named 'no-such-primary'" in message


async def test_unreachable_sentinels_are_refused_at_start() -> None:
    entry = {"sentinels": [("127.0.0.1", unused_port())], "master_name": "mymaster"}
    message = await refused(redis_layer([entry]))
    assert "no Sentinel of" in message


def test_cluster_seeds_mixed_with_other_servers_are_refused() -> None:
    with pytest.raises(ValueError, match="mix Redis Cluster seeds"):
        redis_layer(["redis+cluster://127.0.0.1:7000", "redis://127.0.0.1:6379"])


def test_cluster_option_makes_plain_urls_seeds(redis_cluster: ClusterOfServers) -> None:
    seeds = [seed.replace("redis+cluster://", "redis://") for seed in redis_cluster.seeds]
    layer = redis_layer(seeds, cluster=True)
    assert isinstance(layer.storage, RedisClusterStorage)


async def test_a_healthy_cluster_and_sentinel_pass_the_check(
    redis_cluster: ClusterOfServers, redis_sentinel: SentinelSetup
) -> None:
    for hosts in (redis_cluster.seeds, [redis_sentinel.hosts_entry]):
        layer = redis_layer(hosts)
        try:
            await verify_layer(layer)
        finally:
            await layer.close()


# -- Failover under traffic -------------------------------------------------------------


class Traffic:
    """A sender and a receiver loop on one channel; what was sent, received and failed.

    ``attempted`` is every message the sender began to send, ``sent`` those whose send
    returned: when the loops stop, a send may be cut off after Redis stored its message
    and the receiver already had it.
    """

    def __init__(self, layer: ChannelLayer, channel: str) -> None:
        self.layer = layer
        self.channel = channel
        self.attempted: list[int] = []
        self.sent: list[int] = []
        self.failed: list[int] = []
        self.received: list[int] = []
        self.failed_at: list[float] = []
        self._tasks: list[asyncio.Task[None]] = []

    async def _send(self) -> None:
        n = 0
        while True:
            self.attempted.append(n)
            try:
                await self.layer.send(self.channel, {"type": "t", "n": n})
                self.sent.append(n)
            except Exception:
                self.failed.append(n)
                self.failed_at.append(time.monotonic())
                await asyncio.sleep(0.05)
            n += 1
            await asyncio.sleep(0.005)

    async def _receive(self) -> None:
        receiver = self.layer.receiver([self.channel])
        try:
            while True:
                _channel, message = await receiver.get()
                self.received.append(int(message["n"]))
        finally:
            await receiver.close()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._send()), loop.create_task(self._receive())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def traffic(layer: ChannelLayer, channel: str) -> AsyncIterator[Traffic]:
    flow = Traffic(layer, channel)
    flow.start()
    try:
        yield flow
    finally:
        await flow.stop()


async def failover_under_traffic(layer: ChannelLayer, channel: str, kill: Any) -> None:
    """Traffic flows, the primary dies, traffic flows again; losses are counted and bounded."""
    async with traffic(layer, channel) as flow:
        await wait_until(lambda: len(flow.received) >= 50, FAILOVER_WAIT)
        window = await asyncio.to_thread(kill)
        # Messages numbered from here on were first sent after the replica was promoted.
        resumed_from = len(flow.attempted)
        sent_before = len(flow.sent)
        # The layer resumes: messages sent after the failover arrive.
        await wait_until(lambda: len(flow.sent) >= sent_before + 50, FAILOVER_WAIT)
        target = flow.sent[-1]
        await wait_until(lambda: target in flow.received, FAILOVER_WAIT)
    assert window > 0
    # Every failed send is counted by the layer, never silent.
    assert layer.stats.send_failed == len(flow.failed)
    # Nothing arrives that was not sent. A send that raised is not known to be lost: when
    # the primary dies between running the push and answering it, the client sees a
    # connection error for a push that ran and, once replicated, arrives from the promoted
    # replica (seen: one such message in a full run). So what may arrive is every attempt;
    # the counted failures are an upper bound on losses.
    assert set(flow.received) <= set(flow.attempted)
    # At most once, except across the failover itself: a pop the dead primary answered but
    # had not yet copied to its replica is undone by the promotion, and the promoted
    # replica delivers that message again (replication is asynchronous; seen: one message
    # in a full run). Only a message sent before the failover can come twice.
    seen: set[int] = set()
    twice = [n for n in flow.received if n in seen or seen.add(n)]
    assert all(n < resumed_from for n in twice), twice[-5:]
    # Losses are bounded to the failover: sends acknowledged after the topology had
    # promoted the replica all arrive (up to the last one waited for: the loops were
    # stopped with later ones possibly still on their way).
    lost = {n for n in flow.sent if n <= target} - set(flow.received)
    assert all(n < resumed_from for n in lost), sorted(lost)[-5:]


async def test_cluster_primary_killed_under_traffic(redis_cluster: ClusterOfServers) -> None:
    layer = redis_layer(redis_cluster.seeds)
    channel = "failover.cluster"
    storage = layer.storage
    assert isinstance(storage, RedisClusterStorage)
    try:
        await failover_under_traffic(layer, channel, lambda: redis_cluster.kill_primary_of(storage._list_key(channel)))
    finally:
        await layer.flush()
        await layer.close()
        await asyncio.to_thread(redis_cluster.restore)


async def test_sentinel_primary_killed_under_traffic(redis_sentinel: SentinelSetup) -> None:
    layer = redis_layer([redis_sentinel.hosts_entry])
    try:
        await failover_under_traffic(layer, "failover.sentinel", redis_sentinel.kill_primary)
    finally:
        await layer.flush()
        await layer.close()
        await asyncio.to_thread(redis_sentinel.restore)


#: The durable channel of the replicated tests. Its capacity holds every send of the test:
#: a send refused for want of a replica (NotReplicated) is still stored, and nothing reads
#: the stream until the end, so with the default capacity (100) a failover long enough
#: under load filled it and every later send was ChannelFull, never acknowledged.
REPLICATED = {"safe": {"durability": "replicated", "replica_timeout": 2.0, "capacity": 100_000}}


async def replicated_loses_nothing(layer: ChannelLayer, kill: Any, restore: Any) -> None:
    """Every send a replicated durable channel acknowledged is read after the failover."""
    acknowledged: list[int] = []
    refused = 0
    stop = asyncio.Event()

    async def send() -> None:
        nonlocal refused
        n = 0
        while not stop.is_set():
            try:
                await layer.send("safe", {"n": n})
                acknowledged.append(n)
            except NotReplicated:
                refused += 1  # stored maybe, not acknowledged: the source would retry
            except Exception:
                refused += 1
                await asyncio.sleep(0.05)
            n += 1
            await asyncio.sleep(0.005)

    sender = asyncio.get_running_loop().create_task(send())
    try:
        await wait_until(lambda: len(acknowledged) >= 30, FAILOVER_WAIT)
        await asyncio.to_thread(kill)
        # The promoted replica has no replica of its own until the killed server rejoins
        # as one: until then every send is refused (NotReplicated), none acknowledged.
        await asyncio.to_thread(restore)
        after = len(acknowledged)
        await wait_until(lambda: len(acknowledged) >= after + 30, FAILOVER_WAIT)
    finally:
        stop.set()
        await sender
    receiver = layer.durable.receiver(["safe"], "reader")
    seen: set[int] = set()
    try:
        async with asyncio.timeout(deadline(FAILOVER_WAIT)):
            while not set(acknowledged) <= seen:
                for _channel, message in await receiver.get_batch(256):
                    seen.add(int(message["n"]))
                    delivery = delivery_of(message)
                    assert delivery is not None
                    receiver.ack(delivery)
    finally:
        await receiver.close()
        # A worker's way out: its acks reach Redis before the layer closes (none left
        # running on the test's loop to be collected, half-sent, in a later test).
        await receiver.flush()
        receiver.abort()
    assert set(acknowledged) <= seen


async def test_cluster_replicated_durable_channel_loses_nothing_acknowledged(redis_cluster: ClusterOfServers) -> None:
    layer = redis_layer(redis_cluster.seeds, durable=REPLICATED)
    stream = layer.storage.prefix + "durable:{safe}"
    try:
        await replicated_loses_nothing(layer, lambda: redis_cluster.kill_primary_of(stream), redis_cluster.restore)
    finally:
        await layer.flush()
        await layer.close()
        await asyncio.to_thread(redis_cluster.restore)


async def test_sentinel_replicated_durable_channel_loses_nothing_acknowledged(redis_sentinel: SentinelSetup) -> None:
    layer = redis_layer([redis_sentinel.hosts_entry], durable=REPLICATED)
    try:
        await replicated_loses_nothing(layer, redis_sentinel.kill_primary, redis_sentinel.restore)
    finally:
        await layer.flush()
        await layer.close()
        await asyncio.to_thread(redis_sentinel.restore)
