"""Open-loop WebSocket load at a fixed rate: echo, then (optionally) group fan-out.

The closed-loop generators (``ws_echo``, ``ws_fanout``) find a server's peak; this one
asks what latency the server gives at a rate it was *told* to carry, the way real
clients behave: they send when they have something to send, not when the server has
answered the previous message.

- **Echo**: ``--connections`` WebSockets to ``/ws/echo/``. Message ``i`` of the run is due
  at ``t0 + i / rate`` and goes to connection ``i % connections`` (so each connection
  sends every ``connections / rate`` s, its messages numbered 0, 1, 2, ...). Sends never
  wait for echoes.
- **Fan-out** (when ``--fanout-rate`` is given): a room of ``--fanout-size`` members on
  ``/ws/room/<name>/``; member 0 sends ``fanout-rate / size`` messages per second on the
  same kind of schedule and every member (the sender too) receives each one.
  ``--fanout-rate`` counts deliveries (one message to one member), like ``ws_fanout``.

One scheduler task sends whatever is due, then sleeps until the next message is due but
at least 1 ms (the event loop's timer resolution under uvloop; a shorter sleep would
spin a core the servers need): at 16,000 msg/s about 16 messages leave per tick, spread
over the connections. Each frame carries its send time, taken right before the send, and
a frame's arrival is the moment its bytes reach the client (``bench/loadgen/wsframes.py``),
so a latency is send to receive; how far each send was behind its schedule is reported
separately (``send_lag_*``) and shows when the client, not the server, fell behind.

A message counts when its due time falls in the counted window, and its echo (or
delivery) is a sample whenever it arrives, up to ``--late-after`` s after the send.
Later than that it is ``late``; never, ``missing``; out of order or malformed, a
``mismatch``. All three are errors, and none of them is a sample. ``msg/s`` is samples
per counted second: with no errors it equals the rate asked for.

Run as ``python -m bench.loadgen.ws_paced --url ws://127.0.0.1:PORT/ws/echo/ --rate 10000``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import InvalidHandshake

from bench.loadgen.common import emit, percentile, run, summarize_ns
from bench.loadgen.wsframes import close_frame_sockets, open_frame_sockets

MIN_TICK = 0.001  # uvloop rounds timers to whole milliseconds; 0.5 ms would round to 0 and spin


@dataclass
class Tally:
    """What one phase measured, on the send side and the receive side."""

    late_after_ns: int
    latencies_ns: list[int] = field(default_factory=list)
    send_lag_ns: list[int] = field(default_factory=list)
    counted_sent: int = 0  # messages (echo) or deliveries expected (fan-out) in the window
    counted_received: int = 0  # of those, arrived at all (samples + late)
    late: int = 0
    mismatches: int = 0
    send_errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def note(self, what: str) -> None:
        if len(self.error_samples) < 5:
            self.error_samples.append(what)

    def arrived(self, counted: bool, latency_ns: int) -> None:
        if not counted:
            return
        self.counted_received += 1
        if latency_ns > self.late_after_ns:
            self.late += 1
        else:
            self.latencies_ns.append(latency_ns)

    @property
    def missing(self) -> int:
        return max(0, self.counted_sent - self.counted_received)

    def result(self, label: str, seconds: float, rate: float, connections: int, sent: int) -> dict[str, Any]:
        lags = sorted(self.send_lag_ns)
        errors = self.late + self.missing + self.mismatches + self.send_errors
        return {
            **summarize_ns(self.latencies_ns, seconds),
            "label": label,
            "connections": connections,
            "target_rate": rate,
            "sent": sent,
            "errors": errors,
            "late": self.late,
            "missing": self.missing,
            "mismatches": self.mismatches,
            "send_errors": self.send_errors,
            "send_lag_p50_ms": percentile(lags, 0.50) * 1e-6,
            "send_lag_p99_ms": percentile(lags, 0.99) * 1e-6,
            "send_lag_max_ms": (lags[-1] * 1e-6) if lags else float("nan"),
            "error_samples": self.error_samples,
        }


async def paced(
    send: Callable[[int, bool], None], rate: float, warmup: float, duration: float, label: str, tally: Tally
) -> tuple[float, int]:
    """Call ``send(i, counted)`` for message ``i`` at ``t0 + i / rate``; returns (counted s, sends).

    The counted seconds are the schedule's ``duration``: ``rate`` messages are due in each.

    Emits ``measure_start``/``measure_end`` around the messages due in the counted window.
    A send that is behind its schedule goes at once (the schedule is kept, not shifted),
    and how far behind it was is recorded for the counted ones.
    """
    interval_ns = 1e9 / rate
    t0 = time.perf_counter_ns()
    window_start = t0 + int(warmup * 1e9)
    window_end = window_start + int(duration * 1e9)
    measuring = False
    i = 0
    while True:
        now = time.perf_counter_ns()
        due = t0 + int(i * interval_ns)
        while due <= now:
            if due >= window_end:
                break
            counted = due >= window_start
            if counted and not measuring:
                measuring = True
                emit("measure_start", label=label)
            if counted:
                tally.send_lag_ns.append(time.perf_counter_ns() - due)
            try:
                send(i, counted)
            except Exception as exc:  # a closed connection fails its sends; the schedule goes on
                tally.send_errors += 1
                tally.note(f"send {i}: {exc!r}")
            i += 1
            due = t0 + int(i * interval_ns)
        if due >= window_end:
            break
        await asyncio.sleep(max(MIN_TICK, (due - time.perf_counter_ns()) / 1e9))
    # The window is the schedule's: messages due in [start, end). Its end is after the last
    # of them was sent, so the CPU the runner samples covers the whole window.
    await asyncio.sleep(max(0.0, (window_end - time.perf_counter_ns()) / 1e9))
    emit("measure_end", label=label)
    return (duration if measuring else 0.0), i


async def drain(done: Callable[[], bool], late_after: float) -> None:
    """Wait until everything sent has arrived, or ``late_after`` s (then it is missing)."""
    deadline = time.perf_counter() + late_after
    while not done() and time.perf_counter() < deadline:  # noqa: ASYNC110 - a condition over every socket, with a deadline
        await asyncio.sleep(0.01)


# -- echo -------------------------------------------------------------------------------


async def echo_phase(args: argparse.Namespace) -> dict[str, Any]:
    count = args.connections
    tally = Tally(int(args.late_after * 1e9))
    next_seq = [0] * count
    sent = [0] * count
    payload = args.payload

    def arrived(number: int, text: str, now: int) -> None:
        try:
            c_text, s_text, t_text, m_text, _ = text.split(" ", 4)
            conn, seq, sent_at = int(c_text), int(s_text), int(t_text)
        except ValueError:
            tally.mismatches += 1
            tally.note(f"connection {number}: unexpected echo {text[:60]!r}")
            return
        if conn != number or seq < next_seq[number]:
            tally.mismatches += 1
            tally.note(f"connection {number}: echo of {conn}/{seq}, expected {number}/{next_seq[number]}")
            return
        next_seq[number] = seq + 1  # a gap is counted missing at the end
        tally.arrived(m_text == "1", now - sent_at)

    sockets = await open_frame_sockets(args.url, count, arrived, args.connect_timeout)

    def send(i: int, counted: bool) -> None:
        number = i % count
        seq = sent[number]
        sent[number] = seq + 1
        if counted:
            tally.counted_sent += 1
        sockets[number].send(f"{number} {seq} {time.perf_counter_ns()} {1 if counted else 0} {payload}")

    seconds, sends = await paced(send, args.rate, args.warmup, args.duration, "echo", tally)
    await drain(lambda: all(next_seq[n] >= sent[n] for n in range(count)), args.late_after)
    await close_frame_sockets(sockets)
    return tally.result("echo", seconds, args.rate, count, sends)


# -- fan-out ----------------------------------------------------------------------------


async def fanout_phase(args: argparse.Namespace) -> dict[str, Any]:
    size = args.fanout_size
    label = f"fan-out x{size}"
    tally = Tally(int(args.late_after * 1e9))
    url = f"{args.room_url}paced{size}-{uuid.uuid4().hex[:8]}/"
    next_seq = [1] * size
    last_sent = 0

    def arrived(number: int, text: str, now: int) -> None:
        try:
            s_text, t_text, m_text = text.split(" ")
            seq, sent_at = int(s_text), int(t_text)
        except ValueError:
            tally.mismatches += 1
            tally.note(f"member {number}: unexpected frame {text[:60]!r}")
            return
        if seq < next_seq[number]:
            tally.mismatches += 1
            tally.note(f"member {number}: message {seq} again or out of order")
            return
        next_seq[number] = seq + 1
        tally.arrived(m_text == "1", now - sent_at)

    sockets = await open_frame_sockets(url, size, arrived, 30.0)
    await asyncio.sleep(0.3)  # let every connect() handler finish its group_add
    sender = sockets[0]

    def send(i: int, counted: bool) -> None:
        nonlocal last_sent
        last_sent = i + 1
        if counted:
            tally.counted_sent += size
        sender.send(f"{i + 1} {time.perf_counter_ns()} {1 if counted else 0}")

    seconds, sends = await paced(send, args.fanout_rate / size, args.fanout_warmup, args.fanout_duration, label, tally)
    await drain(lambda: all(seq > last_sent for seq in next_seq), args.late_after)
    await close_frame_sockets(sockets)
    return tally.result(label, seconds, args.fanout_rate, size, sends)


async def main(args: argparse.Namespace) -> None:
    rows = [await echo_phase(args)]
    fanout_error = None
    if args.fanout_rate:
        try:
            rows.append(await fanout_phase(args))
        except (OSError, TimeoutError, InvalidHandshake) as exc:  # keep the echo row
            fanout_error = repr(exc)
    emit("result", data={"rows": rows, "fanout_error": fanout_error})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="echo URL, e.g. ws://127.0.0.1:8000/ws/echo/")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rate", type=float, required=True, help="echo messages per second, all connections together")
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--room-url", help="room URL prefix, e.g. ws://127.0.0.1:8000/ws/room/ (for --fanout-rate)")
    parser.add_argument("--fanout-size", type=int, default=100)
    parser.add_argument("--fanout-rate", type=float, default=0.0, help="deliveries per second (0: no fan-out phase)")
    parser.add_argument("--fanout-warmup", type=float, default=0.5)
    parser.add_argument("--fanout-duration", type=float, default=2.0)
    parser.add_argument("--late-after", type=float, default=1.0, help="an echo later than this is an error, not a sample")
    parser.add_argument("--connect-timeout", type=float, default=15.0)
    parser.add_argument("--payload", default="x" * 32, help="filler text carried in each echo frame (letters only)")
    args = parser.parse_args(argv)
    if not args.payload.isalnum():
        parser.error("--payload must be letters and digits")
    if args.rate <= 0:
        parser.error("--rate must be positive")
    if args.fanout_rate and not args.room_url:
        parser.error("--fanout-rate needs --room-url")
    for url in (args.url, args.room_url or "ws://127.0.0.1"):
        if not url.startswith(("ws://127.", "ws://localhost")):
            parser.error("load goes to this machine only: URLs must be ws://127.x or ws://localhost")
    return args


if __name__ == "__main__":
    run(main(parse_args()))
