"""Worker-local delivery and the bounded per-instance backlog (specs/layer.md).

Local delivery: a group message (or a send) from a consumer to a connection that the same
worker has claimed is handed to that connection's instance in process, instead of going
to the gateway and being forwarded straight back. Backlog: an instance may have at most
``max_instance_backlog`` events queued; past it the connection gets its protocol's "try
again later", and named channels are read only as fast as their consumer keeps up.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from switchboard.gateway.config import ConfigError, WorkerOptions, from_mapping
from switchboard.gateway.layers import ChannelLayer, get_channel_layer
from switchboard.gateway.server import Gateway
from switchboard.gateway.worker import Worker

from .test_gateway_worker import Delivered


def room_app(name: str, own_layer: ChannelLayer | None = None) -> Any:
    """The chat tutorial's consumer as a bare ASGI app, tagging what it sends with ``name``."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        layer = own_layer or get_channel_layer()
        while True:
            event = await receive()
            if event["type"] == "websocket.connect":
                await layer.group_add("room", scope["reply_channel"])
                await send({"type": "websocket.accept"})
            elif event["type"] == "websocket.receive":
                await layer.group_send("room", {"type": "room.message", "text": event["text"], "tags": [1]})
            elif event["type"] == "room.message":
                event["tags"].append(2)  # a consumer mutating its event must not touch the others'
                await send({"type": "websocket.send", "text": f"{name}:{event['text']}:{event['tags']}"})
            elif event["type"] == "websocket.disconnect":
                await layer.group_discard("room", scope["reply_channel"])
                return

    return app


class Stack:
    def __init__(self, layer: ChannelLayer) -> None:
        self.layer = layer
        self.gateway = Gateway(layer)
        self.stops: list[asyncio.Event] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.workers: list[Worker] = []

    async def start(self, *workers: Worker) -> None:
        await self.gateway.start()
        for worker in workers:
            stop = asyncio.Event()
            self.stops.append(stop)
            self.workers.append(worker)
            self.tasks.append(asyncio.get_running_loop().create_task(worker.run(stop, drain_timeout=1)))

    async def connect(self, count: int) -> list[tuple[Any, Delivered]]:
        members = []
        for _ in range(count):
            sink = Delivered()
            connection = self.gateway.open_connection({"type": "websocket", "path": "/"}, sink, sticky=True)
            await self.gateway.send_event(connection, {"type": "websocket.connect"})
            await sink.wait_for(1)
            members.append((connection, sink))
        return members

    async def close(self) -> None:
        for stop in self.stops:
            stop.set()
        await asyncio.gather(*self.tasks)
        await self.gateway.stop()


async def test_group_members_on_the_same_worker_get_messages_without_the_gateway(layer: ChannelLayer) -> None:
    stack = Stack(layer)
    worker = Worker(room_app("w"), layer, protocols=["websocket"], channels=[])
    await stack.start(worker)
    members = await stack.connect(5)
    for n in range(10):
        await stack.gateway.send_event(members[0][0], {"type": "websocket.receive", "text": str(n)})
    for _connection, sink in members:
        texts = [m["text"] for m in (await sink.wait_for(11))[1:]]
        assert texts == [f"w:{n}:[1, 2]" for n in range(10)]  # every member, in order, each its own copy
    assert worker.stats.events_local == 50
    # One process: the gateway took the five claims and the 55 replies at the send too.
    assert stack.gateway.stats.replies_delivered == 55
    assert layer.stats.local_delivered == 50 + 5 + 55
    assert stack.gateway.stats.replies_forwarded == 0  # nothing made the round trip
    await stack.close()


async def test_without_local_delivery_the_gateway_forwards_group_messages(layer: ChannelLayer) -> None:
    stack = Stack(layer)
    worker = Worker(room_app("w"), layer, protocols=["websocket"], channels=[], local_delivery=False)
    await stack.start(worker)
    members = await stack.connect(3)
    await stack.gateway.send_event(members[0][0], {"type": "websocket.receive", "text": "x"})
    for _connection, sink in members:
        assert (await sink.wait_for(2))[1]["text"] == "w:x:[1, 2]"
    assert worker.stats.events_local == 0
    assert stack.gateway.stats.replies_forwarded == 3
    await stack.close()


async def test_members_on_another_worker_still_get_group_messages_through_the_gateway(layer: ChannelLayer) -> None:
    # Two worker processes: each its own layer object over the one storage (two workers
    # sharing a layer object in one process would hand each other's members over too).
    other = ChannelLayer(layer.storage, layer.options)
    stack = Stack(layer)
    first = Worker(room_app("a"), layer, protocols=["websocket"], channels=[])
    second = Worker(room_app("b", other), other, protocols=["websocket"], channels=[])
    await stack.start(first, second)
    members = await stack.connect(8)
    owners = {connection.worker for connection, _sink in members}
    for n in range(5):
        await stack.gateway.send_event(members[0][0], {"type": "websocket.receive", "text": str(n)})
    for connection, sink in members:
        tag = "a" if connection.worker == first.channel else "b"
        assert [m["text"] for m in (await sink.wait_for(6))[1:]] == [f"{tag}:{n}:[1, 2]" for n in range(5)]
    local = first.stats.events_local + second.stats.events_local
    assert local > 0 and stack.gateway.stats.replies_forwarded == 40 - local
    if len(owners) == 2:  # which worker takes which connection is a race of pool reads
        assert local < 40
    await stack.close()


async def test_replies_to_the_client_are_never_taken_locally(layer: ChannelLayer) -> None:
    """``websocket.send`` to a claimed connection is for the gateway, even from its own worker."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while (event := await receive())["type"] != "websocket.disconnect":
            if event["type"] == "websocket.connect":
                await send({"type": "websocket.accept"})
            else:
                await get_channel_layer().send(scope["reply_channel"], {"type": "websocket.send", "text": "direct"})

    stack = Stack(layer)
    worker = Worker(app, layer, protocols=["websocket"], channels=[])
    await stack.start(worker)
    [(connection, sink)] = await stack.connect(1)
    await stack.gateway.send_event(connection, {"type": "websocket.receive", "text": "?"})
    assert (await sink.wait_for(2))[1] == {"type": "websocket.send", "text": "direct"}
    assert worker.stats.events_local == 0
    await stack.close()


def slow_app(delay: float, seen: list[str]) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            event = await receive()
            seen.append(event["type"])
            if event["type"] == "websocket.connect":
                await send({"type": "websocket.accept"})
            elif event["type"] == "websocket.disconnect":
                return
            else:
                await asyncio.sleep(delay)

    return app


async def test_a_flooded_instance_is_bounded_and_its_client_told_to_come_back_later(layer: ChannelLayer) -> None:
    seen: list[str] = []
    stack = Stack(layer)
    worker = Worker(slow_app(0.05, seen), layer, protocols=["websocket"], channels=[], max_instance_backlog=5)
    await stack.start(worker)
    [(connection, sink)] = await stack.connect(1)
    peak = 0
    for n in range(40):
        await stack.gateway.send_event(connection, {"type": "websocket.receive", "text": str(n)})
        await asyncio.sleep(0)
        peak = max([peak] + [instance.queue.qsize() for instance in worker.instances.values()])
    replies = await sink.wait_for(2)
    assert replies[1] == {"type": "websocket.close", "code": 1013}
    assert peak <= 5
    assert worker.stats.events_dropped_backlog > 0 and worker.stats.backlog_closes == 1
    # The disconnect still reaches the app, past the bound: the instance ends cleanly.
    await stack.gateway.send_event(connection, {"type": "websocket.disconnect", "code": 1013})
    async with asyncio.timeout(5):
        while worker.instances:
            await asyncio.sleep(0.01)
    assert seen[-1] == "websocket.disconnect"
    await stack.close()


async def test_a_slow_named_channel_is_read_only_as_fast_as_it_is_consumed(layer: ChannelLayer) -> None:
    """Nothing is dropped: the backlog waits on the layer, not in the worker."""
    done: list[int] = []
    peaks: list[int] = []
    worker: Worker

    async def jobs(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            peaks.append(worker.instances["jobs"].queue.qsize())
            await asyncio.sleep(0.002)
            done.append(message["n"])

    worker = Worker(jobs, layer, protocols=[], channels=["jobs"], max_instance_backlog=4)
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(worker.run(stop, drain_timeout=1))
    for n in range(60):
        await layer.send("jobs", {"type": "job", "n": n})
    async with asyncio.timeout(10):
        while len(done) < 60:
            await asyncio.sleep(0.01)
    assert done == list(range(60))
    assert max(peaks) <= 4
    stop.set()
    await task


def test_worker_options_are_validated() -> None:
    options = from_mapping({"WORKER": {"max_instance_backlog": 50, "local_delivery": False, "auth": "x"}}).worker_options
    assert (options.max_instance_backlog, options.local_delivery, options.heartbeat_interval) == (50, False, 0.25)
    assert WorkerOptions().max_instance_backlog == 1000
    with pytest.raises(ConfigError, match="max_instance_backlog"):
        from_mapping({"WORKER": {"max_instance_backlog": 0}})
    with pytest.raises(ConfigError, match="heartbeat_interval"):
        from_mapping({"WORKER": {"heartbeat_interval": "soon"}})
