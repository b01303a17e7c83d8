"""Django views through the whole stack in one process: HTTP plugin, gateway, layer, worker.

A real HTTP/1.1 client (h11 over a socket) talks to the gateway's HTTP plugin; the worker
runs Django's own ``get_asgi_application()`` handler, as a whole application and behind a
``ProtocolTypeRouter``/``URLRouter``, and serves its sync views on the pool path.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import h11
import pytest
from django.core.handlers.asgi import ASGIHandler
from django.urls import path, re_path

from djangohttp import parity_site
from djangohttp.conftest import WAIT
from switchboard.consumers import AsyncWebsocketConsumer, ProtocolTypeRouter, URLRouter, django_http
from switchboard.gateway.layers import build_layer, set_channel_layer
from switchboard.gateway.plugins import build_plugins
from switchboard.gateway.server import Gateway
from switchboard.gateway.worker import Worker
from switchboard.protocols.http import HttpPlugin


class Client:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = h11.Connection(our_role=h11.CLIENT)

    async def request(self, method: str, target: str, body: bytes | None = None, chunks: list[bytes] | None = None,
                      headers: list[tuple[str, str]] | None = None) -> tuple[int, dict[bytes, bytes], list[bytes]]:
        all_headers = [("host", "127.0.0.1"), *(headers or [])]
        if body is not None:
            all_headers.append(("content-length", str(len(body))))
        elif chunks is not None:
            all_headers.append(("transfer-encoding", "chunked"))
        data = self.conn.send(h11.Request(method=method, target=target, headers=all_headers)) or b""
        for chunk in [body] if body is not None else chunks or []:
            data += self.conn.send(h11.Data(data=chunk)) or b""
        data += self.conn.send(h11.EndOfMessage()) or b""
        self.writer.write(data)
        await self.writer.drain()
        head = await self._next()
        assert isinstance(head, h11.Response), head
        parts: list[bytes] = []
        while not isinstance(event := await self._next(), h11.EndOfMessage):
            parts.append(bytes(event.data))
        self.conn.start_next_cycle()
        return head.status_code, dict(head.headers), parts

    async def _next(self) -> Any:
        async with asyncio.timeout(WAIT):
            while (event := self.conn.next_event()) is h11.NEED_DATA:
                self.conn.receive_data(await self.reader.read(65536))
            return event

    async def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def stack() -> AsyncIterator[Callable[[Any], Awaitable[Client]]]:
    """``await stack(app, **worker_options)``: gateway + HTTP plugin + worker running ``app``; a client."""
    cleanups: list[Callable[[], Awaitable[None]]] = []

    async def start(app: Any, **worker_options: Any) -> Client:
        (plugin,) = build_plugins({"http": {"bind": ["127.0.0.1:0"]}})
        assert isinstance(plugin, HttpPlugin)
        layer = build_layer({"BACKEND": "memory", "CONFIG": {"block_timeout": 0.05}})
        gateway = Gateway(layer)
        await gateway.start()
        await plugin.start(gateway)
        set_channel_layer(layer)
        worker = Worker(app, layer, protocols=["http", "websocket"], **worker_options)
        stop = asyncio.Event()
        task = asyncio.get_running_loop().create_task(worker.run(stop))
        client = Client(*await asyncio.open_connection("127.0.0.1", plugin.bound_addresses[0][1]))

        async def cleanup() -> None:
            await client.close()
            await plugin.stop(5.0)
            await gateway.stop()
            stop.set()
            await task
            set_channel_layer(None)
            await layer.close()

        cleanups.append(cleanup)
        start.worker = worker  # type: ignore[attr-defined]
        start.port = plugin.bound_addresses[0][1]  # type: ignore[attr-defined]
        return client

    yield start
    for cleanup in reversed(cleanups):
        await cleanup()


@pytest.mark.parametrize("routing", ["bare-handler", "router"])
async def test_django_views_through_gateway_and_worker(routing: str, stack: Any, site: Any, runtime: Any) -> None:
    runtime("auto")
    site(middleware=[parity_site.BOTH])
    django = ASGIHandler()
    app = django if routing == "bare-handler" else ProtocolTypeRouter({"http": URLRouter([re_path(r"", django)])})
    client = await stack(app)
    wrapped = django_http.fast_django(django)
    assert isinstance(wrapped, django_http.DjangoHttpApplication)

    status, headers, parts = await client.request("GET", "/hello/")
    assert (status, b"".join(parts)) == (200, b'{"hello": "world"}') and headers[b"x-both"] == b"seen"

    form = [("content-type", "application/x-www-form-urlencoded")]
    status, _, parts = await client.request("POST", "/echo/", chunks=[b"name=a", b"da&lang=", b"python"], headers=form)
    assert status == 200 and b'"post": {"name": "ada", "lang": "python"}' in b"".join(parts)

    status, _, parts = await client.request("GET", "/stream/?n=3")
    assert status == 200 and b"".join(parts) == b"part 0\npart 1\npart 2\n"

    status, _, parts = await client.request("GET", "/boom/")
    assert status == 500

    status, _, parts = await client.request("GET", "/async-hello/")
    assert (status, b"".join(parts)) == (200, b'{"hello": "async"}')
    assert wrapped.stats == {"sync": 4, "async": 1}


async def test_the_worker_options_choose_the_path(stack: Any, site: Any, runtime: Any) -> None:
    site()
    client = await stack(ASGIHandler(), django_http="async", django_threads=2)
    worker: Worker = stack.worker
    assert isinstance(worker.application, django_http.DjangoHttpApplication)
    assert (django_http.RUNTIME.mode, django_http.RUNTIME.threads) == ("async", 2)
    status, _, parts = await client.request("GET", "/hello/")
    assert (status, b"".join(parts)) == (200, b'{"hello": "world"}')
    assert worker.application.stats == {"sync": 0, "async": 1}


class Room(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.channel_layer.group_add("djangohttp-room", self.channel_name)
        await self.accept()

    async def room_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["text"])


async def test_a_sync_view_tells_websockets_through_async_to_sync(stack: Any, site: Any, runtime: Any) -> None:
    """The Channels idiom: async_to_sync(channel_layer.group_send) in a pooled view reaches the room's sockets."""
    from websockets.asyncio.client import connect

    runtime("auto")
    site()
    app = ProtocolTypeRouter({
        "http": URLRouter([re_path(r"", ASGIHandler())]),
        "websocket": URLRouter([path("ws/room/", Room.as_asgi())]),
    })
    client = await stack(app)
    async with connect(f"ws://127.0.0.1:{stack.port}/ws/room/", open_timeout=WAIT) as ws:
        status, _, parts = await client.request("GET", "/group-send/?text=hello+room")
        assert (status, b"".join(parts)) == (200, b"told the room")
        assert await asyncio.wait_for(ws.recv(), WAIT) == "hello room"
