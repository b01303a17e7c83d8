"""The Redis layer survives its server restarting, without being rebuilt.

Runs against a private ``redis-server`` process (the ``redis_server`` fixture) that the
test stops and starts again on the same port.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
import redis.exceptions

from switchboard.gateway.layers import ChannelLayer, LayerOptions
from switchboard.gateway.layers.redis import RedisStorage

pytestmark = pytest.mark.timeout(60)

DOWN_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


async def test_layer_works_again_after_redis_restarts(
    redis_server: Any, unique_prefix: Callable[[], str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL, logger="switchboard.layers")  # the pump logs each failed retry
    storage = RedisStorage(hosts=redis_server.url, prefix=unique_prefix(), socket_timeout=2, socket_connect_timeout=2)
    layer = ChannelLayer(storage, LayerOptions(block_timeout=0.2))
    local = await layer.new_channel("proc")
    local_prefix = local.split("!")[0] + "!"
    receiver = layer.receiver([local_prefix])
    try:
        # Up: plain channels, process-local channels and groups all work (and Lua scripts
        # get cached on the server, which the restart will forget).
        await layer.send("restart.plain", {"n": 1})
        assert await layer.receive("restart.plain") == {"n": 1}
        await layer.group_add("restart-group", local)
        await layer.group_send("restart-group", {"n": 2})
        assert await asyncio.wait_for(receiver.get(), 5) == (local, {"n": 2})

        await asyncio.to_thread(redis_server.stop)
        with pytest.raises(DOWN_ERRORS):
            await layer.send("restart.plain", {"n": "lost"})
        await asyncio.sleep(0.5)  # the receiver's pump keeps failing and retrying meanwhile

        await asyncio.to_thread(redis_server.start)
        # Same layer, same storage: the pools reconnect and the scripts are loaded again.
        await layer.send("restart.plain", {"n": 3})
        assert await layer.receive("restart.plain") == {"n": 3}
        await layer.group_add("restart-group", local)
        await layer.group_send("restart-group", {"n": 4})
        await layer.send(local, {"n": 5})
        got = [await asyncio.wait_for(receiver.get(), 10) for _ in range(2)]
        assert got == [(local, {"n": 4}), (local, {"n": 5})]
    finally:
        await receiver.close()
        await layer.close()


async def test_blocked_pop_fails_cleanly_when_redis_goes_away(redis_server: Any, unique_prefix: Callable[[], str]) -> None:
    storage = RedisStorage(hosts=redis_server.url, prefix=unique_prefix())
    try:
        pop = asyncio.ensure_future(storage.pop(["gone"], 1, 10))
        await asyncio.sleep(0.2)
        await asyncio.to_thread(redis_server.stop)
        with pytest.raises(DOWN_ERRORS):
            await asyncio.wait_for(pop, 10)
        await asyncio.to_thread(redis_server.start)
        assert await storage.push("gone", b"back", 10, 10)
        assert await storage.pop(["gone"], 1, 1) == ("gone", [b"back"])
    finally:
        await storage.close()


async def test_a_marker_tells_that_the_server_lost_its_data(redis_server: Any, unique_prefix: Callable[[], str]) -> None:
    """What a gateway relies on to restore its connections' memberships after a restart."""
    storage = RedisStorage(hosts=redis_server.url, prefix=unique_prefix(), socket_timeout=2, socket_connect_timeout=2)
    try:
        assert await storage.keep_marker("gateway.abc", 60) is True  # set now
        assert await storage.keep_marker("gateway.abc", 60) is False  # still there: renewed
        await storage.group_add_many([("room", ["gateway.abc!1", "gateway.abc!2"])], 1000.0, 60)
        await asyncio.to_thread(redis_server.stop)
        await asyncio.to_thread(redis_server.start)
        assert await storage.group_members("room", 1000.0, 60) == []  # the restart took them
        assert await storage.keep_marker("gateway.abc", 60) is True  # and this says so
        await storage.group_add_many([("room", ["gateway.abc!1", "gateway.abc!2"])], 1000.0, 60)
        assert sorted(await storage.group_members("room", 1000.0, 60)) == ["gateway.abc!1", "gateway.abc!2"]
        await storage.group_discard_many([("room", ["gateway.abc!1"])])
        assert await storage.group_members("room", 1000.0, 60) == ["gateway.abc!2"]
    finally:
        await storage.close()


async def test_what_a_server_going_away_cost_is_counted(
    redis_server: Any, redis_url: str, unique_prefix: Callable[[], str], caplog: pytest.LogCaptureFixture
) -> None:
    """Sends the storage raised on are counted as the messages lost: a group send, per
    member channel it could not reach (``send_failed``), or once when its member list
    could not be read (``group_send_failed``: how many members there were is unknown)."""
    caplog.set_level(logging.CRITICAL, logger="switchboard.layers")
    # Two servers on a ring: the private one goes away, the shared one stays.
    storage = RedisStorage(
        hosts=[redis_server.url, redis_url], prefix=unique_prefix(), socket_timeout=5, socket_connect_timeout=5
    )
    layer = ChannelLayer(storage, LayerOptions(block_timeout=0.2))
    on_private = [name for name in (f"gone.{i}" for i in range(200)) if storage.shard_index(name) == 0][:3]
    group_here = next(name for name in (f"room{i}" for i in range(200)) if storage.group_shard_index(name) == 1)
    group_gone = next(name for name in (f"room{i}" for i in range(200)) if storage.group_shard_index(name) == 0)
    try:
        for name in on_private:
            await layer.group_add(group_here, name)
        await layer.group_add(group_gone, on_private[0])
        redis_server.stop()

        with pytest.raises(DOWN_ERRORS):
            await layer.send(on_private[0], {"n": 1})
        assert layer.stats.send_failed == 1
        # The members are read from the server that stayed; all three lists are gone.
        with pytest.raises(DOWN_ERRORS):
            await layer.group_send(group_here, {"n": 2})
        assert (layer.stats.send_failed, layer.stats.group_send_failed) == (1 + 3, 0)
        # The member list itself is on the server that went away.
        with pytest.raises(DOWN_ERRORS):
            await layer.group_send(group_gone, {"n": 3})
        assert (layer.stats.send_failed, layer.stats.group_send_failed) == (1 + 3, 1)
    finally:
        redis_server.start()
        await layer.flush()
        await layer.close()
