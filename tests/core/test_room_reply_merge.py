"""A post to a chat room reaches the gateway as an item per slice of members, not per member.

Gateway and worker in process over the Redis layer (the layer that batches sends), each
with a layer of its own as in split mode (one shared layer would let the gateway take the
replies at the send: ``Gateway._take_local``), with the Channels-style room consumer of
the example chat. The worker wakes the members' instances a slice per event-loop pass
(``WakePacer``, ``WAKE_SLICE``); the handlers of a slice answer the group message with the
same ``websocket.send``, and the send batcher stores those as one item naming all their
reply channels. That keeps a busy room from filling the gateway's shared reply list
(issue 12 item 8): 40 members' replies are at most 3 items to store, read and unpack,
not 40. And the first slice's item is stored while later members' handlers have yet to
run, so the gateway writes the first replies while the worker runs the rest (issue 14).
"""

from __future__ import annotations

import asyncio
import math
import os
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
from support.processes import redis_reachable
from support.waiting import wait_until

from switchboard.consumers import AsyncWebsocketConsumer
from switchboard.gateway.layers import ChannelLayer, build_layer, set_channel_layer
from switchboard.gateway.server import Gateway
from switchboard.gateway.wake_pacer import WAKE_SLICE
from switchboard.gateway.worker import Worker

from .test_gateway_worker import Delivered

REDIS_URL = os.environ.get("SWITCHBOARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
MEMBERS = 40
#: Per handler run: how many of the post's replies the worker had stored before it.
STORED_BEFORE: list[int] = []
STORED = [0]


class Room(AsyncWebsocketConsumer):
    """The example chat consumer's shape: join on connect, post to the group, relay."""

    async def connect(self) -> None:
        await self.channel_layer.group_add("merge-room", self.channel_name)
        await self.accept()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.channel_layer.group_send("merge-room", {"type": "room.message", "text": text_data})

    async def room_message(self, event: dict[str, Any]) -> None:
        STORED_BEFORE.append(STORED[0])
        await self.send(text_data=event["text"])


@pytest.fixture
async def redis_layers() -> AsyncIterator[tuple[ChannelLayer, ChannelLayer]]:
    """The worker's layer and the gateway's: two clients of one Redis, as two processes have."""
    if not redis_reachable():
        pytest.skip("Redis is not reachable on 127.0.0.1:6379")
    prefix = f"sbtest-merge-{secrets.token_hex(4)}:"
    config = {"BACKEND": "redis", "CONFIG": {"hosts": [REDIS_URL], "prefix": prefix, "block_timeout": 0.2}}
    layers = build_layer(config), build_layer(config)
    set_channel_layer(layers[0])
    yield layers
    set_channel_layer(None)
    await layers[0].flush()
    for layer in layers:
        await layer.close()


async def test_a_room_post_is_an_item_per_slice_stored_as_slices_run(redis_layers: tuple[ChannelLayer, ChannelLayer]) -> None:
    layer, gateway_layer = redis_layers
    gateway = Gateway(gateway_layer)
    # What the gateway reads from its reply list: per item, its message and its suffixes.
    items: list[tuple[dict[str, Any], int]] = []
    storage = gateway_layer.storage
    pop = storage.pop

    async def spying_pop(keys: Any, count: int, timeout: float) -> Any:
        result = await pop(keys, count, timeout)
        if result is not None and result[0] == gateway.reply_prefix:
            for item in result[1]:
                _expires, suffixes, message = layer.unpack_item(item)
                items.append((message, len(suffixes or ())))
        return result

    storage.pop = spying_pop  # type: ignore[method-assign]
    # What the worker stores: replies of the post counted when their push is issued.
    push_many, push = layer.storage.push_many, layer.storage.push

    def count_posts(items: list[bytes]) -> None:
        for item in items:
            _expires, suffixes, message = layer.unpack_item(item)
            if isinstance(message, dict) and message.get("text") == "hi room":
                STORED[0] += len(suffixes or [None])

    async def spying_push_many(entries: Any, ttl: float) -> Any:
        count_posts([entry[1] for entry in entries])
        return await push_many(entries, ttl)

    async def spying_push(key: str, item: bytes, *args: Any) -> Any:
        count_posts([item])
        return await push(key, item, *args)

    layer.storage.push_many = spying_push_many  # type: ignore[method-assign]
    layer.storage.push = spying_push  # type: ignore[method-assign]
    STORED_BEFORE.clear()
    STORED[0] = 0
    await gateway.start()
    stop = asyncio.Event()
    worker = Worker(Room.as_asgi(), layer, protocols=["websocket"], channels=[])
    running = asyncio.ensure_future(worker.run(stop, drain_timeout=2))
    sinks = [Delivered() for _ in range(MEMBERS)]
    try:
        connections = [
            gateway.open_connection({"type": "websocket", "path": "/", "headers": [], "subprotocols": []}, sink, sticky=True)
            for sink in sinks
        ]
        for connection in connections:
            await gateway.send_event(connection, {"type": "websocket.connect"})
        for sink in sinks:
            assert (await sink.wait_for(1, timeout=20))[0]["type"] == "websocket.accept"
        await wait_until(lambda: all(c.groups == {"merge-room"} for c in connections), what="every membership notice")
        await gateway.send_event(connections[0], {"type": "websocket.receive", "text": "hi room"})
        for sink in sinks:
            assert (await sink.wait_for(2, timeout=20))[1] == {"type": "websocket.send", "text": "hi room"}
        posts = [suffixes for message, suffixes in items if message.get("text") == "hi room"]
        assert sum(posts) == MEMBERS
        assert len(posts) <= math.ceil(MEMBERS / WAKE_SLICE), f"the {MEMBERS} replies were stored as {len(posts)} items: {posts}"
        # The pipelining: the last member's handler ran after the first slice was stored.
        assert len(STORED_BEFORE) == MEMBERS
        assert STORED_BEFORE[0] == 0
        assert STORED_BEFORE[-1] >= WAKE_SLICE, STORED_BEFORE
    finally:
        stop.set()
        await running
        await gateway.stop()
