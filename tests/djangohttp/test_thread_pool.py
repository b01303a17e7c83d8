"""The Django pool's concurrency: as many threads running as the GIL can use.

The controller is a pure machine, tested with numbers; the pool with real threads, whose
view of the process's CPU use is given by the test (a CPU clock that stands still says
"the running threads are blocked", one that runs with the wall clock says "the GIL is
busy"), so what it decides does not depend on how loaded the machine is.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.waiting import deadline, wait_until_sync

from djangohttp.conftest import Req, run_asgi
from switchboard.consumers import django_http
from switchboard.consumers.thread_pool import AdaptiveThreadPool, ConcurrencyController

WAIT = deadline(30)


def ticks(controller: ConcurrencyController, usage: list[float], waiting: int, start: float = 100.0) -> list[int]:
    """Feed one tick per period at the given CPU use (cores); the active count after each."""
    now, cpu = start, 0.0
    controller.observe(now, cpu, waiting)
    seen = []
    for used in usage:
        now += controller.period
        cpu += used * controller.period
        seen.append(controller.observe(now, cpu, waiting))
    return seen


def test_starts_at_min_active_and_grows_one_per_period_while_work_waits_and_the_cpu_is_idle() -> None:
    controller = ConcurrencyController(8)
    assert controller.active == 2
    assert ticks(controller, [0.1] * 8, waiting=5) == [3, 4, 5, 6, 7, 8, 8, 8]


def test_does_not_grow_without_waiting_work() -> None:
    controller = ConcurrencyController(8)
    assert ticks(controller, [0.0] * 5, waiting=0) == [2] * 5


def test_shrinks_to_min_active_while_the_process_uses_a_whole_core() -> None:
    controller = ConcurrencyController(8, active=8)
    assert ticks(controller, [1.0] * 8, waiting=40) == [7, 6, 5, 4, 3, 2, 2, 2]


def test_between_the_thresholds_it_stays() -> None:
    controller = ConcurrencyController(8, active=5)
    assert ticks(controller, [0.98] * 4, waiting=10) == [5] * 4


def test_ticks_closer_than_a_period_change_nothing() -> None:
    controller = ConcurrencyController(8)
    controller.observe(10.0, 0.0, 5)
    assert controller.observe(10.05, 0.0, 5) == 2
    assert not controller.due(10.05) and controller.due(10.1)
    assert controller.observe(10.1, 0.0, 5) == 3
    assert controller.observed == 1


def test_one_thread_is_one_thread() -> None:
    controller = ConcurrencyController(1)
    assert controller.active == 1
    assert ticks(controller, [0.0, 1.0], waiting=3) == [1, 1]
    with pytest.raises(ValueError, match="max_threads"):
        ConcurrencyController(0)


@given(
    max_threads=st.integers(1, 16),
    min_active=st.integers(1, 4),
    steps=st.lists(st.tuples(st.floats(0, 3), st.integers(0, 50), st.floats(0, 0.3)), max_size=60),
)
def test_active_stays_in_bounds_and_moves_by_at_most_one(
    max_threads: int, min_active: int, steps: list[tuple[float, int, float]]
) -> None:
    controller = ConcurrencyController(max_threads, min_active=min_active)
    low = min(min_active, max_threads)
    now, cpu = 0.0, 0.0
    before = controller.active
    for used, waiting, elapsed in steps:
        now += elapsed
        cpu += used * elapsed
        after = controller.observe(now, cpu, waiting)
        assert low <= after <= max_threads
        assert abs(after - before) <= 1
        if after > before:
            assert waiting > 0
        before = after


class Running:
    """Work that counts how many run at once and blocks until released."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0
        self.release = threading.Event()

    def __call__(self, value: int) -> int:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            assert self.release.wait(WAIT)
            return value
        finally:
            with self.lock:
                self.now -= 1


def test_blocked_threads_make_room_for_more_up_to_max_threads() -> None:
    """Eight views that can only finish together (a barrier): the pool must grow to eight."""
    pool = AdaptiveThreadPool(8, cpu_clock=lambda: 0.0)  # the process is idle: threads are blocked
    barrier = threading.Barrier(8, timeout=WAIT)
    try:
        futures = [pool.submit(barrier.wait) for _ in range(8)]
        assert sorted(f.result(WAIT) for f in futures) == list(range(8))
        assert pool.active == 8
    finally:
        pool.shutdown(wait=True)


def test_a_busy_gil_keeps_the_pool_at_min_active() -> None:
    pool = AdaptiveThreadPool(8, cpu_clock=time.monotonic)  # a whole core used, always
    work = Running()
    try:
        futures = [pool.submit(work, n) for n in range(10)]
        wait_until_sync(lambda: work.now == 2, WAIT, "two views running")
        observed = pool.controller.observed
        wait_until_sync(lambda: pool.controller.observed >= observed + 5, WAIT, "five more looks at the CPU")
        assert work.now == 2 and pool.active == 2
        work.release.set()
        assert [f.result(WAIT) for f in futures] == list(range(10))
        assert work.most == 2
    finally:
        work.release.set()
        pool.shutdown(wait=True)


def test_work_is_taken_in_order_and_errors_go_to_the_future() -> None:
    pool = AdaptiveThreadPool(1)
    order: list[int] = []

    def fail() -> None:
        raise RuntimeError("view failed")

    try:
        futures = [pool.submit(order.append, n) for n in range(3)]
        failed = pool.submit(fail)
        after = pool.submit(order.append, 3)
        with pytest.raises(RuntimeError, match="view failed"):
            failed.result(WAIT)
        after.result(WAIT)
        assert all(f.done() for f in futures) and order == [0, 1, 2, 3]
    finally:
        pool.shutdown(wait=True)


def test_run_soon_runs_in_order_and_a_raising_call_is_logged_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    """``run_soon`` has no future: what it runs reports by itself, and a raise only logs."""
    pool = AdaptiveThreadPool(1)
    order: list[int] = []
    done = threading.Event()

    def fail() -> None:
        raise RuntimeError("view failed")

    try:
        for n in range(3):
            pool.run_soon(order.append, n)
        pool.run_soon(fail)
        pool.run_soon(order.append, 3)
        pool.run_soon(done.set)
        assert done.wait(WAIT)
        assert order == [0, 1, 2, 3]
        assert any("view failed" in (record.exc_text or "") for record in caplog.records)
    finally:
        pool.shutdown(wait=True)


def test_shutdown_runs_the_queued_work_then_refuses_more() -> None:
    pool = AdaptiveThreadPool(4, cpu_clock=time.monotonic)
    work = Running()
    futures = [pool.submit(work, n) for n in range(6)]
    wait_until_sync(lambda: work.now == 2, WAIT, "two views running")
    stopper = threading.Thread(target=pool.shutdown, kwargs={"wait": True})
    stopper.start()
    with pytest.raises(RuntimeError, match="shutting down"):
        wait_until_sync(lambda: pool._stopping, WAIT, "the pool to stop taking work")
        pool.submit(work, 99)
    work.release.set()
    stopper.join(WAIT)
    assert not stopper.is_alive()
    assert [f.result(0) for f in futures] == list(range(6))


async def test_the_worker_process_reports_its_django_pool(site: Any, runtime: Any) -> None:
    """What the observer copies into the metrics (switchboard_worker_django_*)."""
    runtime("auto", threads=3)
    handlers = site()
    assert (await run_asgi(handlers.ours, Req(path="/hello/"))).status == 200
    figures = django_http.RUNTIME.figures()
    assert figures is not None
    assert figures["threads"] == 3 and 2 <= figures["running"] <= 3 and figures["waiting"] == 0
