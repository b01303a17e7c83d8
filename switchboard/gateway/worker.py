"""The worker process: runs consumers for connection events and named channels.

A worker reads, in one batched loop, the pool channels of the protocols its application
routes (``switchboard.http``, ``switchboard.websocket``...), the named channels of its
``ChannelNameRouter`` (``thumbnails``...) and its own channel ``worker.<id>!in``. For each
connection it keeps one application instance (an ASGI ``app(scope, receive, send)`` call
fed from a queue), so consumer state lives as long as the connection, exactly as in Django
Channels. Replies go straight to the connection's reply channel on the gateway.

Worker affinity (specs/layer.md): when a gateway asks, the worker *claims* a sticky
connection, and the gateway then sends that connection's events to this worker's own
channel — one instance sees them all, in order, even with many workers. The worker
heartbeats to the gateways it holds claims with; on a graceful stop it asks them to
release its connections and keeps serving until each acknowledges, so a deploy loses
nothing. A worker that meets an established WebSocket it has no instance for (its
previous worker stopped) *resumes* it: it runs the consumer's connect handler again with
``scope["resumed"] = True`` and swallows the repeated accept. Those rules are the pure
``WorkerAffinity`` machine of ``affinity.py``; this module carries its decisions out.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import secrets
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from asgiref.sync import markcoroutinefunction

from .affinity import (
    FINAL_EVENTS,
    HOLD_UNSCOPED,
    IGNORE,
    RECLAIM,
    RELEASE_HELD,
    START,
    OwnClaim,
    Unscoped,
    WorkerAffinity,
    own_claim,
    resume_for,
    swallow_reply,
    taken_back,
)
from .envelope import (
    CLAIM,
    DRAINED,
    EVENT_TYPE,
    HEARTBEAT,
    RELEASED,
    SCOPE,
    SCOPE_REQUEST,
    WORKER_STOPPING,
    pool_channel,
)
from .latency import HandlerTimes
from .layers import ChannelFull, ChannelLayer, LayerClosed, Message
from .layers.durable import Delivery, DurableMessage, Settlement
from .layers.durable_channels import DurableReceiver
from .tap import Taps
from .wake_pacer import WakePacer

if TYPE_CHECKING:
    from .tracing import WorkerTracer

logger = logging.getLogger("switchboard.worker")

ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

# Events after which a connection has nothing more to say: no instance is built for them.
_FINAL_EVENTS = FINAL_EVENTS

# Scope types whose instance gets ``max_instance_backlog``: one client connection, or one
# named channel (throttled at that bound, never dropped). Others serve a listener's peers.
_ONE_CLIENT_SCOPES = frozenset({"http", "websocket", "webrtc", "channel"})


async def _nothing() -> None:
    """A reply that needs no sending, as an awaitable."""


def _epoch_of(envelope: Message) -> int:
    """The epoch a claim-asking envelope carries (W7); 0 when it has none."""
    epoch = envelope.get("epoch", 0)
    return epoch if type(epoch) is int else 0


@dataclass
class WorkerStats:
    events: int = 0
    named_messages: int = 0
    instances_started: int = 0
    instances_finished: int = 0
    instances_failed: int = 0
    events_ignored: int = 0
    bad_messages: int = 0
    claims: int = 0
    resumed: int = 0
    # Scope-less events (sent to our channel) of a connection we had no instance for:
    # asked the gateway for the scope / dropped because no answer or the connection closed.
    scope_requests: int = 0
    events_unscoped_dropped: int = 0
    # Events refused because their instance already had ``max_instance_backlog`` queued
    # (its connection got the protocol's "try again later"), and connections so closed.
    events_dropped_backlog: int = 0
    backlog_closes: int = 0
    # Messages handed to a claimed connection's instance in process (no gateway round trip).
    events_local: int = 0
    # Replies dropped because the connection's gateway had no room for them for
    # ``reply_wait`` seconds (its reply list stayed full): the consumer is not told.
    replies_shed: int = 0
    # Replies the layer raised on (Redis unreachable, the gateway's primary failing over):
    # lost at most once, also in the layer's ``send_failed``; the consumer is not told.
    replies_failed: int = 0
    # Instances ended because their gateway judged this worker lost and gave their
    # connections to other workers (W7), and the events they still had queued, dropped.
    instances_taken_back: int = 0
    events_dropped_taken_back: int = 0
    # Durable deliveries whose handler returned / raised (retried or dead-lettered), and
    # those handed back unstarted (stopping, backlog full) for another worker.
    durable_finished: int = 0
    durable_failed: int = 0
    durable_released: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        data = {k: v for k, v in self.__dict__.items() if k != "extra"}
        data.update(self.extra)
        return data


class _EventQueue:
    """The queue feeding one instance's ``receive``: ``asyncio.Queue``'s used part, cheaper.

    ``asyncio.Queue`` asks for the running loop on every wait (a ``getpid`` system call
    inside ``get_running_loop``) and keeps getter/putter deques and a finished-event per
    queue; this binds its loop once and allocates a future only while the app waits.
    """

    __slots__ = ("_items", "_loop", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._items: collections.deque[Message] = collections.deque()
        self._loop = loop
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Message, pacer: WakePacer | None = None) -> None:
        """Queue ``item`` now; the waiting app is woken at once, or by ``pacer`` (one of a burst)."""
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            if pacer is None:
                waiter.set_result(None)
            else:
                pacer.wake(waiter)

    async def get(self) -> Message:
        while not self._items:
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()

    def get_nowait(self) -> Message:
        if not self._items:
            raise asyncio.QueueEmpty
        return self._items.popleft()

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)


class _Instance:
    """One running application instance and the queue that feeds its ``receive``."""

    __slots__ = (
        "accepted",
        "bound",
        "claim",
        "closed",
        "epoch",
        "handed",
        "in_hand",
        "key",
        "local",
        "on_room",
        "overflowed",
        "progressed",
        "queue",
        "response_started",
        "resumed",
        "scope",
        "task",
        "times",
        "waiting",
    )

    def __init__(self, key: str, scope: dict[str, Any], loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.key = key
        self.scope = scope
        self.queue = _EventQueue(loop or asyncio.get_running_loop())
        self.task: asyncio.Task[None] | None = None
        self.response_started = False
        self.accepted = False
        self.closed = False
        self.claim = False
        # The epoch of the envelope it claimed from (W7): a gateway that took the
        # connection back at a higher one ends it.
        self.epoch = 0
        self.resumed = False
        self.waiting = False  # the app is blocked in receive(): it has finished what it had
        # Claimed before the app ran, so every message for it reaches this worker: messages
        # sent in this process may be handed over directly (Worker._deliver_local).
        self.local = False
        self.overflowed = False  # the backlog bound was hit; the connection was told to go
        self.on_room: Callable[[], None] | None = None  # called when the backlog has room again
        self.bound = 0  # most events it may have queued (set by the worker)
        # The durable message handed out last, until the app asks for the next one: an
        # ASGI app calls receive() again only once it has finished with a message, so
        # that call is when the worker acknowledges it (unless the app took it over).
        self.in_hand: Settlement | None = None
        self.progressed = False  # receive() returned at least one message
        # Handler times (gateway/latency.py): when the last event was handed to the app,
        # and the histogram of its protocol (set by the worker).
        self.handed = 0.0
        self.times: HandlerTimes | None = None

    async def receive(self) -> Message:
        if self.handed and asyncio.current_task() is self.task:
            # The app asks for more from its own task: the last event's handler is done.
            # (Django's HTTP handler also waits for a disconnect from a second task.)
            self.end_handler()
        finished = self.in_hand
        if finished is not None:
            self.in_hand = None
            if not finished.taken:
                finished.finished()
        self.waiting = True
        try:
            message = await self.queue.get()
        finally:
            self.waiting = False
        self.progressed = True
        if type(message) is DurableMessage:
            self.in_hand = message.settlement
        if self.on_room is not None:
            self.on_room()
        self.handed = time.perf_counter()
        return message

    def end_handler(self) -> None:
        """Record the handler time of the event last handed out, if one is running."""
        handed, self.handed = self.handed, 0.0
        if handed and self.times is not None:
            self.times.observe(time.perf_counter() - handed)

    @property
    def idle(self) -> bool:
        return self.task is None or self.task.done() or (self.waiting and self.queue.empty())


def protocols_of(application: Any) -> list[str]:
    """Scope types an application routes (``ProtocolTypeRouter`` keys), minus ``channel``."""
    mapping = getattr(application, "application_mapping", None)
    if isinstance(mapping, dict):
        return [name for name in mapping if name != "channel"]
    return ["http"]  # a plain ASGI app (Django's own handler) serves HTTP only


def channel_names_of(application: Any) -> list[str]:
    """Named channels an application consumes (its ``ChannelNameRouter`` keys)."""
    mapping = getattr(application, "application_mapping", None)
    if isinstance(mapping, dict):
        channel_router = mapping.get("channel")
        names = getattr(channel_router, "application_mapping", None)
        if isinstance(names, dict):
            return list(names)
    return []


class Worker:
    """Runs application instances for events read from the layer."""

    def __init__(
        self,
        application: ASGIApp,
        layer: ChannelLayer,
        *,
        protocols: Iterable[str] | None = None,
        channels: Iterable[str] | None = None,
        heartbeat_interval: float = 0.25,
        max_instance_backlog: int = 1000,
        max_listener_backlog: int = 20000,
        local_delivery: bool = True,
        reply_wait: float = 5.0,
        django_http: str = "auto",
        django_threads: int = 8,
        durable_prefetch: int = 32,
    ) -> None:
        from switchboard.consumers import django_http as django_http_module

        # Django's own handler as the whole application (no router) is served fast too;
        # routers and middleware wrap the handlers they are given themselves.
        django_http_module.configure(django_http, django_threads)
        application = django_http_module.fast_django(application)
        self.application = application
        self.layer = layer
        self.protocols = list(protocols_of(application) if protocols is None else protocols)
        self.channels = list(channel_names_of(application) if channels is None else channels)
        self.id = secrets.token_hex(6)
        self.local_prefix = f"worker.{self.id}!"
        self.channel = self.local_prefix + "in"
        self.heartbeat_interval = heartbeat_interval
        self.instances: dict[str, _Instance] = {}
        # Worker affinity (claims per gateway, scope-less events, the stop handshake): the
        # rules live in this pure machine; the worker carries out what it decides.
        self.affinity: WorkerAffinity[Message] = WorkerAffinity(scope_timeout=5.0, max_unscoped=1000)
        self.stats = WorkerStats()
        #: Scope type -> handler times of its instances (gateway/latency.py).
        self.handler_times: dict[str, HandlerTimes] = {}
        #: Live tails consoles asked for (gateway/tap.py); None while nobody watches.
        self.tap: Taps | None = None
        #: OpenTelemetry spans (gateway/tracing.py), when TRACING is enabled; else None.
        self.tracer: WorkerTracer | None = None
        self._acked = asyncio.Event()
        self.max_instance_backlog = max_instance_backlog
        self.max_listener_backlog = max_listener_backlog
        self.local_delivery = local_delivery
        self.reply_wait = reply_wait
        self._shed_logged = 0.0
        self._shed_unlogged = 0
        self._failed_logged = 0.0
        self._failed_unlogged = 0
        self.durable_prefetch = durable_prefetch
        # The reader of this worker's durable channels (specs/layer.md, Durable channels).
        self.durable: DurableReceiver | None = None
        self._claim_warned: set[str] = set()
        self._stopping = False
        self._thread = 0
        self._pacer: WakePacer | None = None  # made by run(), on the worker's loop
        # Named channels are read only while their instances have room (backpressure: the
        # rest waits on the layer, bounded by its capacity, instead of in this process).
        self._named_room = asyncio.Event()
        self._named_room.set()

    @property
    def claims(self) -> dict[str, set[str]]:
        """Gateway control channel -> connections this worker has claimed there."""
        return self.affinity.claims

    @property
    def _unscoped(self) -> dict[str, Any]:
        """Connections whose scope-less events wait for their scope (affinity rule W4)."""
        return self.affinity.unscoped

    @property
    def scope_timeout(self) -> float:
        return self.affinity.scope_timeout

    @scope_timeout.setter
    def scope_timeout(self, value: float) -> None:
        self.affinity.scope_timeout = value

    @property
    def max_unscoped_events(self) -> int:
        return self.affinity.max_unscoped

    @max_unscoped_events.setter
    def max_unscoped_events(self, value: int) -> None:
        self.affinity.max_unscoped = value

    def listen_channels(self) -> list[str]:
        return [pool_channel(p) for p in self.protocols] + self.channels

    async def run(self, stop: asyncio.Event | None = None, drain_timeout: float = 10.0) -> None:
        """Serve until ``stop`` is set; then hand connections back and let instances finish."""
        stop = stop or asyncio.Event()
        names = self.listen_channels()
        if not names:
            raise RuntimeError("worker has no channels to listen on: route a protocol or name channels")
        logger.info("worker %s listening on %s", self.id, ", ".join(names))
        loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        # Pacing helps only where replies wait for a batch; in memory they are stored at once.
        self._pacer = WakePacer(loop) if self.layer.batches_sends else None
        pools = [pool_channel(p) for p in self.protocols]
        shared = [self.layer.receiver(pools)] if pools else []
        if self.channels:
            shared.append(self.layer.receiver(self.channels, max_buffered=self.max_instance_backlog))
        own = self.layer.receiver([self.local_prefix])
        readers = [
            loop.create_task(self._read_loop(receiver, throttled=bool(self.channels) and receiver is shared[-1]))
            for receiver in shared
        ]
        durable_names = [name for name in names if self.layer.durable.options_for(name) is not None]
        if durable_names:
            self.durable = self.layer.durable.receiver(durable_names, f"worker.{self.id}", prefetch=self.durable_prefetch)
            readers.append(loop.create_task(self._read_durable(self.durable)))
            logger.info("worker %s: durable (at-least-once) channels: %s", self.id, ", ".join(durable_names))
        own_reader = loop.create_task(self._read_loop(own))
        heartbeat = loop.create_task(self._heartbeat())
        if self.local_delivery:
            self.layer.add_local_route(self._deliver_local)
        try:
            await stop.wait()
            # Local delivery ends with the claims: from here on the gateways route.
            self._stopping = True
            self.layer.remove_local_route(self._deliver_local)
            # Stop taking new work from the pool, but keep reading our own channel until
            # every gateway we hold connections on has moved them back to the pool.
            self._named_room.set()
            for receiver in shared:
                for channel, message in await receiver.close():
                    self._dispatch(channel, message)
            if self.durable is not None:
                # Read already: handled during the drain like the rest (or handed back).
                for channel, durable_message in await self.durable.close():
                    self._dispatch_durable(channel, durable_message)
            await asyncio.gather(*readers)
            controls = await self._release_all(drain_timeout)
            heartbeat.cancel()
            for channel, message in await own.close():
                self._dispatch(channel, message)
            await own_reader
            # Finish every event we already have before the gateways send the next ones
            # on: that is what keeps a connection's events in order across a deploy.
            await self._wait_idle(drain_timeout)
            for control in controls:
                try:
                    await self.layer.send(control, {"type": DRAINED, "worker": self.channel}, control=True)
                except Exception as exc:
                    logger.warning("could not tell %s we drained: %r", control, exc)
            await self._drain(drain_timeout)
            if self.durable is not None:
                # Every ack, retry and hand-back reaches the layer before it closes.
                await self.durable.flush(drain_timeout)
        finally:
            # Also reached when run() itself is cancelled: leave no reader or heartbeat behind.
            heartbeat.cancel()
            self.layer.remove_local_route(self._deliver_local)
            for receiver in shared:
                receiver.abort()
            own.abort()
            if self.durable is not None:
                self.durable.abort()  # what it still holds is claimed after the visibility timeout
            for task in [*readers, own_reader]:
                task.cancel()
            for instance in list(self.instances.values()):
                if instance.task is not None:
                    instance.task.cancel()

    async def _read_loop(self, receiver: Any, *, throttled: bool = False) -> None:
        while True:
            limit = 256
            if throttled:
                await self._named_room.wait()
                limit = self._named_room_left()
            try:
                batch = await receiver.get_batch(limit)
            except LayerClosed:
                return
            for channel, message in batch:
                self._dispatch(channel, message)

    async def _read_durable(self, receiver: DurableReceiver) -> None:
        while True:
            try:
                batch = await receiver.get_batch()
            except LayerClosed:
                return
            for channel, message in batch:
                self._dispatch_durable(channel, message)

    async def _heartbeat(self) -> None:
        """Tell gateways we hold claims on that we are alive (they release us otherwise)."""
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            if self.affinity.unscoped:
                self._expire_unscoped()
            targets = list(self.affinity.heartbeat_targets())
            # All at once: a gateway whose Redis primary is failing over can take seconds
            # to fail; one after the other, the heartbeats to every other gateway waited
            # for it, and those gateways took this live worker for dead (G7).
            results = await asyncio.gather(
                *(self.layer.send(control, {"type": HEARTBEAT, "worker": self.channel}, control=True) for control in targets),
                return_exceptions=True,
            )
            for control, result in zip(targets, results):
                if isinstance(result, BaseException):
                    logger.warning("heartbeat to %s failed: %r", control, result)

    async def _wait_idle(self, timeout: float) -> None:
        """Wait until every instance is blocked in receive() with nothing queued."""
        deadline = asyncio.get_running_loop().time() + timeout
        while any(not instance.idle for instance in self.instances.values()):
            if asyncio.get_running_loop().time() > deadline:
                logger.warning("instances still busy after %.1fs; handing their connections on anyway", timeout)
                return
            await asyncio.sleep(0.01)

    async def _release_all(self, timeout: float) -> list[str]:
        """Ask every gateway to release our connections; wait for each acknowledgement.

        Returns the gateways asked, which are told once we have drained.
        """
        affinity = self.affinity
        controls = affinity.stopping()
        if not controls:
            return []
        self._acked.clear()
        for control in controls:
            try:
                await self.layer.send(control, {"type": WORKER_STOPPING, "worker": self.channel}, control=True)
            except Exception as exc:
                logger.warning("could not tell %s we are stopping: %r", control, exc)
                affinity.not_asked(control)
        if affinity.awaiting_release:
            try:
                await asyncio.wait_for(self._acked.wait(), timeout)
            except TimeoutError:
                logger.warning("gateways %s did not acknowledge our stop in %.1fs", sorted(affinity.awaiting_release), timeout)
        return controls

    def _dispatch(self, channel: str, message: Message) -> None:
        if self.tap is not None:
            self._tap_inbound(channel, message)
        message_type = message.get("type")
        if message_type == EVENT_TYPE:
            self._dispatch_event(message)
        elif message_type == SCOPE and channel == self.channel:
            self._scope_arrived(message)
        elif message_type == RELEASED and channel == self.channel:
            taken = message.get("connections")
            if isinstance(taken, dict):
                self._taken_back(str(message.get("gateway")), taken)
            elif self.affinity.released(str(message.get("gateway"))):
                self._acked.set()
        elif channel in self.channels:
            self._dispatch_named(channel, message)
        else:
            self.stats.bad_messages += 1
            logger.warning("message of type %r on %s is not an event envelope; dropped", message.get("type"), channel)

    def _dispatch_durable(self, channel: str, message: DurableMessage) -> None:
        """Route one durable delivery; whatever path it takes, it is settled exactly once.

        Handled: finished when its app asks for the next message (or ends). Nothing to
        handle (a final event without an instance): finished now. Malformed: no handler
        could ever take it, so it goes to the dead letters at once.
        """
        receiver = self.durable
        assert receiver is not None
        delivery = message.delivery
        if channel in self.channels:
            message.settlement = self._settlement(delivery)
            self._dispatch_named(channel, message)
            return
        connection = message.get("connection")
        event = message.get("event")
        scope = message.get("scope")
        if message.get("type") != EVENT_TYPE or not (
            isinstance(connection, str) and isinstance(event, dict) and isinstance(scope, dict)
        ):
            self.stats.bad_messages += 1
            logger.warning("durable message on %s is not an event envelope with a scope: dead-lettered", channel)
            receiver.dead_letter(delivery, "not a switchboard.event envelope with connection, scope and event")
            return
        if connection not in self.instances and event.get("type") in _FINAL_EVENTS:
            self.stats.events_ignored += 1
            receiver.ack(delivery)
            return
        durable_event = DurableMessage(event, delivery)
        durable_event.settlement = self._settlement(delivery)
        self._dispatch_event({**message, "event": durable_event})

    def _settlement(self, delivery: Delivery) -> Settlement:
        return Settlement(self._settle_outcome, delivery)

    def _settle_outcome(self, delivery: Delivery, outcome: str, error: str | None) -> None:
        receiver = self.durable
        if receiver is None:
            return
        if outcome == "finished":
            self.stats.durable_finished += 1
            receiver.ack(delivery)
        elif outcome == "failed":
            self.stats.durable_failed += 1
            receiver.fail(delivery, error or "failed")
        else:
            self.stats.durable_released += 1
            receiver.release([delivery])

    def _settle_ended(self, instance: _Instance, failure: str | None, cancelled: bool) -> None:
        """Settle what an ended instance held: its message in hand, and those still queued.

        In hand: finished if the app returned, failed (retried or dead-lettered) if it
        raised, released if it was cancelled (the worker is stopping), unless the app took
        it over. Queued durable messages never reached a handler: a fresh instance takes
        them, unless the worker is stopping or the instance ended without taking a single
        message (an app that returns at once would otherwise be restarted for ever): then
        they are released, their delivery count rising towards the dead letters.
        """
        if self.durable is None:
            return
        settlement, instance.in_hand = instance.in_hand, None
        if settlement is not None and not settlement.taken:
            if cancelled:
                settlement.released()
            elif failure is not None:
                settlement.failed(failure)
            else:
                settlement.finished()
        queued: list[DurableMessage] = []
        while not instance.queue.empty():
            event = instance.queue.get_nowait()
            if type(event) is DurableMessage:
                queued.append(event)
        if not queued:
            return
        if cancelled or self._stopping or not instance.progressed:
            for event in queued:
                if event.settlement is not None:
                    event.settlement.released()
            return
        for event in queued:
            if instance.scope.get("type") == "channel":
                self._dispatch_named(instance.key, event)
            else:
                self._dispatch_event({"type": EVENT_TYPE, "connection": instance.key, "scope": instance.scope, "event": event})

    def _tap_inbound(self, channel: str, message: Message) -> None:
        tap = self.tap
        assert tap is not None
        instance = self.instances.get(str(message.get("connection")))
        tap.inbound(channel, message, None if instance is None else str(instance.scope.get("type")))

    def _dispatch_event(self, envelope: Message) -> None:
        connection = envelope.get("connection")
        event = envelope.get("event")
        scope = envelope.get("scope")
        if not isinstance(connection, str) or not isinstance(event, dict) or not (scope is None or isinstance(scope, dict)):
            self.stats.bad_messages += 1
            logger.warning("malformed event envelope dropped: keys %s", sorted(envelope))
            return
        instance = self.instances.get(connection)
        event_type = event.get("type")
        claim = bool(envelope.get("claim"))
        dispatch = self.affinity.dispatch
        decision = dispatch(
            connection, has_instance=instance is not None, scoped=scope is not None, event_type=event_type, claim=claim
        )
        if decision is RELEASE_HELD:
            assert scope is not None
            self._release_unscoped(connection, scope)  # this envelope brings the scope
            instance = self.instances.get(connection)
            decision = dispatch(connection, has_instance=instance is not None, scoped=True, event_type=event_type, claim=claim)
        if decision is HOLD_UNSCOPED:
            # Sent to our channel because we claimed the connection, but its instance has
            # ended here (or its scope is already asked for): hold the event (and any that
            # follow) until the gateway tells us the scope, then build (resume) the
            # instance as for a pool event.
            self._hold_unscoped(connection, envelope)
            return
        self.stats.events += 1
        if self.tracer is not None:
            self.tracer.arrived(envelope, event)
        if decision is IGNORE:
            # A final event, or the rest of a streamed request body whose consumer already
            # answered and ended: nothing to build an instance for.
            self.stats.events_ignored += 1
            return
        if decision is START:
            assert scope is not None
            instance = _Instance(connection, scope)
            instance.claim = claim
            if claim:
                instance.epoch = _epoch_of(envelope)
            resume = resume_for(scope.get("type"), event_type)
            if resume is not None:
                # An established connection whose instance lived on a stopped worker.
                instance.resumed = True
                instance.scope = {**scope, "resumed": True}
                instance.queue.put_nowait({"type": resume.replay})
                self.stats.resumed += 1
            self._start(instance)
        elif decision is RECLAIM:
            # Asked again (the gateway released us, say after late heartbeats, and this
            # envelope came back to us from the pool): claim again, or it waits in vain.
            assert instance is not None
            instance.claim = True
            instance.epoch = _epoch_of(envelope)
            asyncio.get_running_loop().create_task(self._send_claim(instance))
        assert instance is not None
        self._enqueue(instance, event)

    def _enqueue(self, instance: _Instance, event: Message) -> None:
        """Queue ``event`` for ``instance``, within its bound (``max_instance_backlog`` or ``max_listener_backlog``).

        Past the bound the event is refused and counted, and the connection is told to go
        with its protocol's "try again later" (once): otherwise a client faster than its
        consumer would move its whole backlog into this process, where no channel
        capacity limits it (specs/layer.md, Backpressure).
        """
        if instance.queue.qsize() < instance.bound:
            instance.queue.put_nowait(event)
            return
        if type(event) is DurableMessage and event.settlement is not None:
            # Not dropped: back to the layer, where another worker (or this one, later) takes it.
            event.settlement.released()
            return
        self.stats.events_dropped_backlog += 1
        if event.get("type") in _FINAL_EVENTS:
            instance.queue.put_nowait(event)  # a disconnect must reach the app, bound or not
            return
        if not instance.overflowed:
            instance.overflowed = True
            self.stats.backlog_closes += 1
            logger.warning(
                "%s %s has %d events queued (its backlog bound): refusing its events",
                instance.scope.get("type"),
                instance.key,
                instance.queue.qsize(),
            )
            asyncio.get_running_loop().create_task(self._fail(instance, http_status=503, websocket_code=1013))

    def _deliver_local(self, channel: str, message: Message, item: bytes) -> bool:
        """Layer local route: hand a message for a connection we have claimed to its instance.

        Only messages the gateway would forward to the connection's worker (not replies
        of its protocol, such as ``websocket.send``, nor ``switchboard.*`` control
        messages), for instances claimed before their app ran (every message of theirs
        comes to this worker anyway, so in-process delivery keeps their order), while this
        worker is not stopping (then the gateways route again), from this worker's own
        thread, and within the backlog bound (past it the layer path applies the policy).
        """
        instance = self.instances.get(channel)
        message_type = message.get("type")
        if (
            instance is None
            or not isinstance(message_type, str)
            or message_type.startswith("switchboard.")
            or message_type.startswith(str(instance.scope.get("type")) + ".")
            or not instance.local
            or instance.closed
            or instance.overflowed
            or self._stopping
            or instance.queue.qsize() >= instance.bound
            or threading.get_ident() != self._thread
        ):
            return False
        try:
            _expires_at, _suffixes, message = self.layer.unpack_item(item)
        except Exception:
            return False
        self.stats.events_local += 1
        # A group message reaches every member here in one go: their handlers run a slice
        # per loop pass, so the first replies are stored while the rest run (WakePacer).
        instance.queue.put_nowait(message, self._pacer)
        return True

    def _hold_unscoped(self, connection: str, envelope: Message) -> None:
        outcome = self.affinity.hold(connection, envelope, asyncio.get_running_loop().time())
        if outcome is Unscoped.DROPPED:
            self.stats.events_unscoped_dropped += 1
        elif outcome is Unscoped.ASK:
            self.stats.scope_requests += 1
            asyncio.get_running_loop().create_task(self._request_scope(connection))

    async def _request_scope(self, connection: str) -> None:
        try:
            await self.layer.send(connection, {"type": SCOPE_REQUEST, "worker": self.channel}, control=True)
        except Exception as exc:
            logger.warning("could not ask %s for its scope: %r", connection, exc)
            self.stats.events_unscoped_dropped += len(self.affinity.take(connection))

    def _scope_arrived(self, message: Message) -> None:
        connection = message.get("connection")
        scope = message.get("scope")
        if not isinstance(connection, str):
            return
        if isinstance(scope, dict):
            self._release_unscoped(connection, scope)
            return
        dropped = self.affinity.take(connection)  # the connection closed meanwhile
        finals = sum(1 for envelope in dropped if envelope["event"].get("type") in FINAL_EVENTS)
        self.stats.events_ignored += finals
        self.stats.events_unscoped_dropped += len(dropped) - finals

    def _release_unscoped(self, connection: str, scope: dict[str, Any]) -> None:
        """Dispatch the held scope-less events of ``connection``, in order, with ``scope``."""
        for envelope in self.affinity.take(connection):
            self._dispatch_event({**envelope, "scope": scope})

    def _expire_unscoped(self) -> None:
        for connection, envelopes in self.affinity.expired(asyncio.get_running_loop().time()):
            self.stats.events_unscoped_dropped += len(envelopes)
            logger.warning(
                "no scope for %s came in %.1fs: %d event(s) dropped", connection, self.scope_timeout, len(envelopes)
            )

    def _dispatch_named(self, channel: str, message: Message) -> None:
        self.stats.named_messages += 1
        instance = self.instances.get(channel)
        if instance is None:
            instance = self._start(_Instance(channel, {"type": "channel", "channel": channel}))
            instance.on_room = self._named_has_room
        instance.queue.put_nowait(message)  # never dropped: the reader pauses instead
        if instance.queue.qsize() >= instance.bound:
            self._named_room.clear()

    def _named_room_left(self) -> int:
        """How many more named-channel messages fit in the fullest named instance's backlog."""
        instances = self.instances
        fullest = max((instances[name].queue.qsize() for name in self.channels if name in instances), default=0)
        return max(1, min(256, self.max_instance_backlog - fullest))

    def _named_has_room(self) -> None:
        if self._named_room.is_set():
            return
        low_water = self.max_instance_backlog // 2 + 1
        instances = self.instances
        if all(name not in instances or instances[name].queue.qsize() < low_water for name in self.channels):
            self._named_room.set()

    def _start(self, instance: _Instance) -> _Instance:
        # A connection's instance serves one client; a listener's (a UDP socket, an MQTT
        # session, the SMTP server) serves all of its peers, so it gets a larger bound.
        scope_type = str(instance.scope.get("type"))
        one_client = scope_type in _ONE_CLIENT_SCOPES
        instance.bound = self.max_instance_backlog if one_client else self.max_listener_backlog
        times = self.handler_times.get(scope_type)
        if times is None:
            times = self.handler_times[scope_type] = HandlerTimes()
        instance.times = times
        self.instances[instance.key] = instance
        self.stats.instances_started += 1
        instance.task = asyncio.get_running_loop().create_task(self._run_instance(instance), name=f"instance:{instance.key}")
        return instance

    async def _send_claim(self, instance: _Instance) -> None:
        """Claim the connection: its gateway sends the following events to this worker."""
        reply_channel = instance.scope["reply_channel"]
        self.affinity.claimed(reply_channel)
        self.stats.claims += 1
        await self.layer.send(reply_channel, {"type": CLAIM, "worker": self.channel}, control=True)

    def _taken_back(self, gateway: str, taken: dict[Any, Any]) -> None:
        """A gateway judged this worker lost and gave these connections to the pool (W7).

        It was not lost, only late (starved of CPU, or cut off from that gateway's Redis
        primary). Another worker resumes those connections, so the instances here end now:
        left running, they would handle the same clients beside the new ones, and a group
        message sent in this process would reach those clients twice (local delivery).
        Silently: the connection is open, so no disconnect handler runs (it would leave
        the groups the resumed instance has just joined). An instance that claimed again
        since (an envelope of that epoch came back here first) is kept.
        """
        ended = dropped = 0
        for connection, epoch in taken.items():
            instance = self.instances.get(str(connection))
            if instance is None or type(epoch) is not int or not taken_back(instance.epoch, epoch):
                continue
            del self.instances[instance.key]
            self._forget_claim(instance)
            instance.claim = instance.local = False
            dropped += instance.queue.qsize()
            if instance.task is not None:
                instance.task.cancel()
            ended += 1
        if ended:
            self.stats.instances_taken_back += ended
            self.stats.events_dropped_taken_back += dropped
            logger.warning(
                "gateway %s judged this worker lost (late heartbeats) and gave %d connection(s) to other workers: "
                "their instances here ended, %d queued event(s) dropped",
                gateway,
                ended,
                dropped,
            )

    def _forget_claim(self, instance: _Instance) -> None:
        reply_channel = instance.scope.get("reply_channel")
        if instance.claim and isinstance(reply_channel, str):
            self.affinity.forget(reply_channel)

    async def _run_instance(self, instance: _Instance) -> None:
        from switchboard.consumers.exceptions import RouteNotFound, StopConsumer

        def send(message: Message) -> Awaitable[None]:
            return self._reply_soon(instance, message)

        # It returns an awaitable: marked, so async_to_sync(send) in a sync consumer and
        # Django's own checks treat it as the coroutine function ASGI expects.
        markcoroutinefunction(send)
        send.queues_at_call = self.layer.queues_at_call  # type: ignore[attr-defined]  # see _reply_soon

        failure: str | None = None
        cancelled = True  # until the app returned or raised: a cancellation skips both
        try:
            if instance.claim:
                # Sent before the app runs, so it reaches the gateway before any reply
                # (and, for a WebSocket, before the accept lets the client send frames).
                await self._send_claim(instance)
                instance.local = True
            await self.application(dict(instance.scope), instance.receive, send)
            cancelled = False
            self.stats.instances_finished += 1
        except StopConsumer:
            cancelled = False
            self.stats.instances_finished += 1
        except RouteNotFound as exc:
            cancelled = False
            failure = f"no route: {exc}"
            self.stats.instances_failed += 1
            logger.info("no route for %s %s: %s", instance.scope.get("type"), instance.scope.get("path"), exc)
            await self._fail(instance, http_status=404, websocket_code=4404)
        except Exception:
            cancelled = False
            failure = traceback.format_exc()
            self.stats.instances_failed += 1
            logger.exception("consumer for %s %s raised", instance.scope.get("type"), instance.scope.get("path", instance.key))
            await self._fail(instance, http_status=500, websocket_code=1011)
        finally:
            instance.end_handler()
            self._forget_claim(instance)
            if self.instances.get(instance.key) is instance:
                del self.instances[instance.key]
            self._settle_ended(instance, failure, cancelled)
            if instance.on_room is not None:
                instance.on_room()  # a named consumer that ended (or failed) holds nothing back

    async def _send_reply(self, instance: _Instance, message: Message) -> None:
        await self._queue_reply(instance, message)

    def _reply_soon(self, instance: _Instance, message: Message) -> Awaitable[None]:
        """An instance's ``send``: queue ``message`` for its client now, await the result for its outcome.

        The reply joins the layer's next batch when ``send`` is called
        (``ChannelLayer.send_soon``), not when it is awaited, so an application that calls
        ``send`` for several messages before awaiting them (a Django response's start and
        body, :mod:`switchboard.consumers.django_http`) sends them in order in one round
        trip without a task each. The callable says so with ``queues_at_call``.

        Only on the worker's loop thread: ``async_to_sync(send)`` in a sync consumer calls
        ``send`` in the consumer's thread and awaits the result on the loop, so there the
        reply is queued when it is awaited, as a coroutine function's would be.
        """
        if threading.get_ident() != self._thread:
            return self._send_reply(instance, message)
        return self._queue_reply(instance, message)

    def _queue_reply(self, instance: _Instance, message: Message) -> Awaitable[None]:
        """Queue ``message`` (on the loop thread); the awaitable settles its outcome.

        A consumer's own claim (``ordered = True``) is the exception: it is sent when
        awaited, after its durable check.
        """
        message_type = message.get("type")
        if message_type == CLAIM:
            return self._own_claim(instance)
        if message_type == "http.response.start":
            instance.response_started = True
        elif message_type == "websocket.accept":
            swallow = swallow_reply(message_type, resumed=instance.resumed, accepted=instance.accepted)
            instance.accepted = True
            if swallow:
                return _nothing()  # the client was accepted long ago, by the previous worker
        elif message_type in ("websocket.close", "webrtc.close"):
            instance.closed = True
        reply_channel = instance.scope.get("reply_channel")
        if reply_channel is None:
            raise RuntimeError(f"instance {instance.key} has no reply channel to send {message_type!r} to")
        if self.tap is not None:
            self.tap.outbound(instance.scope, message)
        # What an instance sends is for its client, through the gateway: this worker's own
        # route refuses it (a reply type), a gateway in this process (``switchboard run``)
        # takes it at once (Gateway._take_local).
        return self._reply_outcome(
            instance, message_type, self.layer.send_soon(reply_channel, message, wait=self.reply_wait)
        )

    async def _reply_outcome(self, instance: _Instance, message_type: Any, sent: Awaitable[object]) -> None:
        # A full reply list is the gateway being a moment behind (all of its connections'
        # replies share it): wait for room, then shed. Never ChannelFull into the consumer,
        # which would kill it and its client's connection (1011) for a passing condition;
        # a client too slow for its own replies is the gateway's to close (1013).
        # A layer failure (the gateway's primary failing over) is passing too: the reply
        # is lost at most once and counted, and the consumer and its client live on.
        try:
            await sent
        except ChannelFull:
            self._shed(instance, message_type)
        except (LayerClosed, asyncio.CancelledError):
            raise
        except Exception as exc:
            self._reply_failed(instance, message_type, exc)

    async def _own_claim(self, instance: _Instance) -> None:
        """A consumer asking for ordered handling (``ordered = True``) of a connection
        that is not sticky by itself, such as a UDP socket or an MQTT session."""
        scope_type = str(instance.scope.get("type"))
        durable = self.layer.durable.options_for(pool_channel(scope_type)) is not None
        decision = own_claim(claimed=instance.claim, durable=durable)
        if decision is OwnClaim.DURABLE:
            # Durable events always go through the durable pool (a claimed worker's
            # own channel is at most once), so the claim could only lose them.
            if scope_type not in self._claim_warned:
                self._claim_warned.add(scope_type)
                logger.warning(
                    "ordered = True is ignored for %s: its pool %s is durable (redelivery cannot keep order)",
                    scope_type,
                    pool_channel(scope_type),
                )
        elif decision is OwnClaim.SEND and isinstance(instance.scope.get("reply_channel"), str):
            instance.claim = True
            await self._send_claim(instance)

    def _reply_failed(self, instance: _Instance, message_type: Any, exc: Exception) -> None:
        """Count a reply the layer raised on; log at most every 10 s (a failover fails many)."""
        self.stats.replies_failed += 1
        self._failed_unlogged += 1
        now = asyncio.get_running_loop().time()
        if now - self._failed_logged >= 10.0:
            logger.warning(
                "replies to the gateway of %s failed: %d reply(s) lost (%s the last: %r)",
                instance.key,
                self._failed_unlogged,
                message_type,
                exc,
            )
            logger.debug("the reply failed", exc_info=exc)
            self._failed_logged = now
            self._failed_unlogged = 0

    def _shed(self, instance: _Instance, message_type: Any) -> None:
        """Count a reply the gateway had no room for; log at most every 10 s (a burst sheds many)."""
        self.stats.replies_shed += 1
        self._shed_unlogged += 1
        now = asyncio.get_running_loop().time()
        if now - self._shed_logged >= 10.0:
            logger.warning(
                "the gateway of %s had no room for replies for %.1fs: %d reply(s) shed (%s the last)",
                instance.key,
                self.reply_wait,
                self._shed_unlogged,
                message_type,
            )
            self._shed_logged = now
            self._shed_unlogged = 0

    async def _fail(self, instance: _Instance, *, http_status: int, websocket_code: int) -> None:
        """Give the client a defined outcome after a consumer failure."""
        scope_type = instance.scope.get("type")
        if instance.scope.get("reply_channel") is None:
            return
        try:
            if scope_type == "http" and not instance.response_started:
                body = {404: b"Not Found", 503: b"Service Unavailable"}.get(http_status, b"Internal Server Error")
                await self._send_reply(
                    instance,
                    {
                        "type": "http.response.start",
                        "status": http_status,
                        "headers": [
                            [b"content-type", b"text/plain; charset=utf-8"],
                            [b"content-length", str(len(body)).encode()],
                        ],
                    },
                )
                await self._send_reply(instance, {"type": "http.response.body", "body": body, "more_body": False})
            elif scope_type == "http":
                await self._send_reply(instance, {"type": "http.response.body", "body": b"", "more_body": False})
            elif scope_type == "webrtc" and not instance.closed:
                await self._send_reply(instance, {"type": "webrtc.close"})
            elif scope_type == "websocket" and not instance.closed:
                denial = "websocket.http.response" in (instance.scope.get("extensions") or {})
                if not instance.accepted and denial:
                    # Before the handshake completes a close code cannot reach the client;
                    # the ASGI denial-response extension lets it see a real HTTP status.
                    status = 404 if websocket_code == 4404 else 500
                    body = b"Not Found" if status == 404 else b"Internal Server Error"
                    await self._send_reply(
                        instance,
                        {
                            "type": "websocket.http.response.start",
                            "status": status,
                            "headers": [[b"content-type", b"text/plain; charset=utf-8"]],
                        },
                    )
                    await self._send_reply(instance, {"type": "websocket.http.response.body", "body": body})
                else:
                    await self._send_reply(instance, {"type": "websocket.close", "code": websocket_code})
        except Exception:
            logger.exception("could not send the failure outcome to %s", instance.key)

    async def _drain(self, timeout: float) -> None:
        tasks = [i.task for i in self.instances.values() if i.task is not None and i.scope.get("type") == "http"]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        for instance in list(self.instances.values()):
            if instance.task is not None and not instance.task.done():
                instance.task.cancel()
        remaining = [i.task for i in self.instances.values() if i.task is not None]
        if remaining:
            await asyncio.gather(*remaining, return_exceptions=True)
