"""Where the benchmark's handlers record what they did: one file per process, a line each.

A line is ``<key> <sent> <started> <ended>`` (Unix times; sent is 0 when unknown). The
orchestrator counts lines to know when a run is done and reads them for latencies. The
cost (one buffered write per message) is the same for every system measured.
"""

from __future__ import annotations

import os
import time
from typing import IO

_out: IO[str] | None = None


def record(key: object, sent: float, started: float) -> None:
    global _out
    if _out is None:
        directory = os.environ["BENCH_OUT"]
        _out = open(os.path.join(directory, f"{os.getpid()}.log"), "a", buffering=1)
    _out.write(f"{key} {sent:.6f} {started:.6f} {time.time():.6f}\n")
