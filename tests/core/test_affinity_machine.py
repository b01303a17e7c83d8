"""The worker-affinity machines (gateway/affinity.py) without a layer, a loop or a clock.

Unit tests walk each rule of the module's docstring (G1-G10, W1-W6); the hypothesis
stateful tests drive the gateway machine with every interleaving of events, claims,
heartbeats, marks, drains, timeouts and closes, and check what must always hold: a
connection has at most one worker, its events reach only that worker and never overtake
each other, nothing is lost or leaks in the tables, and a worker is never judged gone
while a heartbeat it sent in the last worker timeout is unread.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from switchboard.gateway.affinity import (
    Claim,
    ConnectionAffinity,
    Dispatch,
    GatewayAffinity,
    HeldFull,
    LateClaim,
    OwnClaim,
    Route,
    Unscoped,
    WorkerAffinity,
    own_claim,
    resume_for,
    swallow_reply,
    taken_back,
)

W1 = "worker.one!in"
W2 = "worker.two!in"


def machine(*, sticky: bool = True, max_held: int = 1000) -> GatewayAffinity[str, str]:
    gateway: GatewayAffinity[str, str] = GatewayAffinity(claim_timeout=2.0, worker_timeout=1.0, max_held=max_held)
    gateway.open("c", ConnectionAffinity(sticky))
    return gateway


def drain(gateway: GatewayAffinity[str, str], key: str, now: float) -> list[tuple[str, Route]]:
    """Flush as Gateway._flush_held does: stop after an ASK while events remain held."""
    sent = []
    while (step := gateway.next_held(key, now)) is not None:
        sent.append(step)
        if step[1] is Route.ASK and gateway.has_held(key):
            break
    gateway.flushed(key)
    return sent


# -- gateway: unit ------------------------------------------------------------------------


def test_first_event_asks_and_later_ones_wait_in_order_for_the_claim() -> None:
    gateway = machine()
    assert gateway.route_event("c", "connect", 0.0) is Route.ASK
    assert gateway.route_event("c", "a", 0.1) is Route.HOLD
    assert gateway.route_event("c", "b", 0.2) is Route.HOLD
    assert gateway.claim("c", W1, 0.3) is Claim.ACCEPTED
    assert gateway.route_event("c", "c", 0.3) is Route.HOLD  # behind a and b
    assert drain(gateway, "c", 0.3) == [("a", Route.WORKER), ("b", Route.WORKER), ("c", Route.WORKER)]
    assert gateway.connections["c"].held is None and not gateway.holding
    assert gateway.route_event("c", "d", 0.4) is Route.WORKER


def test_a_stored_ask_keeps_events_waiting_past_the_claim_timeout() -> None:
    gateway = machine()
    assert gateway.route_event("c", "connect", 0.0) is Route.ASK
    gateway.asked("c", b"item")
    assert gateway.route_event("c", "a", 10.0) is Route.HOLD  # never a second ask
    assert gateway.claim_overdue("c", 10.0)
    assert gateway.late_claim("c", True, 10.0) is LateClaim.WAIT  # still unread: no worker runs
    assert not gateway.claim_overdue("c", 11.0) and gateway.claim_overdue("c", 12.5)
    assert gateway.late_claim("c", False, 12.5) is LateClaim.FLUSH  # read, and no claim came
    assert gateway.asked_token("c") is None
    assert gateway.route_event("c", "b", 12.5) is Route.HOLD  # behind a
    assert drain(gateway, "c", 12.5) == [("a", Route.ASK)]  # the first asks again, b waits for it
    assert list(gateway.connections["c"].held or ()) == ["b"]


def test_an_ask_that_was_never_stored_is_given_up_after_the_timeout() -> None:
    gateway = machine()
    assert gateway.route_event("c", "connect", 0.0) is Route.ASK  # the send failed: no asked()
    assert gateway.route_event("c", "a", 1.0) is Route.HOLD
    assert not gateway.claim_overdue("c", 1.9) and gateway.claim_overdue("c", 2.1)
    assert gateway.late_claim("c", None, 2.1) is LateClaim.FLUSH


def test_a_claim_that_came_while_the_pool_was_checked_resolves_the_late_claim() -> None:
    gateway = machine()
    gateway.route_event("c", "connect", 0.0)
    gateway.asked("c", b"item")
    gateway.route_event("c", "a", 0.5)
    gateway.claim("c", W1, 2.5)
    assert gateway.late_claim("c", False, 2.6) is LateClaim.RESOLVED


def test_claims_only_from_workers_never_on_durable_pools_never_away_from_a_live_claimer() -> None:
    gateway = machine()
    assert gateway.claim("c", "gateway.x!control", 0.0) is Claim.IGNORED
    assert gateway.claim("c", W1, 0.0, durable=True) is Claim.REFUSED
    assert gateway.claim("c", W1, 0.0) is Claim.ACCEPTED
    assert gateway.claim("c", W2, 0.0) is Claim.REFUSED
    assert gateway.claim("c", W1, 0.5) is Claim.ACCEPTED  # the same worker again: fine
    assert gateway.worker_claims == {W1: {"c"}} and gateway.worker_seen == {W1: 0.5}
    assert gateway.claim("gone", W1, 0.0) is Claim.IGNORED


def test_a_claimed_connectionless_listener_stays_sticky_and_release_only_from_its_worker() -> None:
    gateway = machine(sticky=False)
    assert gateway.route_event("c", "a", 0.0) is Route.POOL
    assert gateway.route_forward("c", 0.0) is Route.POOL
    gateway.claim("c", W1, 0.0)
    assert gateway.route_forward("c", 0.0) is Route.WORKER
    assert not gateway.release("c", W2)
    assert gateway.release("c", W1)
    assert gateway.worker_claims == {} and gateway.worker_seen == {}
    assert gateway.route_forward("c", 0.1) is None  # sticky now: needs a claim
    assert gateway.route_event("c", "b", 0.1) is Route.ASK


def test_a_stopping_worker_hands_back_but_its_events_wait_for_its_drain() -> None:
    gateway = machine()
    gateway.route_event("c", "connect", 0.0)
    gateway.claim("c", W1, 0.0)
    assert gateway.release_worker(W1, 1.0, hold_for=10.0) == 1
    assert gateway.worker_claims == {} and gateway.draining == {W1: {"c"}}
    assert gateway.route_event("c", "a", 2.0) is Route.HOLD
    assert gateway.route_forward("c", 2.0) is None
    assert not gateway.claim_overdue("c", 5.0)  # the drain timeout, not the claim timeout
    assert gateway.drained(W1) == ["c"] and gateway.draining == {}
    assert drain(gateway, "c", 5.0) == [("a", Route.ASK)]  # the next worker resumes it


def test_liveness_judges_only_by_marks_read_back() -> None:
    gateway = machine()
    gateway.claim("c", W1, 0.0)
    gateway.heartbeat(W2, 0.1)  # holds nothing here: not watched
    assert W2 not in gateway.worker_seen
    assert gateway.check_workers(0.5) == ([], False)
    lost, mark = gateway.check_workers(1.5)  # silent, but nothing read proves it
    assert lost == [] and mark
    gateway.mark_sent(1.5)
    assert gateway.check_workers(1.6) == ([], False)  # one mark in flight is enough
    gateway.mark_read(1.5)  # sent 1.5 s after the last sign of life, read back: gone
    lost, _ = gateway.check_workers(1.7)
    assert [(item.worker, item.connections) for item in lost] == [(W1, 1)]
    assert gateway.connections["c"].worker is None and gateway.worker_seen == {}


def test_a_connection_taken_from_a_lost_worker_gets_a_new_epoch() -> None:
    """G7 and W7: the lost worker is told each connection with its new epoch; a stopping
    worker's hand-back (G8) is not a taking back, so it leaves the epoch alone."""
    gateway = machine()
    gateway.open("d", ConnectionAffinity(True))
    for key in ("c", "d"):
        gateway.route_event(key, "connect", 0.0)
        gateway.claim(key, W1, 0.0)
    gateway.mark_sent(1.5)
    gateway.mark_read(1.5)
    (lost,), _ = gateway.check_workers(1.7)
    assert sorted(lost.taken) == [("c", 1), ("d", 1)]
    gateway.claim("c", W2, 2.0)
    gateway.release_worker(W2, 3.0, hold_for=10.0)
    assert gateway.connections["c"].epoch == 1
    # Told late, an instance that claimed again at epoch 1 stays; one from before ends.
    assert not taken_back(1, 1) and taken_back(0, 1)


def test_a_heartbeat_read_before_the_mark_keeps_the_worker() -> None:
    gateway = machine()
    gateway.claim("c", W1, 0.0)
    _lost, mark = gateway.check_workers(1.5)
    assert mark
    gateway.mark_sent(1.5)
    gateway.heartbeat(W1, 1.55)  # queued before the mark: read first
    gateway.mark_read(1.5)
    assert gateway.check_workers(1.6) == ([], False)


def test_silence_counts_from_the_layers_return() -> None:
    gateway = machine()
    gateway.claim("c", W1, 0.0)
    gateway.mark_failed()  # the layer went away
    gateway.mark_sent(5.0)  # ...and is back at 5.0
    gateway.mark_read(5.0)
    assert gateway.check_workers(5.1)[0] == []
    gateway.mark_sent(6.5)
    gateway.mark_read(6.5)
    assert [item.worker for item in gateway.check_workers(6.6)[0]] == [W1]


def test_held_events_are_bounded() -> None:
    gateway = machine(max_held=2)
    gateway.route_event("c", "connect", 0.0)
    gateway.route_event("c", "a", 0.0)
    gateway.route_event("c", "b", 0.0)
    with pytest.raises(HeldFull):
        gateway.route_event("c", "c", 0.0)


def test_a_closed_connection_holds_nothing() -> None:
    gateway = machine()
    gateway.route_event("c", "connect", 0.0)
    gateway.claim("c", W1, 0.0)
    gateway.release_worker(W1, 0.0, hold_for=10.0)
    gateway.route_event("c", "a", 0.0)
    gateway.close("c")
    assert (gateway.connections, gateway.worker_claims, gateway.worker_seen, gateway.holding, gateway.draining) == (
        {}, {}, {}, set(), {},
    )
    assert gateway.route_event("c", "late", 0.0) is Route.POOL
    assert gateway.claim("c", W1, 0.0) is Claim.IGNORED
    assert gateway.next_held("c", 0.0) is None and gateway.drained(W1) == []


# -- worker: unit -------------------------------------------------------------------------


def test_worker_dispatch_rules() -> None:
    worker: WorkerAffinity[str] = WorkerAffinity()
    d = worker.dispatch
    assert d("gateway.g!c", has_instance=False, scoped=True, event_type="websocket.connect", claim=True) is Dispatch.START
    assert d("gateway.g!c", has_instance=False, scoped=True, event_type="websocket.disconnect", claim=False) is Dispatch.IGNORE
    assert d("gateway.g!c", has_instance=False, scoped=False, event_type="http.request", claim=False) is Dispatch.IGNORE
    assert d("gateway.g!c", has_instance=False, scoped=False, event_type="websocket.receive", claim=False) is Dispatch.HOLD
    assert d("gateway.g!c", has_instance=True, scoped=False, event_type="websocket.receive", claim=False) is Dispatch.ENQUEUE
    assert d("gateway.g!c", has_instance=True, scoped=True, event_type="websocket.receive", claim=True) is Dispatch.RECLAIM
    worker.hold("gateway.g!c", "e1", 0.0)
    assert d("gateway.g!c", has_instance=False, scoped=False, event_type="websocket.disconnect", claim=False) is Dispatch.HOLD
    assert d("gateway.g!c", has_instance=False, scoped=True, event_type="websocket.receive", claim=True) is Dispatch.RELEASE_HELD


def test_worker_holds_scope_less_events_asks_once_and_drops_on_timeout() -> None:
    worker: WorkerAffinity[str] = WorkerAffinity(scope_timeout=5.0, max_unscoped=2)
    conn = "gateway.g!c"
    assert worker.hold("nogateway", "x", 0.0) is Unscoped.DROPPED
    assert worker.hold(conn, "e1", 0.0) is Unscoped.ASK
    assert worker.hold(conn, "e2", 1.0) is Unscoped.HELD
    assert worker.hold(conn, "e3", 1.0) is Unscoped.DROPPED
    assert list(worker.expired(4.0)) == []
    assert list(worker.expired(5.5)) == [(conn, ["e1", "e2"])]
    assert worker.unscoped == {}
    worker.hold(conn, "e4", 6.0)
    assert worker.take(conn) == ["e4"] and worker.take(conn) == []


def test_worker_claims_per_gateway_and_the_stop_handshake() -> None:
    worker: WorkerAffinity[str] = WorkerAffinity()
    assert worker.claimed("gateway.a!1") == "gateway.a!control"
    worker.claimed("gateway.a!2")
    worker.claimed("gateway.b!1")
    worker.forget("gateway.a!1")
    assert worker.claims == {"gateway.a!control": {"gateway.a!2"}, "gateway.b!control": {"gateway.b!1"}}
    assert sorted(worker.heartbeat_targets()) == ["gateway.a!control", "gateway.b!control"]
    assert sorted(worker.stopping()) == ["gateway.a!control", "gateway.b!control"]
    worker.not_asked("gateway.b!control")
    assert worker.released("gateway.a!control")
    assert worker.claims == {"gateway.b!control": {"gateway.b!1"}}
    worker.forget("gateway.b!1")
    assert worker.claims == {} and worker.stopping() == []


def test_resume_replays_the_opening_event_and_swallows_the_repeated_accept() -> None:
    assert resume_for("websocket", "websocket.connect") is None
    resume = resume_for("websocket", "websocket.receive")
    assert resume is not None and resume.replay == "websocket.connect"
    webrtc = resume_for("webrtc", "webrtc.datachannel.message")
    assert webrtc is not None and webrtc.swallow is None
    assert resume_for("http", "http.request") is None
    assert swallow_reply("websocket.accept", resumed=True, accepted=False)
    assert not swallow_reply("websocket.accept", resumed=True, accepted=True)
    assert not swallow_reply("websocket.accept", resumed=False, accepted=False)


def test_a_consumer_claims_once_per_instance_and_never_on_a_durable_pool() -> None:
    assert own_claim(claimed=False, durable=False) is OwnClaim.SEND
    assert own_claim(claimed=True, durable=False) is OwnClaim.ALREADY
    assert own_claim(claimed=False, durable=True) is OwnClaim.DURABLE


# -- gateway: stateful --------------------------------------------------------------------

SLOTS = st.integers(0, 2)  # three connections open at a time; a closed one's slot reopens anew
WORKERS = ["worker.a!in", "worker.b!in", "gateway.x!control"]
CLAIM_TIMEOUT = 2.0
WORKER_TIMEOUT = 1.0
MAX_HELD = 4


@dataclass
class Model:
    """What the test knows of one connection: events sent, where they went, which wait."""

    sticky: bool
    next_seq: int = 0
    held: deque[int] = field(default_factory=deque)
    delivered: list[tuple[int, Route, str | None]] = field(default_factory=list)
    refused: int = 0


class GatewayAffinityMachine(RuleBasedStateMachine):
    """Every interleaving of a gateway's affinity inputs, against the rules' invariants.

    Flushes are carried out one event per step, as Gateway._flush_held does across its
    awaits, so new events, claims, closes and drains interleave with them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.gateway: GatewayAffinity[str, int] = GatewayAffinity(
            claim_timeout=CLAIM_TIMEOUT, worker_timeout=WORKER_TIMEOUT, max_held=MAX_HELD
        )
        self.now = 100.0
        self.opened = 0
        self.slots: list[str | None] = [None] * 3
        self.models: dict[str, Model] = {}
        self.flushing: set[str] = set()
        # The gateway's reply list (FIFO): heartbeats ("hb", worker, sent at) and marks,
        # and the place in it of every heartbeat sent and every mark (by its ``at``).
        self.replies: deque[tuple[str, str, float]] = deque()
        self.sent_count = 0
        self.heartbeats_sent: dict[str, list[tuple[int, float]]] = {}
        self.mark_place: dict[float, int] = {}
        self.life: dict[str, float] = {}  # a worker's last claim read (also proof of life)

    @initialize(sticky=st.lists(st.booleans(), min_size=3, max_size=3))
    def start(self, sticky: list[bool]) -> None:
        for slot, flag in enumerate(sticky):
            self.open(slot, flag)

    # -- inputs ---------------------------------------------------------------------

    @precondition(lambda self: None in self.slots)
    @rule(slot=SLOTS, sticky=st.booleans())
    def open(self, slot: int, sticky: bool) -> None:
        if self.slots[slot] is not None:
            return
        key = self.slots[slot] = f"c{self.opened}"
        self.opened += 1
        self.gateway.open(key, ConnectionAffinity(sticky))
        self.models[key] = Model(sticky)

    @rule(slot=SLOTS)
    def close(self, slot: int) -> None:
        key = self.slots[slot]
        if key is None:
            return
        self.slots[slot] = None
        del self.models[key]
        self.flushing.discard(key)
        self.gateway.close(key)
        assert self.gateway.route_event(key, -1, self.now) is Route.POOL  # a late event: no claim asked

    @rule(slot=SLOTS, count=st.integers(1, 3), stored=st.sampled_from([True, True, True, False]))
    def send_event(self, slot: int, count: int, stored: bool) -> None:
        key = self.slots[slot]
        if key is None:
            return
        model = self.models[key]
        state = self.gateway.connections[key]
        for _ in range(count):
            worker, asked, held_before = state.worker, state.asked, bool(state.held)
            seq = model.next_seq
            model.next_seq += 1
            try:
                route = self.gateway.route_event(key, seq, self.now)
            except HeldFull:
                model.refused += 1
                assert len(model.held) == MAX_HELD
                continue
            if route is Route.HOLD:
                model.held.append(seq)
                continue
            assert not held_before, "an event overtook held ones"
            if worker is not None:
                assert route is Route.WORKER, "a claimed connection's event left its worker"
            if route is Route.ASK:
                assert asked is None, "a second claim-asking envelope while one is unread"
                assert state.sticky
                if stored:  # the layer took it (else the send failed: no token)
                    self.gateway.asked(key, seq.to_bytes(4, "big"))
            assert route is not Route.POOL or not state.sticky, "a sticky connection's event spread without a claim"
            model.delivered.append((seq, route, state.worker if route is Route.WORKER else None))

    @rule(slot=SLOTS, worker=st.sampled_from(WORKERS), durable=st.sampled_from([False, False, False, True]))
    def claim(self, slot: int, worker: str, durable: bool) -> None:
        key = self.slots[slot]
        if key is None:
            assert self.gateway.claim(f"c{self.opened + 1}", worker, self.now) is Claim.IGNORED
            return
        state = self.gateway.connections[key]
        before = state.worker
        outcome = self.gateway.claim(key, worker, self.now, durable=durable)
        if outcome is Claim.ACCEPTED:
            assert before in (None, worker) and not durable
            assert state.worker == worker and state.sticky
            self.life[worker] = self.now
            if state.held is not None:
                self.flushing.add(key)
        else:
            assert state.worker == before
            if outcome is Claim.IGNORED:
                assert not worker.startswith("worker.")

    @rule(slot=SLOTS, worker=st.sampled_from(WORKERS))
    def release(self, slot: int, worker: str) -> None:
        key = self.slots[slot]
        if key is None:
            return
        owner = self.gateway.connections[key].worker
        assert self.gateway.release(key, worker) == (owner is not None and owner == worker)

    @rule(dt=st.sampled_from([0.3, 0.9, 1.2, 2.5]))
    def time_passes(self, dt: float) -> None:
        self.now += dt

    @rule(worker=st.sampled_from(WORKERS[:2]))
    def heartbeat_sent(self, worker: str) -> None:
        self.replies.append(("hb", worker, self.now))
        self.sent_count += 1
        self.heartbeats_sent.setdefault(worker, []).append((self.sent_count, self.now))

    @precondition(lambda self: bool(self.replies))
    @rule(count=st.integers(1, 10))
    def read_replies(self, count: int) -> None:
        for _ in range(min(count, len(self.replies))):
            kind, worker, at = self.replies.popleft()
            if kind == "hb":
                self.gateway.heartbeat(worker, self.now)
            else:
                self.gateway.mark_read(at)

    @rule(
        dt=st.sampled_from([0.1, 0.6, 1.2]),
        still_queued=st.sampled_from([True, False, None]),
        stored=st.sampled_from([True, True, True, False]),
    )
    def watch(self, dt: float, still_queued: bool | None, stored: bool) -> None:
        """One round of Gateway._watch_workers, ``dt`` after the last: overdue claims, then liveness."""
        self.now += dt
        self.watch_claims(still_queued)
        self.check_workers(stored)

    def check_workers(self, stored: bool) -> None:
        lost, mark = self.gateway.check_workers(self.now)
        for item in lost:
            # Never wrongly: no sign of life in the worker timeout before the last mark
            # read back (heartbeats queued ahead of it, claims read before it was sent).
            horizon = self.gateway.read_up_to
            place = self.mark_place[horizon]
            signs = [t for index, t in self.heartbeats_sent.get(item.worker, []) if index < place]
            if self.life[item.worker] <= horizon:
                signs.append(self.life[item.worker])
            assert all(t < horizon - WORKER_TIMEOUT for t in signs), (item, signs, horizon)
            assert item.worker not in self.gateway.worker_claims
        if mark:
            if stored:
                self.replies.append(("mark", "", self.now))
                self.sent_count += 1
                self.mark_place[self.now] = self.sent_count
                self.gateway.mark_sent(self.now)
            else:
                self.gateway.mark_failed()

    @rule(worker=st.sampled_from(WORKERS[:2]), hold_for=st.sampled_from([0.5, 10.0]))
    def worker_stopping(self, worker: str, hold_for: float) -> None:
        keys = {key for key, state in self.gateway.connections.items() if state.worker == worker}
        assert self.gateway.release_worker(worker, self.now, hold_for=hold_for) == len(keys)
        for key in keys:
            assert self.gateway.route_forward(key, self.now) is None  # its events wait

    @precondition(lambda self: bool(self.gateway.draining))
    @rule(worker=st.sampled_from(WORKERS[:2]))
    def drained(self, worker: str) -> None:
        self.flushing.update(self.gateway.drained(worker))

    def watch_claims(self, still_queued: bool | None) -> None:
        for key in list(self.gateway.holding):
            if self.gateway.claim_overdue(key, self.now):
                token = self.gateway.asked_token(key)
                outcome = self.gateway.late_claim(key, still_queued if token is not None else None, self.now)
                if outcome is LateClaim.FLUSH:
                    self.flushing.add(key)

    @precondition(lambda self: bool(self.flushing))
    @rule(pick=st.integers(0, 3), stored=st.sampled_from([True, True, True, False]))
    def flush_step(self, pick: int, stored: bool) -> None:
        """One await of Gateway._flush_held: send the next held event, or end the flush."""
        if not self.flushing:
            return
        key = sorted(self.flushing)[pick % len(self.flushing)]
        model = self.models[key]
        state = self.gateway.connections[key]
        step = self.gateway.next_held(key, self.now)
        if step is not None:
            seq, route = step
            assert model.held and model.held.popleft() == seq, "held events out of order"
            if state.worker is not None:
                assert route is Route.WORKER
            assert route is not Route.POOL or not state.sticky, "a sticky connection's event spread without a claim"
            if route is Route.ASK and stored:
                self.gateway.asked(key, seq.to_bytes(4, "big"))
            model.delivered.append((seq, route, state.worker if route is Route.WORKER else None))
        if step is None or (route is Route.ASK and self.gateway.has_held(key)):
            self.flushing.discard(key)
            self.gateway.flushed(key)

    # -- invariants -----------------------------------------------------------------

    @invariant()
    def one_worker_per_connection_and_tables_agree(self) -> None:
        gateway = self.gateway
        seen: set[str] = set()
        for worker, keys in gateway.worker_claims.items():
            assert keys, "a worker with no claims is still listed"
            assert not keys & seen, "a connection claimed by two workers"
            seen |= keys
            for key in keys:
                assert gateway.connections[key].worker == worker
        claimed = {key for key, state in gateway.connections.items() if state.worker is not None}
        assert claimed == seen
        assert set(gateway.worker_seen) == set(gateway.worker_claims), "a gone worker is still watched"
        assert all(worker.startswith("worker.") for worker in gateway.worker_claims)

    @invariant()
    def closed_connections_hold_nothing(self) -> None:
        gateway = self.gateway
        assert set(gateway.connections) == set(self.models)
        assert gateway.holding <= set(self.models)
        for keys in gateway.draining.values():
            assert keys and keys <= set(self.models)

    @invariant()
    def held_events_are_the_ones_waiting_in_order(self) -> None:
        for key, model in self.models.items():
            state = self.gateway.connections[key]
            assert list(state.held or ()) == list(model.held)
            assert (state.held is not None) == (key in self.gateway.holding)
            assert len(model.held) <= MAX_HELD
            # Nothing lost: every event went somewhere, waits, or was refused (counted).
            assert model.next_seq == len(model.delivered) + len(model.held) + model.refused
            seqs = [seq for seq, _route, _worker in model.delivered]
            assert seqs == sorted(seqs), "an event overtook another"
            if state.worker is not None:
                assert state.asked is None


def deterministic(steps: int) -> settings:
    """The machines' settings: 100 derandomized runs of ``steps`` steps, the same every time
    (no example database, no deadline: a loaded machine must not change what runs)."""
    return settings(
        max_examples=100,
        stateful_step_count=steps,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


TestGatewayAffinityMachine = GatewayAffinityMachine.TestCase
TestGatewayAffinityMachine.settings = deterministic(80)


class LivenessMachine(RuleBasedStateMachine):
    """G7 alone: heartbeats and marks share one FIFO list; a worker is never lost wrongly.

    Wrongly means: it sent a heartbeat (or was heard claiming) less than the worker
    timeout before the mark the verdict rests on, ahead of that mark in the list.
    """

    def __init__(self) -> None:
        super().__init__()
        self.gateway: GatewayAffinity[str, int] = GatewayAffinity(claim_timeout=CLAIM_TIMEOUT, worker_timeout=WORKER_TIMEOUT)
        self.now = 100.0
        self.replies: deque[tuple[str, str, float]] = deque()
        self.placed = 0
        self.signs: dict[str, list[tuple[int, float]]] = {}  # worker -> (place in the list, time)
        self.mark_place: dict[float, int] = {}
        self.lost = 0

    @rule(worker=st.sampled_from(WORKERS[:2]))
    def claim(self, worker: str) -> None:
        key = f"{worker}-{self.placed}"
        self.gateway.open(key, ConnectionAffinity(True))
        assert self.gateway.claim(key, worker, self.now) is Claim.ACCEPTED
        self.placed += 1
        self.signs.setdefault(worker, []).append((self.placed, self.now))  # read as it was sent

    @rule(worker=st.sampled_from(WORKERS[:2]))
    def heartbeat_sent(self, worker: str) -> None:
        self.placed += 1
        self.replies.append(("hb", worker, self.now))
        self.signs.setdefault(worker, []).append((self.placed, self.now))

    @precondition(lambda self: bool(self.replies))
    @rule()
    def read_reply(self) -> None:
        kind, worker, at = self.replies.popleft()
        if kind == "hb":
            self.gateway.heartbeat(worker, self.now)
        else:
            self.gateway.mark_read(at)

    @rule(dt=st.sampled_from([0.1, 0.4, 1.1]), stored=st.sampled_from([True, True, True, False]))
    def watch(self, dt: float, stored: bool) -> None:
        self.now += dt
        lost, mark = self.gateway.check_workers(self.now)
        for item in lost:
            self.lost += 1
            horizon = self.gateway.read_up_to
            place = self.mark_place[horizon]
            recent = [t for index, t in self.signs[item.worker] if index < place and t >= horizon - WORKER_TIMEOUT]
            assert not recent, f"{item.worker} lost at {self.now} despite signs of life at {recent}"
            assert item.worker not in self.gateway.worker_claims
        if mark and stored:
            self.placed += 1
            self.replies.append(("mark", "", self.now))
            self.mark_place[self.now] = self.placed
            self.gateway.mark_sent(self.now)
        elif mark:
            self.gateway.mark_failed()

    @invariant()
    def watched_workers_hold_claims(self) -> None:
        assert set(self.gateway.worker_seen) == set(self.gateway.worker_claims)


TestLivenessMachine = LivenessMachine.TestCase
TestLivenessMachine.settings = deterministic(50)


def test_the_liveness_machine_does_judge_workers_lost() -> None:
    """The stateful test above is only worth something if verdicts happen in it."""
    machine = LivenessMachine()
    machine.claim(WORKERS[0])
    machine.watch(1.1, True)  # silent: a mark goes out
    machine.read_reply()
    machine.watch(0.1, True)
    assert machine.lost == 1


# -- worker: stateful ---------------------------------------------------------------------

CONNECTIONS = ["gateway.g!a", "gateway.g!b", "gateway.h!a"]


class WorkerAffinityMachine(RuleBasedStateMachine):
    """The worker's tables: claims follow instances, held events keep their order."""

    def __init__(self) -> None:
        super().__init__()
        self.worker: WorkerAffinity[int] = WorkerAffinity(scope_timeout=5.0, max_unscoped=3)
        self.now = 0.0
        self.instances: set[str] = set()
        self.claimed: set[str] = set()
        self.seq = 0
        self.handled: dict[str, list[int]] = {}

    @rule(connection=st.sampled_from(CONNECTIONS), scoped=st.booleans(), claim=st.booleans(),
          event_type=st.sampled_from(["websocket.connect", "websocket.receive", "websocket.disconnect", "http.request"]))
    def envelope(self, connection: str, scoped: bool, claim: bool, event_type: str) -> None:
        self.seq += 1
        self.dispatch(connection, self.seq, scoped=scoped, claim=claim, event_type=event_type)

    def dispatch(self, connection: str, seq: int, *, scoped: bool, claim: bool, event_type: str) -> None:
        decision = self.worker.dispatch(
            connection, has_instance=connection in self.instances, scoped=scoped, event_type=event_type, claim=claim
        )
        if decision is Dispatch.RELEASE_HELD:
            for held in self.worker.take(connection):
                self.dispatch(connection, held, scoped=True, claim=False, event_type="websocket.receive")
            decision = self.worker.dispatch(
                connection, has_instance=connection in self.instances, scoped=True, event_type=event_type, claim=claim
            )
        assert decision is not Dispatch.RELEASE_HELD
        if decision is Dispatch.HOLD:
            assert not scoped
            self.worker.hold(connection, seq, self.now)
            return
        assert connection not in self.worker.unscoped, "an event overtook held ones"
        if decision is Dispatch.START:
            assert scoped and connection not in self.instances
            self.instances.add(connection)
            if claim:
                self.claimed.add(connection)
                self.worker.claimed(connection)
        elif decision is Dispatch.RECLAIM:
            self.claimed.add(connection)
            self.worker.claimed(connection)
        if decision is not Dispatch.IGNORE:
            assert connection in self.instances
            self.handled.setdefault(connection, []).append(seq)

    @rule(connection=st.sampled_from(CONNECTIONS))
    def instance_ends(self, connection: str) -> None:
        if connection in self.instances:
            self.instances.discard(connection)
            if connection in self.claimed:
                self.claimed.discard(connection)
                self.worker.forget(connection)

    @rule(connection=st.sampled_from(CONNECTIONS))
    def scope_answer_closed(self, connection: str) -> None:
        self.worker.take(connection)

    @rule(dt=st.sampled_from([0.5, 3.0, 6.0]))
    def time_passes(self, dt: float) -> None:
        self.now += dt
        for _connection, envelopes in self.worker.expired(self.now):
            assert envelopes

    @invariant()
    def claims_follow_instances(self) -> None:
        recorded = set().union(*self.worker.claims.values()) if self.worker.claims else set()
        assert recorded == self.claimed
        assert all(connections for connections in self.worker.claims.values())
        assert all(len(pending.envelopes) <= 3 for pending in self.worker.unscoped.values())
        assert not set(self.worker.unscoped) & self.instances, "events held for a connection that has an instance"

    @invariant()
    def handled_in_order(self) -> None:
        for seqs in self.handled.values():
            assert seqs == sorted(seqs)


TestWorkerAffinityMachine = WorkerAffinityMachine.TestCase
TestWorkerAffinityMachine.settings = deterministic(40)
