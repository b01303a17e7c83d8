"""A stand-in worker for the supervisor's tests: says it is serving, then waits for SIGTERM.

Run by :class:`switchboard.gateway.supervisor.WorkerSupervisor` as its command, so the
supervisor's rules (start-up failure, restart, stop, replacement) are tested with real
processes and real signals, without Django. What it does is set by its environment:

- ``CHILD_EVENTS``: the file it appends ``<event> <slot> <pid>`` lines to, ``started``,
  ``ready`` (it told the supervisor it is serving), ``stopped`` (SIGTERM ended it) and
  ``failed`` (it exits before it is ready), in the order they happen across processes.
- ``CHILD_FAIL_SLOT``: the process of that slot fails with exit code 3.
- ``CHILD_FAIL_FLAG``: while this file exists, every new process fails with exit code 4
  (a bad deploy).
- ``CHILD_IGNORE_TERM=1``: SIGTERM is ignored (a worker stuck in a view).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from switchboard.gateway import supervisor


def event(name: str) -> None:
    with open(os.environ["CHILD_EVENTS"], "a") as events:  # O_APPEND: one line, one write
        events.write(f"{name} {supervisor.child_index()} {os.getpid()}\n")


def main() -> int:
    event("started")
    flag = os.environ.get("CHILD_FAIL_FLAG")
    if os.environ.get("CHILD_FAIL_SLOT") == str(supervisor.child_index()):
        event("failed")
        return 3
    if flag and Path(flag).exists():
        event("failed")
        return 4
    stopped: list[int] = []
    if os.environ.get("CHILD_IGNORE_TERM") == "1":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGTERM, lambda signum, _frame: stopped.append(signum))
    event("ready")  # before the supervisor hears it, so the file keeps the order of what follows
    supervisor.notify_ready()
    while not stopped:
        time.sleep(0.02)
    event("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
