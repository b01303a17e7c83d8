"""The storage contract a channel layer backend implements.

The layer core (:mod:`switchboard.gateway.layers.core`) owns everything that must behave
the same on every backend: name checks, serialization, expiry, group fan-out bucketing and
process-local demultiplexing. A backend only stores opaque items in bounded FIFO lists and
group memberships, so the in-memory and Redis layers cannot drift apart in semantics.

Items are ``bytes`` (msgpack, packed by the core). Keys are channel names, or for
process-local channels the shared prefix ``"name!"``.

Every list is bounded twice: by ``capacity`` items and by ``max_bytes`` bytes of items.
The count alone does not bound memory (300 one-megabyte requests are 300 items); the bytes
alone would let a flood of tiny items grow a list without end. A backend checks both and
appends in one atomic step, so concurrent writers can never overshoot either bound.

Markers (``mark``/``unmark``) are small expiring keys for de-duplication shared by every
process on the storage.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

#: One push of a batch: ``(key, item, capacity, max_bytes)``; ``max_bytes`` None is no byte bound.
PushEntry = tuple[str, bytes, int, int | None]


class Storage(Protocol):
    """Bounded FIFO lists, group memberships and expiring markers; see module docstring."""

    #: True when cancelling a :meth:`pop` in flight can never lose items (the in-memory
    #: backend). Readers then stop at once instead of waiting out the block timeout.
    pop_cancel_safe: bool

    #: Pushes refused because the list's bytes would pass ``max_bytes`` (a subset of the
    #: refusals push and push_many report as False), for the layer's ``full_bytes`` counter.
    refused_bytes: int

    async def push(self, key: str, item: bytes, capacity: int, ttl: float, max_bytes: int | None = None) -> bool:
        """Append ``item`` to list ``key`` unless it already holds ``capacity`` items or
        ``item`` would take its items past ``max_bytes`` bytes (None: no byte bound).

        Returns False (and stores nothing) when full. ``ttl`` is how long the list may live
        untouched; the backend may drop the whole list after that. Must be one round trip.
        """
        ...

    async def push_many(self, batch: Sequence[PushEntry], ttl: float) -> list[bool]:
        """Push several ``(key, item, capacity, max_bytes)`` at once; one result per entry, in order.

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

    async def wake(self, readers: Sequence[asyncio.Task[Any]]) -> None:
        """End the blocking :meth:`pop` calls these tasks wait in, as if their timeout passed.

        Must never lose an item (a pop that has taken items returns them). Lets a reader
        that is stopping stop now instead of after ``timeout``; storages whose pops are
        cancel-safe (``pop_cancel_safe``) may do nothing, their readers are cancelled.
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

    async def group_add_many(self, memberships: Sequence[tuple[str, Sequence[str]]], now: float, expiry: float) -> None:
        """:meth:`group_add` of every ``(group, channels)``, batched per server.

        How a gateway re-adds its connections' memberships (after the server lost them)
        and refreshes them before ``expiry``: one round trip per server, not per member.
        """
        ...

    async def group_discard_many(self, memberships: Sequence[tuple[str, Sequence[str]]]) -> None:
        """:meth:`group_discard` of every ``(group, channels)``, batched per server."""
        ...

    async def keep_marker(self, name: str, ttl: float) -> bool:
        """Set or renew the marker ``name`` (for ``ttl`` seconds) wherever this storage
        keeps data; True when it was missing anywhere: that data was lost (a restart
        without persistence, a flush), or ``ttl`` passed since the last renewal.
        """
        ...

    async def group_members(self, group: str, now: float, expiry: float) -> list[str]:
        """Members added within ``expiry`` seconds of ``now``; older ones are removed."""
        ...

    async def mark(self, key: str, ttl: float) -> bool:
        """Set marker ``key`` for ``ttl`` seconds unless it is set: True when this call set it.

        Atomic across every process sharing the storage (Redis ``SET NX PX``), so of
        several gateways seeing the same event exactly one gets True. The marker expires
        by itself; markers are a namespace of their own, apart from lists and groups.
        """
        ...

    async def unmark(self, key: str) -> None:
        """Remove marker ``key`` (absent is not an error)."""
        ...

    async def flush(self) -> None:
        """Delete every list, group and marker this storage holds (tests, resets)."""
        ...

    async def close(self) -> None:
        """Release connections; the storage is unusable afterwards."""
        ...
