"""Token buckets: the one rate limiter every plugin uses, pure (no I/O, the clock injectable).

:class:`TokenBucket` is one bucket (a WebSocket's messages per second);
:class:`PeerRateLimiter` keeps a bucket per client address, bounded in memory (UDP
datagrams per peer, WebRTC offers per address, aioice log lines per connection).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["PeerRateLimiter", "TokenBucket"]


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second; each allowed event takes one.

    Time is passed in (``take(now)``) rather than read here, so one bucket works with the
    event loop's clock, ``time.monotonic`` or a test's, and costs no system call of its own.
    ``__slots__``: a gateway may hold one per open WebSocket.
    """

    __slots__ = ("at", "burst", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = self.burst
        self.at = now

    def take(self, now: float) -> bool:
        """Take one token at time ``now``; False (and nothing taken) when the bucket is empty."""
        tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True


class PeerRateLimiter:
    """A :class:`TokenBucket` per peer address, at most ``max_peers`` of them.

    Keyed by the IP alone: one host can pick any number of source ports, so a bucket per
    (IP, port) would not limit anything. Buckets live in an LRU order (an ``OrderedDict``,
    O(1) per event); past ``max_peers`` the least recently seen is dropped. A bucket idle
    for ``burst / rate`` seconds has refilled and is the same as a new one, so forgetting
    it costs nothing; forgetting a busier one forgives its debt, which is why eviction is
    counted (``on_evict``) and ``max_peers`` should exceed the number of peers active at once.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        max_peers: int,
        on_evict: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_peers = max_peers
        self.on_evict = on_evict
        self.clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, host: str) -> bool:
        """Take one token from ``host``'s bucket; False when it is empty."""
        now = self.clock()
        bucket = self._buckets.get(host)
        if bucket is None:
            if len(self._buckets) >= self.max_peers:
                self._buckets.popitem(last=False)
                self.on_evict()
            bucket = self._buckets[host] = TokenBucket(self.rate, self.burst, now)
        else:
            self._buckets.move_to_end(host)
        return bucket.take(now)
