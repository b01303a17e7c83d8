"""A burst of commands beyond ``max_connections`` waits on a Redis Cluster, as on one server.

redis-py's asyncio cluster client raises ``MaxConnectionsError`` as soon as a node's pool is
busy; the cluster benchmark (issue 18) saw 700 of a 1,000-member room's ``disconnect``
handlers raise from ``group_discard``. The layer's client waits instead
(``layers/cluster_client.py``). Real cluster (tests/support/redis_topologies.py), no mocks.
"""

from __future__ import annotations

import asyncio
import secrets
import time

import pytest
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError
from support.redis_topologies import ClusterOfServers
from support.waiting import wait_until

from switchboard.gateway.layers import ChannelLayer, build_layer
from switchboard.gateway.layers.cluster_client import WaitingRedisCluster

POOL = 4  # connections per node: far below the burst
BURST = 300  # concurrent commands, all on one slot (one group key)


def cluster_layer(cluster: ClusterOfServers) -> ChannelLayer:
    prefix = f"sbburst:{secrets.token_hex(4)}:"
    config = {"hosts": cluster.seeds, "prefix": prefix, "block_timeout": 0.2, "max_connections": POOL}
    return build_layer({"BACKEND": "redis", "CONFIG": config})


async def members(layer: ChannelLayer, group: str) -> list[str]:
    return await layer.storage.group_members(group, time.time(), layer.group_expiry)


async def test_redis_py_alone_refuses_the_burst(redis_cluster: ClusterOfServers) -> None:
    """The premise: without the layer's bound, this burst exhausts a node's pool."""
    host, _, port = redis_cluster.seeds[0].removeprefix("redis+cluster://").partition(":")
    client = RedisCluster(startup_nodes=[ClusterNode(host, int(port))], max_connections=POOL)
    key = f"{{sbburst-{secrets.token_hex(4)}}}"
    try:
        results = await asyncio.gather(*(client.zadd(key, {str(i): i}) for i in range(BURST)), return_exceptions=True)
        assert any(isinstance(result, MaxConnectionsError) for result in results)
        await client.delete(key)
    finally:
        await client.aclose()


async def test_a_group_joined_and_left_by_a_burst_of_members(redis_cluster: ClusterOfServers) -> None:
    layer = cluster_layer(redis_cluster)
    group = f"room-{secrets.token_hex(4)}"
    channels = [f"gateway.burst!c{i}" for i in range(BURST)]
    try:
        await asyncio.gather(*(layer.group_add(group, channel) for channel in channels))
        assert sorted(await members(layer, group)) == sorted(channels)
        # A room of BURST members closing at once: every discard reaches the one group key.
        await asyncio.gather(*(layer.group_discard(group, channel) for channel in channels))
        assert await members(layer, group) == []
        # And the sends of a busy moment: group sends and direct sends, all concurrent.
        await asyncio.gather(
            *(layer.group_send(group, {"type": "chat.message", "n": i}) for i in range(BURST)),
            *(layer.send(channel, {"type": "chat.message"}) for channel in channels),
        )
    finally:
        await layer.flush()
        await layer.close()


async def test_a_command_waits_no_longer_than_pool_timeout(redis_cluster: ClusterOfServers) -> None:
    """Like the one-server pool: past ``pool_timeout`` without a place, a ConnectionError."""
    host, _, port = redis_cluster.seeds[0].removeprefix("redis+cluster://").partition(":")
    client = WaitingRedisCluster(startup_nodes=[ClusterNode(host, int(port))], max_connections=1, pool_timeout=0.2)
    key = f"{{sbburst-{secrets.token_hex(4)}}}"
    try:
        holder = asyncio.create_task(client.blpop([key], timeout=1))  # takes the only place
        await wait_until(client._in_flight.locked, what="the blocking pop to hold the only place")
        with pytest.raises(RedisConnectionError) as raised:
            await client.get(key)
        assert not isinstance(raised.value, MaxConnectionsError)
        assert await holder is None  # the pop itself was never disturbed
        assert await client.get(key) is None  # and the place is free again
    finally:
        await client.aclose()
