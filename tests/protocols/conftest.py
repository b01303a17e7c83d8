"""Fixtures for the HTTP plugin tests: a whole gateway + worker stack in one process.

Each stack is the real thing minus process boundaries: the gateway core, the HTTP plugin
listening on an ephemeral 127.0.0.1 port, and (unless a test wants none) a Worker running
a small hand-written ASGI app, all over the in-memory layer. Clients are real: h11 (an
HTTP/1.1 state machine, used here only as the client) over asyncio sockets, and the
websockets client library.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import h11
import pytest

from switchboard.gateway.layers import ChannelLayer, build_layer
from switchboard.gateway.plugins import build_plugins
from switchboard.gateway.server import Gateway
from switchboard.gateway.worker import Worker
from switchboard.protocols.http import HttpPlugin

Message = dict[str, Any]
App = Callable[[Message, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

# A short blocking pop keeps teardown fast: read loops notice shutdown within this long.
FAST_LAYER: dict[str, Any] = {"BACKEND": "memory", "CONFIG": {"block_timeout": 0.05}}


@dataclass
class Stack:
    """A running gateway + HTTP plugin (+ worker) with helpers to reach it."""

    layer: ChannelLayer
    gateway: Gateway
    plugin: HttpPlugin
    worker: Worker | None = None
    worker_stop: asyncio.Event = field(default_factory=asyncio.Event)
    worker_task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return self.plugin.bound_addresses[0][1]

    def ws_url(self, path: str = "/ws") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    async def close(self) -> None:
        """Stop in production order: plugin (drains), gateway core, worker, layer."""
        await self.plugin.stop(5.0)
        await self.gateway.stop()
        self.worker_stop.set()
        if self.worker_task is not None:
            await self.worker_task
        await self.layer.close()


StartStack = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def serve() -> AsyncIterator[StartStack]:
    """``await serve(app, **http_options)`` starts a stack; ``app=None`` runs no worker."""
    stacks: list[Stack] = []

    async def start(app: App | None = None, *, layer_config: dict[str, Any] | None = None, **options: Any) -> Stack:
        options.setdefault("bind", ["127.0.0.1:0"])
        (plugin,) = build_plugins({"http": options})
        assert isinstance(plugin, HttpPlugin)
        layer = build_layer(layer_config or FAST_LAYER)
        gateway = Gateway(layer)
        await gateway.start()
        await plugin.start(gateway)
        stack = Stack(layer, gateway, plugin)
        stacks.append(stack)
        if app is not None:
            stack.worker = Worker(app, layer, protocols=["http", "websocket"])
            stack.worker_task = asyncio.get_running_loop().create_task(stack.worker.run(stack.worker_stop))
        return stack

    yield start
    for stack in reversed(stacks):
        await stack.close()


# -- HTTP client ------------------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict[bytes, bytes]
    body: bytes
    chunks: list[bytes]


class HttpClient:
    """One HTTP/1.1 client connection: h11 frames, asyncio moves the bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = h11.Connection(our_role=h11.CLIENT)

    @classmethod
    async def connect(cls, port: int, host: str = "127.0.0.1") -> HttpClient:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    async def send_request(
        self,
        method: str = "GET",
        target: str = "/",
        headers: Iterable[tuple[str, str]] = (),
        body: bytes | None = None,
        chunks: Iterable[bytes] | None = None,
        end: bool = True,
    ) -> None:
        """Send a request; ``chunks`` sends a chunked body, ``end=False`` leaves it open."""
        all_headers = [("host", "test"), *headers]
        if body is not None:
            all_headers.append(("content-length", str(len(body))))
        elif chunks is not None:
            all_headers.append(("transfer-encoding", "chunked"))
        data = self.conn.send(h11.Request(method=method, target=target, headers=all_headers)) or b""
        for chunk in [body] if body is not None else chunks or []:
            data += self.conn.send(h11.Data(data=chunk)) or b""
        if end:
            data += self.conn.send(h11.EndOfMessage()) or b""
        self.writer.write(data)
        await self.writer.drain()

    async def next_event(self, timeout: float = 10.0) -> Any:
        """The next h11 event of the response (Response, Data, EndOfMessage...)."""
        async with asyncio.timeout(timeout):
            while True:
                event = self.conn.next_event()
                if event is not h11.NEED_DATA:
                    return event
                self.conn.receive_data(await self.reader.read(65536))

    async def read_response(self, timeout: float = 10.0) -> Response:
        head = await self.next_event(timeout)
        assert isinstance(head, h11.Response), head
        chunks: list[bytes] = []
        while not isinstance(event := await self.next_event(timeout), h11.EndOfMessage):
            assert isinstance(event, h11.Data), event
            chunks.append(bytes(event.data))
        return Response(head.status_code, dict(head.headers), b"".join(chunks), chunks)

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


async def fetch(port: int, method: str = "GET", target: str = "/", **request: Any) -> Response:
    """One request on a fresh connection, the whole response back."""
    client = await HttpClient.connect(port)
    try:
        await client.send_request(method, target, **request)
        return await client.read_response()
    finally:
        await client.close()


async def raw_exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    """Write raw bytes, return everything the server sends until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout):
            return await reader.read()
    finally:
        writer.close()


# Helpers reach the tests as fixtures, not imports: test modules importing "conftest" break
# as soon as another directory has a conftest module of its own.


@pytest.fixture
def fetch_url() -> Callable[..., Awaitable[Response]]:
    return fetch


@pytest.fixture
def raw_http() -> Callable[..., Awaitable[bytes]]:
    return raw_exchange


@pytest.fixture
async def http_connect() -> AsyncIterator[Callable[[int], Awaitable[HttpClient]]]:
    """Open client connections that are closed again at teardown."""
    clients: list[HttpClient] = []

    async def connect(port: int) -> HttpClient:
        client = await HttpClient.connect(port)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        await client.close()
