"""One WebRTC attacker must not lock everyone out (issue 12, item 4), with real aiortc peers.

Before: 100 unauthenticated offers filled ``max_peers`` for 30 s (a peer holds its slot
until it connects or ``connect_timeout`` passes), and an offer naming 600 ICE candidates
made the gateway send STUN checks to every address in it. Now an offer passes a rate per
client address, a candidate cap and a per-address peer cap before it takes a slot (the
login requirement is tested end to end with the example site, tests/e2e). The attacker
signals from 127.0.0.1, the honest client from 127.0.0.2: both loopback addresses of this
machine, so the gateway sees two client addresses.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import socket
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.urls import path

from switchboard.consumers import ProtocolTypeRouter, URLRouter
from switchboard.protocols.webrtc import _IceLogLimiter

from .conftest import WAIT, ClientPeer, Stack, post_offer
from .webrtc_consumers import EchoConsumer

APP = ProtocolTypeRouter({"webrtc": URLRouter([path("webrtc/offer/test/echo/", EchoConsumer.as_asgi())])})
HONEST_ADDRESS = "127.0.0.2"


def loopback_alias_available() -> bool:
    try:
        with socket.socket() as sock:
            sock.bind((HONEST_ADDRESS, 0))
    except OSError:
        return False
    return True


needs_alias = pytest.mark.skipif(not loopback_alias_available(), reason=f"cannot bind {HONEST_ADDRESS}")


def _post_from(url: str, body: bytes, source: str) -> tuple[int, dict[str, str], Any]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=WAIT, source_address=(source, 0))
    try:
        connection.request("POST", parts.path, body, {"content-type": "application/json"})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), json.loads(response.read())
    finally:
        connection.close()


async def offer_from(url: str, offer: dict[str, str], source: str = "127.0.0.1") -> tuple[int, dict[str, str], Any]:
    """POST ``offer`` from the loopback address ``source``: ``(status, headers, document)``."""
    return await asyncio.to_thread(_post_from, url, json.dumps(offer).encode(), source)


async def honest_peer(url: str) -> ClientPeer:
    """A real peer signaling from the honest address, connected, its ``chat`` channel open."""
    peer = ClientPeer(("chat",))
    status, _, answer = await offer_from(url, await peer.offer(), HONEST_ADDRESS)
    assert status == 200, answer
    await peer.accept(answer)
    await peer.wait_open()
    return peer


@needs_alias
async def test_one_address_cannot_take_every_peer_slot(stack: Any, peers: list[ClientPeer]) -> None:
    # The defaults (max_peers 100, 10 per address, 2 offers/s in bursts of 20); a patient
    # signaling_timeout, so a loaded machine answers slowly rather than with 503.
    running: Stack = await stack(APP, signaling_timeout=120)
    attacker = ClientPeer(("chat",))
    offer = await attacker.offer()  # one real offer, sent again and again, never connected
    statuses = [(await offer_from(running.url(), offer))[0] for _ in range(100)]
    await attacker.close()
    assert statuses[:10] == [200] * 10
    assert set(statuses[10:]) == {429}
    stats = running.plugin.stats()
    assert stats["signaling_429_per_ip"] + stats["signaling_429_rate"] == 90
    assert running.plugin.peers_per_ip == {"127.0.0.1": 10}
    # The ten bogus peers still hold their slots (connect_timeout), yet the honest client
    # from another address gets a peer and talks to its consumer.
    peer = await honest_peer(running.url())
    peers.append(peer)
    assert await peer.receive("chat") == "open chat"
    peer.channels["chat"].send("hello")
    assert await peer.receive("chat") == "chat:HELLO"


async def test_offer_rate_per_address_gets_429_before_any_work(stack: Any) -> None:
    # A refill of one offer per 100 s: nothing comes back during the test.
    running: Stack = await stack(APP, max_offers_per_second_per_ip=0.01, offer_burst=3)
    garbage = {"type": "offer", "sdp": "not sdp"}
    answers = [await offer_from(running.url(), garbage) for _ in range(4)]
    assert [status for status, _, _ in answers] == [400, 400, 400, 429]
    _, headers, document = answers[-1]
    assert headers.get("retry-after") == "1" and "too many offers" in document["error"]
    assert running.plugin.stats()["signaling_429_rate"] == 1 and not running.plugin.peers


@needs_alias
async def test_offer_naming_600_candidates_gets_400_and_no_stun_is_sent(stack: Any, peers: list[ClientPeer]) -> None:
    running: Stack = await stack(APP)
    loop = asyncio.get_running_loop()
    victim_packets: list[bytes] = []
    victim, _ = await loop.create_datagram_endpoint(
        lambda: _Recorder(victim_packets), local_addr=("127.0.0.1", 0)
    )
    try:
        port = victim.get_extra_info("sockname")[1]
        attacker = ClientPeer(("chat",))
        offer = await attacker.offer()
        await attacker.close()
        lines = "".join(f"a=candidate:{i} 1 udp 2130706431 127.0.0.1 {port} typ host\r\n" for i in range(600))
        status, _, document = await offer_from(running.url(), {"type": "offer", "sdp": offer["sdp"] + lines})
        assert status == 400 and "ICE candidates; at most 20" in document["error"]
        assert running.plugin.stats()["signaling_400"] == 1 and not running.plugin.peers
        # The gateway keeps serving, and by the time an honest peer has connected through
        # ICE, a check sent to the victim (there was none: no agent was made) would be in.
        peer = await honest_peer(running.url())
        peers.append(peer)
        assert await peer.receive("chat") == "open chat"
        assert victim_packets == []
    finally:
        victim.close()


async def test_an_offer_at_the_candidate_cap_is_answered(stack: Any, peers: list[ClientPeer]) -> None:
    running: Stack = await stack(APP, max_offer_candidates=25)
    peer = ClientPeer(("chat",))
    peers.append(peer)
    offer = await peer.offer()
    already = offer["sdp"].count("a=candidate:")
    extra = "".join(f"a=candidate:x{i} 1 udp 1 192.0.2.1 9 typ host\r\n" for i in range(25 - already))
    status, answer = await post_offer(running.url(), {"type": "offer", "sdp": offer["sdp"] + extra})
    assert status == 200, answer


class _Recorder(asyncio.DatagramProtocol):
    def __init__(self, packets: list[bytes]) -> None:
        self.packets = packets

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.packets.append(data)


def test_aioice_lines_are_rate_limited_per_connection_and_say_what_was_held_back() -> None:
    now = [0.0]
    limiter = _IceLogLimiter(burst=5, rate=1.0, total_burst=8, total_rate=100.0)
    for bucket in (limiter.per_connection, limiter.total):
        bucket.clock = lambda: now[0]

    class Connection:  # what aioice passes first to every line of a connection
        pass

    first, second = Connection(), Connection()

    def line(connection: Connection, level: int = logging.INFO) -> logging.LogRecord:
        return logging.LogRecord("aioice.ice", level, __file__, 1, "%s Check %s", (connection, "pair"), None)

    assert [limiter.filter(line(first)) for _ in range(7)] == [True] * 5 + [False] * 2
    assert limiter.filter(line(first, logging.WARNING))  # warnings always pass
    records = [line(second) for _ in range(4)]
    assert [limiter.filter(record) for record in records] == [True] * 3 + [False]  # the total's burst: 8
    assert records[0].getMessage().endswith("(2 aioice lines held back before this one)")
    assert limiter.suppressed == 3
    now[0] = 2.0  # two seconds later: each bucket has two lines again
    record = line(first)
    assert limiter.filter(record)
    assert record.getMessage().endswith("(1 aioice lines held back before this one)")
