"""Durable channels in process memory: Redis Streams' consumer-group semantics in one process.

The in-memory layer serves one-process mode (``switchboard run``) and tests, where there
is no other worker to take over and nothing survives the process. What it keeps is the
*behaviour* a consumer sees: a message stays stored until the handler returned, a handler
that raises gets it again after a backoff with a higher delivery count, and a message
that keeps failing ends in the dead letters. Same packed items, same capacity check, same
claim rules as ``streams_redis.py``, so a project's durable consumers are tested here
exactly as they will run on Redis.

All calls come from one event loop (like :class:`~.memory.MemoryStorage`).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .durable import PARKED, DeadLetter, StreamEntry, event_id_for


@dataclass(slots=True)
class _Pending:
    consumer: str
    delivered: float  # monotonic time of the last delivery
    count: int


@dataclass
class _Stream:
    # Every stored message (unread or pending): entry id -> (item, event id or None).
    entries: dict[str, tuple[bytes, str | None]] = field(default_factory=dict)
    unread: collections.deque[str] = field(default_factory=collections.deque)
    pending: dict[str, _Pending] = field(default_factory=dict)


class MemoryStreams:
    """Durable channels of a :class:`~.memory.MemoryStorage` (see module docstring)."""

    def __init__(self) -> None:
        self._streams: dict[str, _Stream] = {}
        self._dead: dict[str, dict[str, DeadLetter]] = {}
        self._waiters: set[asyncio.Future[None]] = set()
        self._last_ms = 0
        self._seq = 0

    def _next_id(self) -> str:
        """Ids shaped and ordered like Redis stream ids: ``<unix ms>-<sequence>``."""
        now = int(time.time() * 1000)
        if now > self._last_ms:
            self._last_ms, self._seq = now, 0
        else:
            self._seq += 1
        return f"{self._last_ms}-{self._seq}"

    def _stream(self, channel: str) -> _Stream:
        stream = self._streams.get(channel)
        if stream is None:
            stream = self._streams[channel] = _Stream()
        return stream

    def _wake(self) -> None:
        for future in self._waiters:
            if not future.done():
                future.set_result(None)

    # -- Messages ---------------------------------------------------------------------

    async def add_many(
        self, batch: Sequence[tuple[str, bytes, int, str | None]], replicas: int, replica_timeout: float
    ) -> tuple[list[str | None], int]:
        results: list[str | None] = []
        for channel, item, capacity, event_id in batch:
            stream = self._stream(channel)
            if len(stream.entries) >= capacity:
                results.append(None)
                continue
            entry = self._next_id()
            stream.entries[entry] = (item, event_id)
            stream.unread.append(entry)
            results.append(entry)
        if any(result is not None for result in results):
            self._wake()
        # One process has no replicas: a "replicated" channel cannot be satisfied here.
        return results, 0

    def partition(self, channels: Sequence[str]) -> list[list[str]]:
        return [list(channels)] if channels else []

    def _entry(self, channel: str, stream: _Stream, entry: str, count: int) -> StreamEntry:
        item, event_id = stream.entries[entry]
        return StreamEntry(channel, entry, item, count, event_id or event_id_for(channel, entry))

    async def read(self, channels: Sequence[str], consumer: str, count: int, timeout: float) -> list[StreamEntry]:
        deadline = time.monotonic() + timeout
        while True:
            found: list[StreamEntry] = []
            now = time.monotonic()
            for channel in channels:
                stream = self._streams.get(channel)
                while stream is not None and stream.unread and len(found) < count:
                    entry = stream.unread.popleft()
                    if entry not in stream.entries:
                        continue
                    stream.pending[entry] = _Pending(consumer, now, 1)
                    found.append(self._entry(channel, stream, entry, 1))
            if found:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.add(future)
            try:
                await asyncio.wait_for(future, remaining)
            except TimeoutError:
                pass
            finally:
                self._waiters.discard(future)

    async def claim(
        self, channel: str, consumer: str, min_idle: float, count: int, max_deliveries: int, dead_capacity: int
    ) -> tuple[list[StreamEntry], int]:
        stream = self._streams.get(channel)
        if stream is None or not stream.pending:
            return [], 0
        now = time.monotonic()
        claimed: list[StreamEntry] = []
        dead = 0
        for entry, pending in list(stream.pending.items()):
            if len(claimed) >= count:
                break
            if pending.consumer == consumer or now - pending.delivered < min_idle:
                continue
            pending.count += 1
            pending.consumer = consumer
            pending.delivered = now
            if pending.count > max_deliveries and len(self._dead.get(channel, ())) < dead_capacity:
                error = f"delivered {pending.count} times without finishing (its workers were lost or stuck)"
                self._move_dead(channel, stream, entry, error, pending.count)
                dead += 1
                continue
            claimed.append(self._entry(channel, stream, entry, pending.count))
        return claimed, dead

    async def ack(self, acks: Mapping[str, Sequence[str]]) -> None:
        for channel, entries in acks.items():
            stream = self._streams.get(channel)
            if stream is None:
                continue
            for entry in entries:
                stream.pending.pop(entry, None)
                stream.entries.pop(entry, None)

    async def renew(self, channel: str, consumer: str, entries: Sequence[str]) -> int:
        stream = self._streams.get(channel)
        if stream is None:
            return 0
        now = time.monotonic()
        renewed = 0
        for entry in entries:
            pending = stream.pending.get(entry)
            if pending is not None and pending.consumer == consumer:
                pending.delivered = now
                renewed += 1
        return renewed

    async def set_idle(self, channel: str, consumer: str, entries: Sequence[str], idle: float) -> None:
        stream = self._streams.get(channel)
        if stream is None:
            return
        now = time.monotonic()
        for entry in entries:
            pending = stream.pending.get(entry)
            if pending is not None and pending.consumer == consumer:
                pending.consumer = PARKED
                pending.delivered = now - idle

    # -- Dead letters -----------------------------------------------------------------

    def _move_dead(self, channel: str, stream: _Stream, entry: str, error: str, deliveries: int) -> None:
        item, event_id = stream.entries.pop(entry)
        stream.pending.pop(entry, None)
        dead_id = self._next_id()
        self._dead.setdefault(channel, {})[dead_id] = DeadLetter(
            dead_id, channel, event_id or event_id_for(channel, entry), deliveries, error, time.time(), item
        )

    async def dead_letter(self, channel: str, entry: str, error: str, deliveries: int, dead_capacity: int) -> bool:
        stream = self._streams.get(channel)
        if len(self._dead.get(channel, ())) >= dead_capacity:
            return False
        if stream is not None and entry in stream.entries:
            self._move_dead(channel, stream, entry, error, deliveries)
        return True

    async def dead_channels(self) -> dict[str, int]:
        return {channel: len(letters) for channel, letters in self._dead.items() if letters}

    async def dead_list(self, channel: str, start: str | None, count: int) -> list[DeadLetter]:
        letters = self._dead.get(channel, {})
        ordered = sorted(letters, key=_id_key)
        if start is not None:
            # "(id" is exclusive, as in Redis' XRANGE.
            bound, exclusive = (start[1:], True) if start.startswith("(") else (start, False)
            ordered = [
                letter
                for letter in ordered
                if _id_key(letter) > _id_key(bound) or (not exclusive and _id_key(letter) == _id_key(bound))
            ]
        return [letters[letter] for letter in ordered[:count]]

    async def dead_replay(self, channel: str, ids: Sequence[str], capacity: int) -> tuple[int, int]:
        letters = self._dead.get(channel, {})
        replayed = refused = 0
        for dead_id in ids:
            letter = letters.get(dead_id)
            if letter is None:
                continue
            stored, _replicas = await self.add_many([(channel, letter.item, capacity, letter.event_id)], 0, 0)
            if stored[0] is None:
                refused += 1
                continue
            del letters[dead_id]
            replayed += 1
        return replayed, refused

    async def dead_drop(self, channel: str, ids: Sequence[str] | None) -> int:
        letters = self._dead.get(channel, {})
        if ids is None:
            dropped = len(letters)
            letters.clear()
            return dropped
        return sum(1 for dead_id in ids if letters.pop(dead_id, None) is not None)

    async def info(self, channel: str) -> tuple[int, int]:
        stream = self._streams.get(channel)
        return (0, 0) if stream is None else (len(stream.entries), len(stream.pending))

    async def flush(self) -> None:
        self._streams.clear()
        self._dead.clear()


def _id_key(entry: str) -> tuple[int, int]:
    ms, _, seq = entry.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        return (0, 0)
