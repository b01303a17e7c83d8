"""``reuse_port``: several gateways listen on one port, and the kernel spreads connections.

How HTTP and WebSocket grow past one gateway process on a host without a load balancer
(docs/scaling.md), and how a new gateway binds before the old one has gone (docs/deploys.md).
"""

from __future__ import annotations

import asyncio
import socket

import pytest
from support.waiting import deadline

WAIT = deadline(10)


async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": [[b"content-type", b"text/plain"]]})
    await send({"type": "http.response.body", "body": b"ok"})


async def get(port: int) -> bytes:
    """One request on a new connection (a new 4-tuple, so the kernel picks a listener again)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return await asyncio.wait_for(reader.read(), WAIT)
    finally:
        writer.close()


async def test_two_gateways_share_a_port_and_both_serve(serve) -> None:
    first = await serve(app, bind=["127.0.0.1:0"], reuse_port=True)
    second = await serve(app, bind=[f"127.0.0.1:{first.port}"], reuse_port=True)
    assert second.port == first.port
    # 40 connections: the kernel hashes each 4-tuple to a listener, so the chance that
    # every one lands on the same gateway is 2**-39.
    answers = [await get(first.port) for _ in range(40)]
    assert all(answer.startswith(b"HTTP/1.1 200 ") and b"ok" in answer.partition(b"\r\n\r\n")[2] for answer in answers)
    served = (first.gateway.stats.connections_opened, second.gateway.stats.connections_opened)
    assert sum(served) == 40
    assert min(served) > 0, f"one gateway served everything: {served}"

    # One gateway going away leaves the port served by the other.
    await first.close()
    assert (await get(second.port)).startswith(b"HTTP/1.1 200 ")


async def test_without_reuse_port_the_second_gateway_cannot_bind(serve) -> None:
    first = await serve(app, bind=["127.0.0.1:0"])
    with pytest.raises(OSError, match=rf"cannot listen on 127\.0\.0\.1:{first.port}"):
        await serve(app, bind=[f"127.0.0.1:{first.port}"], reuse_port=True)


def test_reuse_port_is_set_on_the_socket() -> None:
    from switchboard.protocols.http import bind_sockets

    (sock,) = bind_sockets(["127.0.0.1:0"], reuse_port=True)
    try:
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 1
    finally:
        sock.close()
