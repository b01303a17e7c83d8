"""WakePacer: a burst of waiting instances woken a slice per loop pass, in order.

What the worker relies on: no waiter is lost or woken twice, they wake in the order they
were handed events, at most a slice of them run per pass, and one that was cancelled
meanwhile (its instance ended) neither wakes nor uses up a place in the slice.
"""

from __future__ import annotations

import asyncio

import pytest

from switchboard.gateway.wake_pacer import WakePacer


async def _passes_until_woken(waiters: list[asyncio.Future[None]], passes: int = 20) -> list[list[int]]:
    """Which waiters (by index) became done in each loop pass from now on, pass by pass."""
    seen = {i for i, waiter in enumerate(waiters) if waiter.done()}
    rounds: list[list[int]] = []
    for _ in range(passes):
        await asyncio.sleep(0)
        newly = [i for i, waiter in enumerate(waiters) if waiter.done() and i not in seen]
        seen.update(newly)
        rounds.append(newly)
        if len(seen) == len(waiters):
            break
    return rounds


def _burst(slice_size: int, size: int) -> tuple[WakePacer, list[asyncio.Future[None]]]:
    """A pacer and ``size`` waiters handed to it in one go, as a group message does."""
    loop = asyncio.get_running_loop()
    pacer = WakePacer(loop, slice_size=slice_size)
    waiters: list[asyncio.Future[None]] = [loop.create_future() for _ in range(size)]
    for waiter in waiters:
        pacer.wake(waiter)
    return pacer, waiters


async def test_a_burst_wakes_a_slice_per_pass_in_order() -> None:
    pacer, waiters = _burst(4, 10)
    # The first slice wakes at once, as set_result would have.
    assert [i for i, w in enumerate(waiters) if w.done()] == [0, 1, 2, 3]
    rounds = [r for r in await _passes_until_woken(waiters) if r]
    assert rounds == [[4, 5, 6, 7], [8, 9]]
    assert all(w.result() is None for w in waiters)
    assert not pacer.held


async def test_a_quiet_worker_wakes_at_once() -> None:
    loop = asyncio.get_running_loop()
    pacer = WakePacer(loop, slice_size=4)
    for _ in range(3):  # one event now and then: never held
        waiter = loop.create_future()
        pacer.wake(waiter)
        assert waiter.done()
        await asyncio.sleep(0)
        await asyncio.sleep(0)


async def test_later_wakes_queue_behind_held_ones() -> None:
    """A waiter arriving while others are held goes after them, even if the slice has room."""
    pacer, first = _burst(2, 4)
    await asyncio.sleep(0)  # the next slice: 2 and 3 wake, the budget is spent
    assert all(w.done() for w in first)
    late = asyncio.get_running_loop().create_future()
    pacer.wake(late)
    assert not late.done()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert late.done()


async def test_a_cancelled_waiter_is_skipped_and_takes_no_place() -> None:
    _pacer, waiters = _burst(2, 5)
    waiters[2].cancel()
    rounds = [r for r in await _passes_until_woken(waiters) if r]
    # 2 was cancelled before its pass: its place in the second slice goes to 4.
    assert rounds == [[3, 4]]
    assert waiters[2].cancelled()
    assert waiters[3].result() is None and waiters[4].result() is None


async def test_the_same_waiter_handed_twice_wakes_once() -> None:
    """Two events for one held instance: its waiter is held twice, set once."""
    loop = asyncio.get_running_loop()
    pacer = WakePacer(loop, slice_size=1)
    a, b = loop.create_future(), loop.create_future()
    pacer.wake(a)
    pacer.wake(b)
    pacer.wake(b)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert a.done() and b.done() and not pacer.held


def test_a_slice_must_hold_one() -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError):
            WakePacer(loop, slice_size=0)
    finally:
        loop.close()
