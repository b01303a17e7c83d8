"""A window of request slots, each with at most one request in flight: the plugin benches' loop.

``N`` slots each send a request, wait for its answer, record the round trip and send the
next one (a closed loop per slot, so a slower server shows as a lower rate, never as an
unbounded queue; and the client never has more than ``N`` requests out, so the kernel
never drops a UDP datagram for want of buffer). A request is ``slot``, ``seq`` (4 bytes
each, network order) and padding; the answer must be the same bytes. A request without
an answer after ``lost_after`` seconds is counted lost (an error) and the slot sends a new
one; an answer that comes later still is counted ``late`` and otherwise ignored.

The transport is the caller's: ``send(slot, payload)`` puts one request on the wire (a
datagram, an MQTT publish, a data channel message) and the caller's receive path calls
:meth:`Window.on_reply`. Callbacks on another thread (paho's) pass a ``threading.Lock``.

Every phase is bounded in time and in requests (``max_sends``).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import Callable
from typing import Any

from bench.loadgen.common import emit, summarize_ns

_HEADER = struct.Struct("!II")
MIN_SIZE = _HEADER.size


class Window:
    def __init__(
        self,
        send: Callable[[int, bytes], None],
        *,
        size: int = 64,
        lost_after: float = 1.0,
        max_sends: int = 5_000_000,
        lock: Any = None,
    ) -> None:
        if size < MIN_SIZE:
            raise ValueError(f"payload size must be at least {MIN_SIZE} bytes")
        self._send = send
        self.padding = b"x" * (size - MIN_SIZE)
        self.lost_after_ns = int(lost_after * 1e9)
        self.max_sends = max_sends
        self.lock = lock if lock is not None else contextlib.nullcontext()
        self.seq: list[int] = []
        self.sent_ns: list[int] = []  # 0: nothing in flight on that slot
        self.counted: list[bool] = []
        self.expected: list[bytes] = []
        self.active = 0
        self.running = False
        self.measuring = False
        self.sends = 0
        self.reset()

    def reset(self) -> None:
        """Forget the measurements (not the slots' sequence numbers)."""
        self.latencies_ns: list[int] = []
        self.replies = 0
        self.answered: set[int] = set()
        self.lost = 0
        self.late = 0
        self.mismatches = 0
        self.send_errors = 0
        self.capped = False
        self.error_samples: list[str] = []

    def note(self, what: str) -> None:
        if len(self.error_samples) < 5:
            self.error_samples.append(what)

    @property
    def errors(self) -> int:
        return self.lost + self.mismatches + self.send_errors

    def in_flight(self) -> int:
        with self.lock:
            return sum(1 for sent in self.sent_ns[: self.active] if sent)

    # -- the loop -----------------------------------------------------------------------

    def _fire(self, slot: int) -> None:
        if self.sends >= self.max_sends:
            self.capped = True
            self.sent_ns[slot] = 0
            return
        self.sends += 1
        seq = self.seq[slot] = (self.seq[slot] + 1) & 0xFFFFFFFF
        payload = _HEADER.pack(slot, seq) + self.padding
        self.expected[slot] = payload
        self.counted[slot] = self.measuring
        self.sent_ns[slot] = time.perf_counter_ns()
        try:
            self._send(slot, payload)
        except Exception as exc:  # a transport error is a failed request, the loop goes on
            self.send_errors += 1
            self.note(f"send: {exc!r}")

    def on_reply(self, data: bytes) -> None:
        """One answer arrived (any thread, if a lock was given)."""
        now = time.perf_counter_ns()
        with self.lock:
            if len(data) < MIN_SIZE:
                self.mismatches += 1
                self.note(f"short reply {bytes(data[:40])!r}")
                return
            slot, seq = _HEADER.unpack_from(data)
            if slot >= len(self.seq) or seq != self.seq[slot] or not self.sent_ns[slot]:
                self.late += 1
                return
            if data != self.expected[slot]:
                self.mismatches += 1
                self.note(f"slot {slot}: reply differs from the request {bytes(data[:40])!r}")
            else:
                self.replies += 1
                self.answered.add(slot)
                if self.counted[slot] and self.measuring:
                    self.latencies_ns.append(now - self.sent_ns[slot])
            self.sent_ns[slot] = 0
            if self.running and slot < self.active:
                self._fire(slot)

    def start(self, slots: int) -> None:
        with self.lock:
            while len(self.seq) < slots:
                self.seq.append(0)
                self.sent_ns.append(0)
                self.counted.append(False)
                self.expected.append(b"")
            self.active = slots
            self.running = True
            for slot in range(slots):
                if not self.sent_ns[slot]:
                    self._fire(slot)

    def stop(self) -> None:
        with self.lock:
            self.running = False

    def check_lost(self) -> None:
        """Count requests without an answer after ``lost_after`` as lost; resend while running."""
        now = time.perf_counter_ns()
        with self.lock:
            for slot in range(self.active):
                sent = self.sent_ns[slot]
                if sent and now - sent > self.lost_after_ns:
                    self.lost += 1
                    self.sent_ns[slot] = 0
                    if self.running:
                        self._fire(slot)

    def abandon(self) -> None:
        """Forget whatever is still in flight (between phases)."""
        with self.lock:
            for slot in range(len(self.sent_ns)):
                self.sent_ns[slot] = 0


async def _ticking(window: Window, seconds: float, tick: float = 0.05) -> None:
    deadline = time.perf_counter() + seconds
    while True:
        left = deadline - time.perf_counter()
        if left <= 0:
            return
        await asyncio.sleep(min(tick, left))
        window.check_lost()


async def wait_ready(window: Window, timeout: float = 30.0, retry: float = 0.3, slots: int = 1) -> bool:
    """Keep ``slots`` requests out (resent every ``retry`` s) until each slot had an answer.

    In split mode the gateway may take requests before a worker reads the layer; the
    clock must not start until a request has crossed the whole stack.
    """
    lost_after = window.lost_after_ns
    window.lost_after_ns = int(retry * 1e9)
    window.start(slots)
    deadline = time.perf_counter() + timeout
    try:
        while time.perf_counter() < deadline:
            await _ticking(window, 0.05)
            if len(window.answered) >= slots:
                return True
        return False
    finally:
        window.stop()
        await _ticking(window, 0.3)  # let stragglers of the probes arrive (counted late, then reset)
        window.abandon()
        window.lost_after_ns = lost_after
        window.reset()


async def measure(
    window: Window, label: str, slots: int, warmup: float, duration: float, probe: Callable[[], dict[str, float]] | None = None
) -> dict[str, Any]:
    """One phase: ``slots`` in flight, ``warmup`` s uncounted, ``duration`` s counted.

    Emits ``measure_start``/``measure_end`` with ``label`` so the runner samples CPU around
    the counted part. ``probe`` (optional) is read at both ends; its deltas go in the row
    (the MQTT broker's CPU, for one).
    """
    window.reset()
    window.start(slots)
    await _ticking(window, warmup)
    before = probe() if probe else {}
    emit("measure_start", label=label)
    with window.lock:
        window.latencies_ns = []
        window.measuring = True
    started = time.perf_counter()
    counted_errors = window.errors
    await _ticking(window, duration)
    with window.lock:
        window.measuring = False
        latencies = window.latencies_ns
        window.latencies_ns = []
    seconds = time.perf_counter() - started
    emit("measure_end", label=label)
    after = probe() if probe else {}
    errors = window.errors - counted_errors
    window.stop()
    for _ in range(40):  # up to 2 s for the last answers, so the next phase starts clean
        if not window.in_flight():
            break
        await _ticking(window, 0.05)
    window.abandon()
    row: dict[str, Any] = {
        "label": label,
        "concurrency": slots,
        **summarize_ns(latencies, seconds),
        "errors": errors,
        "lost": window.lost,
        "late": window.late,
        "mismatches": window.mismatches,
        "capped": window.capped,
        "error_samples": list(window.error_samples),
    }
    row.update({key: after[key] - before.get(key, 0.0) for key in after})
    return row


def phases(window_size: int, warmup: float, duration: float) -> list[tuple[str, int, float, float]]:
    """The two measurements of every plugin bench: one request in flight, then ``window_size``.

    ``x1`` is the round-trip latency with nothing queued; ``xN`` the rate with a full
    window (its latency includes queueing behind the other N-1).
    """
    short = max(0.5, round(duration * 0.4, 2))
    return [("x1", 1, max(0.2, warmup / 2), short), (f"x{window_size}", window_size, warmup, duration)]
