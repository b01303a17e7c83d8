"""The storage contract a channel layer backend implements.

The layer core (:mod:`switchboard.gateway.layers.core`) owns everything that must behave
the same on every backend: name checks, serialization, expiry, group fan-out bucketing and
process-local demultiplexing. A backend only stores opaque items in bounded FIFO lists and
group memberships, so the in-memory and Redis layers cannot drift apart in semantics.

Items are ``bytes`` (msgpack, packed by the core). Keys are channel names, or for
process-local channels the shared prefix ``"name!"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Storage(Protocol):
    """Bounded FIFO lists plus group memberships; see module docstring."""

    #: True when cancelling a :meth:`pop` in flight can never lose items (the in-memory
    #: backend). Readers then stop at once instead of waiting out the block timeout.
    pop_cancel_safe: bool

    async def push(self, key: str, item: bytes, capacity: int, ttl: float) -> bool:
        """Append ``item`` to list ``key`` unless it already holds ``capacity`` items.

        Returns False (and stores nothing) when full. ``ttl`` is how long the list may live
        untouched; the backend may drop the whole list after that. Must be one round trip.
        """
        ...

    async def push_many(self, batch: Sequence[tuple[str, bytes, int]], ttl: float) -> list[bool]:
        """Push several ``(key, item, capacity)`` at once; one result per entry, in order.

        Used by group sends, so a backend should batch per server (one round trip each).
        """
        ...

    def partition(self, keys: Sequence[str]) -> list[list[str]]:
        """Split ``keys`` into groups that one :meth:`pop` call can wait on together."""
        ...

    async def pop(self, keys: Sequence[str], count: int, timeout: float) -> tuple[str, list[bytes]] | None:
        """Wait up to ``timeout`` seconds for items on any of ``keys`` (one partition).

        Returns up to ``count`` items from the first non-empty key, oldest first, or None on
        timeout. Items returned are removed (at-most-once delivery).
        """
        ...

    async def contains(self, key: str, item: bytes) -> bool:
        """Whether ``item`` is still in list ``key``, not read yet.

        O(length of the list): for rare checks only (the gateway asks it when a worker's
        claim is late, to tell "no worker has read it yet" from "a reader lost it").
        """
        ...

    async def lengths(self, keys: Sequence[str]) -> list[int]:
        """How many items each list holds now (0 for a missing list), in order.

        For operators' views (the console's backlog table), not the hot path: one round
        trip per server.
        """
        ...

    async def ping(self) -> list[tuple[str, float | None]]:
        """Each server's name (credentials stripped) and one round trip's seconds, or None if it failed."""
        ...

    async def group_add(self, group: str, channel: str, now: float, expiry: float) -> None:
        """Add or refresh ``channel`` in ``group`` at time ``now``."""
        ...

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``; absent members are not an error."""
        ...

    async def group_members(self, group: str, now: float, expiry: float) -> list[str]:
        """Members added within ``expiry`` seconds of ``now``; older ones are removed."""
        ...

    async def flush(self) -> None:
        """Delete every list and group this storage holds (tests, resets)."""
        ...

    async def close(self) -> None:
        """Release connections; the storage is unusable afterwards."""
        ...
