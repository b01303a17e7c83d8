"""A token bucket per client address, bounded in memory: what the plugins rate-limit with.

The UDP plugin limits datagrams per peer with it, the WebRTC plugin offers per client.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["PeerRateLimiter"]


class PeerRateLimiter:
    """A token bucket per peer address, at most ``max_peers`` of them.

    Keyed by the IP alone: one host can pick any number of source ports, so a bucket per
    (IP, port) would not limit anything. Buckets live in an LRU order (an ``OrderedDict``,
    O(1) per datagram); past ``max_peers`` the least recently seen is dropped. A bucket
    idle for ``burst / rate`` seconds has refilled and is the same as a new one, so
    forgetting it costs nothing; forgetting a busier one forgives its debt, which is why
    eviction is counted and ``max_peers`` should exceed the number of peers active at once.
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
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()  # host -> [tokens, at]

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
            self._buckets[host] = [self.burst - 1.0, now]
            return True
        self._buckets.move_to_end(host)
        tokens = min(self.burst, bucket[0] + (now - bucket[1]) * self.rate)
        bucket[1] = now
        if tokens < 1.0:
            bucket[0] = tokens
            return False
        bucket[0] = tokens - 1.0
        return True
