"""The example project end to end, in split mode (processes over Redis) and one-process mode.

Real clients only: urllib for HTTP, raw sockets for malformed input, the ``websockets``
client for WebSockets. WebSocket clients send the site's own ``Origin``, as a browser on
its pages does (the chat refuses connections without one), and post as logged-in users.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket

import aioice.ice
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from support.waiting import deadline, wait_until
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .conftest import Deployment
from .e2e_clients import http, recv_json, ws

pytestmark = pytest.mark.e2e


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
    status, body = http(deployment, "/no/such/page/")
    assert status == 404
    # The example runs with DEBUG off unless DJANGO_DEBUG=1: no URLconf listing, no settings.
    assert b"URLconf" not in body and b"DEBUG = True" not in body


async def test_chat_group_two_clients_receive_each_others_messages(deployment: Deployment) -> None:
    alice_session, bob_session = deployment.login("alice"), deployment.login("bob")
    async with ws(deployment, "/ws/chat/lobby/", alice_session) as alice, ws(deployment, "/ws/chat/lobby/", bob_session) as bob:
        # Both are in the group once connect() ran; a first ping-pong proves it for each.
        await alice.send(json.dumps({"message": "hello from alice"}))
        await bob.send(json.dumps({"message": "hello from bob"}))
        got_alice = {tuple(sorted((await recv_json(alice)).items())) for _ in range(2)}
        got_bob = {tuple(sorted((await recv_json(bob)).items())) for _ in range(2)}
    expected = {(("message", "hello from alice"), ("user", "alice")), (("message", "hello from bob"), ("user", "bob"))}
    assert got_alice == got_bob == expected


async def test_rooms_are_separate(deployment: Deployment) -> None:
    session = deployment.login("alice")
    async with ws(deployment, "/ws/chat/a/", session) as in_a, ws(deployment, "/ws/chat/b/", session) as in_b:
        await in_a.send(json.dumps({"message": "only a"}))
        assert await recv_json(in_a) == {"message": "only a", "user": "alice"}
        await in_b.send(json.dumps({"message": "only b"}))
        assert await recv_json(in_b) == {"message": "only b", "user": "alice"}


def test_malformed_http_gets_400_and_gateway_keeps_serving(deployment: Deployment) -> None:
    with socket.create_connection(("127.0.0.1", deployment.port), timeout=deadline(10)) as sock:
        sock.sendall(b"THIS IS NOT HTTP\r\n\x00\x01\x02\r\n\r\n")
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 400")
    assert http(deployment, "/api/echo/")[0] == 200


def test_oversized_body_gets_413(deployment: Deployment) -> None:
    # The gateway answers from the headers alone, without reading 2 MiB it will refuse;
    # a raw socket can read that answer where urllib would still be writing the body.
    with socket.create_connection(("127.0.0.1", deployment.port), timeout=deadline(10)) as sock:
        sock.sendall(b"POST /api/echo/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 2097152\r\n\r\n" + b"x" * 1024)
        reply = sock.recv(4096)
    assert reply.startswith(b"HTTP/1.1 413")
    # Chunked bodies have no length up front: the gateway counts while it reads.
    with socket.create_connection(("127.0.0.1", deployment.port), timeout=deadline(10)) as sock:
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
    async with ws(deployment, "/ws/chat/big/", max_size=None) as socket:
        await socket.send("x" * (256 * 1024))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(socket.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    async with ws(deployment, "/ws/chat/big/", deployment.login("alice")) as socket:
        await socket.send(json.dumps({"message": "still here"}))
        assert await recv_json(socket) == {"message": "still here", "user": "alice"}


async def test_unknown_websocket_route_is_rejected_404(deployment: Deployment) -> None:
    with pytest.raises(InvalidStatus) as rejected:
        async with ws(deployment, "/ws/nowhere/"):
            pass
    assert rejected.value.response.status_code == 404


async def test_consumer_exception_closes_1011_and_gateway_keeps_serving(deployment: Deployment) -> None:
    async with ws(deployment, "/ws/boom/") as socket:
        await socket.send("anything")
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(socket.recv(), 10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    assert http(deployment, "/api/echo/")[0] == 200


@pytest.mark.parametrize("bad_type", [".my_private_handler", "..init..", "._class__"])
async def test_group_message_type_never_reaches_a_private_method(deployment: Deployment, bad_type: str) -> None:
    """A type that would map to ``_name`` is refused in every member (Channels' rule).

    The message travels the production path: a real ``group_send`` from a consumer, to
    every member's reply channel, back through the gateway to the worker. The members'
    consumers raise ValueError before any handler runs: each socket closes with 1011
    without ``_my_private_handler`` having sent anything, and the site keeps serving.
    """
    async with ws(deployment, "/ws/relay/") as attacker, ws(deployment, "/ws/relay/") as member:
        # Both are in the group once a relayed message reaches each of them.
        await attacker.send(json.dumps({"type": "relay.message", "text": "hello"}))
        assert await recv_json(attacker) == {"relayed": "hello"}
        assert await recv_json(member) == {"relayed": "hello"}
        await attacker.send(json.dumps({"type": bad_type}))
        for socket_ in (attacker, member):
            with pytest.raises(ConnectionClosed) as closed:
                leaked = await asyncio.wait_for(socket_.recv(), 10)
                pytest.fail(f"a private method answered: {leaked!r}")
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    refusal = f"Malformed type in message (leading underscore): {bad_type!r}"
    worker = "worker" if deployment.mode == "split" else "run"
    await wait_until(lambda: refusal in deployment.log(worker), what="the refusal in the worker's log")
    async with ws(deployment, "/ws/relay/") as socket_:
        await socket_.send(json.dumps({"type": "relay.message", "text": "still serving"}))
        assert await recv_json(socket_) == {"relayed": "still serving"}


async def test_webrtc_offers_need_a_login_then_the_peer_chats(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    """The site has logins, so an anonymous offer is refused before a peer slot is taken
    (a stranger could otherwise fill ``max_peers``); a logged-in user's real aiortc peer
    gets its answer and chats in the room over its data channel."""
    # ICE on loopback for the test's own peer (aioice leaves 127.0.0.1 out by itself).
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else [])
    url = f"/webrtc/offer/rtc-{secrets.token_hex(3)}/"
    headers = {"Content-Type": "application/json", "Origin": deployment.origin}
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    chat = pc.createDataChannel("chat")
    inbox: asyncio.Queue[str] = asyncio.Queue()
    opened = asyncio.Event()
    chat.on("message", inbox.put_nowait)
    chat.on("open", opened.set)
    try:
        await pc.setLocalDescription(await pc.createOffer())
        offer = json.dumps({"type": "offer", "sdp": pc.localDescription.sdp}).encode()
        status, body = await asyncio.to_thread(http, deployment, url, offer, headers)
        assert (status, json.loads(body)) == (403, {"error": "log in to the site first"})

        cookie = {"Cookie": f"sessionid={deployment.login('alice')}"}
        status, body = await asyncio.to_thread(http, deployment, url, offer, {**headers, **cookie})
        assert status == 200, body
        answer = json.loads(body)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        await asyncio.wait_for(opened.wait(), 20)
        chat.send(json.dumps({"message": "hello over a data channel"}))
        posted = json.loads(await asyncio.wait_for(inbox.get(), 20))
        assert posted == {"message": "hello over a data channel", "user": "alice"}
    finally:
        await pc.close()
