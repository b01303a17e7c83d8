"""End to end over the in-memory layer: the Worker running a ProtocolTypeRouter app.

One test feeds the worker raw event envelopes and reads the reply channel itself; the
chat tests put the real Gateway core in front, so group messages travel the production
path: group_send -> reply channel -> gateway forwards -> worker -> same consumer instance.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.urls import path
from support.waiting import deadline

from switchboard.consumers import (
    AsyncHttpConsumer,
    AsyncJsonWebsocketConsumer,
    ChannelNameRouter,
    HttpConsumer,
    ProtocolTypeRouter,
    SyncConsumer,
    URLRouter,
    WebsocketConsumer,
)
from switchboard.gateway.envelope import pool_channel, wrap
from switchboard.gateway.layers import ChannelLayer
from switchboard.gateway.server import Gateway
from switchboard.gateway.worker import Worker

WAIT = deadline(5)


class Hello(AsyncHttpConsumer):
    async def handle(self, body: bytes) -> None:
        name = self.scope["url_route"]["kwargs"]["name"]
        text = f"hello {name}, {len(body)} bytes"
        await self.send_response(200, text.encode(), headers={"content-type": "text/plain"})


class Countdown(HttpConsumer):
    def handle(self, body: bytes) -> None:
        self.send_headers(headers={"content-type": "text/event-stream"})
        for number in (3, 2, 1):
            self.send_body(f"data: {number}\n\n".encode(), more_body=True)
        self.send_body(b"")


class Boom(AsyncHttpConsumer):
    async def handle(self, body: bytes) -> None:
        raise RuntimeError("consumer bug")


class AsyncChat(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.room = "chat." + self.scope["url_route"]["kwargs"]["room"]
        self.groups.append(self.room)
        await self.channel_layer.group_add(self.room, self.channel_name)
        await self.accept()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        await self.channel_layer.group_send(self.room, {"type": "chat.message", "text": content["text"]})

    async def chat_message(self, message: dict[str, Any]) -> None:
        await self.send_json({"text": message["text"]})


class SyncChat(WebsocketConsumer):
    def connect(self) -> None:
        self.room = "chat." + self.scope["url_route"]["kwargs"]["room"]
        self.groups.append(self.room)
        async_to_sync(self.channel_layer.group_add)(self.room, self.channel_name)
        self.accept()

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        text = json.loads(text_data or "{}")["text"]
        async_to_sync(self.channel_layer.group_send)(self.room, {"type": "chat.message", "text": text})

    def chat_message(self, message: dict[str, Any]) -> None:
        self.send(text_data=json.dumps({"text": message["text"]}))


class Thumbnails(SyncConsumer):
    def thumbnail_make(self, message: dict[str, Any]) -> None:
        async_to_sync(self.channel_layer.send)(
            "thumbnail-results", {"type": "thumbnail.done", "id": message["id"], "size": message["size"] // 10}
        )


def application(chat: Any) -> ProtocolTypeRouter:
    return ProtocolTypeRouter(
        {
            "http": URLRouter(
                [
                    path("hello/<str:name>/", Hello.as_asgi()),
                    path("countdown/", Countdown.as_asgi()),
                    path("boom/", Boom.as_asgi()),
                ]
            ),
            "websocket": URLRouter([path("ws/chat/<str:room>/", chat.as_asgi())]),
            "channel": ChannelNameRouter({"thumbnails": Thumbnails.as_asgi()}),
        }
    )


@pytest.fixture
async def start_worker(layer: ChannelLayer) -> AsyncIterator[Any]:
    stops: list[tuple[asyncio.Event, asyncio.Task[None]]] = []

    def start(app: Any) -> Worker:
        worker = Worker(app, layer)
        stop = asyncio.Event()
        stops.append((stop, asyncio.get_running_loop().create_task(worker.run(stop, drain_timeout=WAIT))))
        return worker

    yield start
    for stop, task in stops:
        stop.set()
        await asyncio.wait_for(task, WAIT)


def http_scope(path_: str, reply_channel: str | None = None) -> dict[str, Any]:
    scope = {"type": "http", "method": "POST", "path": path_, "root_path": "", "query_string": b"", "headers": []}
    if reply_channel:
        scope["reply_channel"] = reply_channel
    return scope


def ws_scope(path_: str, reply_channel: str | None = None) -> dict[str, Any]:
    scope = {"type": "websocket", "path": path_, "root_path": "", "query_string": b"", "headers": []}
    if reply_channel:
        scope["reply_channel"] = reply_channel
    return scope


async def next_reply(layer: ChannelLayer, channel: str) -> dict[str, Any]:
    return await asyncio.wait_for(layer.receive(channel), WAIT)


async def test_worker_listens_to_what_the_router_routes(layer: ChannelLayer) -> None:
    worker = Worker(application(AsyncChat), layer)
    assert worker.listen_channels() == ["switchboard.http", "switchboard.websocket", "thumbnails"]


async def test_worker_serves_http_and_named_channels_from_envelopes(layer: ChannelLayer, start_worker: Any) -> None:
    worker = start_worker(application(AsyncChat))
    reply = "gateway.test!c1"
    scope = http_scope("/hello/ada/", reply)
    for body, more in ((b"ab", True), (b"c", False)):
        event = {"type": "http.request", "body": body, "more_body": more}
        await layer.send(pool_channel("http"), wrap(reply, scope, event))
    start = await next_reply(layer, reply)
    assert (start["type"], start["status"]) == ("http.response.start", 200)
    assert (await next_reply(layer, reply))["body"] == b"hello ada, 3 bytes"

    # A streamed response from a sync consumer arrives chunk by chunk, in order.
    reply = "gateway.test!c2"
    await layer.send(pool_channel("http"), wrap(reply, http_scope("/countdown/", reply), {"type": "http.request"}))
    assert (await next_reply(layer, reply))["headers"] == [[b"content-type", b"text/event-stream"]]
    bodies = [(await next_reply(layer, reply))["body"] for _ in range(4)]
    assert bodies == [b"data: 3\n\n", b"data: 2\n\n", b"data: 1\n\n", b""]

    # A named channel message runs the ChannelNameRouter's consumer (no reply channel).
    await layer.send("thumbnails", {"type": "thumbnail.make", "id": 7, "size": 640})
    assert (await asyncio.wait_for(layer.receive("thumbnail-results"), WAIT)) == {
        "type": "thumbnail.done",
        "id": 7,
        "size": 64,
    }
    assert worker.stats.named_messages == 1


async def test_worker_maps_missing_routes_and_failures(layer: ChannelLayer, start_worker: Any) -> None:
    worker = start_worker(application(AsyncChat))
    reply = "gateway.test!nf"
    await layer.send(pool_channel("http"), wrap(reply, http_scope("/missing/", reply), {"type": "http.request"}))
    assert (await next_reply(layer, reply))["status"] == 404
    assert (await next_reply(layer, reply))["body"] == b"Not Found"

    reply = "gateway.test!ws404"
    connect = {"type": "websocket.connect"}
    await layer.send(pool_channel("websocket"), wrap(reply, ws_scope("/ws/nope/", reply), connect))
    assert (await next_reply(layer, reply)) == {"type": "websocket.close", "code": 4404}

    reply = "gateway.test!boom"
    await layer.send(pool_channel("http"), wrap(reply, http_scope("/boom/", reply), {"type": "http.request"}))
    assert (await next_reply(layer, reply))["status"] == 500
    assert worker.stats.instances_failed == 3


class ClientSide:
    """One client connection held by the gateway core; collects what it delivers."""

    def __init__(self, gateway: Gateway, scope: dict[str, Any]) -> None:
        self.gateway = gateway
        self.received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.connection = gateway.open_connection(scope, self.received.put_nowait)

    async def event(self, message: dict[str, Any]) -> None:
        await self.gateway.send_event(self.connection, message)

    async def next(self) -> dict[str, Any]:
        return await asyncio.wait_for(self.received.get(), WAIT)


@pytest.mark.parametrize("chat", [AsyncChat, SyncChat], ids=["async", "sync"])
async def test_chat_room_through_gateway_and_worker(chat: Any, layer: ChannelLayer, start_worker: Any) -> None:
    worker = start_worker(application(chat))
    gateway = Gateway(layer, gateway_id="gw1")
    await gateway.start()
    try:
        alice = ClientSide(gateway, ws_scope("/ws/chat/lobby/"))
        bob = ClientSide(gateway, ws_scope("/ws/chat/lobby/"))
        elsewhere = ClientSide(gateway, ws_scope("/ws/chat/kitchen/"))
        for client in (alice, bob, elsewhere):
            await client.event({"type": "websocket.connect"})
            assert (await client.next())["type"] == "websocket.accept"

        await alice.event({"type": "websocket.receive", "text": '{"text": "hi all"}'})
        for client in (alice, bob):
            assert (await client.next()) == {"type": "websocket.send", "text": '{"text": "hi all"}'}
        assert gateway.stats.replies_forwarded == 2  # the group message went via the gateway

        # Bob leaves; a later message reaches only Alice, and nothing ever reached the kitchen.
        await bob.event({"type": "websocket.disconnect", "code": 1000})
        gateway.close_connection(bob.connection)
        await elsewhere.event({"type": "websocket.receive", "text": '{"text": "kitchen only"}'})
        assert (await elsewhere.next())["text"] == '{"text": "kitchen only"}'
        await alice.event({"type": "websocket.receive", "text": '{"text": "still here?"}'})
        assert (await alice.next())["text"] == '{"text": "still here?"}'
        assert bob.received.empty()
        assert gateway.stats.replies_orphaned == 0  # Bob's channel was removed from the group
        assert worker.stats.instances_failed == 0
    finally:
        await gateway.stop()
