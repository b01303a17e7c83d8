"""gunicorn settings of ``gunicorn-gthread-pinned``: each worker held to one CPU.

The pinned systems measure what the kernel's placement of processes costs on 2 cores
(docs/benchmarks.md, issue 14): gunicorn has no setting for it, so a ``post_fork`` hook
gives worker 1 CPU 0, worker 2 CPU 1, and a replacement the CPU of the worker it replaces
(``worker.age`` counts the workers spawned; the bench's never die).
"""

from __future__ import annotations

import os
from typing import Any


def post_fork(server: Any, worker: Any) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[(worker.age - 1) % len(cpus)]})
