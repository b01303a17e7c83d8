"""The channel layer API, shared by every storage backend.

The public surface is the one Django Channels users know (``send``, ``receive``,
``new_channel``, ``group_add``, ``group_discard``, ``group_send``, ``flush``) plus
:meth:`ChannelLayer.receiver`, the batched read loop a gateway or worker process uses to
read all of its channels at once, and :meth:`ChannelLayer.mark` / ``unmark``, expiring
markers that de-duplicate events across processes and restarts.
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
from collections.abc import Awaitable, Callable, Generator, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, cast

import msgpack

from ..envelope import GROUP_ADD, GROUP_DISCARD
from .base import BaseChannelLayer, compile_capacities
from .names import check_channel_name, check_group_name, check_marker_key, split_local
from .serializers import MsgPackSerializer, registry
from .storage import PushEntry, Storage

logger = logging.getLogger("switchboard.layers")

Message = dict[str, Any]

#: Channels of gateway connections (``gateway.<id>!<token>``): their memberships are
#: reported to the gateway (see ``ChannelLayer._tell_owner``).
CONNECTION_PREFIX = "gateway."

#: How a send to a process-local channel may merge with identical ones in the batcher:
#: ``(suffix, packed message, expires_at)``.
_Part = tuple[str, bytes, float]


def _synchronous_push(storage: Storage) -> Callable[[str, bytes, int, float, int | None], bool] | None:
    """The storage's ``push_now`` (a push done before it returns), if its ``push`` is that one.

    A subclass that overrides ``push`` (an instrumented or gated storage) is pushed through
    its ``push``, awaited, so what it adds is never bypassed.
    """
    push_now = getattr(storage, "push_now", None)
    if push_now is None:
        return None
    owner = next(klass for klass in type(storage).__mro__ if "push_now" in vars(klass))
    if getattr(type(storage), "push", None) is not getattr(owner, "push", None):
        return None
    return cast(Callable[[str, bytes, int, float, "int | None"], bool], push_now)


class _Ready:
    """An awaitable whose result is already known: a push that was done synchronously."""

    __slots__ = ("value",)

    def __init__(self, value: bool) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, None, bool]:
        return self.value
        yield  # a generator that never suspends


class _Queued(NamedTuple):
    """One send checked, packed and started; ``outcome`` says whether it was stored."""

    key: str
    item: bytes
    capacity: int
    max_bytes: int
    part: _Part | None
    outcome: Awaitable[bool]

#: A process-local shortcut for sends (see :meth:`ChannelLayer.add_local_route`): given a
#: channel, the message and its packed item, deliver a copy in this process and return
#: True, or return False to let the message take the layer as usual.
LocalRoute = Callable[[str, Message, bytes], bool]

#: How many sends local routes take before one of them yields to the loop (see _settle).
LOCAL_YIELD_EVERY = 16


class ChannelFull(Exception):
    """The channel holds ``capacity`` messages already; the message was not stored."""


class LayerClosed(Exception):
    """The layer or receiver was closed while a call was waiting on it."""


@dataclass
class LayerStats:
    """Counters every layer keeps; each drop is counted, never silent."""

    sent: int = 0
    received: int = 0
    #: Sends refused because the channel was full: of items, or of bytes (``full_bytes``
    #: counts the latter again on its own, so ``full`` stays the one count of refusals).
    full: int = 0
    full_bytes: int = 0
    group_sent: int = 0
    group_dropped_full: int = 0
    expired: int = 0
    corrupt: int = 0
    #: Sends and group members delivered in this process by a local route (no storage hop).
    local_delivered: int = 0
    #: group_add / group_discard notices a connection's gateway could not be sent (see
    #: ``ChannelLayer._tell_owner``): memberships it will not restore, refresh or drop.
    group_notices_dropped: int = 0
    #: Sends (a group send: its member channels) the storage raised on: Redis unreachable
    #: or a primary failing over. At-most-once messages lost then, unless the sender retried.
    send_failed: int = 0
    #: Group sends whose member list the storage could not read (Redis unreachable, the
    #: group's primary failing over): no member got the message, and how many there were
    #: is unknown, so these are counted apart from ``send_failed``.
    group_send_failed: int = 0
    # Durable channels (durable_channels.py): stored (also in ``sent``), refused as too
    # large / stored without the replicas asked for, first deliveries read (also in
    # ``received``), deliveries claimed again (retries, lost or stopped workers),
    # acknowledged, failed and scheduled for retry, handed back unstarted, moved to the
    # dead letters, and failures kept pending because the dead letters were full.
    durable_sent: int = 0
    durable_too_large: int = 0
    durable_not_replicated: int = 0
    durable_received: int = 0
    durable_redelivered: int = 0
    durable_acked: int = 0
    durable_retried: int = 0
    durable_released: int = 0
    dead_lettered: int = 0
    dead_letter_full: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


_packers = threading.local()


def _packer() -> msgpack.Packer:
    """This thread's msgpack packer: ``packb`` builds a new ``Packer`` for every call,
    which was half the cost of packing a small message (1.9 against 0.9 us) and ~4% of a
    one-process echo. One per thread, since a packer is not thread-safe; it is never
    re-entered (no ``default`` hook), and ``pack`` resets it after an error."""
    packer: msgpack.Packer | None = getattr(_packers, "packer", None)
    if packer is None:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True)
    return packer


def pack(message: Message, expires_at: float, suffixes: list[str] | None) -> bytes:
    """Serialize one stored item: ``[expires_at, suffixes, message]``.

    Both backends store packed bytes, so a message that cannot cross Redis fails the same
    way on the in-memory layer (no surprises when a project moves to split mode). An
    integer msgpack cannot hold (beyond 64 bits) is a ``TypeError`` naming its key, like
    any other value that cannot cross the layer, not msgpack's bare ``OverflowError``.
    """
    try:
        return _packer().pack([expires_at, suffixes, message])
    except OverflowError as exc:
        raise TypeError(f"message {_too_big_path(message) or 'value'} holds an integer beyond 64 bits") from exc


def pack_message(message: Message) -> bytes:
    """The message part of an item alone (see :func:`join_item`), with :func:`pack`'s errors."""
    try:
        return _packer().pack(message)
    except OverflowError as exc:
        raise TypeError(f"message {_too_big_path(message) or 'value'} holds an integer beyond 64 bits") from exc


def join_item(packed_message: bytes, expires_at: float, suffixes: list[str] | None) -> bytes:
    """:func:`pack`, from a message packed once by :func:`pack_message`.

    msgpack values are self-delimiting, so an array is its header followed by its packed
    elements: one packed message can be stored under several suffix lists without packing
    it again (what lets the send batcher merge identical replies, see ``_SendBatcher``).
    """
    packer = _packer()
    return b"\x93" + packer.pack(expires_at) + packer.pack(suffixes) + packed_message


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


def control_capacity(capacity: int) -> int:
    """What a control message may fill a list to: a tenth over its ``capacity``.

    Switchboard's own messages (a worker's heartbeats, claims, a connection's membership
    notices) share their lists with data; a list full of replies must not refuse the
    heartbeat that tells the gateway its worker is alive. The headroom is small and
    bounded, so data can never use it.
    """
    return capacity + max(1, capacity // 10)


def _first_match(patterns: list[tuple[re.Pattern[str], int]], key: str, default: int) -> int:
    for pattern, value in patterns:
        if pattern.match(key):
            return value
    return default


@dataclass
class LayerOptions:
    """Options common to every layer backend (the layer ``CONFIG`` mapping)."""

    capacity: int = 100
    expiry: float = 60.0
    group_expiry: float = 86400.0
    channel_capacity: Mapping[str, int] = field(default_factory=lambda: dict(INTERNAL_CAPACITIES))
    # Bytes of packed messages one storage key may hold (a few large messages must not be
    # able to fill the server: 300 one-megabyte requests are 300 messages, far below any
    # message capacity). ``channel_byte_capacity`` overrides it per pattern, as above.
    byte_capacity: int = 256 * 1024 * 1024
    channel_byte_capacity: Mapping[str, int] = field(default_factory=dict)
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
    #: Durable channels: channel name or pattern -> options, True, or False (durable.py).
    #: None: only the defaults (the pools of SMTP, SMS and MQTT).
    durable: Mapping[str, Any] | None = None


class ChannelLayer(BaseChannelLayer):
    """Channel layer core over a :class:`Storage` backend.

    One instance is shared by everything in one process and one event loop family: the
    gateway, the worker and any consumer code calling ``get_channel_layer()``.
    """

    extensions = ["groups", "flush"]
    #: Channels' layers take dict messages only; a subclass may take any msgpack value.
    require_dict_messages = True

    def __init__(self, storage: Storage, options: LayerOptions | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self.storage = storage
        self.options = options or LayerOptions()
        #: Wall-clock seconds for message expiry (``expires_at`` travels inside the item,
        #: so every process must read the same kind of clock) and for group memberships'
        #: ages. Injectable so expiry tests advance a fake clock instead of sleeping.
        self.clock = clock
        self.stats = LayerStats()
        self.client_prefix = secrets.token_hex(6)
        self._capacity_patterns: list[tuple[re.Pattern[str], int]] = compile_capacities(self.options.channel_capacity)
        self._byte_capacity_patterns = compile_capacities(self.options.channel_byte_capacity)
        keys = self.options.symmetric_encryption_keys
        # None: the fast path, the message packed inside the envelope in one msgpack call.
        self._serializer: Any = None
        if keys or self.options.serializer_format != "msgpack":
            self._serializer = registry.get_serializer(self.options.serializer_format, symmetric_encryption_keys=keys)
        self._limits_cache: dict[str, tuple[int, int]] = {}
        self._local_readers: dict[str, _LocalChannels] = {}
        # Coalesce concurrent sends into push_many calls on storages where a push is a
        # network round trip (Redis); the in-memory storage pushes synchronously anyway.
        self._coalesce = bool(getattr(storage, "coalesce_sends", False))
        # A storage that stores synchronously (in memory) pushes at once: send_soon queues
        # at the call there too.
        self._push_now = _synchronous_push(storage)
        #: Whether :meth:`send_soon` queues a message when it is called (every built-in storage).
        self.queues_at_call = self._coalesce or self._push_now is not None
        self._batchers: dict[asyncio.AbstractEventLoop, _SendBatcher | _LaneRouter] = {}
        self._last_batcher: tuple[int, asyncio.AbstractEventLoop, _SendBatcher | _LaneRouter] | None = None
        # Several servers (a hash ring, a cluster's primaries): one batcher per server, so
        # one that hangs or fails over stalls only the sends bound for it (_LaneRouter).
        self._send_lane: Callable[[str], Hashable] | None = (
            storage.send_lane if getattr(storage, "multi_lane", False) else None  # type: ignore[attr-defined]
        )
        self._local_routes: list[LocalRoute] = []
        self._taken_unyielded = 0  # sends local routes took since one yielded (_settle)
        # Imported here: the durable path uses this module's packing and errors.
        from .durable import DurableConfig
        from .durable_channels import DurableChannels

        #: The at-least-once path for channels ``options.durable`` declares durable.
        self.durable = DurableChannels(self, DurableConfig(self.options.durable))
        self._durable_options = self.durable.options_for

    @property
    def batches_sends(self) -> bool:
        """Whether sends from one loop pass are stored together, a batch at a time (Redis):
        then when a sender sends decides what leaves together (the worker's WakePacer)."""
        return self._coalesce

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

    def pack_message(self, message: Any) -> bytes:
        """The message part of an item alone, sealed like :meth:`pack_item` (see :func:`join_item`)."""
        return pack_message(message if self._serializer is None else self._serializer.serialize(message))

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
        """Capacity of the list ``key`` in messages (first matching ``channel_capacity`` pattern)."""
        return self.limits_for(key)[0]

    def byte_capacity_for(self, key: str) -> int:
        """Capacity of the list ``key`` in bytes (first matching ``channel_byte_capacity`` pattern)."""
        return self.limits_for(key)[1]

    def limits_for(self, key: str) -> tuple[int, int]:
        """``(messages, bytes)`` the list ``key`` may hold."""
        cached = self._limits_cache.get(key)
        if cached is not None:
            return cached
        limits = (
            _first_match(self._capacity_patterns, key, self.options.capacity),
            _first_match(self._byte_capacity_patterns, key, self.options.byte_capacity),
        )
        if len(self._limits_cache) < 10000:
            self._limits_cache[key] = limits
        return limits

    def _count_full(self, refused: int = 1) -> None:
        self.stats.full += refused
        self.stats.full_bytes = getattr(self.storage, "refused_bytes", 0)

    async def send(
        self,
        channel: str,
        message: Message,
        *,
        local: bool = True,
        wait: float = 0.0,
        control: bool = False,
        durable: bool | None = None,
    ) -> None:
        """Send ``message`` to ``channel``; raise :class:`ChannelFull` when at capacity.

        ``local=False`` skips the local routes: for callers that know the message is for
        the process behind the channel (a worker's replies to its clients' gateway).
        ``wait``: while the channel is full, try again (with a growing pause) for up to
        that many seconds before raising: for a reader that is only behind for a moment.
        Only the final refusal is counted in ``stats.full``. ``control``: the message may
        take a tenth more than the channel's capacity (:func:`control_capacity`), for
        Switchboard's own messages (heartbeats, claims) that share a list with data.

        On a durable channel (``LAYER.CONFIG.durable``) the send returns once the message
        is stored (specs/layer.md, Durable channels) and may also raise
        ``MessageTooLarge`` or ``NotReplicated``; ``wait`` and ``control`` do not apply
        there (the source is told to try later). ``durable=False`` sends it at most once
        all the same (an MQTT QoS 0 message on the MQTT pool); ``durable=True`` insists
        (ValueError if the channel is not durable).
        """
        if durable is not False:
            options = self._durable_options(channel)
            if options is not None:
                check_channel_name(channel)
                self._check_message(message)
                await self.durable.send(channel, message, options)
                return
            if durable:
                self.durable.require(channel)
        await self._send(channel, message, local=local, wait=wait, control=control)

    async def send_durable(self, channel: str, message: Message) -> str:
        """Send to a durable channel; the message's event id once it is stored."""
        options = self.durable.require(check_channel_name(channel))
        self._check_message(message)
        return await self.durable.send(channel, message, options)

    async def send_tracked(self, channel: str, message: Message, *, wait: float = 0.0) -> bytes:
        """:meth:`send`, returning the stored item for a later :meth:`still_queued`.

        Never taken by a local route: the caller wants to know whether a reader of the
        channel has taken the message.
        """
        item = await self._send(channel, message, local=False, tracked=True, wait=wait)
        assert item is not None
        return item

    def send_soon(
        self, channel: str, message: Message, *, local: bool = True, wait: float = 0.0, control: bool = False
    ) -> Awaitable[object]:
        """:meth:`send`, queued in call order now; await the result for its outcome.

        The message is queued before this returns: on Redis it joins the next batch, in
        memory it is stored. So two ``send_soon`` calls made one after the other keep
        their order, however their results are awaited, and on Redis share a round trip
        without a task each (a whole HTTP response, start and body, is two sends). Raises
        as :meth:`send` does, on the await; a bad channel name or message raises here. A
        durable channel, or a storage that can only push by awaiting, sends when the
        result is awaited (:attr:`queues_at_call` is False for the latter).
        """
        if not self.queues_at_call or self._durable_options(channel) is not None:
            return self.send(channel, message, local=local, wait=wait, control=control)
        queued = self._queue(channel, message, local=local, tracked=False, control=control)
        return self._settle(channel, queued, wait)

    async def _send(
        self,
        channel: str,
        message: Message,
        *,
        local: bool,
        tracked: bool = False,
        wait: float = 0.0,
        control: bool = False,
    ) -> bytes | None:
        """Store one message; its packed item, or None when a local route took it."""
        return await self._settle(channel, self._queue(channel, message, local=local, tracked=tracked, control=control), wait)

    def _queue(self, channel: str, message: Message, *, local: bool, tracked: bool, control: bool) -> _Queued | None:
        """Check and pack one message and start its push (None: a local route took it)."""
        check_channel_name(channel)
        self._check_message(message)
        key, suffix = split_local(channel)
        expires_at = self.clock() + self.options.expiry
        if suffix is None:
            packed = b""
            item = self.pack_item(message, expires_at, None)
        else:
            packed = self.pack_message(message)
            item = join_item(packed, expires_at, [suffix])
        if local and suffix is not None and self._local_routes and self._route_locally(channel, message, item):
            self.stats.sent += 1
            return None
        capacity, max_bytes = self.limits_for(key)
        if control:
            capacity = control_capacity(capacity)
        # A tracked send must be stored as the very item it returns, so it never merges.
        part = None if suffix is None or tracked else (suffix, packed, expires_at)
        return _Queued(key, item, capacity, max_bytes, part, self._push(key, item, capacity, max_bytes, part))

    async def _settle(self, channel: str, queued: _Queued | None, wait: float) -> bytes | None:
        """Wait for a queued push; try a refused one again for up to ``wait`` seconds.

        Messages local routes took (``queued`` None) return at once, but one in every
        :data:`LOCAL_YIELD_EVERY` yields first, as a stored one waits for its batch: a
        consumer streaming in a tight loop lets its receivers (its client's writer,
        another instance) run between parts, instead of piling its whole stream into the
        gateway before the slow-reader bound could see its client fall behind. Not on
        every one: that would add a loop pass to every reply of ``switchboard run``.
        """
        if queued is None:
            self._taken_unyielded += 1
            if self._taken_unyielded >= LOCAL_YIELD_EVERY:
                self._taken_unyielded = 0
                await asyncio.sleep(0)
            return None
        try:
            ok = await queued.outcome
        except (LayerClosed, asyncio.CancelledError):
            raise
        except Exception:
            # The storage failed (Redis down, a primary failing over): this at-most-once
            # message is lost unless the caller retries; counted, never silent.
            self.stats.send_failed += 1
            raise
        if not ok and wait > 0:
            ok = await self._push_when_room(queued.key, queued.item, queued.capacity, queued.max_bytes, queued.part, wait)
        if not ok:
            self._count_full()
            raise ChannelFull(channel)
        self.stats.sent += 1
        return queued.item

    def _push(self, key: str, item: bytes, capacity: int, max_bytes: int, part: _Part | None) -> Awaitable[bool]:
        if self._coalesce:
            # Sends issued in the same loop pass (one per connection or consumer) travel
            # together: one round trip per shard instead of one per message; identical
            # messages to channels of one process become one item (see _SendBatcher).
            # Queued now, in call order: the future settles when its batch is stored.
            return self._batcher().add(key, item, capacity, max_bytes, part)
        if self._push_now is not None:
            return _Ready(self._push_now(key, item, capacity, self.options.expiry, max_bytes))
        return self.storage.push(key, item, capacity, self.options.expiry, max_bytes)

    async def _push_when_room(
        self, key: str, item: bytes, capacity: int, max_bytes: int, part: _Part | None, wait: float
    ) -> bool:
        """Try a refused push again until it is stored or ``wait`` seconds have passed.

        The pause doubles from 5 ms to 100 ms: a reader that is a moment behind (a gateway
        taking a burst) frees room within a few tries, while a reader that is gone costs a
        few pushes per second until ``wait`` ends.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        pause = 0.005
        while True:
            left = deadline - loop.time()
            if left <= 0:
                return False
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, 0.1)
            if await self._push(key, item, capacity, max_bytes, part):
                return True

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
        Messages for durable channels are stored durably (False also when one is larger
        than its channel's ``max_message_size``).
        """
        batch: list[PushEntry] = []
        durable: list[tuple[int, str, Message, Any]] = []
        expires_at = self.clock() + self.options.expiry
        for position, (channel, message) in enumerate(messages):
            check_channel_name(channel)
            self._check_message(message)
            options = self._durable_options(channel)
            if options is not None:
                durable.append((position, channel, message, options))
                continue
            key, suffix = split_local(channel)
            batch.append((key, self.pack_item(message, expires_at, None if suffix is None else [suffix]), *self.limits_for(key)))
        listed: list[bool] = []
        if batch:
            listed = list(await self.storage.push_many(batch, self.options.expiry))
            stored = sum(1 for ok in listed if ok)
            self.stats.sent += stored
            if stored < len(listed):
                self._count_full(len(listed) - stored)
        if not durable:
            return listed
        kept = await self.durable.send_many([(channel, message, options) for _p, channel, message, options in durable])
        kept_at = {position: ok for (position, _c, _m, _o), ok in zip(durable, kept)}
        listed_iter = iter(listed)
        return [kept_at[position] if position in kept_at else next(listed_iter) for position in range(len(messages))]

    def _batcher(self) -> _SendBatcher | _LaneRouter:
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
            lane_of = self._send_lane
            batcher = self._batchers[loop] = _SendBatcher(self, loop) if lane_of is None else _LaneRouter(self, loop, lane_of)
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
        if self._durable_options(channel) is not None:
            return await self.durable.receive(channel)
        key, suffix = split_local(channel)
        if suffix is not None:
            local = self._local_readers.get(key)
            if local is None:
                local = self._local_readers.setdefault(key, _LocalChannels(self, key))
            return await local.receive(channel)
        while True:
            message = await self._pop_one(key, self.options.block_timeout)
            if message is not None:
                return message

    async def _pop_one(self, key: str, timeout: float) -> Message | None:
        """One message from list ``key`` within ``timeout`` (expired, undecodable skipped), or None."""
        result = await self.storage.pop([key], 1, timeout)
        if result is None:
            return None
        for item in result[1]:
            try:
                expires_at, _suffixes, message = self.unpack_item(item)
            except Exception as exc:
                self.stats.corrupt += 1
                logger.error("undecodable item on %s dropped: %r", key, exc)
                continue
            if expires_at < self.clock():
                self.stats.expired += 1
                continue
            self.stats.received += 1
            return message
        return None

    async def new_channel(self, prefix: str = "specific") -> str:
        """A fresh process-local channel name, readable only by this process."""
        return f"{prefix}.{self.client_prefix}!{secrets.token_urlsafe(9)}"

    async def group_add(self, group: str, channel: str) -> None:
        check_group_name(group)
        check_channel_name(channel)
        await self.storage.group_add(group, channel, self.clock(), self.options.group_expiry)
        if channel.startswith(CONNECTION_PREFIX):
            await self._tell_owner(channel, GROUP_ADD, group)

    async def group_discard(self, group: str, channel: str) -> None:
        check_group_name(group)
        check_channel_name(channel)
        await self.storage.group_discard(group, channel)
        if channel.startswith(CONNECTION_PREFIX):
            await self._tell_owner(channel, GROUP_DISCARD, group)

    async def _tell_owner(self, channel: str, notice: str, group: str) -> None:
        """Tell the gateway holding connection ``channel`` that it joined or left ``group``.

        The gateway keeps its connections' memberships so that it can restore them when
        the storage loses them (a Redis restart), refresh them before ``group_expiry``
        while the connection lives, and drop them when it closes: the consumer that calls
        ``group_add`` runs in some worker, but only the gateway knows the connection is
        still there. Every ``group_add`` / ``group_discard`` goes through this layer, so
        this is the one place that sees them all. The notice travels on the connection's
        reply channel, behind what was sent to it before, as a control message (a reply
        list full of replies must not cost a membership). A notice that still cannot be
        stored is counted and logged, never raised: the membership itself is in place.
        """
        try:
            await self._send(channel, {"type": notice, "group": group}, local=False, control=True)
        except Exception as exc:
            self.stats.group_notices_dropped += 1
            logger.warning("could not tell the gateway of %s about %s %s: %r", channel, notice, group, exc)

    async def group_add_many(self, memberships: Mapping[str, Sequence[str]]) -> None:
        """Add or refresh many memberships at once (no owner notices: for the owner itself).

        A gateway uses it to restore its connections' memberships after the storage lost
        them, and to refresh them before ``group_expiry``: one round trip per server.
        """
        await self.storage.group_add_many(list(memberships.items()), self.clock(), self.options.group_expiry)

    async def group_discard_many(self, memberships: Mapping[str, Sequence[str]]) -> None:
        """Remove many memberships at once (no owner notices: for the owner itself)."""
        await self.storage.group_discard_many(list(memberships.items()))

    async def group_send(self, group: str, message: Message) -> None:
        """Send ``message`` to every channel in ``group``; full channels are skipped.

        Channels of one process (same ``name!`` prefix) get a single stored item naming all
        of their suffixes, so a 1,000-member room on one gateway costs one push, not 1,000.
        """
        check_group_name(group)
        self._check_message(message)
        try:
            members = await self.storage.group_members(group, self.clock(), self.options.group_expiry)
        except (LayerClosed, asyncio.CancelledError):
            raise
        except Exception:
            self.stats.group_send_failed += 1
            raise
        if not members:
            return
        expires_at = self.clock() + self.options.expiry
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
        batch: list[PushEntry] = [
            (key, self.pack_item(message, expires_at, suffixes), *self.limits_for(key)) for key, suffixes in by_key.items()
        ]
        try:
            results = await self.storage.push_many(batch, self.options.expiry)
        except (LayerClosed, asyncio.CancelledError):
            raise
        except Exception:
            # Counted per member channel, as the messages lost (an item carries one
            # process's members): all of them, though a cluster pipeline may have stored
            # the part bound for a node that was up (an upper bound, as for any send).
            self.stats.send_failed += sum(1 if suffixes is None else len(suffixes) for suffixes in by_key.values())
            raise
        over = 0
        for (key, *_rest), ok in zip(batch, results):
            if ok:
                self.stats.group_sent += 1
            else:
                self.stats.group_dropped_full += 1
                suffixes = by_key[key]
                over += 1 if suffixes is None else len(suffixes)
        if over:
            self.stats.full_bytes = getattr(self.storage, "refused_bytes", 0)
            # One line per group_send, in channels_redis's words and level: a full member
            # is a slow reader, counted in stats (and metrics); a line per member would
            # flood the log exactly when the system is already behind.
            logger.info("%d of %d channels over capacity in group %s", over, len(members), group)

    # -- Markers (de-duplication shared by every process on the layer) ----------------

    async def mark(self, key: str, ttl: float) -> bool:
        """Set marker ``key`` for ``ttl`` seconds unless it is set; True when this call set it.

        Why on the layer: an id remembered in one process's memory is forgotten when that
        process restarts and unknown to its siblings, so an event delivered again (a
        webhook retried, or replayed after a restart) would be handled again. On Redis this
        is one ``SET NX PX``: atomic, so of several gateways that see the same id exactly
        one gets True, and it expires by itself. The in-memory layer keeps the same rules
        within its process. ``key`` is printable ASCII without spaces, at most 200 characters.
        """
        check_marker_key(key)
        if not (isinstance(ttl, (int, float)) and 0 < ttl < float("inf")):
            raise ValueError(f"marker ttl must be a positive number of seconds, got {ttl!r}")
        return await self.storage.mark(key, float(ttl))

    async def unmark(self, key: str) -> None:
        """Remove marker ``key``: the event it stood for was not handled after all."""
        check_marker_key(key)
        await self.storage.unmark(key)

    async def flush(self) -> None:
        await self.storage.flush()
        await self.durable.flush()

    async def close(self) -> None:
        """Stop this loop's local-channel pumps and durable readers, then release the storage's connections."""
        for local in list(self._local_readers.values()):
            await local.close()
        self._local_readers.clear()
        self.durable.abort_receivers()
        await self.storage.close()

    # -- Batched reading for gateway and worker processes ---------------------------

    def receiver(self, channels: Sequence[str], *, max_buffered: int = 1000) -> Receiver:
        """A long-lived reader over many channels and process-local prefixes at once."""
        keys = [check_channel_name(name, receive=True) for name in channels]
        return Receiver(self, keys, max_buffered=max_buffered)


class _SendBatcher:
    """Group commit for :meth:`ChannelLayer.send` on one event loop.

    Each send appends its push and waits on a future. The first send of a quiet period
    schedules a flush with ``call_soon``, so every send issued in the same loop pass (50
    connections' events, 50 consumers' replies) goes out in one ``push_many`` (one Lua
    call per shard). While a flush is in flight, new sends queue and go out together when
    it returns: under load batches grow by themselves, and one sender's sends can never
    overtake each other (each waits for its own result).

    Identical messages to channels of one process-local prefix become **one** item naming
    all of their suffixes, as ``group_send`` stores them (see :func:`_merge_identical`):
    the 20 members of a chat room each answering a group message with the same
    ``websocket.send`` cost the gateway one item to read instead of 20, and one slot of
    its reply list's capacity instead of 20.
    """

    __slots__ = ("flushing", "layer", "loop", "pending", "scheduled")

    def __init__(self, layer: ChannelLayer, loop: asyncio.AbstractEventLoop) -> None:
        self.layer = layer
        self.loop = loop
        self.pending: list[_Pending] = []
        self.scheduled = False
        self.flushing = False

    def add(self, key: str, item: bytes, capacity: int, max_bytes: int, part: _Part | None) -> asyncio.Future[bool]:
        future: asyncio.Future[bool] = self.loop.create_future()
        self.pending.append((key, item, capacity, max_bytes, part, future))
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

    async def _flush(self, batch: list[_Pending]) -> None:
        storage = self.layer.storage
        ttl = self.layer.options.expiry
        try:
            while batch:
                entries, waiters = _merge_identical(batch)
                try:
                    if len(entries) == 1:
                        key, item, capacity, max_bytes = entries[0]
                        results: Sequence[bool] = [await storage.push(key, item, capacity, ttl, max_bytes)]
                    else:
                        results = await storage.push_many(entries, ttl)
                except BaseException as exc:
                    for entry in batch:
                        if not entry[5].done():
                            entry[5].set_exception(exc)
                    if isinstance(exc, asyncio.CancelledError):
                        for entry in self.pending:
                            if not entry[5].done():
                                entry[5].set_exception(LayerClosed("send cancelled"))
                        self.pending = []
                        raise
                else:
                    for futures, ok in zip(waiters, results):
                        for future in futures:
                            if not future.done():
                                future.set_result(bool(ok))
                batch, self.pending = self.pending, []
        finally:
            self.flushing = False
            if self.pending and not self.scheduled:
                self.scheduled = True
                self.loop.call_soon(self._start)


class _LaneRouter:
    """One :class:`_SendBatcher` per server (*lane*) of a storage with several.

    A batcher flushes one batch at a time, so with a single one a server that stopped
    answering (a primary killed, seconds before its replica is promoted) held up every
    send of the process behind its batch: replies and heartbeats bound for healthy
    servers waited the whole failover, and gateways took live workers for dead. Per lane,
    only the sends bound for that server wait.

    A channel's sends must still never overtake each other. The storage's lane of a key
    can change (a cluster's slot moving to the promoted replica) while earlier sends to it
    are still pending on the old lane, so a key with sends pending stays on their lane
    until they have all finished.
    """

    __slots__ = ("batchers", "lane_of", "layer", "loop", "pending_keys")

    def __init__(self, layer: ChannelLayer, loop: asyncio.AbstractEventLoop, lane_of: Callable[[str], Hashable]) -> None:
        self.layer = layer
        self.loop = loop
        self.lane_of = lane_of
        self.batchers: dict[Hashable, _SendBatcher] = {}
        #: key -> (its lane while sends to it are pending, how many are)
        self.pending_keys: dict[str, tuple[Hashable, int]] = {}

    def add(self, key: str, item: bytes, capacity: int, max_bytes: int, part: _Part | None) -> asyncio.Future[bool]:
        held = self.pending_keys.get(key)
        if held is None:
            lane = self.lane_of(key)
            self.pending_keys[key] = (lane, 1)
        else:
            lane = held[0]
            self.pending_keys[key] = (lane, held[1] + 1)
        batcher = self.batchers.get(lane)
        if batcher is None:
            batcher = self.batchers[lane] = _SendBatcher(self.layer, self.loop)
        future = batcher.add(key, item, capacity, max_bytes, part)
        future.add_done_callback(lambda _done: self._finished(key))
        return future

    def _finished(self, key: str) -> None:
        lane, count = self.pending_keys[key]
        if count == 1:
            del self.pending_keys[key]
        else:
            self.pending_keys[key] = (lane, count - 1)


#: A send waiting in the batcher: ``(key, item, capacity, max_bytes, part, future)``.
_Pending = tuple[str, bytes, int, int, "_Part | None", "asyncio.Future[bool]"]


def _merge_identical(batch: list[_Pending]) -> tuple[list[PushEntry], list[list[asyncio.Future[bool]]]]:
    """The pushes of ``batch``, identical messages to one process-local prefix merged.

    A send to ``key!b`` merges into an earlier item of the same packed message for
    ``key!a`` (which then names both suffixes) only if nothing else was sent to ``key!b``
    since that item: moving a message earlier in the list must never let it overtake
    another message to its own channel. Returns the pushes and, per push, the futures
    waiting on it (a merged item's result is each merged send's result).
    """
    entries: list[PushEntry] = []
    waiters: list[list[asyncio.Future[bool]]] = []
    if len(batch) < 2:
        for key, item, capacity, max_bytes, _part, future in batch:
            entries.append((key, item, capacity, max_bytes))
            waiters.append([future])
        return entries, waiters
    # (key, packed message) -> index of the latest item it may merge into.
    open_items: dict[tuple[str, bytes], int] = {}
    # (key, suffix) -> index of the item holding that channel's latest message.
    latest: dict[tuple[str, str], int] = {}
    parts: dict[int, _Part] = {}
    merged: dict[int, list[str]] = {}
    for key, item, capacity, max_bytes, part, future in batch:
        if part is not None:
            suffix, packed, expires_at = part
            index = open_items.get((key, packed))
            if index is not None and latest.get((key, suffix), -1) < index:
                suffixes = merged.get(index)
                if suffixes is None:
                    suffixes = merged[index] = [parts[index][0]]
                suffixes.append(suffix)
                latest[key, suffix] = index
                waiters[index].append(future)
                continue
            index = len(entries)
            open_items[key, packed] = index
            latest[key, suffix] = index
            parts[index] = part
        entries.append((key, item, capacity, max_bytes))
        waiters.append([future])
    for index, suffixes in merged.items():
        key, _item, capacity, byte_bound = entries[index]
        _suffix, packed, expires_at = parts[index]
        entries[index] = (key, join_item(packed, expires_at, suffixes), capacity, byte_bound)
    return entries, waiters


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
        failures = 0
        while not self._closed:
            await self._room.wait()
            if self._closed:
                break
            try:
                result = await layer.storage.pop(keys, options.batch_size, options.block_timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A storage that is away (Redis restarting) fails every pop the same way:
                # one WARNING per outage, the rest (and the tracebacks) at DEBUG.
                failures += 1
                if failures == 1:
                    logger.warning("receive from %s failed (%r); retrying until it works again", keys, exc)
                logger.debug("receive from %s failed", keys, exc_info=True)
                await asyncio.sleep(min(options.block_timeout, 1.0))
                continue
            if failures:
                logger.warning("receiving from %s again, after %d failed attempt(s)", keys, failures)
                failures = 0
            if result is None:
                continue
            key, items = result
            now = layer.clock()
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

    async def _wake_pumps(self) -> None:
        """Have the storage end the pumps' blocking pops now (they exit: ``_closed`` is set).

        A pump may only reach its pop after the first wake (it was between two calls), so
        wake again while any is left, until one ``block_timeout`` has passed: by then its
        pop has ended by itself anyway.
        """
        wake = getattr(self.layer.storage, "wake", None)
        if wake is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.layer.options.block_timeout
        pending = {pump for pump in self._pumps if not pump.done()}
        while pending and loop.time() < deadline:
            try:
                await wake(list(pending))
            except Exception as exc:  # a lost connection: the pops end by themselves
                logger.debug("waking the readers of %s failed: %r", self.keys, exc)
                return
            _done, pending = await asyncio.wait(pending, timeout=0.05)

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

        Pumps are cancelled only on storages whose pop is cancel-safe; elsewhere the
        storage ends their current pop early without losing what it took (``wake``), or
        they finish it (bounded by ``block_timeout``), so nothing popped is lost.
        """
        self._closed = True
        self._room.set()
        self._ready.set()
        storage = self.layer.storage
        if getattr(storage, "pop_cancel_safe", False):
            for pump in self._pumps:
                pump.cancel()
        else:
            await self._wake_pumps()
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
