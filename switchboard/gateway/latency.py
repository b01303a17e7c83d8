"""Handler times: how long a worker's consumers take per event, as a fixed-bucket histogram.

Why buckets rather than a list of samples or a streaming quantile sketch: the worker pays
one ``bisect`` and one integer increment per event, the counts are cumulative (so any
reader, the console or Prometheus, can take the difference of two snapshots and get the
distribution of exactly that window) and they add across workers. The price is
resolution: a quantile is interpolated inside its bucket, as Prometheus'
``histogram_quantile`` does; the bounds below are about 2.5x apart.

What "handler time" means (gateway/worker.py, ``_Instance.receive``): from the moment
``receive()`` hands an event to the application until the application asks for its next
event from the same task, or ends. For a consumer that is the handler of that event; for
Django's HTTP handler (one event, then the response) it is the whole request.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import Final

#: Upper bounds (seconds) of the buckets; one more bucket counts everything above the last.
BOUNDS: Final = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class HandlerTimes:
    """Cumulative counts of handler times in :data:`BOUNDS` buckets, plus their sum."""

    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BOUNDS) + 1)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BOUNDS, seconds)] += 1
        self.total += seconds

    def as_list(self) -> list[int]:
        return list(self.counts)


def quantile(counts: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile (0..1) of a bucket histogram, interpolated in its bucket; None if empty.

    A value in the open last bucket is reported as the last bound (all we know is "above").
    """
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            if index >= len(BOUNDS):
                return BOUNDS[-1]
            low = BOUNDS[index - 1] if index else 0.0
            return low + (BOUNDS[index] - low) * max(rank - seen, 0.0) / count
        seen += count
    return BOUNDS[-1]


def difference(now: Sequence[int], before: Sequence[int] | None) -> list[int]:
    """Per-bucket counts between two cumulative snapshots (a restarted process: ``now``)."""
    if before is None or len(before) != len(now) or any(b > n for b, n in zip(before, now)):
        return list(now)
    return [n - b for n, b in zip(now, before)]
