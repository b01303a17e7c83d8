"""In-memory storage: the embedded default for one-process mode and tests.

It stores the same packed items as the Redis backend, so serialization, capacity and
expiry behave identically; only the process boundary is missing. Calls must come from one
thread at a time (asgiref's ``async_to_sync`` in worker threads runs them on the outer
loop); they may come from several event loops one after another, as tests and
``async_to_sync`` without an outer loop do: a reader left waiting on a loop that has
since closed is skipped, never woken.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Sequence
from typing import Any

from .storage import PushEntry


class MemoryStorage:
    """Bounded FIFO lists and group memberships in process memory."""

    # Items leave a list only in the synchronous part of pop(), so cancelling is safe.
    pop_cancel_safe = True

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        #: Seconds for what this storage expires by itself: idle lists, ``keep_marker``
        #: names and ``mark`` keys (Redis does it with key TTLs). Injectable so expiry
        #: tests advance a fake clock instead of sleeping. A reader's wait in ``pop`` is
        #: real time on the event loop and does not use it.
        self.clock = clock
        # A list exists while it holds items or has a reader waiting on it (as Channels'
        # in-memory layer's channels do), so an idle process keeps no empty lists around.
        self._lists: dict[str, collections.deque[bytes]] = {}
        # Bytes of the items each list holds now (the byte bound of push).
        self._bytes: dict[str, int] = {}
        self.refused_bytes = 0
        self._touched: dict[str, float] = {}
        self._groups: dict[str, dict[str, float]] = {}
        # keep_marker's names and mark's keys, apart as on Redis (marker: / mark:).
        self._process_markers: dict[str, float] = {}  # name -> when it expires (clock)
        self._waiters: dict[str, set[asyncio.Future[None]]] = collections.defaultdict(set)
        self._last_sweep = clock()
        self._ttl = 60.0
        self._markers: dict[str, float] = {}  # key -> when it expires (clock)
        self._last_marker_sweep = self._last_sweep

    def _wake(self, key: str) -> None:
        waiters = self._waiters.get(key)
        if not waiters:
            return
        for future in list(waiters):
            if future.get_loop().is_closed():
                # Its reader's loop is gone (a closed async_to_sync or test loop): waking
                # it would raise in this, unrelated, sender.
                waiters.discard(future)
                continue
            if not future.done():
                future.set_result(None)
                break

    def _sweep(self, interval: float) -> None:
        """Drop lists untouched for ``ttl`` seconds (every item in them has expired).

        Redis expires such keys by itself; here the check runs at most every ``interval``.
        Lists a reader waits on stay: it holds them.
        """
        now = self.clock()
        if now - self._last_sweep < interval:
            return
        self._last_sweep = now
        ttl = self._ttl
        for key in [k for k, t in self._touched.items() if now - t > ttl and not self._waiters.get(k)]:
            self._lists.pop(key, None)
            self._bytes.pop(key, None)
            self._touched.pop(key, None)

    def _drop_if_idle(self, key: str, queue: collections.deque[bytes]) -> None:
        if not queue and not self._waiters.get(key) and self._lists.get(key) is queue:
            del self._lists[key]
            self._bytes.pop(key, None)
            self._touched.pop(key, None)

    async def push(self, key: str, item: bytes, capacity: int, ttl: float, max_bytes: int | None = None) -> bool:
        return self.push_now(key, item, capacity, ttl, max_bytes)

    def push_now(self, key: str, item: bytes, capacity: int, ttl: float, max_bytes: int | None = None) -> bool:
        """:meth:`push`, done before it returns: the layer's ``send_soon`` queues with it at the call."""
        self._ttl = ttl
        self._sweep(1.0)
        queue = self._lists.get(key)
        if queue is None:
            queue = self._lists[key] = collections.deque()
            self._bytes[key] = 0
        if len(queue) >= capacity:
            return False
        held = self._bytes.get(key, 0)
        if max_bytes is not None and held + len(item) > max_bytes:
            self.refused_bytes += 1
            return False
        queue.append(item)
        self._bytes[key] = held + len(item)
        self._touched[key] = self.clock()
        self._wake(key)
        return True

    async def push_many(self, batch: Sequence[PushEntry], ttl: float) -> list[bool]:
        return [await self.push(key, item, capacity, ttl, max_bytes) for key, item, capacity, max_bytes in batch]

    def partition(self, keys: Sequence[str]) -> list[list[str]]:
        return [list(keys)] if keys else []

    async def pop(self, keys: Sequence[str], count: int, timeout: float) -> tuple[str, list[bytes]] | None:
        # At most once a second, as Redis key expiry works in whole seconds: the two
        # backends drop an unread list of expired items at the same point.
        self._sweep(1.0)
        deadline = time.monotonic() + timeout
        # The lists waited on: a list removed while a reader waits (a flush, a sweep, a
        # test deleting it) still hands over what was pushed to it before.
        held: dict[str, collections.deque[bytes]] = {}
        while True:
            for key in keys:
                for queue in (self._lists.get(key), held.get(key)):
                    if queue:
                        items = [queue.popleft() for _ in range(min(count, len(queue)))]
                        if self._lists.get(key) is queue:  # a list dropped meanwhile has no account
                            self._bytes[key] = self._bytes.get(key, 0) - sum(map(len, items))
                        if queue:
                            self._wake(key)  # let another reader of this key take the rest
                        else:
                            self._drop_if_idle(key, queue)
                        return key, items
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            for key in keys:
                self._waiters[key].add(future)
                held[key] = self._lists.setdefault(key, collections.deque())
            try:
                await asyncio.wait_for(future, remaining)
            except TimeoutError:
                pass
            finally:
                for key in keys:
                    waiters = self._waiters.get(key)
                    if waiters is not None:
                        waiters.discard(future)
                        if not waiters:
                            del self._waiters[key]
                    queue = self._lists.get(key)
                    if queue is not None:
                        self._drop_if_idle(key, queue)

    async def wake(self, readers: Sequence[asyncio.Task[Any]]) -> None:
        """Nothing to do: pops here are cancel-safe, so stopping readers are cancelled."""

    async def contains(self, key: str, item: bytes) -> bool:
        return item in self._lists.get(key, ())

    async def lengths(self, keys: Sequence[str]) -> list[int]:
        return [len(self._lists.get(key) or ()) for key in keys]

    async def ping(self) -> list[tuple[str, float | None]]:
        return [("memory", 0.0)]

    async def group_add(self, group: str, channel: str, now: float, expiry: float) -> None:
        self._groups.setdefault(group, {})[channel] = now

    async def group_discard(self, group: str, channel: str) -> None:
        members = self._groups.get(group)
        if members is not None:
            members.pop(channel, None)
            if not members:
                del self._groups[group]

    async def group_add_many(self, memberships: Sequence[tuple[str, Sequence[str]]], now: float, expiry: float) -> None:
        for group, channels in memberships:
            if channels:
                members = self._groups.setdefault(group, {})
                for channel in channels:
                    members[channel] = now

    async def group_discard_many(self, memberships: Sequence[tuple[str, Sequence[str]]]) -> None:
        for group, channels in memberships:
            for channel in channels:
                await self.group_discard(group, channel)

    async def keep_marker(self, name: str, ttl: float) -> bool:
        now = self.clock()
        expires = self._process_markers.get(name)
        self._process_markers[name] = now + ttl
        return expires is None or expires < now

    async def group_members(self, group: str, now: float, expiry: float) -> list[str]:
        members = self._groups.get(group)
        if not members:
            return []
        cutoff = now - expiry
        stale = [channel for channel, added in members.items() if added < cutoff]
        for channel in stale:
            del members[channel]
        return list(members)

    async def mark(self, key: str, ttl: float) -> bool:
        now = self.clock()
        if now - self._last_marker_sweep >= 1.0:
            # At most once a second, like Redis' own expiry: memory stays bounded by the
            # markers set within one TTL.
            self._last_marker_sweep = now
            for stale in [k for k, expires in self._markers.items() if expires <= now]:
                del self._markers[stale]
        expires = self._markers.get(key)
        if expires is not None and expires > now:
            return False
        self._markers[key] = now + ttl
        return True

    async def unmark(self, key: str) -> None:
        self._markers.pop(key, None)

    async def flush(self) -> None:
        self._lists.clear()
        self._bytes.clear()
        self._touched.clear()
        self._groups.clear()
        self._process_markers.clear()
        self._markers.clear()

    async def close(self) -> None:
        await self.flush()
