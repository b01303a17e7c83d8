"""The one token bucket (gateway/ratelimit.py) on a clock the test moves.

The WebSocket message rate (``websocket_max_messages_per_second``) uses it directly, UDP
and WebRTC through :class:`PeerRateLimiter`; the socket tests never wait long enough to
see a refill, so the arithmetic is pinned here.
"""

from __future__ import annotations

from switchboard.gateway.ratelimit import TokenBucket


def test_a_full_bucket_allows_its_burst_then_refuses() -> None:
    bucket = TokenBucket(rate=0.001, burst=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]


def test_it_refills_at_the_rate_and_never_past_the_burst() -> None:
    bucket = TokenBucket(rate=2.0, burst=4, now=10.0)
    assert [bucket.take(10.0) for _ in range(5)] == [True] * 4 + [False]
    assert [bucket.take(11.0) for _ in range(3)] == [True, True, False]  # one second: two tokens
    assert [bucket.take(100.0) for _ in range(5)] == [True] * 4 + [False]  # capped at the burst


def test_a_refused_take_keeps_the_fraction_earned() -> None:
    """Refusing does not reset the refill: half a token plus half a token is one message."""
    bucket = TokenBucket(rate=1.0, burst=1, now=0.0)
    assert bucket.take(0.0)
    assert not bucket.take(0.5)
    assert bucket.take(1.0)
