"""Wake a burst of application instances a slice per event-loop pass, not all at once.

A worker hands each event to its instance's queue; the instance's task, waiting in
``receive()``, is woken through a future, and asyncio runs every task woken in one loop
pass in the *next* pass, before any callback that the woken tasks schedule themselves.
So when one event fans out to many instances (a group message to the 100 members of a
room, all on this worker) all 100 handlers run in a single pass, and the layer's send
batcher (which flushes with ``call_soon``) can push their replies only after the last
of them: the gateway gets nothing to write until the whole burst is done, and the first
member waits as long as the last.

:class:`WakePacer` wakes at most :data:`WAKE_SLICE` waiting instances per pass and the
rest in the passes after, in the order their events came. The queues are still filled
at once and in order (no instance sees its messages in another order, and two group
messages reach every member in the same order); only *when* each handler runs moves,
by at most a pass per slice. The batcher's first flush then leaves after the first
slice, and the gateway writes the first replies while the worker runs the rest.

Only where replies wait for a batch (a layer that ``batches_sends``: Redis) and only for
messages handed over in process (``Worker._deliver_local``: the group fan-out case); the
events of many clients read in one batch are independent and stay one reply batch. Split
mode, alternating runs with and without (docs/benchmarks.md, Issue 14): room fan-out in
a closed loop 1.13x deliveries/s for 100 members and 1.08x for 1,000, p50 0.78x and
0.75x, CPU per delivery unchanged; at a fixed rate (10,000 deliveries/s) p50 0.94x and
p99 0.97x, for about a fifth more CPU per delivery (a burst is a few stored items, not one).
"""

from __future__ import annotations

import asyncio
import collections

#: Instances woken per loop pass: small enough that the first replies of a burst leave
#: early, large enough that a burst costs a handful of batches (and Redis pushes), not
#: one per instance. 8, 16 and 32 measured alike on a fan-out of 100; waking all at
#: once (no pacer) measured worse.
WAKE_SLICE = 16


class WakePacer:
    """Sets waiters' results at most ``slice_size`` per loop pass, first come first woken.

    One per worker loop. :meth:`wake` replaces ``waiter.set_result(None)``; a waiter that
    is cancelled (its instance ended) while held is skipped.
    """

    __slots__ = ("budget", "held", "loop", "scheduled", "slice_size")

    def __init__(self, loop: asyncio.AbstractEventLoop, slice_size: int = WAKE_SLICE) -> None:
        if slice_size < 1:
            raise ValueError(f"slice_size must be >= 1, got {slice_size!r}")
        self.loop = loop
        self.slice_size = slice_size
        self.budget = slice_size
        self.held: collections.deque[asyncio.Future[None]] = collections.deque()
        self.scheduled = False

    def wake(self, waiter: asyncio.Future[None]) -> None:
        """Wake ``waiter`` in this pass if the slice has room and nothing is held, else later."""
        if self.budget > 0 and not self.held:
            self.budget -= 1
            waiter.set_result(None)
        else:
            self.held.append(waiter)
        if not self.scheduled:
            self.scheduled = True
            self.loop.call_soon(self._next_slice)

    def _next_slice(self) -> None:
        """A new pass: a full slice again, spent first on the waiters held longest."""
        self.scheduled = False
        self.budget = self.slice_size
        held = self.held
        while held and self.budget > 0:
            waiter = held.popleft()
            if not waiter.done():
                self.budget -= 1
                waiter.set_result(None)
        if held:
            self.scheduled = True
            self.loop.call_soon(self._next_slice)
