"""The example project end to end, in split mode (processes over Redis) and one-process mode.

Real clients only: urllib for HTTP, raw sockets for malformed input, the ``websockets``
client for WebSockets.
"""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .conftest import Deployment

pytestmark = pytest.mark.e2e


def http(
    deployment: Deployment, path: str, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    request = urllib.request.Request(deployment.base_url + path, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_plain_django_view_get_and_post(deployment: Deployment) -> None:
    status, body = http(deployment, "/api/echo/?name=ada")
    assert status == 200
    assert json.loads(body) == {"method": "GET", "query": {"name": "ada"}}

    status, body = http(deployment, "/api/echo/", data=b'{"x": [1, 2]}', headers={"Content-Type": "application/json"})
    assert status == 200
    assert json.loads(body) == {"method": "POST", "json": {"x": [1, 2]}}

    status, body = http(deployment, "/")
    assert status == 200 and b"Switchboard example" in body


def test_unknown_http_url_is_djangos_404(deployment: Deployment) -> None:
    status, _ = http(deployment, "/no/such/page/")
    assert status == 404


async def test_chat_group_two_clients_receive_each_others_messages(deployment: Deployment) -> None:
    url = deployment.ws_url + "/ws/chat/lobby/"
    async with connect(url) as alice, connect(url) as bob:
        # Both are in the group once connect() ran; a first ping-pong proves it for each.
        await alice.send(json.dumps({"message": "hello from alice"}))
        await bob.send(json.dumps({"message": "hello from bob"}))
        got_alice = {json.loads(await asyncio.wait_for(alice.recv(), 10))["message"] for _ in range(2)}
        got_bob = {json.loads(await asyncio.wait_for(bob.recv(), 10))["message"] for _ in range(2)}
    assert got_alice == got_bob == {"hello from alice", "hello from bob"}


async def test_rooms_are_separate(deployment: Deployment) -> None:
    async with connect(deployment.ws_url + "/ws/chat/a/") as in_a, connect(deployment.ws_url + "/ws/chat/b/") as in_b:
        await in_a.send(json.dumps({"message": "only a"}))
        assert json.loads(await asyncio.wait_for(in_a.recv(), 10)) == {"message": "only a"}
        await in_b.send(json.dumps({"message": "only b"}))
        assert json.loads(await asyncio.wait_for(in_b.recv(), 10)) == {"message": "only b"}


def test_malformed_http_gets_400_and_gateway_keeps_serving(deployment: Deployment) -> None:
    with socket.create_connection(("127.0.0.1", deployment.port), timeout=10) as sock:
        sock.sendall(b"THIS IS NOT HTTP\r\n\x00\x01\x02\r\n\r\n")
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 400")
    assert http(deployment, "/api/echo/")[0] == 200


def test_oversized_body_gets_413(deployment: Deployment) -> None:
    # The gateway answers from the headers alone, without reading 2 MiB it will refuse;
    # a raw socket can read that answer where urllib would still be writing the body.
    with socket.create_connection(("127.0.0.1", deployment.port), timeout=10) as sock:
        sock.sendall(b"POST /api/echo/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 2097152\r\n\r\n" + b"x" * 1024)
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413")
    # Chunked bodies have no length up front: the gateway counts while it reads.
    with socket.create_connection(("127.0.0.1", deployment.port), timeout=10) as sock:
        sock.sendall(b"POST /api/echo/ HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 65536
        try:
            for _ in range(20):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:
            pass  # the gateway may close as soon as it has answered
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413")
    assert http(deployment, "/api/echo/")[0] == 200


async def test_oversized_frame_closes_1009_and_gateway_keeps_serving(deployment: Deployment) -> None:
    async with connect(deployment.ws_url + "/ws/chat/big/", max_size=None) as ws:
        await ws.send("x" * (256 * 1024))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    async with connect(deployment.ws_url + "/ws/chat/big/") as ws:
        await ws.send(json.dumps({"message": "still here"}))
        assert json.loads(await asyncio.wait_for(ws.recv(), 10)) == {"message": "still here"}


async def test_unknown_websocket_route_is_rejected_404(deployment: Deployment) -> None:
    with pytest.raises(InvalidStatus) as rejected:
        async with connect(deployment.ws_url + "/ws/nowhere/"):
            pass
    assert rejected.value.response.status_code == 404


async def test_consumer_exception_closes_1011_and_gateway_keeps_serving(deployment: Deployment) -> None:
    async with connect(deployment.ws_url + "/ws/boom/") as ws:
        await ws.send("anything")
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    assert http(deployment, "/api/echo/")[0] == 200
