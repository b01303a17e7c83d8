"""WebRTC end to end: gateway and worker OS processes, a real aiortc client peer.

Every test runs in ``split`` mode (``switchboard gateway`` + ``switchboard worker`` over
the real Redis) and in ``run`` mode (one ``switchboard run`` process on the in-memory
layer), with ``webrtc_settings.py``: the http and webrtc plugins, the example's chat
consumers and the test consumers.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from websockets.asyncio.client import connect as ws_connect

from .conftest import ClientPeer, Deployment, connect_peer, http, post_offer

pytestmark = pytest.mark.e2e


async def test_echo_round_trips(deployment: Deployment) -> None:
    await deployment.wait_ready()
    peer = await connect_peer(deployment.base_url + "/webrtc/offer/test/echo/", labels=("chat", "files"))
    try:
        assert {await peer.receive("chat"), await peer.receive("files")} == {"open chat", "open files"}
        for index in range(20):
            peer.channels["chat"].send(f"message {index}")
            peer.channels["files"].send(bytes([index]) * (index * 1000 + 1))
        assert [await peer.receive("chat") for _ in range(20)] == [f"chat:MESSAGE {i}" for i in range(20)]
        assert [await peer.receive("files") for _ in range(20)] == [bytes([i]) * (i * 1000 + 1) for i in range(20)]
        peer.channels["chat"].send("!events")
        events = json.loads(await peer.receive("chat"))
        assert events[0] == ["connect", "/webrtc/offer/test/echo/"]
        assert sorted(events[1:3]) == [["open", "chat"], ["open", "files"]]
    finally:
        await peer.close()


async def test_disconnect_reaches_the_consumer_in_the_worker(deployment: Deployment) -> None:
    await deployment.wait_ready()
    url = deployment.base_url + "/webrtc/offer/test/echo/"
    watcher = await connect_peer(url)
    leaver = await connect_peer(url)
    try:
        assert await watcher.receive("chat") == "open chat"
        await leaver.close()
        # The leaving peer's consumer, in its disconnect handler, tells the group.
        assert await watcher.receive("chat") == "bye closed"
        watcher.channels["chat"].send("!close")
        await asyncio.wait_for(watcher.closed.wait(), 10)
    finally:
        await watcher.close()


async def test_webrtc_peer_chats_with_a_websocket_client(deployment: Deployment) -> None:
    """The example: a data channel peer and a WebSocket client in one chat room."""
    await deployment.wait_ready()
    peer = await connect_peer(deployment.base_url + "/webrtc/offer/lobby/")
    try:
        async with ws_connect(deployment.base_url.replace("http://", "ws://") + "/ws/chat/lobby/") as socket:
            # Our own message coming back proves the consumer joined the room's group.
            peer.channels["chat"].send(json.dumps({"message": "hello from webrtc"}))
            assert json.loads(await peer.receive("chat")) == {"message": "hello from webrtc"}
            assert json.loads(await asyncio.wait_for(socket.recv(), 10)) == {"message": "hello from webrtc"}
            await socket.send(json.dumps({"message": "hello from websocket"}))
            assert json.loads(await peer.receive("chat")) == {"message": "hello from websocket"}
            assert json.loads(await asyncio.wait_for(socket.recv(), 10)) == {"message": "hello from websocket"}
            peer.channels["chat"].send("not json")
            assert "error" in json.loads(await peer.receive("chat"))
    finally:
        await peer.close()


async def test_bad_signaling_does_not_hurt_the_gateway(deployment: Deployment) -> None:
    await deployment.wait_ready()
    url = deployment.base_url + "/webrtc/offer/test/echo/"
    assert (await http(url, b"{nope"))[0] == 400
    assert (await http(url, b"x" * 70_000))[0] == 413
    assert (await post_offer(url, {"type": "offer", "sdp": "v=0\r\n"}))[0] == 400
    peer = ClientPeer(("chat",))
    status, _ = await post_offer(url, {"type": "offer", "sdp": (await peer.offer())["sdp"] + "a=garbage\r\n" * 5})
    await peer.close()
    assert status in (200, 400)  # aiortc ignores unknown attributes; either way no crash
    good = await connect_peer(url)
    try:
        assert await good.receive("chat") == "open chat"
    finally:
        await good.close()
