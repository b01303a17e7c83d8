"""In-memory storage: the embedded default for one-process mode and tests.

It stores the same packed items as the Redis backend, so serialization, capacity and
expiry behave identically; only the process boundary is missing. All calls must come from
one event loop (asgiref's ``async_to_sync`` in worker threads runs them on that loop).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Sequence


class MemoryStorage:
    """Bounded FIFO lists and group memberships in process memory."""

    # Items leave a list only in the synchronous part of pop(), so cancelling is safe.
    pop_cancel_safe = True

    def __init__(self) -> None:
        self._lists: dict[str, collections.deque[bytes]] = {}
        self._touched: dict[str, float] = {}
        self._groups: dict[str, dict[str, float]] = {}
        self._waiters: dict[str, set[asyncio.Future[None]]] = collections.defaultdict(set)
        self._last_sweep = time.monotonic()

    def _wake(self, key: str) -> None:
        waiters = self._waiters.get(key)
        if not waiters:
            return
        for future in waiters:
            if not future.done():
                future.set_result(None)
                break

    def _sweep(self, ttl: float) -> None:
        """Drop lists untouched for ``ttl`` seconds, like Redis key expiry would."""
        now = time.monotonic()
        if now - self._last_sweep < 1.0:
            return
        self._last_sweep = now
        for key in [k for k, t in self._touched.items() if now - t > ttl]:
            self._lists.pop(key, None)
            self._touched.pop(key, None)

    async def push(self, key: str, item: bytes, capacity: int, ttl: float) -> bool:
        self._sweep(ttl)
        queue = self._lists.get(key)
        if queue is None:
            queue = self._lists[key] = collections.deque()
        if len(queue) >= capacity:
            return False
        queue.append(item)
        self._touched[key] = time.monotonic()
        self._wake(key)
        return True

    async def push_many(self, batch: Sequence[tuple[str, bytes, int]], ttl: float) -> list[bool]:
        return [await self.push(key, item, capacity, ttl) for key, item, capacity in batch]

    def partition(self, keys: Sequence[str]) -> list[list[str]]:
        return [list(keys)] if keys else []

    async def pop(self, keys: Sequence[str], count: int, timeout: float) -> tuple[str, list[bytes]] | None:
        deadline = time.monotonic() + timeout
        while True:
            for key in keys:
                queue = self._lists.get(key)
                if queue:
                    items = [queue.popleft() for _ in range(min(count, len(queue)))]
                    if queue:
                        self._wake(key)  # let another reader of this key take the rest
                    return key, items
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            for key in keys:
                self._waiters[key].add(future)
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

    async def group_members(self, group: str, now: float, expiry: float) -> list[str]:
        members = self._groups.get(group)
        if not members:
            return []
        cutoff = now - expiry
        stale = [channel for channel, added in members.items() if added < cutoff]
        for channel in stale:
            del members[channel]
        return list(members)

    async def flush(self) -> None:
        self._lists.clear()
        self._touched.clear()
        self._groups.clear()

    async def close(self) -> None:
        await self.flush()
