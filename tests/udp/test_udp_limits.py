"""The UDP plugin's per-peer rate limit, with real sockets from several loopback addresses.

Peers are plain ``socket`` module sockets bound to 127.0.0.1, 127.0.0.2 and 127.0.0.3
(Linux routes all of 127/8 to loopback), so the gateway sees distinct source addresses.
Nothing is timed: the rate is set so low (one token per 1,000 s) that no bucket refills
during a test, and waits poll the plugin's counters with a safety net.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from support.waiting import wait_until

from switchboard.gateway.config import ConfigError
from switchboard.gateway.plugins import build_plugins
from switchboard.protocols.udp import PeerRateLimiter

from .conftest import WAIT, assert_counts_add_up, udp_options
from .test_udp_plugin import upper_app

NEVER_REFILLS = 0.001  # datagrams per second: one token per 1,000 s


class Peer:
    """A blocking UDP socket on one loopback address (receives run in a thread)."""

    def __init__(self, host: str) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(WAIT)

    def send(self, data: bytes, address: tuple[str, int]) -> None:
        self.sock.sendto(data, address)

    async def receive(self) -> bytes:
        data, _ = await asyncio.to_thread(self.sock.recvfrom, 65535)
        return data

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def peers() -> Iterator[Any]:
    """``peers(host)`` opens a :class:`Peer`; all are closed after the test."""
    opened: list[Peer] = []

    def open_peer(host: str) -> Peer:
        try:
            peer = Peer(host)
        except OSError as exc:
            pytest.skip(f"cannot bind {host}: {exc}")
        opened.append(peer)
        return peer

    yield open_peer
    for peer in opened:
        peer.close()


async def test_peer_over_its_rate_is_dropped_and_counted_others_are_served(stack: Any, peers: Any) -> None:
    running = await stack(app=upper_app, max_datagrams_per_second_per_peer=NEVER_REFILLS,
                          max_datagram_burst_per_peer=3)
    flooder = peers("127.0.0.1")
    for n in range(10):
        flooder.send(b"flood %d" % n, running.address)
    await wait_until(lambda: running.plugin.stats()["messages_in"] == 10, what="the flood to be read")
    stats = running.plugin.stats()
    assert stats["dropped_rate_limited"] == 7 and stats["rate_limit_peers"] == 1
    # The burst (the first three read) went through and was answered, in any order: the
    # plugin's layer senders run concurrently.
    assert {await flooder.receive() for _ in range(3)} == {b"FLOOD 0", b"FLOOD 1", b"FLOOD 2"}

    # The bucket is per address, not per socket: another port of the same host shares it.
    same_host = peers("127.0.0.1")
    same_host.send(b"other port", running.address)
    await wait_until(lambda: running.plugin.stats()["dropped_rate_limited"] == 8, what="the same host's drop")

    # Another address has its own bucket: the gateway keeps serving it.
    other = peers("127.0.0.2")
    other.send(b"hello", running.address)
    assert await other.receive() == b"HELLO"

    await wait_until(lambda: running.plugin.stats()["messages_out"] == 4, what="four answers")
    stats = running.plugin.stats()
    assert stats["messages_in"] == 12 and stats["delivered"] == 4 and stats["dropped_rate_limited"] == 8
    assert stats["rate_limit_peers"] == 2 and stats["rate_limit_evictions"] == 0
    assert_counts_add_up(stats)


async def test_tracked_peers_are_capped_and_forgetting_fails_open(stack: Any, peers: Any) -> None:
    running = await stack(app=upper_app, max_datagrams_per_second_per_peer=NEVER_REFILLS,
                          max_datagram_burst_per_peer=1, max_tracked_peers=2)
    one, two, three = peers("127.0.0.1"), peers("127.0.0.2"), peers("127.0.0.3")

    async def send(peer: Peer, total: int) -> None:
        """Send one datagram and wait until the plugin has read it (keeps the order exact)."""
        peer.send(b"x", running.address)
        await wait_until(lambda: running.plugin.stats()["messages_in"] == total, what=f"datagram {total}")

    await send(one, 1)  # tracked: 1
    await send(two, 2)  # tracked: 1, 2
    await send(one, 3)  # 1's bucket is empty: dropped (1 is now the most recent)
    assert running.plugin.stats()["dropped_rate_limited"] == 1
    await send(three, 4)  # the cap: 2, least recently seen, is forgotten
    stats = running.plugin.stats()
    assert stats["rate_limit_evictions"] == 1 and stats["rate_limit_peers"] == 2
    await send(one, 5)  # still tracked, still empty: dropped
    await send(two, 6)  # forgotten, so a full bucket again: delivered (evicts 3)
    await wait_until(lambda: running.plugin.stats()["messages_out"] == 4, what="four answers")
    stats = running.plugin.stats()
    assert stats["delivered"] == 4 and stats["dropped_rate_limited"] == 2
    assert stats["rate_limit_evictions"] == 2 and stats["rate_limit_peers"] == 2
    assert_counts_add_up(stats)


async def test_limit_is_off_by_default(stack: Any, peers: Any) -> None:
    running = await stack(app=upper_app)
    assert running.plugin.limiter is None
    peer = peers("127.0.0.1")
    for n in range(20):
        peer.send(b"%d" % n, running.address)
    answers = {await peer.receive() for _ in range(20)}
    assert answers == {b"%d" % n for n in range(20)}
    stats = running.plugin.stats()
    assert stats["dropped_rate_limited"] == 0 and stats["rate_limit_peers"] == 0


def test_burst_defaults_to_one_seconds_worth() -> None:
    assert udp_options(max_datagrams_per_second_per_peer=250).peer_burst == 250
    assert udp_options(max_datagrams_per_second_per_peer=2.5).peer_burst == 3
    assert udp_options(max_datagrams_per_second_per_peer=0.1).peer_burst == 1
    assert udp_options(max_datagrams_per_second_per_peer=10, max_datagram_burst_per_peer=50).peer_burst == 50


def test_bucket_refills_at_the_rate_up_to_the_burst() -> None:
    """The arithmetic, on a clock the test moves (the socket tests above never refill)."""
    now = [100.0]
    limiter = PeerRateLimiter(rate=2.0, burst=4, max_peers=10, clock=lambda: now[0])
    assert [limiter.allow("a") for _ in range(5)] == [True] * 4 + [False]
    now[0] += 1.0  # two tokens back
    assert [limiter.allow("a") for _ in range(3)] == [True, True, False]
    now[0] += 60.0  # refills to the burst, not beyond
    assert [limiter.allow("a") for _ in range(5)] == [True] * 4 + [False]
    assert limiter.allow("b")  # another peer is untouched
    assert len(limiter) == 2


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"max_datagrams_per_second_per_peer": 0}, "max_datagrams_per_second_per_peer must be above 0"),
        ({"max_datagrams_per_second_per_peer": -1}, "max_datagrams_per_second_per_peer"),
        ({"max_datagrams_per_second_per_peer": "fast"}, "max_datagrams_per_second_per_peer"),
        ({"max_datagram_burst_per_peer": 10}, "needs max_datagrams_per_second_per_peer"),
        ({"max_datagrams_per_second_per_peer": 10, "max_datagram_burst_per_peer": 0}, "max_datagram_burst_per_peer"),
        ({"max_tracked_peers": 0}, "max_tracked_peers must be between 1"),
    ],
)
def test_bad_rate_options_fail_before_start(options: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        build_plugins({"udp": {"bind": ["127.0.0.1:0"], **options}})
