"""Fuzz: UDP datagrams of random content and size, oversize included.

Why: a UDP socket cannot refuse a datagram, so the gateway's only defences are its size
limit and its bounded queue; every datagram must end in exactly one counter
(specs/udp.md, "Outcomes") and a bad one must never cost the socket. Each input is
followed by a 1-byte probe: a datagram within ``max_datagram_size`` must be answered
(``ack:<size>``) before the probe, an oversize one must not be answered at all.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from rel_clients import udp_socket
from rel_fuzz import assert_no_reply_channel, end_batch, fuzz_settings
from rel_harness import UDP_MAX_DATAGRAM, FuzzLedger, FuzzTarget

from switchboard.protocols.udp import INBOUND_OUTCOMES

# 65507 is the largest IPv4 UDP payload the kernel lets us send.
SIZES = st.one_of(st.integers(0, 64), st.integers(0, UDP_MAX_DATAGRAM), st.integers(UDP_MAX_DATAGRAM - 2, UDP_MAX_DATAGRAM + 2),
                  st.integers(UDP_MAX_DATAGRAM + 1, 65507))


@st.composite
def datagram(draw: st.DrawFn) -> bytes:
    """A datagram of a drawn size (around and over the limit too) filled with a drawn pattern."""
    size = draw(SIZES)
    pattern = draw(st.binary(min_size=1, max_size=64))
    return (pattern * (size // len(pattern) + 1))[:size]


def test_random_datagrams_are_answered_or_counted_as_drops(fuzz_target: FuzzTarget, fuzz_ledger: FuzzLedger) -> None:
    """Within the limit: answered; over it: dropped and counted; the socket keeps serving."""
    fuzz_target.begin()
    before = fuzz_target.stats("udp")
    sent = {"oversize": 0, "valid": 0}
    sock = udp_socket()

    @fuzz_settings(200)
    @given(data=datagram())
    def one(data: bytes) -> None:
        sock.sendto(data, fuzz_target.udp_address)
        sock.sendto(b"P", fuzz_target.udp_address)
        first, _ = sock.recvfrom(65535)
        assert_no_reply_channel(first, "a UDP reply")
        if len(data) > UDP_MAX_DATAGRAM:
            sent["oversize"] += 1
            assert first == b"ack:1", f"an oversize datagram ({len(data)} bytes) was answered: {first!r}"
            fuzz_ledger.record("udp", fuzz_target.name, "over max_datagram_size: dropped, counted")
            return
        sent["valid"] += 1
        assert first == b"ack:%d" % len(data)
        second, _ = sock.recvfrom(65535)
        assert second == b"ack:1"
        fuzz_ledger.record("udp", fuzz_target.name, "within the limit: answered")

    try:
        one()
    finally:
        sock.close()
    after = fuzz_target.stats("udp")
    if before is not None and after is not None:
        assert after["dropped_oversize"] - before["dropped_oversize"] == sent["oversize"]
        assert after["messages_in"] == after.get("queued", 0) + sum(after[name] for name in INBOUND_OUTCOMES)
        assert after["socket_errors"] == before["socket_errors"]
    end_batch(fuzz_target, fuzz_ledger)
