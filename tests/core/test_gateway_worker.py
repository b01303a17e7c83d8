"""The gateway core and worker together over the in-memory layer, with a bare test "plugin".

The plugin here is only ``open_connection`` plus a list that collects what the gateway
delivers, so these tests pin the core's routing rules without any network framing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from support.waiting import deadline, wait_until

from switchboard.consumers.exceptions import RouteNotFound
from switchboard.gateway.envelope import pool_channel
from switchboard.gateway.layers import ChannelFull, ChannelLayer, build_layer
from switchboard.gateway.server import Gateway
from switchboard.gateway.worker import Worker

Scope = dict[str, Any]


class Delivered:
    """Collects deliveries for one connection and lets a test wait for them."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.event = asyncio.Event()

    def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        self.event.set()

    async def wait_for(self, count: int, timeout: float = 5) -> list[dict[str, Any]]:
        async with asyncio.timeout(deadline(timeout)):  # scaled: a safety net, not a speed check
            while len(self.messages) < count:
                self.event.clear()
                await self.event.wait()
        return self.messages


async def echo_app(scope: Scope, receive: Any, send: Any) -> None:
    """WebSocket app: accept, echo text, join/relay group messages, stop on disconnect."""
    from switchboard.gateway.layers import get_channel_layer

    layer = get_channel_layer()
    while True:
        event = await receive()
        if event["type"] == "websocket.connect":
            await layer.group_add("room", scope["reply_channel"])
            await send({"type": "websocket.accept"})
        elif event["type"] == "websocket.receive":
            if event.get("text") == "shout":
                await layer.group_send("room", {"type": "room.shout", "text": "hey all"})
            elif event.get("text") == "fail":
                raise RuntimeError("on purpose")
            else:
                await send({"type": "websocket.send", "text": "echo:" + event["text"]})
        elif event["type"] == "room.shout":
            await send({"type": "websocket.send", "text": "got:" + event["text"]})
        elif event["type"] == "websocket.disconnect":
            return


@pytest.fixture
async def layer() -> AsyncIterator[ChannelLayer]:
    from switchboard.gateway.layers import set_channel_layer

    layer = build_layer()
    set_channel_layer(layer)
    yield layer
    set_channel_layer(None)
    await layer.close()


async def start(layer: ChannelLayer, app: Any, protocols: list[str]) -> tuple[Gateway, asyncio.Event, asyncio.Task[None]]:
    gateway = Gateway(layer)
    await gateway.start()
    stop = asyncio.Event()
    worker = Worker(app, layer, protocols=protocols, channels=[])
    task = asyncio.get_running_loop().create_task(worker.run(stop, drain_timeout=1))
    return gateway, stop, task


async def finish(gateway: Gateway, stop: asyncio.Event, task: asyncio.Task[None]) -> None:
    stop.set()
    await task
    await gateway.stop()


async def test_echo_and_group_message_forwarded_to_worker(layer: ChannelLayer) -> None:
    gateway, stop, task = await start(layer, echo_app, ["websocket"])
    a, b = Delivered(), Delivered()
    conn_a = gateway.open_connection({"type": "websocket", "path": "/"}, a)
    conn_b = gateway.open_connection({"type": "websocket", "path": "/"}, b)
    await gateway.send_event(conn_a, {"type": "websocket.connect"})
    await gateway.send_event(conn_b, {"type": "websocket.connect"})
    await a.wait_for(1)
    await b.wait_for(1)
    await gateway.send_event(conn_a, {"type": "websocket.receive", "text": "hi"})
    assert (await a.wait_for(2))[1] == {"type": "websocket.send", "text": "echo:hi"}
    # A group message is not a websocket.* type: the gateway forwards it to the worker,
    # whose instance for each connection turns it into a websocket.send.
    await gateway.send_event(conn_b, {"type": "websocket.receive", "text": "shout"})
    assert (await a.wait_for(3))[2] == {"type": "websocket.send", "text": "got:hey all"}
    assert (await b.wait_for(2))[1] == {"type": "websocket.send", "text": "got:hey all"}
    assert gateway.stats.replies_forwarded == 2
    await finish(gateway, stop, task)


async def test_group_send_of_protocol_message_goes_straight_to_sockets(layer: ChannelLayer) -> None:
    gateway = Gateway(layer)
    await gateway.start()
    sinks = [Delivered() for _ in range(50)]
    for sink in sinks:
        connection = gateway.open_connection({"type": "websocket"}, sink)
        await layer.group_add("blog", connection.channel)
    # Sent by another process (a layer of its own over the same storage, so the gateway's
    # local route is not in its way): one stored item for 50 sockets of one gateway.
    elsewhere = ChannelLayer(layer.storage)
    await elsewhere.group_send("blog", {"type": "websocket.send", "text": "breaking news"})
    for sink in sinks:
        assert await sink.wait_for(1) == [{"type": "websocket.send", "text": "breaking news"}]
    assert gateway.stats.replies_forwarded == 0
    assert elsewhere.stats.group_sent == 1
    # Sent in the gateway's own process: delivered at the send, nothing stored.
    await layer.group_send("blog", {"type": "websocket.send", "text": "later"})
    assert all(sink.messages[-1] == {"type": "websocket.send", "text": "later"} for sink in sinks)
    assert layer.stats.local_delivered == 50
    await gateway.stop()


async def test_consumer_error_closes_1011(layer: ChannelLayer) -> None:
    gateway, stop, task = await start(layer, echo_app, ["websocket"])
    sink = Delivered()
    connection = gateway.open_connection({"type": "websocket", "path": "/"}, sink)
    await gateway.send_event(connection, {"type": "websocket.connect"})
    await gateway.send_event(connection, {"type": "websocket.receive", "text": "fail"})
    assert (await sink.wait_for(2))[1] == {"type": "websocket.close", "code": 1011}
    await finish(gateway, stop, task)


async def test_route_not_found_is_404_for_http(layer: ChannelLayer) -> None:
    async def no_routes(scope: Scope, receive: Any, send: Any) -> None:
        raise RouteNotFound(scope["path"])

    gateway, stop, task = await start(layer, no_routes, ["http"])
    sink = Delivered()
    connection = gateway.open_connection({"type": "http", "path": "/x"}, sink)
    await gateway.send_event(connection, {"type": "http.request", "body": b"", "more_body": False})
    start_message, body = await sink.wait_for(2)
    assert start_message["status"] == 404 and body["body"] == b"Not Found"
    await finish(gateway, stop, task)


async def test_route_not_found_for_websocket_uses_denial_response(layer: ChannelLayer) -> None:
    async def no_routes(scope: Scope, receive: Any, send: Any) -> None:
        raise RouteNotFound(scope["path"])

    gateway, stop, task = await start(layer, no_routes, ["websocket"])
    denial, close = Delivered(), Delivered()
    with_ext = gateway.open_connection({"type": "websocket", "path": "/x", "extensions": {"websocket.http.response": {}}}, denial)
    without = gateway.open_connection({"type": "websocket", "path": "/x"}, close)
    await gateway.send_event(with_ext, {"type": "websocket.connect"})
    await gateway.send_event(without, {"type": "websocket.connect"})
    assert (await denial.wait_for(2))[0]["status"] == 404
    assert (await close.wait_for(1))[0] == {"type": "websocket.close", "code": 4404}
    await finish(gateway, stop, task)


async def test_replies_to_closed_connections_are_counted_not_delivered(layer: ChannelLayer) -> None:
    gateway = Gateway(layer)
    await gateway.start()
    sink = Delivered()
    connection = gateway.open_connection({"type": "websocket"}, sink)
    gateway.close_connection(connection)
    await layer.send(connection.channel, {"type": "websocket.send", "text": "late"})
    async with asyncio.timeout(5):
        while gateway.stats.replies_orphaned == 0:
            await asyncio.sleep(0.01)
    assert sink.messages == []
    await gateway.stop()


async def test_full_pool_raises_channel_full_and_is_counted(layer: ChannelLayer) -> None:
    layer.options.channel_capacity = {}
    layer._capacity_patterns = []
    layer._limits_cache.clear()
    layer.options.capacity = 2
    gateway = Gateway(layer)
    connection = gateway.open_connection({"type": "udp"}, Delivered())
    await gateway.send_event(connection, {"type": "udp.datagram"})
    await gateway.send_event(connection, {"type": "udp.datagram"})
    with pytest.raises(ChannelFull):
        await gateway.send_event(connection, {"type": "udp.datagram"})
    assert gateway.stats.events_dropped_full == 1
    assert await layer.receive(pool_channel("udp"))


async def test_events_wait_on_the_layer_until_a_worker_starts(layer: ChannelLayer) -> None:
    """Zero-downtime in miniature: events sent with no worker running are handled later."""
    gateway = Gateway(layer)
    await gateway.start()
    sink = Delivered()
    connection = gateway.open_connection({"type": "websocket", "path": "/"}, sink)
    await gateway.send_event(connection, {"type": "websocket.connect"})
    await gateway.send_event(connection, {"type": "websocket.receive", "text": "queued"})
    await asyncio.sleep(0.1)
    assert sink.messages == []
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(Worker(echo_app, layer, protocols=["websocket"], channels=[]).run(stop))
    assert (await sink.wait_for(2))[1] == {"type": "websocket.send", "text": "echo:queued"}
    await finish(gateway, stop, task)


async def test_mounts_longest_prefix_wins_and_clash_is_an_error(layer: ChannelLayer) -> None:
    gateway = Gateway(layer)

    async def sms(scope: Scope, receive: Any, send: Any) -> None: ...

    async def sms_status(scope: Scope, receive: Any, send: Any) -> None: ...

    gateway.mount("/sms", sms, owner="sms")
    gateway.mount("/sms/status", sms_status, owner="sms")
    assert gateway.find_mount("/sms") is sms
    assert gateway.find_mount("/sms/inbound") is sms
    assert gateway.find_mount("/sms/status") is sms_status
    assert gateway.find_mount("/smsx") is None
    assert gateway.find_mount("/") is None
    with pytest.raises(ValueError, match="sms has it"):
        gateway.mount("/sms", sms, owner="webrtc")


async def test_int_keys_round_trip_and_garbage_items_do_not_kill_the_reader(layer: ChannelLayer) -> None:
    receiver = layer.receiver(["gateway.r!"])
    await layer.send("gateway.r!a", {"type": "x", "scores": {1: "one"}})
    assert await receiver.get() == ("gateway.r!a", {"type": "x", "scores": {1: "one"}})
    await layer.storage.push("gateway.r!", b"\xc1 not msgpack", 100, 60)
    await layer.send("gateway.r!a", {"type": "after"})
    assert await receiver.get() == ("gateway.r!a", {"type": "after"})
    assert layer.stats.corrupt == 1
    await receiver.close()


async def test_an_instances_send_is_a_coroutine_function_that_queues_when_called(layer: ChannelLayer) -> None:
    """The worker's ``send`` queues a reply when called and is marked as a coroutine function.

    Marked, so ``async_to_sync(send)`` in a sync consumer and ``iscoroutinefunction`` checks
    take it for what ASGI promises; queued at the call, so an application may call it for
    several messages before awaiting them and they keep their order (the Django HTTP path
    sends a response's start and body so, in one layer batch).
    """
    from asgiref.sync import iscoroutinefunction

    seen: dict[str, Any] = {}

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        seen["coroutine function"] = iscoroutinefunction(send)
        seen["queues at call"] = getattr(send, "queues_at_call", False)
        start = send({"type": "http.response.start", "status": 200, "headers": []})
        body = send({"type": "http.response.body", "body": b"ok"})
        await body
        await start

    gateway, stop, task = await start(layer, app, ["http"])
    sink = Delivered()
    connection = gateway.open_connection({"type": "http", "path": "/"}, sink)
    await gateway.send_event(connection, {"type": "http.request", "body": b""})
    assert [message["type"] for message in await sink.wait_for(2)] == ["http.response.start", "http.response.body"]
    assert seen == {"coroutine function": True, "queues at call": True}
    await finish(gateway, stop, task)


# -- one process: the gateway's local route ----------------------------------------------


async def test_replies_in_one_process_reach_the_connection_at_the_send(layer: ChannelLayer) -> None:
    """With gateway and worker sharing a layer (``switchboard run``), replies skip the storage.

    The gateway's local route takes a reply when the worker sends it: delivered in order,
    as a copy of what was sent (the app changes its dict afterwards), nothing stored in
    the gateway's reply list, the claim decided at once.
    """
    delivered_at_each_send: list[int] = []  # how many the client had when each send returned

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        delivered_at_each_send.append(len(sink.messages))
        message = {"type": "websocket.send", "text": "first"}
        await send(message)
        delivered_at_each_send.append(len(sink.messages))
        message["text"] = "changed after the send"
        for number in range(3):
            await send({"type": "websocket.send", "text": f"n{number}"})
            delivered_at_each_send.append(len(sink.messages))
        await receive()

    gateway, stop, task = await start(layer, app, ["websocket"])
    sink = Delivered()
    connection = gateway.open_connection({"type": "websocket", "path": "/"}, sink, sticky=True)
    await gateway.send_event(connection, {"type": "websocket.connect"})
    texts = [message.get("text") for message in await sink.wait_for(5)]
    assert texts == [None, "first", "n0", "n1", "n2"]
    await wait_until(lambda: len(delivered_at_each_send) == 5, what="the app's last send to return")
    assert delivered_at_each_send == [1, 2, 3, 4, 5]  # each was delivered by its own send
    assert connection.worker is not None and connection.worker.startswith("worker.")
    assert layer.stats.local_delivered == 6  # the claim and five replies: none stored
    assert gateway.stats.replies_delivered == 5
    gateway.close_connection(connection)
    await finish(gateway, stop, task)


async def test_a_reply_past_the_reply_lists_byte_bound_is_refused_as_before() -> None:
    """The local route keeps the layer's byte bound: a reply too large for the gateway's
    reply list takes the layer, which refuses it; the worker sheds it (counted) and its
    consumer lives on to send the next one."""
    layer = build_layer({"BACKEND": "memory", "CONFIG": {"channel_byte_capacity": {"gateway.*": 2_000}}})

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": "x" * 5_000})
        await send({"type": "websocket.send", "text": "small"})
        await receive()

    gateway = Gateway(layer)
    await gateway.start()
    stop = asyncio.Event()
    worker = Worker(app, layer, protocols=["websocket"], channels=[], reply_wait=0.05)
    task = asyncio.get_running_loop().create_task(worker.run(stop, drain_timeout=1))
    sink = Delivered()
    connection = gateway.open_connection({"type": "websocket", "path": "/"}, sink)
    await gateway.send_event(connection, {"type": "websocket.connect"})
    assert [message.get("text") for message in await sink.wait_for(2)] == [None, "small"]
    assert worker.stats.replies_shed == 1
    gateway.close_connection(connection)
    await finish(gateway, stop, task)
    await layer.close()


async def test_the_local_route_takes_nothing_from_another_thread_or_for_other_kinds(layer: ChannelLayer) -> None:
    """Sent from another thread, a message takes the layer (its order there is the layer's);
    a message the reply loop would forward to a worker (a group message) is stored too."""
    gateway = Gateway(layer)
    await gateway.start()
    sink = Delivered()
    connection = gateway.open_connection({"type": "websocket", "path": "/"}, sink)
    item = layer.pack_item({"type": "websocket.send", "text": "hi"}, layer.clock() + 60, None)
    message = {"type": "websocket.send", "text": "hi"}
    assert await asyncio.to_thread(gateway._take_local, connection.channel, message, item) is False
    assert gateway._take_local(connection.channel, {"type": "room.shout"}, item) is False
    assert gateway._take_local(gateway.reply_prefix + "gone", message, item) is False
    assert sink.messages == []
    assert gateway._take_local(connection.channel, message, item) is True
    assert sink.messages == [message]
    await gateway.stop()
    assert gateway._take_local not in layer._local_routes
