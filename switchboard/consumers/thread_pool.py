"""The worker's pool for sync Django views: as many threads running as the GIL can use.

A process runs Python on one core at a time (the GIL). Threads that wait on I/O (a
database, an outside API) give it up, so a pool needs several of them to keep the core
busy while some wait; threads that only compute take turns at the GIL, and every turn
between threads on different cores is a futex sleep and a wake-up across cores. Measured
on a 2-core VM (docs/benchmarks.md, *Issue 14*): `switchboard run` serving a plain
``JsonResponse`` with 8 pool threads went from ~0.07 to 1-1.7 voluntary context switches
per request in three of four runs, and its CPU per request from ~500 to 650-1,100 us;
with 2 threads it never did. ``concurrent.futures.ThreadPoolExecutor`` starts every one of
its threads as soon as requests queue up, so it cannot have both.

:class:`AdaptiveThreadPool` keeps ``max_threads`` threads but lets only the first
:attr:`~ConcurrencyController.active` of them take work. :class:`ConcurrencyController`, a
pure machine fed the time and the process's CPU time, moves that number, in the spirit of
TCP Vegas and Netflix's concurrency-limits:

* **grow** by one when work is waiting and the process used less than ``grow_below`` of a
  core since the last look: the running threads are waiting on something, not on the GIL;
* **shrink** by one when the process used more than ``shrink_above`` of a core: the GIL is
  the limit, and another thread would only queue for it;
* never below ``min_active`` nor above ``max_threads``; it looks at most every ``period``.

The band is narrow on purpose: a process that waits for nothing uses a whole core (a plain
view on 2 threads: 1.01 cores, counting the kernel's work for its sockets), while one
whose threads wait on PostgreSQL now and then idles a few per cent of the time (the
``/db/`` view of the bench on 2 threads: 0.95), and those are the cases to tell apart.
On a machine whose cores are taken by other processes the process gets less than a core
whatever it does, the pool grows to ``max_threads``, and it serves as a fixed pool would.

Threads pull from one FIFO queue themselves, so a busy thread goes from one request to the
next without the event loop in between (a gate on the loop side measured worse than fewer
threads: every request then waited for a loop pass).
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger("switchboard.django_http")

#: How often the pool looks at the process's CPU use, in seconds.
PERIOD = 0.1
_EPSILON = 1e-9  # so that 10.1 - 10.0 counts as a whole period


@dataclass
class ConcurrencyController:
    """How many pool threads may run: a pure machine, no threads, no clock of its own.

    :meth:`observe` is called with the monotonic time, the process's CPU time (both in
    seconds) and how many items wait in the queue; it returns the new number of active
    threads (or the same). Ticks closer than ``period`` to the last counted one change
    nothing, so callers may call it as often as they like.
    """

    max_threads: int
    min_active: int = 2
    period: float = PERIOD
    grow_below: float = 0.97
    shrink_above: float = 0.99
    active: int = 0
    #: Ticks counted so far (each at least ``period`` after the one before).
    observed: int = 0
    _last_at: float | None = None
    _last_cpu: float = 0.0

    def __post_init__(self) -> None:
        if self.max_threads < 1:
            raise ValueError(f"max_threads must be >= 1, got {self.max_threads!r}")
        self.min_active = max(1, min(self.min_active, self.max_threads))
        if not self.active:
            self.active = self.min_active
        self.active = max(self.min_active, min(self.active, self.max_threads))

    def due(self, now: float) -> bool:
        """Whether a tick at ``now`` would be counted (cheap: no CPU clock needed)."""
        return self._last_at is None or now - self._last_at + _EPSILON >= self.period

    def observe(self, now: float, cpu: float, waiting: int) -> int:
        if self._last_at is None:
            self._last_at, self._last_cpu = now, cpu
            return self.active
        elapsed = now - self._last_at
        if elapsed + _EPSILON < self.period:
            return self.active
        used = (cpu - self._last_cpu) / elapsed
        self._last_at, self._last_cpu = now, cpu
        self.observed += 1
        if used > self.shrink_above and self.active > self.min_active:
            self.active -= 1
        elif waiting > 0 and used < self.grow_below and self.active < self.max_threads:
            self.active += 1
        return self.active


_Work = tuple["Future[Any] | None", Callable[..., Any], tuple[Any, ...]]
_STOP = None


class AdaptiveThreadPool:
    """``max_threads`` threads taking work from one queue, as many of them at once as
    :class:`ConcurrencyController` allows.

    :meth:`submit` and :meth:`shutdown` as on a ``ThreadPoolExecutor``, whose behaviour it
    keeps where the Django path relies on it: FIFO, work still queued at :meth:`shutdown`
    is run, and at interpreter exit the process waits for running work to return.
    """

    def __init__(
        self,
        max_threads: int,
        *,
        min_active: int = 2,
        name: str = "switchboard-django",
        clock: Callable[[], float] = time.monotonic,
        cpu_clock: Callable[[], float] = time.process_time,
    ) -> None:
        self.controller = ConcurrencyController(max_threads, min_active=min_active)
        self.name = name
        self._clock = clock
        self._cpu_clock = cpu_clock
        self._queue: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._changed = threading.Condition(threading.Lock())
        self._threads: list[threading.Thread] = []
        self._stopping = False
        _LIVE.add(self)

    @property
    def active(self) -> int:
        """How many threads may take work now."""
        return self.controller.active

    @property
    def max_threads(self) -> int:
        return self.controller.max_threads

    @property
    def waiting(self) -> int:
        """Work submitted and not yet taken by a thread."""
        return self._queue.qsize()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """Run ``fn(*args)`` in a pool thread; its result or exception in the returned future."""
        future: Future[Any] = Future()
        self._put((future, fn, args))
        return future

    def run_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` in a pool thread, for a caller that hears back by itself.

        No :class:`~concurrent.futures.Future` (with its condition and lock) per call: a
        Django request reports to its event loop directly (``call_soon_threadsafe``), and
        ``fn`` must catch what it raises: an exception that escapes is logged and dropped.
        """
        self._put((None, fn, args))

    def _put(self, work: _Work) -> None:
        if self._stopping:
            raise RuntimeError("cannot submit to a pool that is shutting down")
        if not self._threads:
            self._start_threads()
        self._queue.put(work)
        self._look()

    def shutdown(self, wait: bool = False) -> None:
        """Stop taking work; the queued work runs first. ``wait``: join the threads."""
        with self._changed:
            if self._stopping:
                threads = list(self._threads)
            else:
                self._stopping = True
                threads = list(self._threads)
                for _ in threads:
                    self._queue.put(_STOP)
                self._changed.notify_all()
        if wait:
            for thread in threads:
                if thread is not threading.current_thread():
                    thread.join()

    # -- threads --------------------------------------------------------------------

    def _start_threads(self) -> None:
        with self._changed:
            if self._threads or self._stopping:
                return
            for index in range(self.controller.max_threads):
                # Daemon, joined by the exit hook below: a parked thread would otherwise
                # hold the interpreter's own join of non-daemon threads for ever.
                thread = threading.Thread(target=self._run, args=(index,), name=f"{self.name}_{index}", daemon=True)
                self._threads.append(thread)
                thread.start()

    def _run(self, index: int) -> None:
        while True:
            self._wait_turn(index)
            work = self._queue.get()
            if work is _STOP:
                return
            future, fn, args = work
            if future is None:
                try:
                    fn(*args)
                except BaseException:
                    logger.exception("work run in %s raised", threading.current_thread().name)
            elif future.set_running_or_notify_cancel():
                try:
                    result = fn(*args)
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del work, future, fn, args
            self._look()

    def _wait_turn(self, index: int) -> None:
        """Park while this thread is beyond the active ones (not once the pool stops: then
        every thread helps run out the queue, up to its sentinel).

        The first parked thread wakes every period to look at the CPU use, so the pool
        grows while every active thread is blocked (on a database, a lock, each other).
        """
        if index < self.controller.active:
            return
        with self._changed:
            while index >= self.controller.active and not self._stopping:
                first_parked = index == self.controller.active
                self._changed.wait(self.controller.period if first_parked else None)
                if first_parked:
                    self._look_locked()

    def _look(self) -> None:
        if not self.controller.due(self._clock()):
            return
        with self._changed:
            self._look_locked()

    def _look_locked(self) -> None:
        before = self.controller.active
        after = self.controller.observe(self._clock(), self._cpu_clock(), self._queue.qsize())
        if after > before:
            self._changed.notify_all()


_LIVE: weakref.WeakSet[AdaptiveThreadPool] = weakref.WeakSet()


@atexit.register
def _join_at_exit() -> None:
    """Let running views return before the interpreter goes, as a WSGI server's graceful stop."""
    for pool in list(_LIVE):
        pool.shutdown(wait=True)
