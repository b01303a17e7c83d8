"""The WebRTC plugin in process: a real aiortc peer signals over real HTTP to the gateway.

Gateway core + HTTP plugin (uvicorn on a free loopback port) + WebRTC plugin + a worker
over the in-memory layer; the consumers are ``webrtc_consumers.py``. Every scope and event
the worker receives is checked against specs/webrtc.md on the way in.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aioice.ice
import aioice.stun
import pytest
from django.urls import path
from support.waiting import wait_until
from websockets.asyncio.client import connect as ws_connect

from switchboard.consumers import ProtocolTypeRouter, URLRouter
from switchboard.gateway.specs import GATEWAY_TO_WORKER, validate_message, validate_scope

from .conftest import WAIT, ClientPeer, Stack, connect_peer, http, post_offer
from .webrtc_consumers import EVENTS, DenyingConsumer, EchoConsumer, SyncJsonEchoConsumer, events_of

# Anything that breaks specs/webrtc.md on its way to a consumer lands here.
SPEC_VIOLATIONS: list[str] = []


def spec_checked(app: Any) -> Any:
    """Wrap an ASGI app so every scope and event it receives is validated against the specs."""

    async def checked(scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            validate_scope(scope)
        except ValueError as exc:
            SPEC_VIOLATIONS.append(str(exc))

        async def receive_checked() -> dict[str, Any]:
            message: dict[str, Any] = await receive()
            try:
                validate_message(message, direction=GATEWAY_TO_WORKER, allow_unknown=not message["type"].startswith("webrtc."))
            except ValueError as exc:
                SPEC_VIOLATIONS.append(str(exc))
            return message

        await app(scope, receive_checked, send)

    return checked


APP = ProtocolTypeRouter(
    {
        "webrtc": spec_checked(
            URLRouter(
                [
                    path("webrtc/offer/test/echo/", EchoConsumer.as_asgi()),
                    path("webrtc/offer/test/json/", SyncJsonEchoConsumer.as_asgi()),
                    path("webrtc/offer/test/deny/", DenyingConsumer.as_asgi()),
                ]
            )
        )
    }
)


@pytest.fixture(autouse=True)
def _clean_records() -> Any:
    EVENTS.clear()
    SPEC_VIOLATIONS.clear()
    yield
    assert SPEC_VIOLATIONS == []


def peer_channel(stack: Stack) -> str:
    """The reply channel of the one open peer."""
    (peer,) = stack.plugin.peers
    assert peer.connection is not None
    return peer.connection.channel


async def test_text_and_bytes_round_trip(stack: Any, peers: list[ClientPeer]) -> None:
    running = await stack(APP)
    peer = await connect_peer(running.url())
    peers.append(peer)
    assert await peer.receive("chat") == "open chat"
    chat = peer.channels["chat"]
    for word in ("hello", "wörld", "", "x" * 10_000):
        chat.send(word)
        assert await peer.receive("chat") == f"chat:{word.upper()}"
    for data in (b"\x00\x01\x02", b"\xff" * 30_000, b"z"):
        chat.send(data)
        assert await peer.receive("chat") == data[::-1]
    channel = peer_channel(running)
    seen = events_of(channel)
    assert seen[0] == ("connect", "/webrtc/offer/test/echo/")
    assert seen[1] == ("open", "chat")
    assert ("message", "chat", None, b"\x00\x01\x02") in seen
    stats = running.plugin.stats()
    assert stats["peers"] == 1 and stats["peers_connected"] == 1
    assert stats["messages_in"] == 7 and stats["messages_out"] == 8


async def test_two_channels_on_one_peer(stack: Any, peers: list[ClientPeer]) -> None:
    running = await stack(APP)
    peer = await connect_peer(running.url(), labels=("left", "right"))
    peers.append(peer)
    assert {await peer.receive("left"), await peer.receive("right")} == {"open left", "open right"}
    for index in range(5):
        peer.channels["left"].send(f"l{index}")
        peer.channels["right"].send(f"r{index}")
    assert [await peer.receive("left") for _ in range(5)] == [f"left:L{i}" for i in range(5)]
    assert [await peer.receive("right") for _ in range(5)] == [f"right:R{i}" for i in range(5)]
    # A channel opened later on the same peer is announced too.
    late = peer.add_channel("late")
    await peer.wait_open("late")
    assert await peer.receive("late") == "open late"
    late.send("hi")
    assert await peer.receive("late") == "late:HI"
    late.close()
    channel = peer_channel(running)
    await wait_until(lambda: ("channel_close", "late") in events_of(channel), what="channel close event")
    peer.channels["left"].send("still here")
    assert await peer.receive("left") == "left:STILL HERE"


async def test_peer_close_reaches_the_consumer(stack: Any) -> None:
    running = await stack(APP)
    peer = await connect_peer(running.url())
    assert await peer.receive("chat") == "open chat"
    channel = peer_channel(running)
    await peer.close()
    await wait_until(lambda: ("disconnect", "closed") in events_of(channel), what="webrtc.disconnect")
    seen = events_of(channel)
    assert seen[-1] == ("disconnect", "closed")  # always last
    assert ("channel_close", "chat") in seen
    await wait_until(lambda: running.plugin.stats()["peers"] == 0, what="peer cleanup")
    assert running.plugin.stats()["peers_closed"] == 1
    assert channel not in running.gateway.connections


async def test_consumer_closes_the_peer(stack: Any) -> None:
    running = await stack(APP)
    peer = await connect_peer(running.url())
    assert await peer.receive("chat") == "open chat"
    channel = peer_channel(running)
    peer.channels["chat"].send("!close")
    await asyncio.wait_for(peer.closed.wait(), WAIT)
    await wait_until(lambda: ("disconnect", "consumer_closed") in events_of(channel), what="disconnect")
    await peer.close()


async def test_deny_connection_closes_the_peer(stack: Any) -> None:
    running = await stack(APP)
    peer = ClientPeer(("chat",))
    status, answer = await post_offer(running.url("/webrtc/offer/test/deny/"), await peer.offer())
    assert status == 200
    await peer.accept(answer)
    await asyncio.wait_for(peer.closed.wait(), WAIT)
    await wait_until(lambda: any(event[1:] == ("disconnect", "consumer_closed") for event in EVENTS), what="disconnect")
    await peer.close()


async def test_sync_json_consumer(stack: Any, peers: list[ClientPeer]) -> None:
    running = await stack(APP)
    peer = await connect_peer(running.url("/webrtc/offer/test/json/"), labels=("data",))
    peers.append(peer)
    peer.channels["data"].send(json.dumps({"n": 1}))
    assert json.loads(await peer.receive("data")) == {"echo": {"n": 1}, "label": "data"}
    peer.channels["data"].send("{not json")
    assert json.loads(await peer.receive("data")) == {"error": "not JSON"}
    peer.channels["data"].send(b"\x00")
    assert json.loads(await peer.receive("data")) == {"error": "not JSON"}


async def test_signaling_headers_reach_the_scope(stack: Any, peers: list[ClientPeer]) -> None:
    running = await stack(APP)
    peer = await connect_peer(running.url(), headers={"content-type": "application/json", "cookie": "sessionid=abc123"})
    peers.append(peer)
    assert await peer.receive("chat") == "open chat"
    peer.channels["chat"].send("!cookie")
    assert await peer.receive("chat") == "sessionid=abc123"


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"not json", "not JSON"),
        (b'["offer"]', "JSON object"),
        (b'{"type": "answer", "sdp": "v=0"}', '"type" must be "offer"'),
        (b'{"type": "offer"}', '"sdp" must be a non-empty string'),
        (b'{"type": "offer", "sdp": "garbage"}', "exactly one data channel section"),
        (b"\xff\xfe\x00garbage", "not JSON"),
    ],
)
async def test_bad_offers_get_400(stack: Any, body: bytes, error: str) -> None:
    running = await stack(APP)
    status, headers, answer = await http(running.url(), body)
    assert status == 400
    assert headers["content-type"] == "application/json"
    assert error in json.loads(answer)["error"]
    assert running.plugin.stats()["signaling_400"] == 1
    assert running.plugin.stats().get("connections_opened", 0) == 0


async def test_offers_aiortc_refuses_get_400(stack: Any) -> None:
    running = await stack(APP)
    peer = ClientPeer(("chat",))
    offer = await peer.offer()
    await peer.close()
    audio = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"
    broken = offer["sdp"].replace("a=ice-ufrag", "a=x-ice-ufrag").replace("a=fingerprint", "a=x-fingerprint")
    for sdp in (audio, broken):
        status, answer = await post_offer(running.url(), {"type": "offer", "sdp": sdp})
        assert status == 400, answer
    assert running.plugin.stats()["signaling_400"] == 2
    assert not running.plugin.peers and running.plugin.pending == 0


async def test_an_offer_without_dtls_fingerprint_or_ice_credentials_gets_400(stack: Any) -> None:
    """aiortc would answer these and then fail in a task nobody awaits (an AssertionError
    logged as "Task exception was never retrieved"); the fuzzer found them."""
    running = await stack(APP)
    peer = ClientPeer(("chat",))
    offer = await peer.offer()
    await peer.close()
    lines = offer["sdp"].split("\r\n")
    no_fingerprint = "\r\n".join(line for line in lines if not line.startswith("a=fingerprint"))
    no_password = "\r\n".join(line for line in lines if not line.startswith("a=ice-pwd"))
    for sdp, error in ((no_fingerprint, "no DTLS fingerprint"), (no_password, "no ICE credentials")):
        status, answer = await post_offer(running.url(), {"type": "offer", "sdp": sdp})
        assert status == 400 and error in answer["error"], answer
    assert not running.plugin.peers and running.plugin.pending == 0


async def test_oversized_offer_gets_413(stack: Any) -> None:
    running = await stack(APP, max_signaling_size=1024)
    status, _, body = await http(running.url(), b'{"type": "offer", "sdp": "' + b"a" * 5000 + b'"}')
    assert status == 413
    assert "larger than 1024" in json.loads(body)["error"]
    assert running.plugin.stats()["signaling_413"] == 1


async def test_methods_and_origins(stack: Any) -> None:
    running = await stack(APP, allowed_origins=["https://app.example.com"])
    status, headers, _ = await http(running.url(), method="GET", headers={})
    assert status == 405 and headers["allow"] == "POST, OPTIONS"
    offer = b'{"type": "offer", "sdp": "x"}'
    status, _, body = await http(running.url(), offer, headers={"origin": "https://evil.example.net"})
    assert status == 403 and json.loads(body) == {"error": "origin not allowed"}
    # A listed origin gets CORS headers (here the offer itself is bad: 400, still with CORS).
    status, headers, _ = await http(running.url(), offer, headers={"origin": "https://app.example.com"})
    assert status == 400 and headers["access-control-allow-origin"] == "https://app.example.com"
    status, headers, _ = await http(running.url(), method="OPTIONS", headers={"origin": "https://app.example.com"})
    assert status == 204 and "POST" in headers["access-control-allow-methods"]
    # The gateway's own host is always allowed (a page it serves), without CORS headers.
    host = running.base_url.removeprefix("http://")
    status, headers, _ = await http(running.url(), offer, headers={"origin": f"http://{host}"})
    assert status == 400 and "access-control-allow-origin" not in headers
    stats = running.plugin.stats()
    assert stats["signaling_405"] == 1 and stats["signaling_403"] == 1


async def test_max_peers_gets_503(stack: Any, peers: list[ClientPeer]) -> None:
    running = await stack(APP, max_peers=1)
    peers.append(await connect_peer(running.url()))
    second = ClientPeer(("chat",))
    status, answer = await post_offer(running.url(), await second.offer())
    await second.close()
    assert status == 503 and "too many peers" in answer["error"]
    assert running.plugin.stats()["signaling_503_max_peers"] == 1


async def test_websocket_signaling(stack: Any, peers: list[ClientPeer]) -> None:
    running = await stack(APP)
    ws_url = running.url().replace("http://", "ws://")
    peer = ClientPeer(("chat",))
    peers.append(peer)
    async with ws_connect(ws_url) as socket:
        await socket.send("not json")
        assert json.loads(await socket.recv()) == {"type": "error", "status": 400, "error": "the body is not JSON"}
        await socket.send(json.dumps(await peer.offer()))
        answer = json.loads(await socket.recv())
    assert answer["type"] == "answer"
    await peer.accept(answer)
    await peer.wait_open()
    assert await peer.receive("chat") == "open chat"
    peer.channels["chat"].send("over ws")
    assert await peer.receive("chat") == "chat:OVER WS"


async def test_consumer_mistakes_are_counted_drops(stack: Any, peers: list[ClientPeer]) -> None:
    running = await stack(APP, max_message_size=4096)
    peer = await connect_peer(running.url())
    peers.append(peer)
    assert await peer.receive("chat") == "open chat"
    chat = peer.channels["chat"]
    chat.send("!to nowhere")  # an unknown label
    chat.send("!big 5000")  # over max_message_size
    channel = peer_channel(running)
    for bad in (
        {"type": "webrtc.datachannel.send", "label": "chat"},  # neither text nor bytes
        {"type": "webrtc.datachannel.send", "label": "chat", "text": "a", "bytes": b"b"},
        {"type": "webrtc.connect"},  # wrong direction
        {"type": "webrtc.bogus"},
    ):
        await running.layer.send(channel, bad)
    chat.send("after")
    assert await peer.receive("chat") == "chat:AFTER"
    stats = running.plugin.stats()
    assert stats["send_dropped_unknown_label"] == 1
    assert stats["send_dropped_oversize"] == 1
    assert stats["replies_invalid"] == 4
    assert await peer.nothing_within("chat", 0.1)


async def test_max_message_size_is_advertised_and_enforced(stack: Any, peers: list[ClientPeer]) -> None:
    running = await stack(APP, max_message_size=1000)
    peer = await connect_peer(running.url())
    peers.append(peer)
    assert await peer.receive("chat") == "open chat"
    chat = peer.channels["chat"]
    with pytest.raises(ValueError, match="up to 1000 bytes"):
        chat.send("x" * 1001)  # the answer's a=max-message-size made aiortc refuse it
    # A peer that ignores the advertised limit: the gateway drops and counts its message.
    sctp = peer.pc.sctp
    assert sctp is not None
    sctp._remote_max_message_size = 0
    chat.send("y" * 1001)
    chat.send("fits")
    assert await peer.receive("chat") == "chat:FITS"
    assert running.plugin.stats()["messages_dropped_oversize"] == 1


async def test_channel_limits(stack: Any, peers: list[ClientPeer]) -> None:
    running = await stack(APP, max_channels=3)
    peer = await connect_peer(running.url(), labels=("one", "two"))
    peers.append(peer)
    duplicate = peer.pc.createDataChannel("one")  # not registered: the client keeps the first
    await wait_until(lambda: duplicate.readyState == "closed", what="duplicate label refused")
    third = peer.add_channel("three")
    await peer.wait_open("three")
    fourth = peer.add_channel("four")
    await wait_until(lambda: fourth.readyState == "closed", what="fourth channel refused")
    stats = running.plugin.stats()
    assert stats["channels_refused_duplicate"] == 1 and stats["channels_refused_limit"] == 1
    assert stats["channels_opened"] == 3
    assert third.readyState == "open"
    # The first "one" still works and still answers on its own label.
    assert await peer.receive("one") == "open one"
    peer.channels["one"].send("ok")
    assert await peer.receive("one") == "one:OK"


async def test_connect_timeout_closes_a_peer_that_never_connects(stack: Any) -> None:
    running = await stack(APP, connect_timeout=0.3)
    peer = ClientPeer(("chat",))
    status, _ = await post_offer(running.url(), await peer.offer())
    assert status == 200  # the answer is never applied: the peer never connects
    await wait_until(lambda: running.plugin.stats()["peers"] == 0, what="connect timeout")
    await peer.close()
    stats = running.plugin.stats()
    assert stats["connect_timeouts"] == 1 and stats.get("peers_connected", 0) == 0
    assert EVENTS == []  # the consumer never heard of it


async def test_idle_timeout(stack: Any) -> None:
    running = await stack(APP, peer_idle_timeout=0.5)
    peer = await connect_peer(running.url())
    assert await peer.receive("chat") == "open chat"
    channel = peer_channel(running)
    await asyncio.wait_for(peer.closed.wait(), WAIT)
    await wait_until(lambda: ("disconnect", "idle_timeout") in events_of(channel), what="idle disconnect")
    assert running.plugin.stats()["idle_timeouts"] == 1
    await peer.close()


@pytest.mark.parametrize("layer", [{"channel_capacity": {"switchboard.webrtc": 1}}], indirect=True)
async def test_full_worker_pool_refuses_connect(stack: Any, layer: Any) -> None:
    """No worker and a full switchboard.webrtc: the peer is closed at once, counted."""
    await layer.send("switchboard.webrtc", {"type": "filler"})
    running = await stack(None)
    peer = ClientPeer(("chat",))
    status, answer = await post_offer(running.url(), await peer.offer())
    assert status == 200
    await peer.accept(answer)
    await asyncio.wait_for(peer.closed.wait(), WAIT)
    await wait_until(lambda: running.plugin.stats()["peers"] == 0, what="peer closed")
    assert running.plugin.stats()["events_full"] == 1
    await peer.close()


async def test_group_send_of_a_protocol_message_goes_straight_to_the_peer(stack: Any, peers: list[ClientPeer]) -> None:
    running = await stack(APP)
    peer = await connect_peer(running.url())
    peers.append(peer)
    assert await peer.receive("chat") == "open chat"
    await running.layer.group_send("webrtc-echo", {"type": "webrtc.datachannel.send", "label": "chat", "text": "to all"})
    assert await peer.receive("chat") == "to all"


async def test_stop_closes_every_peer(stack: Any) -> None:
    running = await stack(APP)
    first = await connect_peer(running.url())
    second = await connect_peer(running.url(), labels=("a", "b"))
    channels = [peer.connection.channel for peer in running.plugin.peers if peer.connection is not None]
    await wait_until(lambda: all(events_of(c)[-1:] != [] for c in channels), what="connect events")
    await running.plugin.stop(5.0)
    for peer in (first, second):
        await asyncio.wait_for(peer.closed.wait(), WAIT)
        await peer.close()
    await wait_until(lambda: all(("disconnect", "shutdown") in events_of(c) for c in channels), what="shutdown disconnects")
    assert running.plugin.stats()["peers"] == 0
    # The endpoint stays mounted while the http plugin drains, refusing new offers.
    status, _, body = await http(running.url(), b'{"type": "offer", "sdp": "v=0"}')
    assert status == 503 and json.loads(body) == {"error": "the gateway is stopping"}


async def test_a_vanished_peer_is_closed(stack: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The peer stops answering (crashed, network gone): ICE consent expires, the peer is closed."""
    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.05)
    monkeypatch.setattr(aioice.stun, "RETRY_RTO", 0.05)
    running = await stack(APP)
    peer = await connect_peer(running.url())
    assert await peer.receive("chat") == "open chat"
    channel = peer_channel(running)
    sctp = peer.pc.sctp
    assert sctp is not None
    for protocol in sctp.transport.transport._connection._protocols:  # silence the client's sockets
        protocol.transport.close()
    await wait_until(lambda: ("disconnect", "closed") in events_of(channel), what="disconnect")
    assert events_of(channel)[-2:] == [("channel_close", "chat"), ("disconnect", "closed")]
    assert running.plugin.stats()["peers"] == 0
    await peer.close()
