"""Waiting for a condition in tests: one helper, one deadline knob, for every suite.

Tests run on a busy 2-core machine: a condition that holds in 50 ms when the machine is
idle may take seconds under load. So a test never sleeps a fixed time and hopes; it waits
*until* the condition holds, with a deadline that is only a safety net (a broken path fails
the test instead of hanging it), never a speed check.

Every deadline is scaled by ``SWITCHBOARD_TEST_TIMEOUT_SCALE`` (default 1): on a slower
machine, raise that one knob instead of editing timeouts or weakening what a test asserts.

* :func:`deadline` — a suite's timeout, scaled (``WAIT = deadline(10)``).
* :func:`wait_until` — poll a cheap predicate on the running loop.
* :func:`wait_until_sync` — the same from plain (non-async) test code.
* :func:`eventually` — run a blocking check in a thread until it returns something truthy
  (an HTTP probe, a file read), and return that value.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["DEFAULT_WAIT", "deadline", "eventually", "wait_until", "wait_until_sync"]

T = TypeVar("T")


def _scale() -> float:
    raw = os.environ.get("SWITCHBOARD_TEST_TIMEOUT_SCALE", "1")
    try:
        scale = float(raw)
    except ValueError:
        raise RuntimeError(f"SWITCHBOARD_TEST_TIMEOUT_SCALE must be a number, got {raw!r}") from None
    if not scale > 0:
        raise RuntimeError(f"SWITCHBOARD_TEST_TIMEOUT_SCALE must be > 0, got {raw!r}")
    return scale


def deadline(seconds: float) -> float:
    """``seconds`` scaled by the suite-wide knob: use it for every safety-net timeout."""
    return seconds * _scale()


#: The default safety net: generous, because it only decides how long a broken test hangs.
DEFAULT_WAIT = deadline(20.0)


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout: float | None = None,
    what: str = "condition",
    *,
    interval: float = 0.02,
) -> None:
    """Poll ``predicate`` (sync, or async returning bool) until it holds.

    ``timeout`` is in unscaled seconds (None: :data:`DEFAULT_WAIT`); it is scaled here.
    """
    limit = DEFAULT_WAIT if timeout is None else deadline(timeout)
    end = time.monotonic() + limit
    while True:
        result = predicate()
        if asyncio.iscoroutine(result) or isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {limit:.1f}s waiting for {what}")
        await asyncio.sleep(interval)


def wait_until_sync(
    predicate: Callable[[], bool], timeout: float | None = None, what: str = "condition", *, interval: float = 0.05
) -> None:
    """:func:`wait_until` for code that is not on an event loop."""
    limit = DEFAULT_WAIT if timeout is None else deadline(timeout)
    end = time.monotonic() + limit
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {limit:.1f}s waiting for {what}")
        time.sleep(interval)


async def eventually(check: Callable[[], T], what: str, timeout: float | None = None, *, interval: float = 0.05) -> T:
    """Run the blocking ``check`` in a thread until it returns something truthy; return it.

    ``OSError`` counts as "not yet" (a server not listening yet); the last value or error
    is named in the failure.
    """
    limit = DEFAULT_WAIT if timeout is None else deadline(timeout)
    end = time.monotonic() + limit
    last: Any = None
    while True:
        try:
            last = await asyncio.to_thread(check)
        except OSError as exc:
            last = exc
        else:
            if last:
                return last  # type: ignore[no-any-return]
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {limit:.1f}s waiting for {what}; last: {last!r}")
        await asyncio.sleep(interval)
