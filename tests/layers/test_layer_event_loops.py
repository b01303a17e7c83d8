"""Regression: ``receive`` on a process-local channel works from any event loop.

A layer lives as long as its process, but tests and sync code reach it from many loops:
pytest-asyncio gives each test its own, and ``async_to_sync`` without an outer loop runs
every call on a fresh one that closes afterwards. Reading a process-local channel used to
start its reader on the first loop only, so a later loop's ``receive`` waited on a reader
that had died with its loop, and hung; a message that reader had already taken from
storage for another channel was lost with it. Channels and channels_redis deliver in both
cases, and so must both of our backends.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import async_to_sync

from switchboard.gateway.layers import ChannelLayer

pytestmark = pytest.mark.timeout(60)


def test_each_async_to_sync_call_on_its_own_loop(sync_layer: ChannelLayer) -> None:
    first = async_to_sync(sync_layer.new_channel)()
    second = async_to_sync(sync_layer.new_channel)()
    async_to_sync(sync_layer.send)(first, {"type": "m.first"})
    async_to_sync(sync_layer.send)(second, {"type": "m.second"})

    # The second channel first: its loop's reader takes both messages from storage (they
    # share the process's key) and must keep the first one for a later loop.
    assert async_to_sync(sync_layer.receive)(second) == {"type": "m.second"}
    assert async_to_sync(sync_layer.receive)(first) == {"type": "m.first"}


def test_loop_that_waited_and_closed_does_not_swallow_later_messages(sync_layer: ChannelLayer) -> None:
    channel = asyncio.run(sync_layer.new_channel())

    async def give_up_waiting() -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(sync_layer.receive(channel), 0.3)

    asyncio.run(give_up_waiting())  # its loop closes with the reader it started
    asyncio.run(sync_layer.send(channel, {"type": "m.later"}))

    async def receive() -> dict[str, Any]:
        return await asyncio.wait_for(sync_layer.receive(channel), 10)

    assert asyncio.run(receive()) == {"type": "m.later"}
