"""Closing a Redis receiver ends its blocking pops at once (CLIENT UNBLOCK), losing nothing.

A worker handing its connections over on SIGTERM closes its readers while the gateway
holds those connections' events; waiting out a blocking pop there paused every client
for up to one ``block_timeout``. The block timeout here is a minute, far longer than any
test deadline, so a close that waited it out fails instead of passing slowly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from switchboard.gateway.layers import ChannelLayer, LayerOptions, Receiver
from switchboard.gateway.layers.core import unpack
from switchboard.gateway.layers.redis import RedisStorage

pytestmark = [pytest.mark.redis, pytest.mark.timeout(60)]

LONG_BLOCK = 60.0


def make(redis_url: str, prefix: str) -> ChannelLayer:
    return ChannelLayer(RedisStorage(hosts=redis_url, prefix=prefix), LayerOptions(block_timeout=LONG_BLOCK))


async def test_close_ends_a_blocked_pop_without_waiting_out_its_timeout(redis_url: str, unique_prefix: Callable[[], str]) -> None:
    layer = make(redis_url, unique_prefix())
    try:
        receiver = layer.receiver(["wake.idle", "wake.other"])
        await asyncio.sleep(0.3)  # the pumps are blocked in their pops now
        assert layer.storage._popping  # type: ignore[attr-defined]
        assert await asyncio.wait_for(receiver.close(), 20) == []
        # The layer goes on working for new readers.
        await layer.send("wake.idle", {"n": 1})
        assert await asyncio.wait_for(layer.receive("wake.idle"), 20) == {"n": 1}
    finally:
        await layer.flush()
        await layer.close()


async def read_into(receiver: Receiver, got: list[int]) -> None:
    while True:
        for _channel, message in await receiver.get_batch():
            got.append(message["n"])


async def test_waking_readers_while_messages_flow_loses_none(redis_url: str, unique_prefix: Callable[[], str]) -> None:
    """Every message sent is read before the close, handed back by it, or still stored."""
    prefix = unique_prefix()
    writer = make(redis_url, prefix)
    reader_layer = make(redis_url, prefix)
    sent = 0
    got: list[int] = []
    try:
        for _round in range(5):
            receiver = reader_layer.receiver(["wake.flow"])

            reading = asyncio.ensure_future(read_into(receiver, got))
            for _ in range(200):
                await writer.send("wake.flow", {"n": sent})
                sent += 1
            leftover = await asyncio.wait_for(receiver.close(), 20)
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
            got.extend(message["n"] for _channel, message in leftover)
        while (result := await writer.storage.pop(["wake.flow"], 100, 0)) is not None:
            got.extend(unpack(item)[2]["n"] for item in result[1])
        assert sorted(got) == list(range(sent))
        assert got == sorted(got)  # one reader at a time: in order, too
    finally:
        await writer.flush()
        await writer.close()
        await reader_layer.close()


async def test_a_server_refusing_client_unblock_is_waited_out(redis_server: object, unique_prefix: Callable[[], str]) -> None:
    """With CLIENT renamed away (as some managed services do), close falls back to waiting."""
    import redis.asyncio as aioredis

    url = redis_server.url  # type: ignore[attr-defined]
    raw = aioredis.Redis.from_url(url)
    layer = ChannelLayer(RedisStorage(hosts=url, prefix=unique_prefix()), LayerOptions(block_timeout=0.5))
    try:
        await raw.acl_setuser("default", enabled=True, nopass=True, commands=["+@all", "-client"], keys=["*"], channels=["*"])
        receiver = layer.receiver(["refused.idle"])
        await asyncio.sleep(0.2)
        assert await asyncio.wait_for(receiver.close(), 20) == []
        storage = layer.storage
        assert isinstance(storage, RedisStorage)
        assert [shard.unblock for shards in storage._loops.values() for shard in shards] == [False]
        await layer.send("refused.idle", {"n": 1})
        assert await asyncio.wait_for(layer.receive("refused.idle"), 20) == {"n": 1}
    finally:
        await layer.close()
        await raw.aclose()
