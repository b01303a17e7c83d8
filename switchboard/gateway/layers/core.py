"""The channel layer API, shared by every storage backend.

The public surface is the one Django Channels users know (``send``, ``receive``,
``new_channel``, ``group_add``, ``group_discard``, ``group_send``, ``flush``) plus
:meth:`ChannelLayer.receiver`, the batched read loop a gateway or worker process uses to
read all of its channels at once.
"""

from __future__ import annotations

import asyncio
import collections
import collections.abc
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from .base import BaseChannelLayer, compile_capacities
from .names import check_channel_name, check_group_name, split_local
from .serializers import MsgPackSerializer, registry
from .storage import Storage

logger = logging.getLogger("switchboard.layers")

Message = dict[str, Any]

#: A process-local shortcut for sends (see :meth:`ChannelLayer.add_local_route`): given a
#: channel, the message and its packed item, deliver a copy in this process and return
#: True, or return False to let the message take the layer as usual.
LocalRoute = Callable[[str, Message, bytes], bool]


class ChannelFull(Exception):
    """The channel holds ``capacity`` messages already; the message was not stored."""


class LayerClosed(Exception):
    """The layer or receiver was closed while a call was waiting on it."""


@dataclass
class LayerStats:
    """Counters every layer keeps; each drop is counted, never silent."""

    sent: int = 0
    received: int = 0
    full: int = 0
    group_sent: int = 0
    group_dropped_full: int = 0
    expired: int = 0
    corrupt: int = 0
    #: Sends and group members delivered in this process by a local route (no storage hop).
    local_delivered: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def pack(message: Message, expires_at: float, suffixes: list[str] | None) -> bytes:
    """Serialize one stored item: ``[expires_at, suffixes, message]``.

    Both backends store packed bytes, so a message that cannot cross Redis fails the same
    way on the in-memory layer (no surprises when a project moves to split mode). An
    integer msgpack cannot hold (beyond 64 bits) is a ``TypeError`` naming its key, like
    any other value that cannot cross the layer, not msgpack's bare ``OverflowError``.
    """
    try:
        return msgpack.packb([expires_at, suffixes, message], use_bin_type=True)
    except OverflowError as exc:
        raise TypeError(f"message {_too_big_path(message) or 'value'} holds an integer beyond 64 bits") from exc


def _too_big_path(value: Any, path: str = "") -> str | None:
    """Where in ``value`` the first integer outside msgpack's range is (``['a'][0]``)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return path if not -(2**63) <= value < 2**64 else None
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        found = _too_big_path(item, f"{path}[{key!r}]")
        if found is not None:
            return found
    return None


def unpack(item: bytes) -> tuple[float, list[str] | None, Message]:
    # strict_map_key=False: a dict with int keys packs, so it must unpack too.
    expires_at, suffixes, message = msgpack.unpackb(item, raw=False, strict_map_key=False)
    return expires_at, suffixes, message


#: Capacities of Switchboard's own channels (worker pools, gateway and worker inboxes):
#: each carries the traffic of many connections, so it gets more room than one channel.
INTERNAL_CAPACITIES: dict[str, int] = {"switchboard.*": 10000, "gateway.*": 10000, "worker.*": 10000}


@dataclass
class LayerOptions:
    """Options common to every layer backend (the layer ``CONFIG`` mapping)."""

    capacity: int = 100
    expiry: float = 60.0
    group_expiry: float = 86400.0
    channel_capacity: Mapping[str, int] = field(default_factory=lambda: dict(INTERNAL_CAPACITIES))
    # How long one blocking pop may wait before the read loop checks for shutdown.
    block_timeout: float = 1.0
    # How many items one pop may return (one Redis round trip).
    batch_size: int = 64
    #: Seal every message with Fernet under these keys (the first encrypts, all decrypt);
    #: channels_redis's option of the same name (gateway/layers/serializers.py).
    symmetric_encryption_keys: list[str] | None = None
    #: How messages are serialized inside the layer's envelope: "msgpack" or any format
    #: registered with ``serializers.registry``.
    serializer_format: str = "msgpack"


class ChannelLayer(BaseChannelLayer):
    """Channel layer core over a :class:`Storage` backend.

    One instance is shared by everything in one process and one event loop family: the
    gateway, the worker and any consumer code calling ``get_channel_layer()``.
    """

    extensions = ["groups", "flush"]
    #: Channels' layers take dict messages only; a subclass may take any msgpack value.
    require_dict_messages = True

    def __init__(self, storage: Storage, options: LayerOptions | None = None) -> None:
        self.storage = storage
        self.options = options or LayerOptions()
        self.stats = LayerStats()
        self.client_prefix = secrets.token_hex(6)
        self._capacity_patterns: list[tuple[re.Pattern[str], int]] = compile_capacities(self.options.channel_capacity)
        keys = self.options.symmetric_encryption_keys
        # None: the fast path, the message packed inside the envelope in one msgpack call.
        self._serializer: Any = None
        if keys or self.options.serializer_format != "msgpack":
            self._serializer = registry.get_serializer(self.options.serializer_format, symmetric_encryption_keys=keys)
        self._capacity_cache: dict[str, int] = {}
        self._local_readers: dict[str, _LocalChannels] = {}
        # Coalesce concurrent sends into push_many calls on storages where a push is a
        # network round trip (Redis); the in-memory storage pushes synchronously anyway.
        self._coalesce = bool(getattr(storage, "coalesce_sends", False))
        self._batchers: dict[asyncio.AbstractEventLoop, _SendBatcher] = {}
        self._last_batcher: tuple[int, asyncio.AbstractEventLoop, _SendBatcher] | None = None
        self._local_routes: list[LocalRoute] = []

    # -- Process-local delivery -------------------------------------------------------

    def add_local_route(self, route: LocalRoute) -> None:
        """Let ``route`` take sends to channels it serves in this process.

        A worker registers one for the connections it has claimed: the gateway would
        forward their messages straight back to it, so handing them over in process saves
        two storage hops per message (a group message to the members of a room on the
        same worker costs nothing beyond the membership read). The route gets the packed
        item, so what it delivers is what the storage would have delivered (a copy, with
        the same serialization rules) and a message that cannot cross the storage fails
        here as well.
        """
        self._local_routes.append(route)

    def remove_local_route(self, route: LocalRoute) -> None:
        if route in self._local_routes:
            self._local_routes.remove(route)

    def _route_locally(self, channel: str, message: Message, item: bytes) -> bool:
        for route in self._local_routes:
            if route(channel, message, item):
                self.stats.local_delivered += 1
                return True
        return False

    # -- Serialization ----------------------------------------------------------------

    def pack_item(self, message: Any, expires_at: float, suffixes: list[str] | None) -> bytes:
        """One stored item; the message sealed by the configured serializer, if any."""
        if self._serializer is None:
            return pack(message, expires_at, suffixes)
        return pack(self._serializer.serialize(message), expires_at, suffixes)

    def unpack_item(self, item: bytes) -> tuple[float, list[str] | None, Any]:
        """``(expires_at, suffixes, message)`` of a stored item; raises if it cannot be read."""
        expires_at, suffixes, message = unpack(item)
        if self._serializer is not None:
            if not isinstance(message, bytes):
                raise ValueError("item holds no sealed message: another layer configuration wrote it")
            message = self._serializer.deserialize(message)
        return expires_at, suffixes, message

    def serialize(self, message: Any) -> bytes:
        """A message as this layer's serializer writes it (channels_redis's API)."""
        return (self._serializer or MsgPackSerializer()).serialize(message)

    def deserialize(self, data: bytes) -> Any:
        return (self._serializer or MsgPackSerializer()).deserialize(data)

    def _check_message(self, message: Any) -> None:
        if self.require_dict_messages and not isinstance(message, dict):
            raise TypeError(f"message must be a dict, not {type(message).__name__}")

    # -- Channels API ---------------------------------------------------------------

    @property
    def expiry(self) -> float:  # type: ignore[override]
        return self.options.expiry

    @property
    def group_expiry(self) -> float:
        return self.options.group_expiry

    @property
    def capacity(self) -> int:  # type: ignore[override]
        return self.options.capacity

    @property
    def channel_capacity(self) -> list[tuple[re.Pattern[str], int]]:  # type: ignore[override]
        return self._capacity_patterns

    def get_capacity(self, channel: str) -> int:
        return self.capacity_for(channel)

    def capacity_for(self, key: str) -> int:
        """Capacity of the list ``key`` (first matching ``channel_capacity`` pattern)."""
        cached = self._capacity_cache.get(key)
        if cached is not None:
            return cached
        capacity = self.options.capacity
        for pattern, value in self._capacity_patterns:
            if pattern.match(key):
                capacity = value
                break
        if len(self._capacity_cache) < 10000:
            self._capacity_cache[key] = capacity
        return capacity

    async def send(self, channel: str, message: Message, *, local: bool = True) -> None:
        """Send ``message`` to ``channel``; raise :class:`ChannelFull` when at capacity.

        ``local=False`` skips the local routes: for callers that know the message is for
        the process behind the channel (a worker's replies to its clients' gateway).
        """
        await self._send(channel, message, local=local)

    async def send_tracked(self, channel: str, message: Message) -> bytes:
        """:meth:`send`, returning the stored item for a later :meth:`still_queued`.

        Never taken by a local route: the caller wants to know whether a reader of the
        channel has taken the message.
        """
        item = await self._send(channel, message, local=False)
        assert item is not None
        return item

    async def _send(self, channel: str, message: Message, *, local: bool) -> bytes | None:
        """Store one message; its packed item, or None when a local route took it."""
        check_channel_name(channel)
        self._check_message(message)
        key, suffix = split_local(channel)
        item = self.pack_item(message, time.time() + self.options.expiry, None if suffix is None else [suffix])
        if local and suffix is not None and self._local_routes and self._route_locally(channel, message, item):
            self.stats.sent += 1
            return None
        capacity = self.capacity_for(key)
        if self._coalesce:
            # Sends issued in the same loop pass (one per connection or consumer) travel
            # together: one round trip per shard instead of one per message.
            ok = await self._batcher().add(key, item, capacity)
        else:
            ok = await self.storage.push(key, item, capacity, self.options.expiry)
        if not ok:
            self.stats.full += 1
            raise ChannelFull(channel)
        self.stats.sent += 1
        return item

    async def still_queued(self, channel: str, item: bytes) -> bool:
        """Whether an item :meth:`send_tracked` stored on ``channel`` is still unread."""
        key, _suffix = split_local(check_channel_name(channel))
        return await self.storage.contains(key, item)

    async def backlog(self, channels: Sequence[str]) -> list[tuple[int, int]]:
        """``(messages waiting, capacity)`` of each channel, in order (operators' views).

        A process-local channel (``worker.<id>!``, with or without a suffix) reports its
        process's shared list: that is what its capacity bounds.
        """
        keys = [split_local(check_channel_name(channel, receive=True))[0] for channel in channels]
        lengths = await self.storage.lengths(keys)
        return [(length, self.capacity_for(key)) for key, length in zip(keys, lengths)]

    async def ping(self) -> list[tuple[str, float | None]]:
        """Round-trip seconds to each storage server (None: it did not answer)."""
        return await self.storage.ping()

    async def send_many(self, messages: Sequence[tuple[str, Message]]) -> list[bool]:
        """Send several ``(channel, message)`` at once: one storage round trip per shard.

        Returns one result per message, in order: False where the channel was full (counted
        in ``stats.full``, nothing raised), so one full channel never fails the others.
        """
        batch = []
        expires_at = time.time() + self.options.expiry
        for channel, message in messages:
            check_channel_name(channel)
            self._check_message(message)
            key, suffix = split_local(channel)
            batch.append((key, self.pack_item(message, expires_at, None if suffix is None else [suffix]), self.capacity_for(key)))
        if not batch:
            return []
        results = await self.storage.push_many(batch, self.options.expiry)
        for ok in results:
            if ok:
                self.stats.sent += 1
            else:
                self.stats.full += 1
        return list(results)

    def _batcher(self) -> _SendBatcher:
        # Fast path without asyncio.get_running_loop(), which costs a getpid() system call
        # per send: a thread runs one loop at a time, so if the loop last used from this
        # thread is running, it is the running one.
        cached = self._last_batcher
        if cached is not None and cached[0] == threading.get_ident() and cached[1].is_running():
            return cached[2]
        loop = asyncio.get_running_loop()
        batcher = self._batchers.get(loop)
        if batcher is None:
            for stale in [other for other in self._batchers if other.is_closed()]:
                del self._batchers[stale]
            batcher = self._batchers[loop] = _SendBatcher(self, loop)
        self._last_batcher = (threading.get_ident(), loop, batcher)
        return batcher

    async def receive(self, channel: str) -> Message:
        """Wait for and return the next message on ``channel``.

        A process-local channel (``"x!y"``) is read through one shared pump per prefix and
        event loop (see :class:`_LocalChannels`); don't also read that prefix with
        :meth:`receiver` in the same process. Any event loop may call this, one after
        another or at once (``async_to_sync(layer.receive)``, a test's own loop): what a
        pump on one loop read for a channel waits in a buffer every loop reads.
        """
        check_channel_name(channel)
        key, suffix = split_local(channel)
        if suffix is not None:
            local = self._local_readers.get(key)
            if local is None:
                local = self._local_readers.setdefault(key, _LocalChannels(self, key))
            return await local.receive(channel)
        while True:
            result = await self.storage.pop([key], 1, self.options.block_timeout)
            if result is None:
                continue
            for item in result[1]:
                try:
                    expires_at, _suffixes, message = self.unpack_item(item)
                except Exception as exc:
                    self.stats.corrupt += 1
                    logger.error("undecodable item on %s dropped: %r", key, exc)
                    continue
                if expires_at < time.time():
                    self.stats.expired += 1
                    continue
                self.stats.received += 1
                return message

    async def new_channel(self, prefix: str = "specific") -> str:
        """A fresh process-local channel name, readable only by this process."""
        return f"{prefix}.{self.client_prefix}!{secrets.token_urlsafe(9)}"

    async def group_add(self, group: str, channel: str) -> None:
        check_group_name(group)
        check_channel_name(channel)
        await self.storage.group_add(group, channel, time.time(), self.options.group_expiry)

    async def group_discard(self, group: str, channel: str) -> None:
        check_group_name(group)
        check_channel_name(channel)
        await self.storage.group_discard(group, channel)

    async def group_send(self, group: str, message: Message) -> None:
        """Send ``message`` to every channel in ``group``; full channels are skipped.

        Channels of one process (same ``name!`` prefix) get a single stored item naming all
        of their suffixes, so a 1,000-member room on one gateway costs one push, not 1,000.
        """
        check_group_name(group)
        self._check_message(message)
        members = await self.storage.group_members(group, time.time(), self.options.group_expiry)
        if not members:
            return
        expires_at = time.time() + self.options.expiry
        local_item = self.pack_item(message, expires_at, None) if self._local_routes else None
        by_key: dict[str, list[str] | None] = {}
        for channel in members:
            key, suffix = split_local(channel)
            if local_item is not None and suffix is not None and self._route_locally(channel, message, local_item):
                self.stats.group_sent += 1
                continue
            if suffix is None:
                by_key[key] = None
            else:
                suffixes = by_key.setdefault(key, [])
                assert suffixes is not None
                suffixes.append(suffix)
        if not by_key:
            return
        batch = [
            (key, self.pack_item(message, expires_at, suffixes), self.capacity_for(key))
            for key, suffixes in by_key.items()
        ]
        results = await self.storage.push_many(batch, self.options.expiry)
        over = 0
        for (key, _item, _cap), ok in zip(batch, results):
            if ok:
                self.stats.group_sent += 1
            else:
                self.stats.group_dropped_full += 1
                suffixes = by_key[key]
                over += 1 if suffixes is None else len(suffixes)
        if over:
            # One line per group_send, in channels_redis's words and level: a full member
            # is a slow reader, counted in stats (and metrics); a line per member would
            # flood the log exactly when the system is already behind.
            logger.info("%d of %d channels over capacity in group %s", over, len(members), group)

    async def flush(self) -> None:
        await self.storage.flush()

    async def close(self) -> None:
        """Stop this loop's local-channel pumps and release the storage's connections."""
        for local in list(self._local_readers.values()):
            await local.close()
        self._local_readers.clear()
        await self.storage.close()

    # -- Batched reading for gateway and worker processes ---------------------------

    def receiver(self, channels: Sequence[str], *, max_buffered: int = 1000) -> Receiver:
        """A long-lived reader over many channels and process-local prefixes at once."""
        keys = [check_channel_name(name, receive=True) for name in channels]
        return Receiver(self, keys, max_buffered=max_buffered)


class _SendBatcher:
    """Group commit for :meth:`ChannelLayer.send` on one event loop.

    Each send appends ``(key, item, capacity)`` and waits on a future. The first send of
    a quiet period schedules a flush with ``call_soon``, so every send issued in the same
    loop pass (50 connections' events, 50 consumers' replies) goes out in one
    ``push_many`` (one Lua call per shard). While a flush is in flight, new sends queue
    and go out together when it returns: under load batches grow by themselves, and one
    sender's sends can never overtake each other (each waits for its own result).
    """

    __slots__ = ("flushing", "layer", "loop", "pending", "scheduled")

    def __init__(self, layer: ChannelLayer, loop: asyncio.AbstractEventLoop) -> None:
        self.layer = layer
        self.loop = loop
        self.pending: list[tuple[str, bytes, int, asyncio.Future[bool]]] = []
        self.scheduled = False
        self.flushing = False

    def add(self, key: str, item: bytes, capacity: int) -> asyncio.Future[bool]:
        future: asyncio.Future[bool] = self.loop.create_future()
        self.pending.append((key, item, capacity, future))
        if not self.scheduled and not self.flushing:
            self.scheduled = True
            self.loop.call_soon(self._start)
        return future

    def _start(self) -> None:
        self.scheduled = False
        if self.flushing or not self.pending:
            return
        self.flushing = True
        batch, self.pending = self.pending, []
        self.loop.create_task(self._flush(batch))

    async def _flush(self, batch: list[tuple[str, bytes, int, asyncio.Future[bool]]]) -> None:
        storage = self.layer.storage
        ttl = self.layer.options.expiry
        try:
            while batch:
                try:
                    if len(batch) == 1:
                        key, item, capacity, _future = batch[0]
                        results: Sequence[bool] = [await storage.push(key, item, capacity, ttl)]
                    else:
                        results = await storage.push_many([entry[:3] for entry in batch], ttl)
                except BaseException as exc:
                    for entry in batch:
                        if not entry[3].done():
                            entry[3].set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        for entry in self.pending:
                            if not entry[3].done():
                                entry[3].set_exception(LayerClosed("send cancelled"))
                        self.pending = []
                        raise
                else:
                    for entry, ok in zip(batch, results):
                        if not entry[3].done():
                            entry[3].set_result(bool(ok))
                batch, self.pending = self.pending, []
        finally:
            self.flushing = False
            if self.pending and not self.scheduled:
                self.scheduled = True
                self.loop.call_soon(self._start)


class Receiver:
    """Reads many channels with one blocking pop per storage partition.

    One pump task per partition pops batches and buffers ``(channel, message)`` pairs;
    :meth:`get_batch` hands them out. Closing never cancels a pop in flight (that could
    lose a popped batch); pumps stop after their current pop returns, within
    ``block_timeout``.
    """

    def __init__(self, layer: ChannelLayer, keys: Sequence[str], *, max_buffered: int) -> None:
        self.layer = layer
        self.keys = list(keys)
        self.max_buffered = max_buffered
        self._buffer: collections.deque[tuple[str, Message]] = collections.deque()
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._closed = False
        self._pumps = [
            asyncio.get_running_loop().create_task(self._pump(partition), name=f"receiver-pump:{partition[0]}")
            for partition in layer.storage.partition(self.keys)
        ]

    async def _pump(self, keys: list[str]) -> None:
        layer = self.layer
        options = layer.options
        stats = layer.stats
        while not self._closed:
            await self._room.wait()
            if self._closed:
                break
            try:
                result = await layer.storage.pop(keys, options.batch_size, options.block_timeout)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("receive from %s failed; retrying", keys)
                await asyncio.sleep(min(options.block_timeout, 1.0))
                continue
            if result is None:
                continue
            key, items = result
            now = time.time()
            for item in items:
                try:
                    expires_at, suffixes, message = layer.unpack_item(item)
                except Exception as exc:
                    # One bad item (another writer, a version skew) must not kill the
                    # reader of every connection of this process.
                    stats.corrupt += 1
                    logger.error("undecodable item on %s dropped: %r", key, exc)
                    continue
                if expires_at < now:
                    stats.expired += 1
                    continue
                if suffixes is None:
                    self._buffer.append((key, message))
                    stats.received += 1
                else:
                    for suffix in suffixes:
                        self._buffer.append((key + suffix, message))
                    stats.received += len(suffixes)
            if self._buffer:
                self._ready.set()
                if len(self._buffer) >= self.max_buffered:
                    self._room.clear()

    async def get_batch(self, max_messages: int = 256) -> list[tuple[str, Message]]:
        """Wait for at least one message; return up to ``max_messages`` of them."""
        while not self._buffer:
            if self._closed:
                raise LayerClosed("receiver closed")
            self._ready.clear()
            await self._ready.wait()
        buffer = self._buffer
        count = min(len(buffer), max_messages)
        batch = [buffer.popleft() for _ in range(count)]
        if not buffer:
            self._ready.clear()
        if len(buffer) < self.max_buffered:
            self._room.set()
        return batch

    async def get(self) -> tuple[str, Message]:
        """Wait for and return the next single ``(channel, message)``."""
        return (await self.get_batch(1))[0]

    def pending(self) -> int:
        """Messages already popped and buffered, not yet handed out."""
        return len(self._buffer)

    def abort(self) -> None:
        """Stop at once (the owner is being cancelled): pops in flight may be lost."""
        self._closed = True
        self._ready.set()
        self._room.set()
        for pump in self._pumps:
            pump.cancel()

    async def close(self) -> list[tuple[str, Message]]:
        """Stop reading; return whatever was popped but not yet handed out.

        Pumps are cancelled only on storages whose pop is cancel-safe; elsewhere they
        finish their current pop (bounded by ``block_timeout``) so nothing popped is lost.
        """
        self._closed = True
        self._room.set()
        self._ready.set()
        if getattr(self.layer.storage, "pop_cancel_safe", False):
            for pump in self._pumps:
                pump.cancel()
        if self._pumps:
            await asyncio.gather(*self._pumps, return_exceptions=True)
        leftover = list(self._buffer)
        self._buffer.clear()
        return leftover


class _LocalChannels:
    """Serves :meth:`ChannelLayer.receive` on the process-local channels of one prefix.

    One pump per event loop pops the prefix's storage key and files each message under its
    channel in ``buffers``, which belong to no loop: a message a pump read for a channel
    nobody on its loop was waiting for stays there for the next ``receive`` of that
    channel from any loop. That is what lets ``async_to_sync(layer.receive)`` (a fresh
    loop per call) or a second test loop read a channel whose message an earlier,
    now closed, loop's pump already took from storage. Each buffer keeps at most the
    channel's capacity; beyond it the oldest message is dropped and counted.

    Read a prefix from one loop at a time. A loop that closes while its pump's blocking
    pop is in flight cancels that pop, and on Redis a message the pop had just taken is
    lost with it (channels_redis has the same window, and refuses two loops at once).
    """

    def __init__(self, layer: ChannelLayer, key: str) -> None:
        self.layer = layer
        self.key = key
        self.buffers: dict[str, collections.deque[Message]] = {}
        self.waiters: dict[str, list[asyncio.Future[None]]] = {}
        self.pumps: dict[asyncio.AbstractEventLoop, tuple[Receiver, asyncio.Task[None]]] = {}
        self.lock = threading.Lock()

    def _take(self, channel: str) -> tuple[bool, Message | None]:
        with self.lock:
            buffer = self.buffers.get(channel)
            if not buffer:
                return False, None
            message = buffer.popleft()
            if not buffer:
                del self.buffers[channel]
            return True, message

    async def receive(self, channel: str) -> Message:
        loop = asyncio.get_running_loop()
        while True:
            found, message = self._take(channel)
            if found:
                assert message is not None
                return message
            self._ensure_pump(loop)
            future: asyncio.Future[None] = loop.create_future()
            with self.lock:
                self.waiters.setdefault(channel, []).append(future)
            try:
                # A message may have been filed between _take and registering the waiter.
                if self.buffers.get(channel):
                    continue
                await future
            finally:
                with self.lock:
                    waiting = self.waiters.get(channel)
                    if waiting is not None and future in waiting:
                        waiting.remove(future)
                        if not waiting:
                            del self.waiters[channel]

    def _ensure_pump(self, loop: asyncio.AbstractEventLoop) -> None:
        if loop in self.pumps:
            return
        for stale in [other for other in self.pumps if other.is_closed()]:
            # That loop's pump died with it; what it had popped is in the buffers.
            receiver, _task = self.pumps.pop(stale)
            self._file(receiver._buffer)
            receiver._buffer.clear()
        receiver = self.layer.receiver([self.key])
        self.pumps[loop] = (receiver, loop.create_task(self._pump(receiver), name=f"local-channels:{self.key}"))

    async def _pump(self, receiver: Receiver) -> None:
        while True:
            try:
                batch = await receiver.get_batch()
            except LayerClosed:
                return
            self._file(batch)

    def _file(self, batch: collections.abc.Iterable[tuple[str, Message]]) -> None:
        wake: list[asyncio.Future[None]] = []
        with self.lock:
            for channel, message in batch:
                buffer = self.buffers.get(channel)
                if buffer is None:
                    buffer = self.buffers[channel] = collections.deque()
                if len(buffer) >= self.layer.capacity_for(channel):
                    buffer.popleft()
                    self.layer.stats.full += 1
                buffer.append(message)
                wake.extend(self.waiters.get(channel, ()))
        for future in wake:
            _wake_future(future)

    async def close(self) -> None:
        """Stop the running loop's pump; pumps of other loops end with their loops."""
        loop = asyncio.get_running_loop()
        entry = self.pumps.pop(loop, None)
        if entry is None:
            return
        receiver, task = entry
        self._file(await receiver.close())
        await asyncio.gather(task, return_exceptions=True)


def _wake_future(future: asyncio.Future[None]) -> None:
    """Resolve a waiter of any loop: directly on its own loop, else through that loop."""
    loop = future.get_loop()
    if loop.is_closed():
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        if not future.done():
            future.set_result(None)
    else:
        loop.call_soon_threadsafe(_resolve, future)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
