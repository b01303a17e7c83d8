"""Worker affinity as two pure state machines: which worker handles a connection's events.

In the style of h11 and wsproto: no I/O, no asyncio, no clock. Callers feed in what
happened (an event of a connection, a claim read from the reply list, a heartbeat, a
timer tick with the time it is) and get back what to do (send to the pool asking for a
claim, send to worker W's channel, hold, flush the held events, count a lost worker...).
The gateway (``server.py``) and the worker (``worker.py``) only carry those decisions out
with the layer; every rule of specs/layer.md, *Worker affinity*, lives here, so it can be
tested without a layer, a loop or a clock (tests/core/test_affinity_machine.py, with a
hypothesis stateful test).

Gateway rules (:class:`GatewayAffinity`)
----------------------------------------
G1. An event of a *sticky* connection that no worker holds goes to the pool with the
    scope and ``claim: true`` (:attr:`Route.ASK`). Until the claim timeout passes, later
    events are *held* in the gateway, in order (:attr:`Route.HOLD`): none may reach a
    worker other than the one that will hold the instance.
G2. At most one claim-asking envelope is unread at a time: once the layer has stored one
    (:meth:`GatewayAffinity.asked`), events keep waiting even past the claim timeout,
    until the claim comes or the gateway learns the envelope was read (G4).
G3. A claim (``switchboard.claim``) counts only from a ``worker.*`` channel and for an open
    connection; it is *refused* on a durable pool (a worker's channel is at most once)
    and when another worker holds the connection (no flapping between two live
    claimers). An accepted claim routes later events to that worker's channel without
    the scope (:attr:`Route.WORKER`), makes the connection sticky for good (an ordered
    consumer's UDP socket keeps its order across a deploy), wakes plugins waiting for
    it, and sends the held events on, in order, to that worker.
G4. A claim timeout with events held: if the claim-asking envelope is still unread in
    the pool (no worker is running), keep holding and start the timeout again
    (``claims_awaited``), so that workers starting together find one envelope, not
    several to split the connection between. Otherwise (it was read and no claim came,
    or it was never stored) give up on it: the held events go on, the first asking for
    a claim again and the rest waiting behind it.
G5. ``switchboard.release`` gives a connection back to the pool, only from its claimer.
G6. A heartbeat refreshes a worker that holds claims here; others are ignored.
G7. A worker is *lost* when a mark this gateway sent itself more than the worker timeout
    after that worker's last heartbeat has been read back with no newer heartbeat
    (silence counts only up to what has been read, and from when the layer came back
    after an outage). Its connections go back to the pool at once, each one's *epoch*
    (how often it was taken back so) one higher; the worker is told which, with their
    epochs, in case it is alive after all (W7), and a claim-asking envelope of such a
    connection carries its epoch. The machine asks for a new mark while a worker seems
    silent and none is in flight.
G8. ``switchboard.worker_stopping``: its connections go back, but their new events are
    held for the drain timeout; ``switchboard.drained`` (or that timeout, then G4) sends
    them on to the pool, where the next worker resumes the connection.
G9. At most ``max_held`` events are held per connection; past that an event is refused
    (the plugin answers as for a full channel).
G10. A closed connection holds nothing: no claim, no held events, no drain membership.
    An event a plugin still sends for it goes to the pool without asking for a claim
    (a worker with no instance for it ignores a final event).

Worker rules (:class:`WorkerAffinity`)
--------------------------------------
W1. An envelope marked ``claim`` makes the instance built for it claim the connection
    before its app runs (so the claim reaches the gateway before any reply); marked
    ``claim`` for an instance that already exists, it claims again (the gateway let go).
W2. A consumer's own ``switchboard.claim`` (``ordered = True``) claims once per instance,
    and never on a durable pool.
W3. The worker keeps its claims per gateway; it heartbeats to each gateway it holds
    claims with; an instance that ends forgets its claim; ``switchboard.released`` from
    a gateway ends every claim there.
W4. No instance and a final event (a disconnect): ignored. No instance, no scope (sent to
    this worker's channel) and an ``http.request``: the rest of a streamed body whose
    consumer ended, ignored. No instance, no scope, any other event: held in order, the
    scope asked for once (``switchboard.scope_request``), at most ``max_unscoped`` held.
W5. The scope's answer dispatches the held events with it, in order; an answer without a
    scope (the connection closed), a failed request or no answer within the scope
    timeout drops them. A scoped envelope arriving meanwhile releases them first.
W6. An instance built for an event other than its protocol's opening event resumes the
    connection: ``scope["resumed"] = True``, the opening event replayed, and the repeated
    accept swallowed (the client was accepted long ago).
W7. ``switchboard.released`` naming connections (their gateway took them back, judging
    this worker lost, G7): an instance of one whose claim came from an envelope of a
    lower epoch ends at once, silently (no disconnect handler: the connection is open,
    and another worker resumes it), its claim and local delivery gone with it, its
    queued events dropped and counted. An instance that claimed again since (an envelope
    of that epoch came back to this worker from the pool first) is kept.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, TypeVar

from .envelope import control_channel_of

K = TypeVar("K", bound=Hashable)  # how the gateway names a connection (its Connection)
E = TypeVar("E")  # an event, opaque to the machine

# Events after which a connection has nothing more to say: no instance is built for them.
FINAL_EVENTS = frozenset({"http.disconnect", "websocket.disconnect", "webrtc.disconnect"})


class Resume(NamedTuple):
    """How to resume an established connection on a worker that never saw it open."""

    replay: str  # the opening event to replay to the new instance
    swallow: str | None  # the reply to drop once, because the client already had it


RESUME: dict[str, Resume] = {
    "websocket": Resume("websocket.connect", "websocket.accept"),
    "webrtc": Resume("webrtc.connect", None),  # a peer has no accept step to swallow
}


class HeldFull(Exception):
    """The connection already holds ``max_held`` events (G9)."""


# -- gateway ----------------------------------------------------------------------------


class Route(enum.Enum):
    """Where the gateway sends one event of a connection."""

    HOLD = "hold"  # kept by the machine, in order, until a claim (or its timeout)
    ASK = "ask"  # to the pool, with the scope, marked ``claim: true``
    POOL = "pool"  # to the pool, with the scope
    WORKER = "worker"  # to the claiming worker's channel, without the scope


# Python 3.11 looks enum members up through the metaclass, ten times the cost of a
# global: the per-event paths (here, server.py, worker.py) compare with these names.
HOLD, ASK, POOL, WORKER = Route.HOLD, Route.ASK, Route.POOL, Route.WORKER


class Claim(enum.Enum):
    """What a ``switchboard.claim`` did."""

    IGNORED = "ignored"  # closed connection, or not from a worker's channel: not counted
    REFUSED = "refused"  # durable pool, or another worker holds it (``claims_refused``)
    ACCEPTED = "accepted"  # routes to the worker now (``claims``): wake waiters, flush held


class LateClaim(enum.Enum):
    """What to do about a claim that did not come within the claim timeout (G4)."""

    RESOLVED = "resolved"  # it came (or the connection closed) meanwhile: nothing
    WAIT = "wait"  # the asking envelope is still in the pool: keep holding
    FLUSH = "flush"  # give up on it: send the held events on


@dataclass(eq=False, slots=True)
class ConnectionAffinity(Generic[E]):
    """What the gateway knows about one connection's worker: the machine's row for it."""

    sticky: bool
    worker: str | None = None
    open: bool = True
    # Until when later events wait for the claim being asked for (or for a drain).
    hold_until: float | None = None
    # Events waiting, in order; None when none (most connections: no empty deque each).
    held: deque[E] | None = None
    # The layer's token of the stored claim-asking envelope, until the claim comes (G2).
    asked: object | None = None
    # Times it was taken back from a worker judged lost (G7), told to that worker and in
    # claim-asking envelopes, so a worker can tell a claim before from one after (W7).
    epoch: int = 0

    def holding(self, now: float) -> bool:
        """True while events must wait for a claim on its way or a draining worker."""
        until = self.hold_until
        return until is not None and now < until


class Lost(NamedTuple):
    """A worker judged gone (G7): how many connections went back, after how long silent,
    and which, each with its new epoch (to tell the worker, W7)."""

    worker: str
    connections: int
    silent_for: float
    taken: tuple[tuple[Any, int], ...] = ()


class GatewayAffinity(Generic[K, E]):
    """The gateway's side of worker affinity: routing, claims, holding, worker liveness.

    Keys (``K``) name connections; the gateway uses its ``Connection`` objects. Events
    (``E``) are opaque: the machine only keeps held ones in order.
    """

    def __init__(self, *, claim_timeout: float = 2.0, worker_timeout: float = 1.0, max_held: int = 1000) -> None:
        self.claim_timeout = claim_timeout
        self.worker_timeout = worker_timeout
        self.max_held = max_held
        self.connections: dict[K, ConnectionAffinity[E]] = {}
        # Workers holding claims here, and when each was last heard from.
        self.worker_claims: dict[str, set[K]] = {}
        self.worker_seen: dict[str, float] = {}
        # Connections with held events, and those a stopping worker gave back (G8).
        self.holding: set[K] = set()
        self.draining: dict[str, set[K]] = {}
        # Liveness by marks (G7): when the mark in flight was sent, how far (by this
        # gateway's clock) everything sent has been read, and the layer's last outage.
        self.mark_in_flight: float | None = None
        self.read_up_to = 0.0
        self.layer_failed = False
        self.layer_back_at = 0.0

    # -- connections -----------------------------------------------------------------

    def open(self, key: K, row: ConnectionAffinity[E]) -> None:
        """Track a new connection; ``row`` is its state (the caller may keep it to read)."""
        self.connections[key] = row

    def close(self, key: K) -> None:
        """Forget ``key`` everywhere (G10). Its waiters are the caller's to wake."""
        state = self.connections.pop(key, None)
        if state is None:
            return
        state.open = False
        self._unclaim(key, state)
        state.held = None
        state.asked = None
        self.holding.discard(key)
        for worker, keys in list(self.draining.items()):
            keys.discard(key)
            if not keys:
                del self.draining[worker]

    # -- events ----------------------------------------------------------------------

    def route_event(self, key: K, event: E, now: float) -> Route:
        """Where ``event`` goes (G1, G2); ``HOLD`` keeps it here. Raises :class:`HeldFull`.

        For ``ASK`` the claim timeout starts now; tell the machine the stored envelope's
        token with :meth:`asked` once the layer has it.
        """
        state = self.connections.get(key)
        if state is None:
            return POOL  # closed (G10): nobody can claim it any more
        if state.held is not None:
            # Events are still waiting (for a claim, or being flushed to the new worker):
            # this one queues behind them, or it would overtake them.
            self._hold(key, state, event)
            return HOLD
        if state.worker is not None:
            return WORKER
        if state.holding(now) or state.asked is not None:
            self._hold(key, state, event)
            return HOLD
        if state.sticky:
            state.hold_until = now + self.claim_timeout
            return ASK
        return POOL

    def route_forward(self, key: K, now: float) -> Route | None:
        """The route of a forwarded message that needs no holding nor claim, else None.

        The reply loop batches those (a group message to 1,000 members is one send);
        None means: take the one-event path, :meth:`route_event`.
        """
        state = self.connections.get(key)
        if state is None or state.held is not None:
            return None
        if state.worker is not None:
            return WORKER
        if not state.sticky and not state.holding(now):
            return POOL
        return None

    def asked(self, key: K, token: object) -> None:
        """The claim-asking envelope is stored; ``token`` finds it in the pool again."""
        state = self.connections.get(key)
        if state is not None and state.worker is None:
            state.asked = token

    def _hold(self, key: K, state: ConnectionAffinity[E], event: E) -> None:
        held = state.held
        if held is None:
            held = state.held = deque()
            self.holding.add(key)
        if len(held) >= self.max_held:
            raise HeldFull(key)
        held.append(event)

    def next_held(self, key: K, now: float) -> tuple[E, Route] | None:
        """The next held event to send and where, or None when there is nothing to send.

        The caller sends it, and stops early after an ``ASK`` while events remain held
        (they wait for that claim); then it calls :meth:`flushed`.
        """
        state = self.connections.get(key)
        if state is None or not state.held:
            return None
        event = state.held.popleft()
        if state.worker is not None:
            return event, WORKER
        if state.sticky:
            state.hold_until = now + self.claim_timeout
            return event, ASK
        return event, POOL

    def flushed(self, key: K) -> None:
        """A flush ended: a connection left with nothing held stops holding."""
        state = self.connections.get(key)
        if state is not None and state.held is not None and not state.held:
            state.held = None
            self.holding.discard(key)

    def has_held(self, key: K) -> bool:
        state = self.connections.get(key)
        return state is not None and bool(state.held)

    # -- claims ----------------------------------------------------------------------

    def claim(self, key: K, worker: str, now: float, *, durable: bool = False) -> Claim:
        """A claim for ``key`` read from ``worker`` (G3)."""
        state = self.connections.get(key)
        if state is None or not state.open or not worker.startswith("worker."):
            return Claim.IGNORED
        if durable or (state.worker is not None and state.worker != worker):
            return Claim.REFUSED
        self._unclaim(key, state)
        state.worker = worker
        state.asked = None
        state.sticky = True
        self.worker_claims.setdefault(worker, set()).add(key)
        self.worker_seen[worker] = now
        return Claim.ACCEPTED

    def release(self, key: K, worker: object) -> bool:
        """``switchboard.release`` (G5): honoured only from the claiming worker."""
        state = self.connections.get(key)
        if state is None or state.worker is None or state.worker != worker:
            return False
        self._unclaim(key, state)
        return True

    def _unclaim(self, key: K, state: ConnectionAffinity[E]) -> None:
        worker = state.worker
        state.hold_until = None
        if worker is None:
            return
        state.worker = None
        claims = self.worker_claims.get(worker)
        if claims is not None:
            claims.discard(key)
            if not claims:
                del self.worker_claims[worker]
                self.worker_seen.pop(worker, None)

    def claim_overdue(self, key: K, now: float) -> bool:
        """True if ``key`` holds events, has no worker and its claim timeout passed (G4)."""
        state = self.connections.get(key)
        return state is not None and state.held is not None and state.worker is None and not state.holding(now)

    def late_claim(self, key: K, still_queued: bool | None, now: float) -> LateClaim:
        """Decide on an overdue claim (G4).

        ``still_queued``: whether the envelope with :meth:`asked_token` is still in the
        pool; None when there was no token to look for.
        """
        state = self.connections.get(key)
        if state is None or state.worker is not None:
            return LateClaim.RESOLVED  # the claim came (or the client left) while we looked
        if state.asked is not None and still_queued is not False:
            state.hold_until = now + self.claim_timeout
            return LateClaim.WAIT
        state.asked = None
        state.hold_until = None
        return LateClaim.FLUSH

    def asked_token(self, key: K) -> object | None:
        state = self.connections.get(key)
        return None if state is None else state.asked

    # -- workers ---------------------------------------------------------------------

    def heartbeat(self, worker: str, now: float) -> None:
        """G6: only a worker holding claims here is watched."""
        if worker in self.worker_claims:
            self.worker_seen[worker] = now

    def release_worker(self, worker: str, now: float, *, hold_for: float | None = None) -> int:
        """Take ``worker``'s connections back; returns how many (G7, G8).

        With ``hold_for`` their new events wait that long (the worker is finishing what it
        has, :meth:`drained`); without, they go to the pool at once (the worker is gone)
        and each one's epoch rises (W7: if that worker is alive after all, its instances
        from before end when it is told).
        """
        keys = self.worker_claims.pop(worker, set())
        self.worker_seen.pop(worker, None)
        until = None if hold_for is None else now + hold_for
        for key in keys:
            state = self.connections[key]
            state.worker = None
            state.hold_until = until
            if until is not None:
                self.draining.setdefault(worker, set()).add(key)
            else:
                state.epoch += 1
        return len(keys)

    def drained(self, worker: str) -> list[K]:
        """The stopping ``worker`` finished: its connections to flush now (G8)."""
        ready = []
        for key in self.draining.pop(worker, set()):
            state = self.connections.get(key)
            if state is not None and state.worker is None:
                state.hold_until = None
                ready.append(key)
        return ready

    def mark_read(self, at: float) -> None:
        """A mark this gateway sent at ``at`` was read back: everything before it was."""
        self.read_up_to = max(self.read_up_to, at)
        if self.mark_in_flight is not None and at >= self.mark_in_flight:
            self.mark_in_flight = None

    def check_workers(self, now: float) -> tuple[list[Lost], bool]:
        """Workers judged gone (their connections are back in the pool), and whether to send a mark (G7)."""
        timeout = self.worker_timeout
        silent = [worker for worker, seen in self.worker_seen.items() if now - seen > timeout]
        if not silent:
            return [], False
        lost = []
        for worker in silent:
            seen = self.worker_seen.get(worker)
            if seen is not None and self.read_up_to - max(seen, self.layer_back_at) > timeout:
                keys = list(self.worker_claims.get(worker, ()))
                released = self.release_worker(worker, now)
                taken = tuple((key, self.connections[key].epoch) for key in keys)
                lost.append(Lost(worker, released, self.read_up_to - seen, taken))
        mark = any(worker in self.worker_seen for worker in silent) and (
            self.mark_in_flight is None or now - self.mark_in_flight > max(timeout, 1.0)
        )
        return lost, mark

    def mark_sent(self, now: float) -> None:
        self.mark_in_flight = now
        if self.layer_failed:
            # The layer is back: no worker could heartbeat meanwhile, silence counts from now.
            self.layer_failed = False
            self.layer_back_at = now

    def mark_failed(self) -> None:
        """The layer could not take the mark: it is away."""
        self.layer_failed = True


# -- worker -----------------------------------------------------------------------------


class Dispatch(enum.Enum):
    """What the worker does with one envelope of a connection (W1, W4, W5)."""

    IGNORE = "ignore"  # nothing to build an instance for (``events_ignored``)
    HOLD = "hold"  # no scope and no instance: hold it and ask for the scope
    RELEASE_HELD = "release_held"  # it brings the scope: dispatch the held ones first
    START = "start"  # build the instance (resumed if :func:`resume_for` says so)
    RECLAIM = "reclaim"  # the instance exists but the gateway asks again: claim, then enqueue
    ENQUEUE = "enqueue"  # to the existing instance


IGNORE, HOLD_UNSCOPED, RELEASE_HELD, START, RECLAIM, ENQUEUE = (
    Dispatch.IGNORE, Dispatch.HOLD, Dispatch.RELEASE_HELD, Dispatch.START, Dispatch.RECLAIM, Dispatch.ENQUEUE
)


class OwnClaim(enum.Enum):
    """A consumer's own ``switchboard.claim`` (W2)."""

    SEND = "send"
    ALREADY = "already"  # claimed once for this instance
    DURABLE = "durable"  # a durable pool: ignored (redelivery cannot keep order)


class Unscoped(enum.Enum):
    """What holding a scope-less envelope did (W4)."""

    ASK = "ask"  # held, the first: ask the gateway for the scope
    HELD = "held"
    DROPPED = "dropped"  # not a gateway's connection, or ``max_unscoped`` held


@dataclass(slots=True)
class Pending(Generic[E]):
    asked_at: float
    envelopes: list[E] = field(default_factory=list)


def resume_for(scope_type: object, event_type: object) -> Resume | None:
    """How to resume (W6) an instance built for ``event_type``, or None (a fresh one)."""
    resume = RESUME.get(str(scope_type))
    if resume is None or event_type == resume.replay:
        return None
    return resume


_SWALLOWED = frozenset(resume.swallow for resume in RESUME.values() if resume.swallow is not None)


def swallow_reply(message_type: object, *, resumed: bool, accepted: bool) -> bool:
    """True for a resumed instance's first accept (W6): its client had one long ago."""
    return resumed and not accepted and message_type in _SWALLOWED


def taken_back(claimed_epoch: int, released_epoch: int) -> bool:
    """W7: whether an instance whose claim came with ``claimed_epoch`` ends, told that its
    gateway took the connection back at ``released_epoch`` (not if it claimed since)."""
    return claimed_epoch < released_epoch


def own_claim(*, claimed: bool, durable: bool) -> OwnClaim:
    """W2: whether a consumer's claim request is sent."""
    if durable:
        return OwnClaim.DURABLE
    return OwnClaim.ALREADY if claimed else OwnClaim.SEND


class WorkerAffinity(Generic[E]):
    """The worker's side: its claims per gateway, scope-less events, the stop handshake."""

    def __init__(self, *, scope_timeout: float = 5.0, max_unscoped: int = 1000) -> None:
        self.scope_timeout = scope_timeout
        self.max_unscoped = max_unscoped
        # Gateway control channel -> connections this worker has claimed there.
        self.claims: dict[str, set[str]] = {}
        # Connection -> scope-less envelopes held while its scope is asked for (W4).
        self.unscoped: dict[str, Pending[E]] = {}
        # Gateways asked to release us that have not answered yet.
        self.awaiting_release: set[str] = set()

    def dispatch(self, connection: str, *, has_instance: bool, scoped: bool, event_type: object, claim: bool) -> Dispatch:
        """The rule for one envelope (W1, W4, W5)."""
        if connection in self.unscoped:
            return RELEASE_HELD if scoped else HOLD_UNSCOPED
        if has_instance:
            return RECLAIM if claim else ENQUEUE
        if event_type in FINAL_EVENTS or (not scoped and event_type == "http.request"):
            return IGNORE
        if not scoped:
            return HOLD_UNSCOPED
        return START

    # -- claims (W3) -----------------------------------------------------------------

    def claimed(self, reply_channel: str) -> str:
        """Record a claim sent for ``reply_channel``; returns its gateway's control channel."""
        control = control_channel_of(reply_channel)
        self.claims.setdefault(control, set()).add(reply_channel)
        return control

    def forget(self, reply_channel: str) -> None:
        """The instance that claimed ``reply_channel`` ended."""
        control = control_channel_of(reply_channel)
        claimed = self.claims.get(control)
        if claimed is not None:
            claimed.discard(reply_channel)
            if not claimed:
                del self.claims[control]

    def heartbeat_targets(self) -> list[str]:
        return list(self.claims)

    def stopping(self) -> list[str]:
        """The gateways to ask to release us: those we hold claims with."""
        controls = [control for control, connections in self.claims.items() if connections]
        self.awaiting_release = set(controls)
        return controls

    def not_asked(self, control: str) -> None:
        """Telling ``control`` we stop failed: do not wait for its answer."""
        self.awaiting_release.discard(control)

    def released(self, gateway: str) -> bool:
        """``switchboard.released`` from ``gateway``; True once every gateway answered."""
        self.awaiting_release.discard(gateway)
        self.claims.pop(gateway, None)
        return not self.awaiting_release

    # -- scope-less events (W4, W5) --------------------------------------------------

    def hold(self, connection: str, envelope: E, now: float) -> Unscoped:
        pending = self.unscoped.get(connection)
        result = Unscoped.HELD
        if pending is None:
            if not connection.startswith("gateway.") or "!" not in connection:
                return Unscoped.DROPPED
            pending = self.unscoped[connection] = Pending(now)
            result = Unscoped.ASK
        if len(pending.envelopes) >= self.max_unscoped:
            return Unscoped.DROPPED
        pending.envelopes.append(envelope)
        return result

    def take(self, connection: str) -> list[E]:
        """The held envelopes of ``connection`` (its scope came, or they are dropped)."""
        pending = self.unscoped.pop(connection, None)
        return [] if pending is None else pending.envelopes

    def expired(self, now: float) -> Iterator[tuple[str, list[E]]]:
        """Connections whose scope did not come in ``scope_timeout``: their envelopes, dropped."""
        deadline = now - self.scope_timeout
        for connection, pending in list(self.unscoped.items()):
            if pending.asked_at < deadline:
                del self.unscoped[connection]
                yield connection, pending.envelopes
