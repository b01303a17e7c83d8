"""The layer's durable path: sends that return once stored, reads that wait for an ack.

:class:`DurableChannels` is what ``ChannelLayer`` uses for a channel that
``LAYER.CONFIG.durable`` declares durable (``layer.durable``); :class:`DurableReceiver` is
what a worker reads durable channels with. The storage side is a
:class:`~.durable.StreamStorage` (Redis Streams, or their in-memory twin); the contract
is in ``durable.py`` and specs/layer.md, *Durable channels*.

Sends are group-committed like list sends: every durable send issued in one loop pass
goes out in one ``add_many`` (one Lua call per server), and each caller still gets its own
outcome (stored, ``ChannelFull``, ``NotReplicated``). Acknowledgements are batched the
same way: one XACK + XDEL call per server for everything handlers finished in a pass.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .durable import (
    DeadLetter,
    Delivery,
    DurableConfig,
    DurableMessage,
    DurableOptions,
    MessageTooLarge,
    NotReplicated,
    StreamEntry,
    StreamStorage,
)

if TYPE_CHECKING:
    from .core import ChannelLayer, Message

logger = logging.getLogger("switchboard.layers.durable")

#: Reads of one partition at a time, and claims per channel per round.
READ_BATCH = 64
#: Acknowledgements wait this long (or until ACK_BATCH are due) to travel together: one
#: round trip for a batch instead of one per handler that finished. A delay only widens
#: the window in which a killed worker's finished messages come back (at least once).
ACK_DELAY = 0.002
ACK_BATCH = 64


def stream_storage_for(storage: Any) -> StreamStorage:
    """The durable-channel storage of a list storage: one per storage object.

    A storage class may provide its own by defining ``stream_storage()``; the built-in
    backends get theirs here, so the list backends need no change.
    """
    existing = getattr(storage, "_switchboard_streams", None)
    if existing is not None:
        return existing
    factory = getattr(storage, "stream_storage", None)
    streams: StreamStorage
    if factory is not None:
        streams = factory()
    else:
        from .memory import MemoryStorage

        if isinstance(storage, MemoryStorage):
            from .streams_memory import MemoryStreams

            streams = MemoryStreams()
        else:
            from .redis import RedisStorage

            if not isinstance(storage, RedisStorage):
                raise TypeError(f"{type(storage).__name__} has no durable channels (define stream_storage())")
            from .streams_redis import RedisStreams

            streams = RedisStreams(storage)
    storage._switchboard_streams = streams
    return streams


class DurableChannels:
    """The durable path of one :class:`~.core.ChannelLayer` (``layer.durable``)."""

    def __init__(self, layer: ChannelLayer, config: DurableConfig) -> None:
        self.layer = layer
        self.config = config
        self._streams: StreamStorage | None = None
        self._batchers: dict[asyncio.AbstractEventLoop, _AddBatcher] = {}
        #: Readers handed out, so that closing the layer can end the ones left open.
        self._receivers: weakref.WeakSet[DurableReceiver] = weakref.WeakSet()
        self.options_for = config.options_for

    @property
    def streams(self) -> StreamStorage:
        if self._streams is None:
            self._streams = stream_storage_for(self.layer.storage)
        return self._streams

    def capacity(self, channel: str, options: DurableOptions) -> int:
        """How many messages ``channel`` may store: its own option, else the layer's capacity."""
        return options.capacity if options.capacity is not None else self.layer.capacity_for(channel)

    def require(self, channel: str) -> DurableOptions:
        options = self.options_for(channel)
        if options is None:
            raise ValueError(f"channel {channel!r} is not durable (LAYER.CONFIG.durable does not name it)")
        return options

    # -- Sending ------------------------------------------------------------------------

    def _pack(self, channel: str, message: Message, options: DurableOptions) -> bytes:
        # Durable messages do not expire: they stay until handled (capacity bounds them).
        # Packed as the layer packs every item, so encryption and serializer apply too.
        item = self.layer.pack_item(dict(message) if isinstance(message, DurableMessage) else message, 0.0, None)
        if len(item) > options.max_message_size:
            self.layer.stats.durable_too_large += 1
            raise MessageTooLarge(channel, len(item), options.max_message_size)
        return item

    async def send(self, channel: str, message: Message, options: DurableOptions) -> str:
        """Store ``message``; its event id once stored (and replicated, if asked).

        Raises ``ChannelFull`` at capacity, :class:`MessageTooLarge`, :class:`NotReplicated`.
        """
        from .core import ChannelFull

        item = self._pack(channel, message, options)
        stats = self.layer.stats
        loop = asyncio.get_running_loop()
        batcher = self._batchers.get(loop)
        if batcher is None:
            for stale in [other for other in self._batchers if other.is_closed()]:
                del self._batchers[stale]
            batcher = self._batchers[loop] = _AddBatcher(self, loop)
        entry = await batcher.add(channel, item, options)
        if entry is None:
            stats.full += 1
            raise ChannelFull(channel)
        stats.sent += 1
        stats.durable_sent += 1
        return f"{channel}:{entry}"

    async def send_many(self, messages: Sequence[tuple[str, Message, DurableOptions]]) -> list[bool]:
        """Store several messages at once; False where the channel was full (or too large)."""
        stats = self.layer.stats
        batch: list[tuple[str, bytes, int, str | None]] = []
        positions: list[int] = []
        results = [False] * len(messages)
        wanted = 0
        timeout = 0.0
        for position, (channel, message, options) in enumerate(messages):
            try:
                item = self._pack(channel, message, options)
            except MessageTooLarge:
                continue
            batch.append((channel, item, self.capacity(channel, options), None))
            positions.append(position)
            wanted = max(wanted, options.replicas_wanted)
            timeout = max(timeout, options.replica_timeout)
        if not batch:
            return results
        ids, confirmed = await self.streams.add_many(batch, wanted, timeout)
        for position, entry in zip(positions, ids):
            if entry is None:
                stats.full += 1
                continue
            stats.sent += 1
            stats.durable_sent += 1
            results[position] = True
        if wanted and confirmed < wanted:
            stats.durable_not_replicated += 1
            raise NotReplicated(f"{confirmed} of {wanted} replica(s) confirmed within {timeout}s")
        return results

    # -- Reading ------------------------------------------------------------------------

    def receiver(self, channels: Sequence[str], consumer: str, *, prefetch: int = 256) -> DurableReceiver:
        """A worker's reader over durable ``channels``; see :class:`DurableReceiver`."""
        for channel in channels:
            self.require(channel)
        receiver = DurableReceiver(self, channels, consumer, prefetch=prefetch)
        self._receivers.add(receiver)
        return receiver

    def abort_receivers(self) -> None:
        """End every reader of this loop that its owner left running (:meth:`DurableReceiver.abort`).

        Called by ``layer.close()``: a receiver closed but never aborted keeps renewing its
        leases, and an ack still in flight keeps waiting on a connection, after the storage
        they use is gone and, in tests, after their event loop is. A worker aborts its
        receivers itself before it closes the layer, so for it this ends nothing.
        """
        loop = asyncio.get_running_loop()
        for receiver in list(self._receivers):
            if receiver._loop is loop:
                receiver.abort()

    async def receive(self, channel: str) -> Message:
        """``layer.receive`` on a durable channel: the next message, acknowledged at once.

        At-most-once from here on, as ``receive`` has no way to say "finished": for
        at-least-once, consume the channel in a worker. Messages sent to the channel at
        most once (``durable=False``) wait on its list, which is read in turn.
        """
        self.require(channel)
        consumer = f"receive.{self.layer.client_prefix}"
        half = self.layer.options.block_timeout / 2
        while True:
            entries = await self.streams.read([channel], consumer, 1, half)
            if not entries:
                plain = await self.layer._pop_one(channel, half)
                if plain is not None:
                    return plain
                continue
            entry = entries[0]
            await self.streams.ack({channel: [entry.entry]})
            self.layer.stats.durable_acked += 1
            message = _decode(self.layer, entry)
            if message is None:
                self.layer.stats.corrupt += 1
                continue
            self.layer.stats.received += 1
            self.layer.stats.durable_received += 1
            return DurableMessage(message, _delivery(entry))

    # -- Dead letters and state ------------------------------------------------------

    async def dead_letter_channels(self) -> dict[str, int]:
        """Channels with dead letters, and how many each holds (every server)."""
        return await self.streams.dead_channels()

    async def dead_letters(self, channel: str, *, start: str | None = None, count: int = 100) -> list[DeadLetter]:
        return await self.streams.dead_list(channel, start, count)

    async def dead_letter(self, channel: str, dead_id: str) -> DeadLetter | None:
        letters = await self.streams.dead_list(channel, dead_id, 1)
        return letters[0] if letters and letters[0].id == dead_id else None

    async def replay(self, channel: str, ids: Sequence[str] | None = None) -> tuple[int, int]:
        """Store dead letters on ``channel`` again (None: all); (replayed, refused as full)."""
        options = self.require(channel)
        if ids is not None:
            return await self.streams.dead_replay(channel, list(ids), self.capacity(channel, options))
        replayed = refused = 0
        start: str | None = None
        while True:
            letters = await self.streams.dead_list(channel, start, 500)
            if start is not None and letters and letters[0].id == start:
                letters = letters[1:]  # the last round's refused one
            if not letters:
                return replayed, refused
            batch_ids = [letter.id for letter in letters]
            done, full = await self.streams.dead_replay(channel, batch_ids, self.capacity(channel, options))
            replayed += done
            refused += full
            if full:
                return replayed, refused
            start = letters[-1].id

    async def drop(self, channel: str, ids: Sequence[str] | None = None) -> int:
        """Delete dead letters of ``channel`` (None: all); how many were deleted."""
        return await self.streams.dead_drop(channel, None if ids is None else list(ids))

    async def info(self, channel: str) -> tuple[int, int]:
        """(stored, of which pending) messages of a durable channel."""
        return await self.streams.info(channel)

    async def flush(self) -> None:
        if self._streams is not None:
            await self._streams.flush()


def _decode(layer: ChannelLayer, entry: StreamEntry) -> dict[str, Any] | None:
    try:
        message = layer.unpack_item(entry.item)[2]
    except Exception:
        return None
    return message if isinstance(message, dict) else None


def _delivery(entry: StreamEntry) -> Delivery:
    return Delivery(entry.channel, entry.event_id, entry.deliveries, entry.entry)


class _AddBatcher:
    """Group commit for durable sends on one event loop (see :class:`~.core._SendBatcher`).

    Sends wanting replicas go in a call of their own (WAIT makes it slower), so a
    replicated channel never slows down the others.
    """

    def __init__(self, durable: DurableChannels, loop: asyncio.AbstractEventLoop) -> None:
        self.durable = durable
        self.loop = loop
        self.pending: list[tuple[str, bytes, DurableOptions, asyncio.Future[str | None]]] = []
        self.scheduled = False
        self.flushing = False

    def add(self, channel: str, item: bytes, options: DurableOptions) -> asyncio.Future[str | None]:
        future: asyncio.Future[str | None] = self.loop.create_future()
        self.pending.append((channel, item, options, future))
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

    async def _flush(self, batch: list[tuple[str, bytes, DurableOptions, asyncio.Future[str | None]]]) -> None:
        try:
            while batch:
                groups: dict[tuple[int, float], list[tuple[str, bytes, DurableOptions, asyncio.Future[str | None]]]] = {}
                for entry in batch:
                    options = entry[2]
                    wanted = options.replicas_wanted
                    groups.setdefault((wanted, options.replica_timeout if wanted else 0.0), []).append(entry)
                await asyncio.gather(*(self._store(key, entries) for key, entries in groups.items()))
                batch, self.pending = self.pending, []
        finally:
            self.flushing = False
            if self.pending and not self.scheduled:
                self.scheduled = True
                self.loop.call_soon(self._start)

    async def _store(
        self, key: tuple[int, float], entries: list[tuple[str, bytes, DurableOptions, asyncio.Future[str | None]]]
    ) -> None:
        wanted, timeout = key
        try:
            ids, confirmed = await self.durable.streams.add_many(
                [(channel, item, self.durable.capacity(channel, options), None) for channel, item, options, _f in entries],
                wanted,
                timeout,
            )
        except BaseException as exc:
            for entry in entries:
                if not entry[3].done():
                    entry[3].set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        failure: NotReplicated | None = None
        if wanted and confirmed < wanted:
            self.durable.layer.stats.durable_not_replicated += sum(1 for entry in ids if entry is not None)
            failure = NotReplicated(f"stored, but {confirmed} of {wanted} replica(s) confirmed within {timeout}s")
        for (_channel, _item, _options, future), entry_id in zip(entries, ids):
            if future.done():
                continue
            if failure is not None and entry_id is not None:
                future.set_exception(failure)
            else:
                future.set_result(entry_id)


class DurableReceiver:
    """A worker's reader of durable channels: deliveries in, acknowledgements out.

    Pumps read new messages (one blocking read per server) and a claimer takes over
    messages that were pending too long (their worker died or stalled) or whose retry is
    due. At most ``prefetch`` deliveries are out at a time (read, not yet acknowledged,
    failed or released): that is how many a killed worker leaves for the others to claim
    after the visibility timeout, and what bounds the worker's memory.

    The owner calls exactly one of :meth:`ack` (the handler returned), :meth:`fail` (it
    raised: retry with backoff, or dead-letter after ``max_deliveries``) or
    :meth:`release` (never started: let another worker have it now) per delivery.

    While a delivery is out (read, handled, its acknowledgement not yet stored), the
    reader renews its lease every third of the visibility timeout: a slow handler, a
    deploy's drain or a loaded machine never lets another worker claim a message this
    one is still working on (that was a duplicate per message held past the timeout). A
    worker that dies stops renewing, which is what lets the others claim its messages.
    """

    def __init__(self, durable: DurableChannels, channels: Sequence[str], consumer: str, *, prefetch: int) -> None:
        if prefetch < 1:
            raise ValueError("prefetch must be at least 1")
        self.durable = durable
        self.streams = durable.streams
        self.stats = durable.layer.stats
        self.channels = list(channels)
        self.consumer = consumer
        self.prefetch = prefetch
        self.outstanding = 0
        # Read again only once this much room is free: a worker finishing one message at a
        # time would otherwise read one at a time, a round trip per message.
        self._refill = max(1, min(READ_BATCH, prefetch // 4))
        self._options = {channel: durable.require(channel) for channel in self.channels}
        self._buffer: collections.deque[tuple[str, DurableMessage]] = collections.deque()
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._closed = False
        self._acks: dict[str, list[str]] = {}
        self._ack_scheduled = False
        self._ack_flushing = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._aborted = False  # after abort() nothing more is started (an ack timer may still fire)
        # Entries out (channel -> ids) whose lease the renewer keeps: from read until the
        # acknowledgement is stored, or until the delivery is failed or released.
        self._held: dict[str, set[str]] = {}
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._pumps = [
            loop.create_task(self._pump(partition), name=f"durable-pump:{partition[0]}")
            for partition in self.streams.partition(self.channels)
        ]
        retry = min((options.backoff[0] for options in self._options.values()), default=1.0)
        self.claim_interval = max(0.05, min(1.0, retry / 2))
        self._claimer = loop.create_task(self._claim_loop(), name="durable-claimer") if self.channels else None
        visibility = min((options.visibility_timeout for options in self._options.values()), default=30.0)
        self.renew_interval = max(0.05, visibility / 3)
        self._renewer = loop.create_task(self._renew_loop(), name="durable-renewer") if self.channels else None

    # -- Reading ------------------------------------------------------------------------

    def _room_left(self) -> int:
        return self.prefetch - self.outstanding

    def _take(self, entries: list[StreamEntry]) -> None:
        for entry in entries:
            message = _decode(self.durable.layer, entry)
            if message is None:
                # Another writer, a version skew: no handler could ever take it.
                self.stats.corrupt += 1
                self._spawn(self._dead_letter(entry.channel, entry.entry, "undecodable message", entry.deliveries))
                continue
            self.outstanding += 1
            self._held.setdefault(entry.channel, set()).add(entry.entry)
            self._buffer.append((entry.channel, DurableMessage(message, _delivery(entry))))
        if self._buffer:
            self._ready.set()
        if self._room_left() < self._refill:
            self._room.clear()

    async def _pump(self, channels: list[str]) -> None:
        block = self.durable.layer.options.block_timeout
        failures = 0
        while not self._closed:
            await self._room.wait()
            if self._closed:
                break
            try:
                entries = await self.streams.read(channels, self.consumer, min(READ_BATCH, max(self._room_left(), 1)), block)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # As the layer's Receiver: a storage that is away (Redis restarting) fails
                # every read the same way, so one WARNING per outage, tracebacks at DEBUG.
                failures += 1
                if failures == 1:
                    logger.warning("reading durable channels %s failed (%r); retrying until it works again", channels, exc)
                logger.debug("reading durable channels %s failed", channels, exc_info=True)
                await asyncio.sleep(min(block, 1.0))
                continue
            if failures:
                logger.warning("reading durable channels %s again, after %d failed attempt(s)", channels, failures)
                failures = 0
            if entries:
                self.stats.received += len(entries)
                self.stats.durable_received += len(entries)
                self._take(entries)

    async def _claim_loop(self) -> None:
        failing: set[str] = set()  # channels whose last claim failed: one WARNING per outage each
        while not self._closed:
            await asyncio.sleep(self.claim_interval)
            for channel, options in self._options.items():
                room = self._room_left()
                if room <= 0 or self._closed:
                    break
                try:
                    entries, dead = await self.streams.claim(
                        channel, self.consumer, options.visibility_timeout, min(room, READ_BATCH),
                        options.max_deliveries, options.dead_letter_capacity,
                    )  # fmt: skip
                except Exception as exc:
                    if channel not in failing:
                        failing.add(channel)
                        logger.warning("claiming pending messages of %s failed (%r); retrying until it works again", channel, exc)
                    logger.debug("claiming pending messages of %s failed", channel, exc_info=True)
                    continue
                failing.discard(channel)
                if dead:
                    self.stats.dead_lettered += dead
                    logger.error(
                        "%d message(s) of %s moved to the dead letters: their workers never finished them", dead, channel
                    )
                if entries and not self._closed:
                    self.stats.received += len(entries)
                    self.stats.durable_redelivered += len(entries)
                    self._take(entries)
                elif entries:
                    # Closing: hand them straight back.
                    entry_ids = [entry.entry for entry in entries]
                    self._spawn(self.streams.set_idle(channel, self.consumer, entry_ids, options.visibility_timeout))

    async def get_batch(self, max_messages: int = 256) -> list[tuple[str, DurableMessage]]:
        """Wait for at least one delivery; up to ``max_messages`` of them."""
        while not self._buffer:
            if self._closed:
                from .core import LayerClosed

                raise LayerClosed("receiver closed")
            self._ready.clear()
            await self._ready.wait()
        buffer = self._buffer
        batch = [buffer.popleft() for _ in range(min(len(buffer), max_messages))]
        if not buffer:
            self._ready.clear()
        return batch

    def pending(self) -> int:
        return len(self._buffer)

    # -- Outcomes -----------------------------------------------------------------------

    def _done(self) -> None:
        self.outstanding -= 1
        if self._room_left() >= self._refill:
            self._room.set()

    def ack(self, delivery: Delivery) -> None:
        """The handler finished: forget the message (batched with others this loop pass)."""
        self._done()
        due = self._acks.setdefault(delivery.channel, [])
        due.append(delivery.entry)
        if self._ack_flushing:
            return  # the flush in flight takes these when it returns
        if len(due) >= ACK_BATCH:
            self._start_acks()
        elif not self._ack_scheduled:
            self._ack_scheduled = True
            self._loop.call_later(ACK_DELAY, self._start_acks)

    def _start_acks(self) -> None:
        self._ack_scheduled = False
        if self._ack_flushing or not self._acks or self._aborted:
            return
        self._ack_flushing = True
        self._spawn(self._flush_acks())

    async def _flush_acks(self) -> None:
        acks, self._acks = self._acks, {}
        try:
            await self.streams.ack(acks)
        except Exception as exc:
            self._let_go_many(acks)
            # The messages stay pending: claimed after the visibility timeout and handled
            # again (at least once; consumers are idempotent).
            logger.warning("acknowledging %d message(s) failed (they will be redelivered): %r", sum(map(len, acks.values())), exc)
        else:
            self._let_go_many(acks)
            self.stats.durable_acked += sum(map(len, acks.values()))
        finally:
            self._ack_flushing = False
            # What came in meanwhile waits for its own batch (or goes now if it is one).
            if self._acks and not self._ack_scheduled:
                if sum(map(len, self._acks.values())) >= ACK_BATCH:
                    self._start_acks()
                else:
                    self._ack_scheduled = True
                    self._loop.call_later(ACK_DELAY, self._start_acks)

    def fail(self, delivery: Delivery, error: str) -> None:
        """The handler raised: deliver again after a backoff, or dead-letter at ``max_deliveries``."""
        self._done()
        self._let_go(delivery.channel, delivery.entry)
        options = self._options.get(delivery.channel) or self.durable.require(delivery.channel)
        if delivery.count >= options.max_deliveries:
            self._spawn(self._dead_letter(delivery.channel, delivery.entry, error, delivery.count))
            return
        self.stats.durable_retried += 1
        delay = options.retry_delay_for(delivery.count)
        self._spawn(self._set_idle(delivery.channel, [delivery.entry], options.visibility_timeout - delay))

    def dead_letter(self, delivery: Delivery, error: str) -> None:
        """No handler could ever take it (malformed): to the dead letters without retries."""
        self._done()
        self._let_go(delivery.channel, delivery.entry)
        self._spawn(self._dead_letter(delivery.channel, delivery.entry, error, delivery.count))

    def release(self, deliveries: Sequence[Delivery]) -> None:
        """Not started (stopping, no room): another worker may claim them right away."""
        by_channel: dict[str, list[str]] = {}
        for delivery in deliveries:
            self._done()
            self._let_go(delivery.channel, delivery.entry)
            by_channel.setdefault(delivery.channel, []).append(delivery.entry)
        for channel, entries in by_channel.items():
            self.stats.durable_released += len(entries)
            options = self._options.get(channel) or self.durable.require(channel)
            self._spawn(self._set_idle(channel, entries, options.visibility_timeout))

    async def _set_idle(self, channel: str, entries: list[str], idle: float) -> None:
        try:
            await self.streams.set_idle(channel, self.consumer, entries, idle)
        except Exception as exc:
            logger.warning(
                "rescheduling %d message(s) of %s failed (claimed after the visibility timeout): %r", len(entries), channel, exc
            )

    async def _dead_letter(self, channel: str, entry: str, error: str, deliveries: int) -> None:
        options = self._options.get(channel) or self.durable.require(channel)
        try:
            moved = await self.streams.dead_letter(channel, entry, error[:4000], deliveries, options.dead_letter_capacity)
        except Exception as exc:
            logger.warning("moving a message of %s to the dead letters failed (it stays pending): %r", channel, exc)
            return
        if moved:
            self.stats.dead_lettered += 1
            logger.error(
                "message of %s moved to the dead letters after %d deliveries: %s",
                channel,
                deliveries,
                error.splitlines()[-1] if error else "",
            )
            return
        # Full: keep it pending and try again later rather than lose it.
        self.stats.dead_letter_full += 1
        logger.error(
            "dead letters of %s are full (%d): a failing message stays pending and is retried",
            channel,
            options.dead_letter_capacity,
        )
        await self._set_idle(channel, [entry], options.visibility_timeout - options.backoff[1])

    def _let_go(self, channel: str, entry: str) -> None:
        held = self._held.get(channel)
        if held is not None:
            held.discard(entry)
            if not held:
                del self._held[channel]

    def _let_go_many(self, entries: dict[str, list[str]]) -> None:
        for channel, ids in entries.items():
            for entry in ids:
                self._let_go(channel, entry)

    async def _renew_loop(self) -> None:
        failing = False
        while not (self._closed and not self._held):  # closed and nothing left out: done
            await asyncio.sleep(self.renew_interval)
            try:
                for channel, held in list(self._held.items()):
                    if held:
                        await self.streams.renew(channel, self.consumer, list(held))
            except Exception as exc:
                # Renewed next round; past the visibility timeout another worker may
                # take a message (at least once, as for a dead worker).
                if not failing:
                    logger.warning("renewing the lease of held durable messages failed (%r); retrying", exc)
                failing = True
                continue
            failing = False

    def _spawn(self, coroutine: Any) -> None:
        if self._aborted:
            coroutine.close()  # left to the visibility timeout, as abort() says
            return
        task = self._loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- Closing ------------------------------------------------------------------------

    async def close(self) -> list[tuple[str, DurableMessage]]:
        """Stop reading; return deliveries read but not handed out yet (the owner settles them).

        Their lease is kept, as that of every delivery still out, until the owner settles
        them or calls :meth:`abort` (a worker does both on its way out): a stopping worker
        handles what it had read without another worker claiming it meanwhile.
        """
        self._closed = True
        self._room.set()
        self._ready.set()
        if self._claimer is not None:
            self._claimer.cancel()
        if getattr(self.durable.layer.storage, "pop_cancel_safe", False):
            for pump in self._pumps:
                pump.cancel()
        await asyncio.gather(*self._pumps, *([self._claimer] if self._claimer else []), return_exceptions=True)
        leftover = list(self._buffer)
        self._buffer.clear()
        return leftover

    async def flush(self, timeout: float = 10.0) -> None:
        """Wait (bounded) until every ack, retry and release issued so far has reached the storage."""
        deadline = time.monotonic() + timeout
        while (self._tasks or self._acks or self._ack_flushing) and time.monotonic() < deadline:
            if self._acks and not self._ack_flushing and not self._ack_scheduled:
                self._start_acks()
            pending = list(self._tasks)
            if pending:
                await asyncio.wait(pending, timeout=max(0.0, deadline - time.monotonic()))
            else:
                await asyncio.sleep(0.01)

    def abort(self) -> None:
        """Stop at once (the owner is being cancelled, or has finished); what is pending is claimed later.

        That includes acks, retries and releases still in flight (:meth:`flush` is how an
        owner waits for them first): a message whose ack is cut off is delivered again.
        """
        self._closed = True
        self._aborted = True
        self._ready.set()
        self._room.set()
        for task in [*self._pumps, *([self._claimer] if self._claimer else []), *([self._renewer] if self._renewer else [])]:
            task.cancel()
        for task in list(self._tasks):
            task.cancel()
