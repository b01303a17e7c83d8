"""The gateway process core: connections, the reply read loop, plugin lifecycle, signals.

Every connection a plugin accepts gets a reply channel ``gateway.<id>!<token>``. One read
loop per gateway process reads the shared ``gateway.<id>!`` list and hands each reply to
its connection: messages of the connection's own protocol (``websocket.send``...) go to the
plugin to write out; any other type (a group message such as ``chat.message``) is
forwarded to the worker pool as an event of that connection, so consumer handlers run
in workers while the connection itself never leaves the gateway.

Worker affinity (which worker gets a connection's events, what waits for a claim, when
a worker is gone) is decided by the pure machine in ``affinity.py``; this module feeds it
what it reads and carries out its answers with the layer.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import secrets
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from .affinity import ASK, HOLD, WORKER, Claim, ConnectionAffinity, GatewayAffinity, HeldFull, LateClaim, Route
from .config import SwitchboardConfig
from .envelope import (
    CLAIM,
    DRAINED,
    GROUP_ADD,
    GROUP_DISCARD,
    HEARTBEAT,
    MARK,
    RELEASE,
    RELEASED,
    SCOPE,
    SCOPE_REQUEST,
    WORKER_STOPPING,
    pool_channel,
    wrap,
)
from .layers import ChannelFull, ChannelLayer, LayerClosed, Message, Receiver, build_layer, set_channel_layer
from .memberships import Memberships
from .plugins import ProtocolPlugin, build_plugins

if TYPE_CHECKING:
    from .tracing import GatewayTracer

logger = logging.getLogger("switchboard.gateway")

Deliver = Callable[[Message], None]


@dataclass(eq=False, slots=True)
class Connection:
    """One client connection (or peer, or session) held by a plugin in this gateway.

    A ``sticky`` connection (a WebSocket, a WebRTC peer) is claimed by the worker that
    handles its first event, and its later events go to that worker's channel, so one
    consumer instance sees them all, in order. Connectionless listeners (a UDP socket, an
    MQTT session) are not sticky: their events spread over every worker. Which worker,
    and what waits for one, is the affinity machine's row for it (``affinity``,
    gateway/affinity.py); the properties below read it.
    """

    channel: str
    protocol: str
    scope: dict[str, Any]
    deliver: Deliver
    pool: str
    affinity: ConnectionAffinity[Message]
    open: bool = True
    # The groups its consumer joined (the layer tells the gateway, see memberships.py);
    # None until it joins one (most connections never do: no empty set each).
    groups: set[str] | None = None
    # Plugins waiting in Gateway.wait_claimed for this connection's claim (or its close).
    claim_waiters: list[asyncio.Future[None]] | None = None

    @property
    def sticky(self) -> bool:
        return self.affinity.sticky

    @property
    def worker(self) -> str | None:
        """The channel of the worker holding the claim, or None."""
        return self.affinity.worker

    @property
    def held(self) -> deque[Message] | None:
        """Events waiting in the gateway for a claim (or a drain), in order; None when none."""
        return self.affinity.held

    @property
    def events_channel(self) -> str:
        """Where this connection's next event goes: its worker's channel, else the pool."""
        return self.affinity.worker or self.pool


@dataclass
class GatewayStats:
    """Gateway-level counters (plugins keep their own)."""

    connections_opened: int = 0
    connections_closed: int = 0
    events_sent: int = 0
    events_dropped_full: int = 0
    events_failed: int = 0
    # Failed attempts of events a plugin retried and then stored (``websocket_layer_retry``):
    # taken out of ``events_failed``, which counts events lost.
    events_retried: int = 0
    replies_delivered: int = 0
    replies_forwarded: int = 0
    replies_orphaned: int = 0
    claims: int = 0
    claims_refused: int = 0
    events_held: int = 0
    workers_lost: int = 0
    scopes_resent: int = 0
    # Claim timeouts passed while the connection's envelope still waited in the pool (no
    # worker running): its events kept waiting instead of a second envelope being sent.
    claims_awaited: int = 0
    # The layer lost its data (Redis restarted, flushed): memberships of open connections
    # added again; and memberships refreshed before group_expiry (memberships.py).
    layer_data_lost: int = 0
    memberships_restored: int = 0
    memberships_refreshed: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        data = {k: v for k, v in self.__dict__.items() if k != "extra"}
        data.update(self.extra)
        return data


class Gateway:
    """Owns the layer, the reply loop and the connections of one gateway process."""

    def __init__(
        self,
        layer: ChannelLayer,
        *,
        gateway_id: str | None = None,
        worker_timeout: float = 1.0,
        claim_timeout: float = 2.0,
        drain_timeout: float = 10.0,
        membership_check_interval: float = 1.0,
        event_wait: float = 2.0,
    ) -> None:
        self.layer = layer
        self.id = gateway_id or secrets.token_hex(6)
        self.reply_prefix = f"gateway.{self.id}!"
        self.control_channel = self.reply_prefix + "control"
        self.connections: dict[str, Connection] = {}
        self.stats = GatewayStats()
        self.memberships = Memberships(layer, f"gateway.{self.id}", self.stats, check_interval=membership_check_interval)
        # Worker affinity (claims, held events, worker liveness): the rules live in this
        # pure machine; the gateway feeds it what it reads and carries out what it says.
        self.affinity: GatewayAffinity[Connection, Message] = GatewayAffinity(
            claim_timeout=claim_timeout, worker_timeout=worker_timeout
        )
        self.mounts: dict[str, tuple[Any, str]] = {}
        self.drain_timeout = drain_timeout
        self.event_wait = event_wait
        self._mount_order: list[str] = []
        # Every plugin of this gateway, set by run_gateway before any starts (None when a
        # gateway is built by hand, e.g. in tests: then nobody can tell what is enabled).
        self.plugins: list[ProtocolPlugin[Any]] | None = None
        self._receiver: Receiver | None = None
        self._reply_task: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        # Workers that held claims when this gateway began to stop: told it is gone (stop()).
        self._claimants_at_stop: set[str] = set()
        #: OpenTelemetry spans (gateway/tracing.py), when TRACING is enabled; else None.
        self.tracer: GatewayTracer | None = None
        # The thread of the loop this gateway runs on (set by start): the local route
        # takes only what is sent there.
        self._thread: int | None = None
        # Held events a claim taken by the local route is flushing (kept until done).
        self._local_flushes: set[asyncio.Task[None]] = set()

    # The affinity machine's settings and tables, under the names they had before it.

    @property
    def claim_timeout(self) -> float:
        return self.affinity.claim_timeout

    @claim_timeout.setter
    def claim_timeout(self, value: float) -> None:
        self.affinity.claim_timeout = value

    @property
    def worker_timeout(self) -> float:
        return self.affinity.worker_timeout

    @worker_timeout.setter
    def worker_timeout(self, value: float) -> None:
        self.affinity.worker_timeout = value

    @property
    def max_held_events(self) -> int:
        """Events held per connection at most (past it: ``ChannelFull``)."""
        return self.affinity.max_held

    @max_held_events.setter
    def max_held_events(self, value: int) -> None:
        self.affinity.max_held = value

    @property
    def worker_claims(self) -> dict[str, set[Connection]]:
        """Workers holding claims on this gateway's connections."""
        return self.affinity.worker_claims

    @property
    def worker_seen(self) -> dict[str, float]:
        """When each claiming worker was last heard from (``time.monotonic()``)."""
        return self.affinity.worker_seen

    @property
    def _mark_sent(self) -> float | None:
        return self.affinity.mark_in_flight

    @property
    def _read_up_to(self) -> float:
        return self.affinity.read_up_to

    # -- connections ----------------------------------------------------------------

    def open_connection(self, scope: dict[str, Any], deliver: Deliver, *, sticky: bool = False) -> Connection:
        """Register a connection; adds ``reply_channel`` to ``scope`` and returns it.

        ``scope["type"]`` picks the worker pool channel; ``deliver`` is called (on the loop,
        must not block) with each reply of that protocol. ``sticky`` asks for worker
        affinity (see :class:`Connection`).
        """
        # 72 random bits: a reply channel is a capability, whoever can name it can write
        # to that client (tests/reliability/test_rel_security.py).
        channel = self.reply_prefix + secrets.token_urlsafe(9)
        scope["reply_channel"] = channel
        protocol = scope["type"]
        row: ConnectionAffinity[Message] = ConnectionAffinity(sticky)
        connection = Connection(channel, protocol, scope, deliver, pool_channel(protocol), row)
        self.affinity.open(connection, row)
        self.connections[channel] = connection
        self.stats.connections_opened += 1
        return connection

    def close_connection(self, connection: Connection) -> None:
        """Forget a connection; later replies to it are counted as orphaned."""
        if connection.open:
            connection.open = False
            self.connections.pop(connection.channel, None)
            self.affinity.close(connection)
            if connection.groups:
                self.memberships.closed(connection)
            _wake_claim_waiters(connection)
            self.stats.connections_closed += 1

    async def wait_claimed(self, connection: Connection, timeout: float) -> str | None:
        """The worker holding ``connection``'s claim, waiting up to ``timeout`` seconds for one.

        None if the connection closed or no claim came in time. For a plugin that sends one
        connection's events as a stream (a request body in chunks): it sends the rest only
        once the worker that has the start has claimed it, so no part can reach the pool
        (another worker) and none waits in the gateway's held list, which is per-event
        bounded, not per-byte.
        """
        if connection.worker is not None or not connection.open:
            return connection.worker if connection.open else None
        waiter = asyncio.get_running_loop().create_future()
        if connection.claim_waiters is None:
            connection.claim_waiters = []
        connection.claim_waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            pass
        finally:
            waiters = connection.claim_waiters
            if waiters is not None and waiter in waiters:
                waiters.remove(waiter)
        return connection.worker if connection.open else None

    async def send_event(
        self, connection: Connection, event: Message, *, wait: float | None = None, durable: bool | None = None
    ) -> None:
        """Send one event of ``connection`` to the worker pool.

        Raises :class:`~switchboard.gateway.layers.ChannelFull` when the pool is at
        capacity; the plugin answers that in its protocol (503, close 1013, counted drop).
        A sticky connection's event first waits up to ``wait`` (default ``event_wait``)
        for room: a worker a moment behind is backpressure for that one client (its
        plugin reads nothing more from it meanwhile), not a reason to close it. Events of
        connectionless listeners (UDP, MQTT, SMTP) are refused at once: their plugins
        queue and drop by their own policy.

        On a durable pool (specs/layer.md, Durable channels) it returns once the event is
        stored, so the plugin acknowledges its source after that; it may also raise
        ``MessageTooLarge`` or ``NotReplicated``. ``durable=False`` sends this event at
        most once all the same (MQTT QoS 0).
        """
        if wait is None:
            wait = self.event_wait if connection.affinity.sticky else 0.0
        try:
            route = self.affinity.route_event(connection, event, time.monotonic())
        except HeldFull:
            self.stats.events_dropped_full += 1
            raise ChannelFull(connection.channel) from None
        if route is HOLD:
            # Behind a claim on its way, an unanswered claim-asking envelope, a drain or
            # earlier held events: the claim (or the watcher, once it is late) sends it on.
            self.stats.events_held += 1
            return
        await self._send_envelope(connection, event, route, wait=wait, durable=durable)

    async def _send_envelope(
        self, connection: Connection, event: Message, route: Route, *, wait: float = 0.0, durable: bool | None = None
    ) -> None:
        """Carry out one of the affinity machine's routes for ``event``."""
        worker = connection.affinity.worker if route is WORKER else None
        # The claiming worker has the instance and so the scope: only pool sends carry it.
        envelope = wrap(connection.channel, None if worker is not None else connection.scope, event)
        if self.tracer is not None:
            self.tracer.inject(event, envelope)
        try:
            if route is ASK:
                envelope["claim"] = True
                epoch = connection.affinity.epoch
                if epoch:  # taken back from a worker judged lost (G7, W7)
                    envelope["epoch"] = epoch
                token = await self.layer.send_tracked(connection.pool, envelope, wait=wait)
                self.affinity.asked(connection, token)
            else:
                await self.layer.send(worker or connection.pool, envelope, wait=wait, durable=durable)
        except ChannelFull:
            self.stats.events_dropped_full += 1
            raise
        except Exception:
            self.stats.events_failed += 1
            raise
        self.stats.events_sent += 1

    def event_retried(self, failed_attempts: int) -> None:
        """A plugin retried an event after ``failed_attempts`` layer failures, and it was then
        stored: those attempts lost nothing, so they leave ``events_failed`` (a drop)."""
        self.stats.events_failed -= failed_attempts
        self.stats.events_retried += failed_attempts

    async def _flush_held(self, connection: Connection) -> None:
        """Send held events in order to the claiming worker (or the pool if none came).

        New events keep queueing behind the held ones until none is left, so a flush in
        progress can never be overtaken.
        """
        affinity = self.affinity
        try:
            while (step := affinity.next_held(connection, time.monotonic())) is not None:
                event, route = step
                try:
                    await self._send_envelope(connection, event, route)
                except Exception as exc:
                    logger.warning("held event for %s dropped: %r", connection.channel, exc)
                if route is ASK and affinity.has_held(connection):
                    return  # the rest wait for this new claim
        finally:
            affinity.flushed(connection)

    async def send(self, channel: str, message: Message) -> None:
        """Send to a named channel (``thumbnails``...), outside any connection."""
        await self.layer.send(channel, message)

    # -- in-gateway HTTP endpoints -------------------------------------------------

    def mount(self, path_prefix: str, app: Any, *, owner: str) -> None:
        """Serve ``path_prefix`` with ``app`` (an ASGI app) inside the gateway.

        Plugins whose native protocol arrives over HTTP (Twilio webhooks, WebRTC
        signaling) mount their endpoints here; the HTTP plugin consults the mounts before
        sending a request to the workers, so those endpoints share its port, limits and
        TLS. Longest prefix wins.
        """
        if not path_prefix.startswith("/"):
            raise ValueError(f"mount path {path_prefix!r} must start with '/'")
        if path_prefix in self.mounts:
            raise ValueError(f"{owner} cannot mount {path_prefix!r}: {self.mounts[path_prefix][1]} has it")
        self.mounts[path_prefix] = (app, owner)
        self._mount_order = sorted(self.mounts, key=len, reverse=True)

    def unmount(self, path_prefix: str) -> None:
        self.mounts.pop(path_prefix, None)
        self._mount_order = sorted(self.mounts, key=len, reverse=True)

    def find_mount(self, path: str) -> Any | None:
        """The mounted app for ``path``, if any (``/a`` matches ``/a`` and ``/a/...``)."""
        for prefix in self._mount_order:
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return self.mounts[prefix][0]
        return None

    # -- reply loop -----------------------------------------------------------------

    async def start(self) -> None:
        self._receiver = self.layer.receiver([self.reply_prefix])
        self._thread = threading.get_ident()
        self.layer.add_local_route(self._take_local)
        await self.memberships.start(self.connections.values)
        loop = asyncio.get_running_loop()
        self._reply_task = loop.create_task(self._reply_loop(), name="gateway-replies")
        self._watch_task = loop.create_task(self._watch_workers(), name="gateway-worker-watch")

    # -- worker affinity ------------------------------------------------------------

    def _claim(self, connection: Connection, worker: str) -> None:
        """A claim read from ``worker``: the machine decides (G3), the gateway counts and wakes.

        Sticky connections ask for a claim; any other connection may be claimed once by
        a consumer that wants ordered handling (``ordered = True``). Durable events always
        go to the durable pool: a worker's own channel is at most once, so a claim could
        only lose them (the worker ignores it too).
        """
        if not connection.open or not worker.startswith("worker."):
            return
        durable = self.layer.durable.options_for(connection.pool) is not None
        outcome = self.affinity.claim(connection, worker, time.monotonic(), durable=durable)
        if outcome is Claim.ACCEPTED:
            _wake_claim_waiters(connection)
            self.stats.claims += 1
        elif outcome is Claim.REFUSED:
            self.stats.claims_refused += 1

    def release_worker(self, worker: str, *, hold_for: float | None = None) -> int:
        """Take ``worker``'s connections back; returns how many.

        With ``hold_for``, their new events wait in the gateway for up to that long (the
        worker is finishing the events it already has, see :meth:`_worker_drained`);
        otherwise they go to the pool at once (the worker is gone).
        """
        return self.affinity.release_worker(worker, time.monotonic(), hold_for=hold_for)

    async def _worker_drained(self, worker: str) -> None:
        """The stopping worker finished every event it had: send the held ones on.

        All connections at once: their first sends travel in one layer round trip.
        """
        await asyncio.gather(*(self._flush_held(connection) for connection in self.affinity.drained(worker)))

    async def _control(self, message: Message) -> None:
        """Messages workers (and this gateway itself) send to ``gateway.<id>!control``."""
        message_type = message.get("type")
        if message_type == MARK:
            at = message.get("at")
            if isinstance(at, float):
                self.affinity.mark_read(at)
            return
        worker = message.get("worker")
        if not isinstance(worker, str):
            return
        if message_type == HEARTBEAT:
            self.affinity.heartbeat(worker, time.monotonic())
        elif message_type == WORKER_STOPPING:
            released = self.release_worker(worker, hold_for=self.drain_timeout)
            logger.info("worker %s is stopping: holding %d connection(s) until it has drained", worker, released)
            # After this ack nothing more from this gateway goes to that worker's channel.
            try:
                await self.layer.send(worker, {"type": RELEASED, "gateway": self.control_channel}, control=True)
            except Exception as exc:
                logger.warning("could not acknowledge %s stopping: %r", worker, exc)
        elif message_type == DRAINED:
            await self._worker_drained(worker)

    async def _watch_workers(self) -> None:
        """Release connections of workers that stopped heartbeating (killed, frozen)."""
        interval = max(min(self.worker_timeout / 10, self.claim_timeout / 5), 0.02)
        affinity = self.affinity
        while True:
            await asyncio.sleep(interval)
            for connection in list(affinity.holding):
                if affinity.claim_overdue(connection, time.monotonic()):
                    await self._claim_late(connection)
            await self._check_workers()

    async def _check_workers(self) -> None:
        """Release the workers whose heartbeats stopped ``worker_timeout`` ago (G7).

        "Not heard for the timeout" alone would also be true of a live worker whose
        heartbeats wait unread in this gateway's own reply list, behind a burst of replies
        (they share the list): under load that released live workers. So silence only
        counts up to the last *mark* read back: a mark is a message this gateway sends to
        its own control channel; once it reads it, it has read everything sent before
        it. The machine judges; this sends the marks it asks for. When the gateway keeps
        up, a killed worker is noticed in about ``worker_timeout``; when it is behind,
        the verdict waits until it has caught up, instead of being wrong. While the layer
        is away (a Redis restart) no heartbeat can arrive: silence then counts from its
        return.
        """
        now = time.monotonic()
        lost, send_mark = self.affinity.check_workers(now)
        for worker, released, silent_for, taken in lost:
            self.stats.workers_lost += 1
            logger.warning(
                "worker %s missed its heartbeats (none for %.1fs): %d connection(s) back to the pool",
                worker,
                silent_for,
                released,
            )
            if taken:
                await self._tell_taken_back(worker, taken)
        if send_mark:
            # None in flight (or it was lost, say in a Redis restart): send one now.
            try:
                await self.layer.send(self.control_channel, {"type": MARK, "at": now}, local=False, control=True)
            except ChannelFull:  # behind: try again on the next round
                return
            except Exception as exc:  # unreachable: try again on the next round
                logger.debug("could not send a mark to %s: %r", self.control_channel, exc)
                self.affinity.mark_failed()
                return
            self.affinity.mark_sent(now)

    async def _tell_taken_back(self, worker: str, taken: tuple[tuple[Any, int], ...]) -> None:
        """Tell a worker judged lost which connections went back, with their epochs (W7).

        If it was only starved (no CPU, cut off from this gateway's Redis primary) it still
        holds their instances, and would go on handling them beside the worker that
        resumes them: a group message sent in its process would reach those clients twice
        (local delivery). Told, it ends them; dead, it never reads this.
        """
        message = {
            "type": RELEASED,
            "gateway": self.control_channel,
            "connections": {connection.channel: epoch for connection, epoch in taken},
        }
        try:
            await self.layer.send(worker, message, control=True)
        except Exception as exc:
            logger.debug("could not tell %s its connections were taken back: %r", worker, exc)

    async def _claim_late(self, connection: Connection) -> None:
        """No claim came within ``claim_timeout`` for a connection with held events (G4).

        If the envelope that asked for the claim is still unread in the pool, no worker is
        running (a deploy with a slow start): keep holding, so that when workers start
        there is exactly one envelope of this connection for one of them to take. Sending
        the next event as another claim-asking envelope would let two workers starting
        together take one each and split the connection. Only when the envelope has been
        read and still no claim came (its reader died, or dropped it as expired) do the
        held events go on, the first asking for a claim again.
        """
        token = self.affinity.asked_token(connection)
        still_queued: bool | None = None
        if token is not None:
            try:
                still_queued = await self.layer.still_queued(connection.pool, cast(bytes, token))
            except Exception as exc:
                logger.warning("could not check the pool for %s: %r", connection.channel, exc)
                still_queued = True  # check again next round rather than risk a second envelope
        outcome = self.affinity.late_claim(connection, still_queued, time.monotonic())
        if outcome is LateClaim.WAIT:
            self.stats.claims_awaited += 1
        elif outcome is LateClaim.FLUSH:
            logger.warning("no worker took %s in time: its held events go to the pool", connection.channel)
            await self._flush_held(connection)

    def _take_local(self, channel: str, message: Message, item: bytes) -> bool:
        """Layer local route: a reply or claim sent in this process to one of our connections.

        In ``switchboard run`` the worker shares this gateway's layer and loop, and what it
        sends a connection would otherwise be stored, read back by the reply loop and
        unpacked a pass later; taken here, a reply is written out (and a claim decided)
        at the send. A fan-out to 100 members of a room costs a fifth less CPU this way,
        and the 100th member waits that much less. It keeps what the stored path keeps:
        the message is a copy of the packed item, a reply larger than the reply list's
        byte bound takes the layer (which refuses it, as before), and a claim with held
        events flushes them in order (``_flush_held``). Only messages the reply loop would
        deliver or decide itself, and only on this gateway's own thread; everything else
        (group messages to forward to a worker, releases, scope requests) is stored. A
        process whose worker is elsewhere (``switchboard gateway``) never sends to its own
        connections, so the route is idle there.
        """
        connection = self.connections.get(channel)
        if connection is None or threading.get_ident() != self._thread:
            return False
        message_type = message.get("type")
        claim = message_type == CLAIM
        if not claim and not (isinstance(message_type, str) and message_type.startswith(connection.protocol + ".")):
            return False
        if len(item) > self.layer.limits_for(self.reply_prefix)[1]:
            return False
        try:
            _expires_at, _suffixes, copy = self.layer.unpack_item(item)
        except Exception:
            return False
        if claim:
            self._claim(connection, str(copy.get("worker", "")))
            if connection.affinity.held is not None:
                task = asyncio.get_running_loop().create_task(self._flush_held(connection))
                self._local_flushes.add(task)
                task.add_done_callback(self._local_flushes.discard)
            return True
        self._deliver_reply(connection, copy)
        return True

    def _deliver_reply(self, connection: Connection, message: Message) -> None:
        """Hand a reply of the connection's protocol to its plugin (a failure is logged, not raised)."""
        try:
            connection.deliver(message)
        except Exception:
            logger.exception("delivering %s to %s failed", message.get("type"), connection.channel)
        self.stats.replies_delivered += 1

    async def _reply_loop(self) -> None:
        receiver = self._receiver
        assert receiver is not None
        connections = self.connections
        stats = self.stats
        while True:
            try:
                batch = await receiver.get_batch()
            except LayerClosed:
                return
            forwards = []
            direct: list[tuple[Connection, Message]] = []
            for channel, message in batch:
                connection = connections.get(channel)
                message_type = message.get("type")
                if connection is None:
                    if channel == self.control_channel:
                        await self._control(message)
                    elif message_type == GROUP_ADD or message_type == GROUP_DISCARD:
                        self.memberships.noticed(None, channel, message)
                    elif message_type == SCOPE_REQUEST:
                        # Closed already: say so, so the worker drops what it holds now.
                        forwards.append(self._send_scope(None, message.get("worker"), channel))
                    else:
                        stats.replies_orphaned += 1
                    continue
                if message_type == CLAIM:
                    self._claim(connection, str(message.get("worker", "")))
                    if connection.affinity.held is not None:
                        forwards.append(self._flush_held(connection))
                elif message_type == RELEASE:
                    self.affinity.release(connection, message.get("worker"))
                elif message_type == SCOPE_REQUEST:
                    forwards.append(self._send_scope(connection, message.get("worker")))
                elif message_type == GROUP_ADD or message_type == GROUP_DISCARD:
                    self.memberships.noticed(connection, channel, message)
                elif isinstance(message_type, str) and message_type.startswith(connection.protocol + "."):
                    self._deliver_reply(connection, message)
                else:
                    stats.replies_forwarded += 1
                    if self.affinity.route_forward(connection, time.monotonic()) is not None:
                        # Nothing to hold or claim: batch it (a group message to 1,000
                        # members is one send_many, not 1,000 tasks).
                        direct.append((connection, message))
                    else:
                        # No waiting for room here: this loop serves every connection.
                        forwards.append(self.send_event(connection, message, wait=0.0))
            if direct:
                forwards.append(self._forward_many(direct))
                direct = []
            if forwards:
                for result in await asyncio.gather(*forwards, return_exceptions=True):
                    if isinstance(result, Exception):
                        logger.warning("forwarding a message to the worker pool failed: %r", result)

    async def _send_scope(self, connection: Connection | None, worker: Any, channel: str = "") -> None:
        """Answer a worker that got scope-less events of a connection it has no instance for.

        That happens when its instance ended (or failed) while the connection stayed open
        and claimed: the worker holds those events, in order, until this answer gives it
        the scope to build (resume) the instance with. No scope in the answer means the
        connection is closed: the worker drops the held events.
        """
        if not isinstance(worker, str) or not worker.startswith("worker."):
            return
        answer: Message = {"type": SCOPE, "connection": channel if connection is None else connection.channel}
        if connection is not None and connection.open:
            answer["scope"] = connection.scope
        self.stats.scopes_resent += 1
        await self.layer.send(worker, answer, control=True)

    async def _forward_many(self, items: list[tuple[Connection, Message]]) -> None:
        """Forward messages of connections that need no holding: one ``send_many``."""
        envelopes = [
            (c.worker, wrap(c.channel, None, m)) if c.worker is not None else (c.pool, wrap(c.channel, c.scope, m))
            for c, m in items
        ]
        try:
            results = await self.layer.send_many(envelopes)
        except Exception:
            self.stats.events_failed += len(items)
            raise
        for ok in results:
            if ok:
                self.stats.events_sent += 1
            else:
                self.stats.events_dropped_full += 1

    def begin_stop(self) -> None:
        """Note the workers holding claims now, before the plugins close the connections.

        Closing a connection drops its claim here at once, but its worker forgets it only
        when its instance has handled the disconnect; a worker stopping meanwhile asks
        this gateway to release it, and would wait its whole ``drain_timeout`` for an
        answer from a gateway that has exited. :meth:`stop` tells these workers instead.
        """
        self._claimants_at_stop = set(self.worker_claims)

    async def stop(self) -> None:
        """Stop the reply loop (after plugins drained), then tell claiming workers we are gone."""
        if self._watch_task is not None:
            self._watch_task.cancel()
        self.layer.remove_local_route(self._take_local)
        await self.memberships.stop()
        if self._receiver is not None:
            await self._receiver.close()
        if self._reply_task is not None:
            await self._reply_task
        await self._release_claimants()

    async def _release_claimants(self) -> None:
        """``switchboard.released`` to every worker that held claims: nothing more comes from here.

        The same message answers a stopping worker's request (``WORKER_STOPPING``); a
        worker that is not stopping forgets its claims on this gateway's connections.
        """
        workers = sorted(self._claimants_at_stop | set(self.worker_claims))
        if not workers:
            return
        message = {"type": RELEASED, "gateway": self.control_channel}
        results = await asyncio.gather(
            *(self.layer.send(worker, message, control=True) for worker in workers), return_exceptions=True
        )
        for worker, result in zip(workers, results):
            if isinstance(result, BaseException):
                logger.debug("could not tell %s this gateway stopped: %r", worker, result)


class StartupError(RuntimeError):
    """A plugin could not start: a port in use, an address not on this host, no permission.

    The command line prints it as one line and exits with 2, as for configuration errors:
    it is something the operator fixes, and a traceback would only hide the one line
    that says what.
    """

    def __init__(self, plugin: str, error: OSError) -> None:
        self.plugin = plugin
        self.error = error
        # strerror is the text without "[Errno 98]"; plugins put the address in it.
        detail = error.strerror if error.errno is not None and error.strerror else str(error)
        if not detail.startswith(plugin):
            detail = f"{plugin}: {detail}"
        if error.errno == errno.EADDRINUSE:
            detail += " (another process is listening there: stop it, or choose another address)"
        super().__init__(detail)


async def run_gateway(
    config: SwitchboardConfig,
    *,
    layer: ChannelLayer | None = None,
    stop: asyncio.Event | None = None,
    started: Callable[[Gateway, list[ProtocolPlugin[Any]]], None] | None = None,
    drain_timeout: float | None = None,
    tracer: GatewayTracer | None = None,
) -> None:
    """Run a gateway until ``stop`` is set or SIGTERM/SIGINT arrives, then drain and exit.

    Plugins are built (options validated) before the layer connects or any socket opens.
    Timeouts come from ``SWITCHBOARD["GATEWAY"]``; ``drain_timeout`` overrides its own.
    """
    timeouts = config.gateway
    if drain_timeout is None:
        drain_timeout = timeouts.drain_timeout
    plugins = build_plugins(config.protocols)
    if not plugins:
        logger.warning("no protocol plugins enabled (SWITCHBOARD['PROTOCOLS'] is empty)")
    own_layer = layer is None
    if layer is None:
        layer = build_layer(config.layer)
    set_channel_layer(layer)
    stop = stop or asyncio.Event()
    _install_signal_handlers(stop)
    gateway = Gateway(
        layer,
        worker_timeout=timeouts.worker_timeout,
        claim_timeout=timeouts.claim_timeout,
        drain_timeout=timeouts.drain_timeout,
        membership_check_interval=timeouts.membership_check_interval,
        event_wait=timeouts.event_wait,
    )
    gateway.plugins = plugins  # so a plugin can check at start that one it builds on is enabled
    if tracer is not None:
        tracer.install(gateway)  # before any plugin can send an event
    await gateway.start()
    started_plugins: list[ProtocolPlugin[Any]] = []
    try:
        for plugin in plugins:
            try:
                await plugin.start(gateway)
            except OSError as exc:
                raise StartupError(plugin.name, exc) from exc
            started_plugins.append(plugin)
            logger.info("protocol %s started", plugin.name)
        if started is not None:
            started(gateway, started_plugins)
        await stop.wait()
        gateway.begin_stop()
        logger.info("gateway %s stopping: draining for up to %.1fs", gateway.id, drain_timeout)
    finally:
        for plugin in reversed(started_plugins):
            try:
                await plugin.stop(drain_timeout)
            except Exception:
                logger.exception("stopping protocol %s failed", plugin.name)
        await gateway.stop()
        if own_layer:
            await layer.close()


def _wake_claim_waiters(connection: Connection) -> None:
    waiters, connection.claim_waiters = connection.claim_waiters, None
    for waiter in waiters or ():
        if not waiter.done():
            waiter.set_result(None)


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):
            # Not the main thread (tests, embedded use): the caller owns ``stop``.
            pass
