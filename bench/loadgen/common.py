"""What every load generator shares: the stdout line protocol, latency summaries, the loop.

Each stdout line is one JSON object with an ``event`` key:

- ``{"event": "measure_start"}`` when warm-up is over and counting begins,
- ``{"event": "measure_end"}`` when counting stops (before connections are closed),
- ``{"event": "result", "data": {...}}`` last, with the numbers.

Anything a generator wants to say to a human goes to stderr.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
from collections.abc import Coroutine, Sequence
from typing import Any


def emit(event: str, **data: Any) -> None:
    """Write one protocol line and flush, so the harness sees it at once."""
    sys.stdout.write(json.dumps({"event": event, **data}) + "\n")
    sys.stdout.flush()


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values (NaN when empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def summarize_ns(latencies_ns: list[int], seconds: float) -> dict[str, float | int]:
    """Count, rate and latency percentiles (milliseconds) of one measured window."""
    values = sorted(latencies_ns)
    count = len(values)
    to_ms = 1e-6
    return {
        "count": count,
        "seconds": seconds,
        "rate": count / seconds if seconds > 0 else 0.0,
        "mean_ms": (sum(values) / count) * to_ms if count else math.nan,
        "p50_ms": percentile(values, 0.50) * to_ms,
        "p90_ms": percentile(values, 0.90) * to_ms,
        "p99_ms": percentile(values, 0.99) * to_ms,
        "max_ms": (values[-1] * to_ms) if count else math.nan,
    }


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop when installed (as the servers may), else plain asyncio."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)
