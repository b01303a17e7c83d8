"""The HTTP plugin's limits: header size and count, connections per address, WebSocket
message rates, the reply bound for slow readers, UTF-8 checks and quiet layer errors.

Real sockets and real clients throughout (the websockets client, h11 or raw bytes); the
gateway, plugin and worker run in-process over the in-memory layer (conftest.py). Nothing
is timed: tests wait for counters and events, never for durations.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import shutil
import socket
import struct
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from switchboard.gateway.config import ConfigError
from switchboard.gateway.layers import ChannelFull
from switchboard.gateway.plugins import build_plugins
from switchboard.protocols._http_common import Mailbox, ReplyBound
from switchboard.protocols.http import HttpOptions, HttpPlugin

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
KiB = 1024
CHUNK = b"x" * (8 * KiB)
#: Over the 256 replies the gateway hands over in one batch, so only a client that does
#: not read, never a burst, can pass it.
PENDING = 300


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``condition()`` holds (state that settles on the loop, not on a timer)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


class App:
    """HTTP: ``/hold`` waits for :attr:`release`, ``/stream`` streams 24 MiB, else ``ok``.
    WebSocket: echo; ``stream`` streams 24 MiB. Every event is recorded."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.release = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        else:
            await self._websocket(receive, send)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.events.append(await receive())
        if scope["path"] == "/hold":
            await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": [[b"content-type", b"text/plain"]]})
        if scope["path"] == "/stream":
            await _stream(send, {"type": "http.response.body", "body": CHUNK, "more_body": True})
            self.events.append(await receive())  # the gateway's http.disconnect
            return
        await send({"type": "http.response.body", "body": b"ok"})

    async def _websocket(self, receive: Receive, send: Send) -> None:
        while True:
            event = await receive()
            self.events.append(event)
            if event["type"] == "websocket.connect":
                await send({"type": "websocket.accept"})
            elif event["type"] == "websocket.disconnect":
                return
            elif event.get("text") == "stream":
                await _stream(send, {"type": "websocket.send", "bytes": CHUNK})
            elif event.get("text") is not None:
                await send({"type": "websocket.send", "text": event["text"]})

    def disconnects(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["type"] == kind]


async def _stream(send: Send, message: dict[str, Any], count: int = 3000) -> None:
    """Send ``count`` messages as fast as the layer takes them (more than any socket buffers)."""
    sent = 0
    while sent < count:
        try:
            await send(message)
            sent += 1
        except ChannelFull:
            await asyncio.sleep(0.01)


# -- options ------------------------------------------------------------------------------


def test_defaults() -> None:
    options = HttpOptions()
    assert options.max_header_size == 64 * KiB
    assert options.max_headers == 100
    assert options.max_connections_per_ip == 256, "a public server is protected by default"
    assert options.max_connections_per_ip_exempt == ["127.0.0.0/8", "::1"], "a proxy on the same host is not"
    assert (options.idle_timeout, options.header_timeout, options.body_timeout) == (10.0, 10.0, 20.0)
    assert options.body_chunk_size == 64 * KiB and options.max_buffered_body_bytes == 32 * 1024 * KiB
    assert options.max_pending_replies == 1000
    assert options.max_pending_reply_bytes == 4 * 1024 * KiB
    assert options.websocket_max_messages_per_second is None
    assert options.websocket_message_burst is None
    assert HttpOptions(websocket_max_messages_per_second=2.5).message_burst == 3
    assert HttpOptions(websocket_max_messages_per_second=50, websocket_message_burst=7).message_burst == 7


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_header_size": 100}, "max_header_size must be at least 256"),
        ({"max_headers": 0}, "max_headers must be at least 1"),
        ({"max_connections_per_ip": 0}, "max_connections_per_ip must be at least 1"),
        ({"max_connections_per_ip_exempt": ["localhost"]}, "'localhost' is not an address or network"),
        ({"idle_timeout": 0}, "idle_timeout must be a positive number"),
        ({"body_chunk_size": 10}, "body_chunk_size must be at least 1024"),
        ({"max_pending_replies": 0}, "max_pending_replies must be at least 1"),
        ({"max_pending_reply_bytes": 0}, "max_pending_reply_bytes must be at least 1"),
        ({"websocket_max_messages_per_second": 0}, "websocket_max_messages_per_second must be a positive number"),
        ({"websocket_max_messages_per_second": float("inf")}, "websocket_max_messages_per_second"),
        ({"websocket_max_messages_per_second": 5, "websocket_message_burst": 0}, "websocket_message_burst must be"),
        ({"websocket_message_burst": 5}, "websocket_message_burst needs websocket_max_messages_per_second"),
        ({"max_headers": "many"}, "expected an integer"),
    ],
)
def test_bad_limits_are_config_errors(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_plugins({"http": options})


def test_the_mailbox_bound_counts_messages_and_bytes_and_stays_refused() -> None:
    by_count: Mailbox[dict[str, Any]] = Mailbox(None, ReplyBound(max_items=2, max_bytes=1000))
    assert by_count.offer({"bytes": b"a"}) and by_count.offer({"text": "b"})
    assert not by_count.offer({"bytes": b"c"}) and by_count.overflowed
    by_bytes: Mailbox[dict[str, Any]] = Mailbox(None, ReplyBound(max_items=100, max_bytes=10))
    assert by_bytes.offer({"body": b"12345"}) and by_bytes.offer({"body": b"12345"})
    assert not by_bytes.offer({"body": b"1"})
    assert not by_bytes.offer({"body": b""}), "once refused, always refused: no gap in a stream"
    assert by_bytes.discard(lambda item: False) == 2 and by_bytes.empty()
    alone: Mailbox[dict[str, Any]] = Mailbox(None, ReplyBound(max_items=1, max_bytes=10))
    assert alone.offer({"bytes": b"x" * 100}), "one reply always fits: the bound is on piling up"
    keeping_up: Mailbox[dict[str, Any]] = Mailbox(None, ReplyBound(max_items=1, max_bytes=10))
    assert keeping_up.offer({"text": "a"}) and keeping_up.offer({"text": "b"}, lambda: True)
    assert not keeping_up.offer({"text": "c"}, lambda: False) and keeping_up.qsize() == 2


# -- header limits ----------------------------------------------------------------------------


async def test_a_header_block_over_max_header_size_gets_431_and_reaches_no_worker(serve, raw_http) -> None:
    app = App()
    stack = await serve(app, max_header_size=2048)
    fits = b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 1500 + b"\r\nConnection: close\r\n\r\n"
    assert (await raw_http(stack.port, fits)).startswith(b"HTTP/1.1 200")
    answer = await raw_http(stack.port, b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 3000 + b"\r\n\r\n")
    head = answer.partition(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 431 request header fields too large")
    assert b"connection: close" in head
    assert len(app.events) == 1  # only the request that fitted
    assert stack.plugin.stats()["http.431"] == 1


async def test_more_than_max_headers_gets_431(serve, raw_http) -> None:
    app = App()
    stack = await serve(app, max_headers=5)
    headers = b"".join(b"X-%d: v\r\n" % i for i in range(4))  # + Host + Connection = 6
    answer = await raw_http(stack.port, b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"Connection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 431")
    answer = await raw_http(stack.port, b"GET / HTTP/1.1\r\nHost: x\r\n" + headers[:-8] + b"Connection: close\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 200")
    assert stack.plugin.stats()["http.431"] == 1


async def test_an_unfinished_header_is_refused_before_it_is_complete(serve) -> None:
    """The gateway answers 431 while the client is still sending one endless header."""
    stack = await serve(App(), max_header_size=4096)
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        answer = b""
        async with asyncio.timeout(10):
            while not answer:
                writer.write(b"a" * (8 * KiB))  # never a line end
                await writer.drain()
                try:
                    answer = await asyncio.wait_for(reader.read(4096), 0.05)
                except TimeoutError:
                    continue
        assert answer.startswith(b"HTTP/1.1 431")
    finally:
        writer.close()


async def test_a_websocket_handshake_with_too_many_headers_gets_431(serve) -> None:
    stack = await serve(App(), max_headers=8)
    headers = [(f"x-extra-{i}", "v") for i in range(10)]
    with pytest.raises(InvalidStatus) as refused:
        async with connect(stack.ws_url(), additional_headers=headers):
            pass
    assert refused.value.response.status_code == 431


async def test_h11_limits_the_header_block_too(serve, raw_http) -> None:
    """With h11 the limits are checked before any worker (431), and h11 refuses a block
    still incomplete past ``max_header_size`` itself (400)."""
    app = App()
    stack = await serve(app, http="h11", max_header_size=2048, max_headers=5)
    too_big = await raw_http(stack.port, b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"a" * 3000 + b"\r\n\r\n")
    assert too_big.startswith(b"HTTP/1.1 431")
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        for _ in range(3):
            writer.write(b"a" * 2048)
            await writer.drain()
            await asyncio.sleep(0)
        assert (await asyncio.wait_for(reader.read(4096), 10)).startswith(b"HTTP/1.1 400")
    finally:
        writer.close()
    headers = b"".join(b"X-%d: v\r\n" % i for i in range(6))
    too_many = await raw_http(stack.port, b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert too_many.startswith(b"HTTP/1.1 431")
    assert app.events == []


# -- connections per client address --------------------------------------------------------


async def test_max_connections_per_ip_refuses_http_with_503_and_frees_the_slot(serve, http_connect, fetch_url) -> None:
    app = App()
    stack = await serve(app, max_connections_per_ip=2, max_connections_per_ip_exempt=[])
    held = [await http_connect(stack.port) for _ in range(2)]
    for client in held:
        await client.send_request("GET", "/hold")
    await eventually(lambda: len(app.events) == 2)
    refused = await fetch_url(stack.port, "GET", "/")
    assert refused.status == 503 and refused.headers[b"retry-after"] == b"1"
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.port, local_addr=("127.0.0.2", 0))
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await reader.read()).startswith(b"HTTP/1.1 200"), "another address is not limited"
    finally:
        writer.close()
    app.release.set()
    for client in held:
        assert (await client.read_response()).status == 200
    # Sockets count, not requests: the two kept-alive connections still hold their slots.
    assert (await fetch_url(stack.port, "GET", "/")).status == 503
    await held[0].close()
    await eventually(lambda: stack.plugin.guard.per_ip == {"127.0.0.1": 1})
    assert (await fetch_url(stack.port, "GET", "/")).status == 200
    assert stack.plugin.stats()["http.503_per_ip"] == 2
    await held[1].close()
    await eventually(lambda: stack.plugin.guard.per_ip == {})
    assert stack.plugin._per_ip == {}, "without proxy_headers requests are not counted again"


async def test_max_connections_per_ip_denies_websockets_with_503(serve) -> None:
    app = App()
    stack = await serve(app, max_connections_per_ip=1, max_connections_per_ip_exempt=[])
    async with connect(stack.ws_url()) as first:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(stack.ws_url()):
                pass
        assert refused.value.response.status_code == 503
        await first.send("still here")
        assert await first.recv() == "still here"
    await eventually(lambda: not stack.plugin.guard.per_ip)
    async with connect(stack.ws_url()) as again:
        await again.send("back")
        assert await again.recv() == "back"
    # Refused when accepted, before the handshake was read: counted as an HTTP refusal.
    assert stack.plugin.stats()["http.503_per_ip"] == 1


# -- WebSocket message rate -------------------------------------------------------------------


async def test_a_client_past_its_burst_is_closed_with_1008(serve) -> None:
    """A bucket of 3 that refills once in 1,000 s: three messages pass, the fourth closes."""
    app = App()
    stack = await serve(app, websocket_max_messages_per_second=0.001, websocket_message_burst=3)
    async with connect(stack.ws_url()) as client:
        for text in ("1", "2", "3"):
            await client.send(text)
            assert await client.recv() == text
        await client.send("4")
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert closed.value.rcvd.reason == "message rate exceeded"
    await eventually(lambda: bool(app.disconnects("websocket.disconnect")))
    assert [e.get("text") for e in app.events if e["type"] == "websocket.receive"] == ["1", "2", "3"]
    stats = stack.plugin.stats()
    assert stats["websocket.rate_limited"] == 1 and stats["websocket.closes.1008"] == 1
    assert stats["websocket.messages_dropped_rate"] >= 1


# -- replies to a slow reader -----------------------------------------------------------------


async def test_a_websocket_client_that_reads_nothing_is_closed_with_1013(serve) -> None:
    app = App()
    stack = await serve(app, max_pending_replies=PENDING)
    async with connect(stack.ws_url(), max_size=None, max_queue=1) as client:
        await client.send("stream")
        # The client's library stops reading once one message waits; the kernel buffers
        # fill, then the gateway's, then the reply bound is passed.
        await eventually(lambda: stack.plugin.stats().get("websocket.slow_readers") == 1, 30)
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await client.recv()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1013, "client too slow")
    await eventually(lambda: bool(app.disconnects("websocket.disconnect")))
    assert app.disconnects("websocket.disconnect")[0]["code"] == 1013
    stats = stack.plugin.stats()
    assert stats["websocket.closes.1013"] == 1
    assert stats["websocket.replies_dropped_slow_reader"] >= 1


async def test_a_stream_to_a_client_that_reads_slowly_arrives_whole_and_in_order(serve) -> None:
    """Replies are written at once while the socket takes data and queued while it does not
    (``WebSocketSession._deliver``): a stream larger than the socket buffers, to a client
    that pauses now and then, switches between the two many times and keeps its order."""
    count = 1500

    async def numbers(scope: Scope, receive: Receive, send: Send) -> None:
        while (event := await receive())["type"] != "websocket.disconnect":
            if event["type"] == "websocket.connect":
                await send({"type": "websocket.accept"})
            elif event.get("text") == "numbers":
                for number in range(count):
                    await send({"type": "websocket.send", "text": f"{number:06d}" + "y" * (4 * KiB)})

    stack = await serve(numbers, max_pending_replies=10 * count, max_pending_reply_bytes=64 * 1024 * KiB)
    received: list[int] = []
    async with connect(stack.ws_url(), max_size=None, max_queue=4) as client:
        await client.send("numbers")
        while len(received) < count:
            received.append(int((await client.recv())[:6]))
            if len(received) % 100 == 0:
                await asyncio.sleep(0.05)  # the client falls behind: the gateway's socket fills
    assert received == list(range(count))
    stats = stack.plugin.stats()
    assert stats["websocket.messages_out"] == count
    assert "websocket.slow_readers" not in stats


async def test_a_streaming_http_response_to_a_client_that_reads_nothing_is_cut_off(serve) -> None:
    app = App()
    stack = await serve(app, max_pending_replies=PENDING)
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.port, limit=64 * KiB)
    writer.transport.pause_reading()  # the kernel's buffers fill, then the gateway's
    try:
        writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        await eventually(lambda: stack.plugin.stats().get("http.slow_readers") == 1, 30)
        writer.transport.resume_reading()
        received = b""
        try:
            async with asyncio.timeout(10):
                while chunk := await reader.read(1024 * KiB):
                    received += chunk
        except ConnectionResetError:
            pass
    finally:
        writer.close()
    assert received.startswith(b"HTTP/1.1 200")
    assert not received.endswith(b"0\r\n\r\n"), "a cut-off response must not look complete"
    await eventually(lambda: len(app.events) == 2)
    assert app.events[1]["type"] == "http.disconnect"
    assert stack.plugin.stats()["http.replies_dropped_slow_reader"] >= 1


# -- UTF-8 ------------------------------------------------------------------------------------


def _frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    mask = b"\x01\x02\x03\x04"
    head = bytes([(0x80 if fin else 0) | opcode])
    length = len(payload)
    head += bytes([0x80 | length]) if length < 126 else bytes([0x80 | 126]) + struct.pack("!H", length)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def _raw_websocket(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16))
    writer.write(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101"), head
    return reader, writer


async def _close_code(reader: asyncio.StreamReader) -> int | None:
    """The code of the server's close frame (skipping data frames), None if the socket just ended."""
    while True:
        try:
            first, second = await reader.readexactly(2)
        except asyncio.IncompleteReadError:
            return None
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await reader.readexactly(2))
        payload = await reader.readexactly(length)
        if first & 0x0F == 8:
            return int.from_bytes(payload[:2], "big")


@pytest.fixture
def errors() -> Iterator[list[logging.LogRecord]]:
    """WARNING+ records and any record with a traceback, from the gateway's loggers."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.WARNING or record.exc_info:
                records.append(record)

    handler = Keep(logging.DEBUG)
    loggers = [logging.getLogger(name) for name in ("switchboard", "uvicorn", "asyncio")]
    for each in loggers:
        each.addHandler(handler)
    yield records
    for each in loggers:
        each.removeHandler(handler)


@pytest.mark.parametrize(
    "frames",
    [
        pytest.param(_frame(1, b"\xff\xfe"), id="one frame"),
        pytest.param(_frame(1, b"", fin=False) + _frame(0, b"\x80") + _frame(8, b"\x03\xe8"), id="then a close"),
        pytest.param(_frame(1, b"ok \xc3", fin=False) + _frame(0, b"\x28"), id="split multibyte gone wrong"),
    ],
)
async def test_text_that_is_not_utf8_gets_1007_quietly(serve, errors: list[logging.LogRecord], frames: bytes) -> None:
    stack = await serve(App())
    reader, writer = await _raw_websocket(stack.port)
    try:
        writer.write(frames)
        assert await asyncio.wait_for(_close_code(reader), 10) == 1007
    finally:
        writer.close()
    assert stack.plugin.stats()["websocket.invalid_utf8"] == 1
    assert not errors, [record.getMessage() for record in errors]


async def test_utf8_split_across_fragments_is_accepted(serve) -> None:
    stack = await serve(App())
    reader, writer = await _raw_websocket(stack.port)
    try:
        writer.write(_frame(1, "é".encode()[:1], fin=False) + _frame(0, "é".encode()[1:] + b"!"))
        first, second = await asyncio.wait_for(reader.readexactly(2), 10)
        assert first & 0x0F == 1 and (await reader.readexactly(second & 0x7F)).decode() == "é!"
    finally:
        writer.close()


# -- layer errors -----------------------------------------------------------------------------


async def test_layer_errors_are_logged_once_per_reason_per_second_without_traceback(
    serve, fetch_url, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis gone: every request is a 503 and counted, but the log gets one line, not one per request."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is needed")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    redis = subprocess.Popen([binary, "--port", str(port), "--save", "", "--appendonly", "no"],  # noqa: ASYNC220
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        layer_config = {"BACKEND": "redis", "CONFIG": {"hosts": [f"redis://127.0.0.1:{port}/0"], "block_timeout": 0.05}}
        await eventually(lambda: _redis_up(port))
        stack = await serve(None, layer_config=layer_config)
        redis.kill()
        redis.wait()
        caplog.set_level(logging.DEBUG, logger="switchboard.protocols.http")
        mark = len(caplog.records)
        for _ in range(10):
            assert (await fetch_url(stack.port, "POST", "/", body=b"x")).status == 503
    finally:
        if redis.poll() is None:
            redis.kill()
            redis.wait()
    mine = [r for r in caplog.records[mark:] if r.name == "switchboard.protocols.http"]
    lines = [r for r in mine if r.levelno >= logging.WARNING]
    assert len(lines) <= 2, [r.getMessage() for r in lines]  # one per second, ten requests
    assert not any(r.exc_info for r in lines), "the traceback belongs at DEBUG"
    assert any(r.exc_info for r in mine if r.levelno == logging.DEBUG)
    assert stack.plugin.stats()["http.events_failed"] == 10


def _redis_up(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def test_the_options_reach_uvicorn() -> None:
    """The options reach uvicorn: our protocol classes, h11's header limit."""
    (plugin,) = build_plugins({"http": {"bind": ["127.0.0.1:0"], "max_header_size": 4096}})
    assert isinstance(plugin, HttpPlugin)
    config = plugin._uvicorn_config()
    assert config.h11_max_incomplete_event_size == 4096
    assert not isinstance(config.http, str) and not isinstance(config.ws, str)
