"""Durable channels: the at-least-once contract, its options and the storage it needs.

Most channels are at-most-once (specs/layer.md, Delivery): a popped item is gone, which is
right for chat frames and wrong for an e-mail whose sender was told ``250``. A *durable*
channel keeps each message until a consumer has finished with it:

* ``send`` returns once the message is stored (and, with ``durability: replicated``, once
  a replica has it), so a source is acknowledged only after that;
* a worker reads it into a consumer group; the message stays *pending* until the worker
  acknowledges it, which it does when the handler has returned;
* a handler that raises gets the message again after a backoff, up to ``max_deliveries``
  times; then the message moves to the channel's dead letters (``switchboard deadletters``);
* a message whose worker died (or stalled) past ``visibility_timeout`` is claimed by
  another worker.

Each delivery carries a :class:`Delivery` (stable event id, delivery count), so a consumer
can tell a redelivery; ``switchboard.consumers.durable`` makes a handler idempotent.

This module is the contract: the options (``LAYER.CONFIG.durable``), the message and
delivery types and the :class:`StreamStorage` protocol each backend implements
(``streams_memory.py``, ``streams_redis.py``). ``durable_channels.py`` builds the layer's
durable path on top of it.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

#: The consumer group every worker reads durable channels in (one group: workers share).
GROUP = "switchboard"

#: The consumer that owns pending messages no worker holds: retries waiting for their
#: backoff, messages a stopping worker handed back. Any worker claims them when due.
PARKED = "switchboard.parked"

#: Durable by default: the pool channels of the protocols whose senders wait for an
#: acknowledgement (SMTP, SMS webhooks, MQTT QoS >= 1). ``False`` in config turns one off.
DEFAULT_DURABLE_CHANNELS: tuple[str, ...] = ("switchboard.email", "switchboard.sms", "switchboard.mqtt")

#: Never durable: their senders do not wait for an acknowledgement (a WebSocket frame, a
#: UDP datagram), and sticky connections route their events to a worker's own channel.
AT_MOST_ONCE_CHANNELS: frozenset[str] = frozenset(
    {"switchboard.http", "switchboard.websocket", "switchboard.webrtc", "switchboard.udp"}
)

DURABILITY_STORED = "stored"
DURABILITY_REPLICATED = "replicated"


class MessageTooLarge(ValueError):
    """The packed message is larger than the durable channel's ``max_message_size``; not stored."""

    def __init__(self, channel: str, size: int, limit: int) -> None:
        super().__init__(f"message of {size} bytes is over max_message_size {limit} of durable channel {channel!r}")
        self.channel = channel
        self.size = size
        self.limit = limit


class NotReplicated(Exception):
    """Stored on the primary, but no replica confirmed it within ``replica_timeout``.

    The message is stored and will be delivered; the source is told to try later anyway,
    because the promise asked for (a replica has it) was not kept. A retry by the source
    may then deliver it twice, which durable consumers handle (they are idempotent).
    """


@dataclass(frozen=True)
class DurableOptions:
    """Options of one durable channel (a value in ``LAYER.CONFIG.durable``).

    ``retry_delay`` doubles per failed delivery up to ``retry_delay_max``; both must stay
    within ``visibility_timeout``, because a retry is scheduled by making the pending
    message claimable that much sooner (no timer process, no extra key).
    """

    #: Deliveries (first one included) before a failing message moves to the dead letters.
    max_deliveries: int = 5
    #: Seconds a delivered, unacknowledged message belongs to its worker; after that any
    #: worker may claim it. Must exceed the slowest handler's run time.
    visibility_timeout: float = 30.0
    #: Backoff before the second delivery of a message whose handler raised (None: 1 s,
    #: or the visibility timeout if that is shorter).
    retry_delay: float | None = None
    #: The backoff doubles per failure up to this (None: 30 s, or the visibility timeout).
    retry_delay_max: float | None = None
    #: Messages stored at most (unread + being handled); a send beyond raises ChannelFull.
    #: None: the channel's capacity as for any channel (``channel_capacity``, ``capacity``).
    capacity: int | None = None
    #: Largest packed message accepted, in bytes; a larger one raises MessageTooLarge.
    max_message_size: int = 16 * 1024 * 1024
    #: Dead letters kept at most; past it failing messages stay pending and are retried.
    dead_letter_capacity: int = 10000
    #: "stored": acknowledged once the primary has it. "replicated": once ``replicas``
    #: replicas confirm it too (Redis WAIT), else the send raises NotReplicated.
    durability: str = DURABILITY_STORED
    replicas: int = 1
    replica_timeout: float = 1.0

    def __post_init__(self) -> None:
        if self.max_deliveries < 1:
            raise ValueError(f"max_deliveries must be >= 1, got {self.max_deliveries!r}")
        for name in ("visibility_timeout", "replica_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        # Frozen: the defaults that depend on the visibility timeout are filled in here.
        first = min(1.0, self.visibility_timeout) if self.retry_delay is None else self.retry_delay
        longest = max(first, min(30.0, self.visibility_timeout)) if self.retry_delay_max is None else self.retry_delay_max
        object.__setattr__(self, "retry_delay", first)
        object.__setattr__(self, "retry_delay_max", longest)
        if not first > 0 or not longest > 0:
            raise ValueError(f"retry_delay and retry_delay_max must be > 0, got {first!r} and {longest!r}")
        if first > longest:
            raise ValueError(f"retry_delay {first} is over retry_delay_max {longest}")
        if longest > self.visibility_timeout:
            raise ValueError(
                f"retry_delay_max {longest} is over visibility_timeout {self.visibility_timeout}: "
                "a retry is a pending message made claimable early, so it cannot wait longer than that"
            )
        if self.capacity is not None and self.capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {self.capacity!r}")
        for name in ("dead_letter_capacity", "replicas"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")
        if self.max_message_size < 1024:
            raise ValueError(f"max_message_size must be >= 1024, got {self.max_message_size!r}")
        if self.durability not in (DURABILITY_STORED, DURABILITY_REPLICATED):
            raise ValueError(f"durability must be {DURABILITY_STORED!r} or {DURABILITY_REPLICATED!r}, got {self.durability!r}")

    @property
    def replicas_wanted(self) -> int:
        """Replicas a send waits for: 0 unless ``durability`` is ``replicated``."""
        return self.replicas if self.durability == DURABILITY_REPLICATED else 0

    @property
    def backoff(self) -> tuple[float, float]:
        """(first retry delay, longest retry delay), defaults filled in."""
        assert self.retry_delay is not None and self.retry_delay_max is not None
        return self.retry_delay, self.retry_delay_max

    def retry_delay_for(self, deliveries: int) -> float:
        """Backoff after the ``deliveries``-th delivery failed: 1, 2, 4... times ``retry_delay``."""
        first, longest = self.backoff
        return min(first * 2 ** max(deliveries - 1, 0), longest)


_NAME = re.compile(r"[a-zA-Z\d\-_.*?\[\]]+")
_UNKNOWN: Any = object()


class DurableConfig:
    """Which channels are durable, with which options (``LAYER.CONFIG.durable``).

    The mapping's keys are channel names or shell-style patterns (``"tasks.*"``), its
    values an options mapping (``{}`` or ``True`` for the defaults) or ``False`` (not
    durable). Exact names win over patterns; patterns are tried in order. The defaults
    (:data:`DEFAULT_DURABLE_CHANNELS`) apply unless the mapping names them.
    Process-local channels (``name!x``) are never durable: only their process reads them.
    """

    def __init__(self, raw: Mapping[str, Any] | None = None) -> None:
        from ..config import ConfigError, parse_options  # config imports nothing from layers

        if raw is not None and not isinstance(raw, Mapping):
            raise ConfigError(f"LAYER.CONFIG.durable must be a mapping of channel (pattern) to options, got {raw!r}")
        entries: dict[str, Any] = {name: {} for name in DEFAULT_DURABLE_CHANNELS}
        entries.update(raw or {})
        self._exact: dict[str, DurableOptions | None] = {}
        self._patterns: list[tuple[re.Pattern[str], DurableOptions | None]] = []
        for name, value in entries.items():
            where = f"LAYER.CONFIG.durable[{name!r}]"
            if not isinstance(name, str) or not _NAME.fullmatch(name):
                raise ConfigError(f"{where}: a durable channel is a plain channel name or pattern (no '!')")
            if name in AT_MOST_ONCE_CHANNELS and value not in (False, None):
                raise ConfigError(f"{where}: {name} is at most once (its senders do not wait for an acknowledgement)")
            options: DurableOptions | None
            if value is False or value is None:
                options = None
            elif value is True:
                options = DurableOptions()
            elif isinstance(value, Mapping):
                options = parse_options(DurableOptions, dict(value), where=where)
            else:
                raise ConfigError(f"{where}: expected an options mapping, true or false, got {value!r}")
            if any(char in name for char in "*?["):
                self._patterns.append((re.compile(fnmatch.translate(name)), options))
            else:
                self._exact[name] = options
        self._cache: dict[str, DurableOptions | None] = {}

    def options_for(self, channel: str) -> DurableOptions | None:
        """The options of ``channel`` if it is durable, else None (cached per name)."""
        cached = self._cache.get(channel, _UNKNOWN) if isinstance(channel, str) else None
        if cached is not _UNKNOWN:
            return cached
        if "!" in channel:
            return None  # process-local: never durable (and too many names to cache)
        if channel in AT_MOST_ONCE_CHANNELS:
            return None  # even when a pattern such as "switchboard.*" matches
        options: DurableOptions | None = None
        if channel in self._exact:
            options = self._exact[channel]
        else:
            for pattern, value in self._patterns:
                if pattern.match(channel):
                    options = value
                    break
        if len(self._cache) < 10000:
            self._cache[channel] = options
        return options

    def named(self) -> dict[str, DurableOptions]:
        """The durable channels named exactly (not by pattern)."""
        return {name: options for name, options in self._exact.items() if options is not None}


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a consumer learns about one delivery of a durable message.

    ``event_id`` is the same for every delivery of one message, replays from the dead
    letters included: the key for idempotency. ``count`` is 1 on the first delivery, and
    grows each time the message is handed to a worker again (a handler raised, a worker
    was lost or stopped before it started the handler). ``entry`` is the storage's id of
    this stored copy (what the worker acknowledges).
    """

    channel: str
    event_id: str
    count: int
    entry: str

    @property
    def redelivered(self) -> bool:
        return self.count > 1


class Settlement:
    """How one durable delivery ends: finished, failed (retried) or released (not started).

    The worker gives every durable message it hands to an application a settlement and
    settles it itself: finished when the app asks for its next message (ASGI apps call
    ``receive()`` again only once they are done with the last one), failed when the app
    raises, released when the worker stops first. An application that hands messages on
    instead of handling them (``TopicRouter`` queues them for per-route instances) takes
    the settlement over with :meth:`DurableMessage.take` and settles each message when
    its real handler is done. Only the first outcome counts.

    ``settle(delivery, outcome, error)`` is shared by all of a worker's settlements (one
    object per message, no closure).
    """

    __slots__ = ("_settle", "delivery", "settled", "taken")

    def __init__(self, settle: Callable[[Delivery, str, str | None], None], delivery: Delivery) -> None:
        self._settle = settle
        self.delivery = delivery
        self.taken = False
        self.settled = False

    def _once(self, outcome: str, error: str | None) -> None:
        if not self.settled:
            self.settled = True
            self._settle(self.delivery, outcome, error)

    def finished(self) -> None:
        """The handler returned: forget the message."""
        self._once("finished", None)

    def failed(self, error: str) -> None:
        """The handler raised ``error`` (a traceback): deliver again later, or dead-letter it."""
        self._once("failed", error)

    def released(self) -> None:
        """No handler started on it: any worker may take it now."""
        self._once("released", None)


class DurableMessage(dict[str, Any]):
    """A message read from a durable channel: a plain dict plus its :class:`Delivery`.

    The delivery is an attribute, not a key, so a message keeps exactly the keys it was
    sent with (a task may well have a ``"delivery"`` key of its own) and sending it on
    stores just those keys. ``settlement`` is set by the worker that hands it over.
    """

    __slots__ = ("delivery", "settlement")

    def __init__(self, message: Mapping[str, Any], delivery: Delivery) -> None:
        super().__init__(message)
        self.delivery = delivery
        self.settlement: Settlement | None = None

    def take(self) -> Settlement | None:
        """Settle this message yourself (see :class:`Settlement`); None outside a worker."""
        settlement = self.settlement
        if settlement is not None:
            settlement.taken = True
        return settlement


def delivery_of(message: Mapping[str, Any]) -> Delivery | None:
    """The :class:`Delivery` of a message from a durable channel; None for any other message."""
    return message.delivery if isinstance(message, DurableMessage) else None


@dataclass(frozen=True)
class DeadLetter:
    """A message that failed ``max_deliveries`` times, kept for inspection and replay."""

    id: str  # the dead letter's own id (what ``show``/``replay``/``drop`` take)
    channel: str
    event_id: str
    deliveries: int
    error: str
    failed_at: float  # Unix time
    item: bytes  # the stored message, packed

    @property
    def message(self) -> dict[str, Any]:
        """The message as it was sent (unpacked); raises if it cannot be decoded."""
        from .core import unpack

        return unpack(self.item)[2]


class StreamEntry(NamedTuple):
    """One stored message handed to a reader."""

    channel: str
    entry: str
    item: bytes
    deliveries: int
    event_id: str


def event_id_for(channel: str, entry: str) -> str:
    """The event id of a message first stored as ``entry`` on ``channel``."""
    return f"{channel}:{entry}"


class StreamStorage(Protocol):
    """What a backend implements for durable channels (Redis Streams semantics).

    Every method takes channel names; the backend maps them to its keys. A message is
    *stored* from ``add_many`` until ``ack`` or ``dead_letter``; in between it is either
    unread (waiting for ``read``) or pending (read by a consumer, owned by it, with a
    delivery count and the time it was last delivered).
    """

    async def add_many(
        self, batch: Sequence[tuple[str, bytes, int, str | None]], replicas: int, replica_timeout: float
    ) -> tuple[list[str | None], int]:
        """Store ``(channel, item, capacity, event_id)`` entries; one round trip per server.

        Returns each entry's id (None where the channel held ``capacity`` messages already
        and nothing was stored), and, when ``replicas`` > 0, how many replicas confirmed
        the writes within ``replica_timeout`` (the lowest over the servers written to).
        ``event_id`` is given for a replayed message, to keep its original id.
        """
        ...

    def partition(self, channels: Sequence[str]) -> list[list[str]]:
        """Split ``channels`` into groups one :meth:`read` can wait on together."""
        ...

    async def read(self, channels: Sequence[str], consumer: str, count: int, timeout: float) -> list[StreamEntry]:
        """Up to ``count`` unread messages of ``channels`` (one partition), now pending for ``consumer``.

        Waits up to ``timeout`` seconds when there are none. Delivery count 1.
        """
        ...

    async def claim(
        self, channel: str, consumer: str, min_idle: float, count: int, max_deliveries: int, dead_capacity: int
    ) -> tuple[list[StreamEntry], int]:
        """Take over up to ``count`` messages pending for ``min_idle`` seconds or more.

        Messages ``consumer`` itself holds are never claimed (that worker is alive and
        still on them); those of other consumers (a dead or stuck worker) and parked ones
        (retries, hand-backs) are. Each claimed message's delivery count grows by one. One whose count would exceed
        ``max_deliveries`` (its handlers never finished: workers died on it) moves to the
        dead letters instead, room permitting. Returns the claimed messages and how many
        moved to the dead letters.
        """
        ...

    async def ack(self, acks: Mapping[str, Sequence[str]]) -> None:
        """Finished: forget these entries (``{channel: [entry, ...]}``) for good."""
        ...

    async def renew(self, channel: str, consumer: str, entries: Sequence[str]) -> int:
        """Reset the idle time of ``consumer``'s pending ``entries``; how many it still owned.

        The lease a reader keeps on messages it is still working on: an entry it renews
        within ``visibility_timeout`` is never claimed by another reader, however long its
        handler (or a loaded machine) takes. Entries another reader claimed meanwhile stay
        untouched (theirs now).
        """
        ...

    async def set_idle(self, channel: str, consumer: str, entries: Sequence[str], idle: float) -> None:
        """Park ``consumer``'s pending ``entries``, looking ``idle`` seconds idle (others' untouched).

        Parked entries belong to :data:`PARKED`, so any worker may claim them; a claimer
        with ``min_idle`` = visibility timeout takes them ``visibility - idle`` seconds
        from now. That is how a retry is delayed, and how a stopping worker hands back
        what it did not start (``idle`` = the visibility timeout).
        """
        ...

    async def dead_letter(self, channel: str, entry: str, error: str, deliveries: int, dead_capacity: int) -> bool:
        """Move a pending entry to the channel's dead letters; False when they are full."""
        ...

    async def dead_channels(self) -> dict[str, int]:
        """Channels that have dead letters, and how many each has."""
        ...

    async def dead_list(self, channel: str, start: str | None, count: int) -> list[DeadLetter]:
        """Dead letters of ``channel`` oldest first, from ``start`` (an id, inclusive) on."""
        ...

    async def dead_replay(self, channel: str, ids: Sequence[str], capacity: int) -> tuple[int, int]:
        """Store these dead letters on the channel again (same event id, count from 1).

        Returns (replayed, refused because the channel was full); refused ones stay dead.
        """
        ...

    async def dead_drop(self, channel: str, ids: Sequence[str] | None) -> int:
        """Delete these dead letters (None: all of the channel's); how many were deleted."""
        ...

    async def info(self, channel: str) -> tuple[int, int]:
        """(stored messages, of which pending) of ``channel``."""
        ...

    async def flush(self) -> None:
        """Forget every durable message (tests, resets); the Redis backend's layer flush does it."""
        ...
