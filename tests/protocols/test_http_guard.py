"""The HTTP plugin's connection guard: idle and header timeouts, sockets per address,
descriptor headroom, and the WebSocket upgrade over HTTP/1.0 (issue 12 items 2 and 12).

Real sockets and real clients (raw bytes, the websockets client); the gateway, plugin and
worker run in-process over the in-memory layer (conftest.py). Timeouts are set short so
the tests are quick, and every wait is for an outcome (a close, an answer, a counter), with
a generous safety net: nothing asserts how long anything took. The same attacks against
real processes over Redis are in tests/reliability/test_rel_attacks_http.py.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from support.waiting import deadline, wait_until
from websockets.asyncio.client import connect

from switchboard.protocols import http as http_module
from switchboard.protocols._http_guard import TrustedPeers

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

WAIT = deadline(20)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """HTTP: ``ok``; WebSocket: echo."""
    if scope["type"] == "http":
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": [[b"content-length", b"2"]]})
        await send({"type": "http.response.body", "body": b"ok"})
        return
    while True:
        event = await receive()
        if event["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
        elif event["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": event.get("text") or ""})
        else:
            return


async def read_all(reader: asyncio.StreamReader) -> bytes:
    """Everything until the server closes (a reset after an answer counts as the end)."""
    data = b""
    async with asyncio.timeout(WAIT):
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk


async def get_ok(port: int, source: str = "127.0.0.1") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return await read_all(reader)
    finally:
        writer.close()


# -- idle and header timeouts -------------------------------------------------------------------


async def test_a_silent_connection_is_closed_after_idle_timeout_without_an_answer(serve) -> None:
    stack = await serve(app, idle_timeout=0.5, header_timeout=30)
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.port)
    try:
        assert await read_all(reader) == b"", "nothing was asked, so nothing is answered"
    finally:
        writer.close()
    assert stack.plugin.stats()["http.idle_timeouts"] == 1
    assert (await get_ok(stack.port)).startswith(b"HTTP/1.1 200")
    await wait_until(lambda: stack.plugin.guard.open_sockets == 0, what="the sockets to be forgotten")


async def test_a_header_block_dripping_past_header_timeout_gets_408(serve) -> None:
    """Slowloris: one byte at a time, each well within any per-read timeout."""
    stack = await serve(app, idle_timeout=30, header_timeout=1)
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.port)
    answer = b""
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
        async with asyncio.timeout(WAIT):
            while not answer:
                writer.write(b"X")
                try:
                    answer = await asyncio.wait_for(reader.read(4096), 0.1)
                except TimeoutError:
                    continue
                except ConnectionResetError:
                    break
    finally:
        writer.close()
    head = answer.partition(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 408 request timeout") and b"connection: close" in head
    assert stack.plugin.stats()["http.header_timeouts"] == 1
    assert stack.plugin.stats()["http.messages_in"] == 0, "no request reached the bridge"


async def test_the_header_timeout_runs_again_for_the_next_request_on_a_kept_alive_connection(serve) -> None:
    stack = await serve(app, idle_timeout=30, header_timeout=1, keep_alive_timeout=30)
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        first = await reader.readuntil(b"ok")
        assert first.startswith(b"HTTP/1.1 200")
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the end of the block
        second = await read_all(reader)
    finally:
        writer.close()
    assert second.startswith(b"HTTP/1.1 408")
    assert stack.plugin.stats()["http.header_timeouts"] == 1


async def test_a_kept_alive_connection_waiting_for_its_next_request_is_not_idle_timed_out(serve) -> None:
    """Between requests uvicorn's keep_alive_timeout applies, not idle_timeout."""
    stack = await serve(app, idle_timeout=0.2, keep_alive_timeout=30)
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await reader.readuntil(b"ok")).startswith(b"HTTP/1.1 200")
        # Another connection outlives its idle timeout meanwhile: proof the timer ran.
        silent_reader, silent_writer = await asyncio.open_connection("127.0.0.1", stack.port)
        assert await read_all(silent_reader) == b""
        silent_writer.close()
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await reader.readuntil(b"ok")).startswith(b"HTTP/1.1 200")
    finally:
        writer.close()
    assert stack.plugin.stats()["http.idle_timeouts"] == 1


# -- sockets per address ----------------------------------------------------------------------


async def test_sockets_are_counted_per_peer_before_any_request(serve) -> None:
    """The cap bites on silent sockets too: they are counted when accepted."""
    stack = await serve(app, max_connections_per_ip=3, max_connections_per_ip_exempt=[], idle_timeout=30)
    silent = [await asyncio.open_connection("127.0.0.1", stack.port) for _ in range(3)]
    try:
        await wait_until(lambda: stack.plugin.guard.per_ip.get("127.0.0.1") == 3, what="three sockets counted")
        refused = await get_ok(stack.port)
        head = refused.partition(b"\r\n\r\n")[0].lower()
        assert head.startswith(b"http/1.1 503") and b"retry-after: 1" in head and b"connection: close" in head
        assert (await get_ok(stack.port, source="127.0.0.2")).startswith(b"HTTP/1.1 200"), "another address"
    finally:
        for _reader, writer in silent:
            writer.close()
    await wait_until(lambda: not stack.plugin.guard.per_ip, what="the slots to be freed")
    assert (await get_ok(stack.port)).startswith(b"HTTP/1.1 200")
    assert stack.plugin.stats()["http.503_per_ip"] == 1


async def test_a_trusted_proxy_is_not_capped_per_socket_but_its_clients_are_per_request(serve) -> None:
    """Behind a proxy every client shares its address: the proxy's sockets are not capped,
    its requests are, by the forwarded client address."""
    release = asyncio.Event()

    async def holding(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/hold":
            await release.wait()
        await app(scope, receive, send)

    stack = await serve(holding, max_connections_per_ip=2, max_connections_per_ip_exempt=[], proxy_headers=True,
                         forwarded_allow_ips=["127.0.0.1"])
    sockets = [await asyncio.open_connection("127.0.0.1", stack.port) for _ in range(4)]
    try:
        for sent, ((_reader, writer), client) in enumerate(zip(sockets, ["203.0.113.9"] * 3 + ["203.0.113.10"]), 1):
            writer.write(b"GET /hold HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: " + client.encode() + b"\r\n\r\n")
            await wait_until(lambda sent=sent: arrived(stack) >= sent, what="the request to arrive")
        third = await sockets[2][0].readuntil(b"\r\n\r\n")
        assert third.startswith(b"HTTP/1.1 503"), "a third request from one forwarded client"
        assert stack.plugin.guard.per_ip == {}, "the proxy's four sockets are not counted"
        release.set()
        for index in (0, 1, 3):
            assert (await sockets[index][0].readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    finally:
        for _reader, writer in sockets:
            writer.close()
    assert stack.plugin.stats()["http.503_per_ip"] == 1


def arrived(stack: Any) -> int:
    """Requests that reached the bridge, refused or not."""
    stats = stack.plugin.stats()
    return int(stats.get("http.messages_in", 0) + stats.get("http.503_per_ip", 0))


def test_trusted_peers_take_addresses_networks_and_star() -> None:
    peers = TrustedPeers("127.0.0.1, 10.0.0.0/8,::1, unix:/run/proxy.sock")
    assert "127.0.0.1" in peers and "10.20.30.40" in peers and "::1" in peers
    assert "127.0.0.2" not in peers and "not an address" not in peers
    assert "198.51.100.1" in TrustedPeers(["*"])
    assert "127.0.0.1" not in TrustedPeers(None)


async def test_loopback_is_not_capped_by_default(serve) -> None:
    """A proxy on the same host connects from loopback for every client it serves."""
    stack = await serve(app, max_connections_per_ip=2, idle_timeout=30)
    held = [await asyncio.open_connection("127.0.0.1", stack.port) for _ in range(3)]
    try:
        assert (await get_ok(stack.port)).startswith(b"HTTP/1.1 200")
        assert stack.plugin.guard.per_ip == {}
    finally:
        for _reader, writer in held:
            writer.close()


@pytest.mark.filterwarnings("ignore:The `websockets` implementation is deprecated:UserWarning")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the websockets library's legacy API
@pytest.mark.parametrize("ws", ["websockets", "websockets-legacy"])
async def test_a_websocket_holds_its_slot_until_it_closes(serve, ws: str) -> None:
    """The socket outlives the HTTP protocol that accepted it: the WebSocket one releases it."""
    stack = await serve(app, ws=ws, max_connections_per_ip=1, max_connections_per_ip_exempt=[])
    async with connect(stack.ws_url()) as client:
        await client.send("hello")
        assert await client.recv() == "hello"
        assert stack.plugin.guard.per_ip == {"127.0.0.1": 1}
        assert (await get_ok(stack.port)).startswith(b"HTTP/1.1 503"), "the WebSocket holds the slot"
    await wait_until(lambda: stack.plugin.guard.per_ip == {}, what="the slot to be freed")
    assert stack.plugin.guard.open_sockets == 0
    assert (await get_ok(stack.port)).startswith(b"HTTP/1.1 200")


# -- descriptors ------------------------------------------------------------------------------


#: A separate client process, so that only the gateway's descriptors are in this one:
#: opens N sockets, prints "open", and on "check" prints which have been closed by the server.
SILENT_CLIENTS = """
import asyncio, sys

async def main(port, count):
    # All at once: one at a time, each would wait out a full listen queue's SYN retry.
    opened = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in range(count)))
    print("open", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    closed = []
    for index, (reader, writer) in enumerate(opened):
        await asyncio.sleep(0)
        if reader.at_eof() or writer.transport.is_closing():
            closed.append(index)
    print(",".join(map(str, closed)), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
"""


async def test_near_the_file_limit_the_oldest_silent_connections_make_room(serve, monkeypatch) -> None:
    """With the limit 160 descriptors above what this process uses, half of them kept in
    reserve, 100 silent sockets do not lock a client out: the oldest silent ones are closed
    to keep the reserve free, and nothing in the process meets EMFILE."""
    in_use = len(os.listdir("/proc/self/fd"))
    limit = in_use + 160
    monkeypatch.setattr(http_module, "_file_limit", lambda: limit)
    stack = await serve(app, idle_timeout=60, max_connections_per_ip=None)
    high_water = stack.plugin.guard.fd_high_water
    assert high_water == limit - limit // 2, "a small limit keeps half of itself in reserve"
    clients = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SILENT_CLIENTS, str(stack.port), "100",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    assert clients.stdin is not None and clients.stdout is not None
    try:
        async with asyncio.timeout(WAIT):
            assert (await clients.stdout.readline()).strip() == b"open"
        must_shed = in_use + 100 - high_water
        await wait_until(lambda: stack.plugin.stats().get("http.connections_shed", 0) >= must_shed, what="shedding")
        assert (await get_ok(stack.port)).startswith(b"HTTP/1.1 200")
        # listdir's own descriptor, and the client socket get_ok may still be closing.
        assert len(os.listdir("/proc/self/fd")) <= high_water + 2, "the reserve stayed free"
        clients.stdin.write(b"check\n")
        async with asyncio.timeout(WAIT):
            closed = [int(index) for index in (await clients.stdout.readline()).decode().strip().split(",") if index]
        assert len(closed) >= must_shed, closed
    finally:
        if clients.returncode is None:
            clients.kill()
        await clients.wait()
    assert stack.plugin.stats().get("http.503_file_limit", 0) == 0, "there was always an idle connection to close"


# -- WebSocket upgrade over HTTP/1.0 (item 12) ------------------------------------------------------


def _upgrade(version: bytes) -> bytes:
    key = base64.b64encode(os.urandom(16))
    return (b"GET /ws HTTP/" + version + b"\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")


@pytest.mark.parametrize("parser", ["httptools", "h11"])
async def test_a_websocket_upgrade_over_http_1_0_gets_400(serve, raw_http, parser: str) -> None:
    events: list[str] = []

    async def recording(scope: Scope, receive: Receive, send: Send) -> None:
        events.append(scope["type"])
        await app(scope, receive, send)

    stack = await serve(recording, http=parser)
    answer = await raw_http(stack.port, _upgrade(b"1.0"))
    head = answer.partition(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 400") and b"connection: close" in head
    assert events == [], "no worker saw it"
    assert stack.plugin.stats()["websocket.400_http_1_0"] == 1
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.port)
    try:
        writer.write(_upgrade(b"1.1"))
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101"), "HTTP/1.1 still upgrades"
    finally:
        writer.close()
    async with connect(stack.ws_url()) as client:
        await client.send("still here")
        assert await client.recv() == "still here"
