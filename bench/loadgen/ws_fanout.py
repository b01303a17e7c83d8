"""Group chat fan-out: 1 sender and N receivers in one room, N = 10, 100, 1,000 in turn.

Every member of ``/ws/room/<name>/`` (the sender too) gets each message the sender sends,
through the server's group send. The sender keeps one message in flight: it sends the
next one once every member has received the previous one, so a slower server shows as a
lower rate, never as a growing queue. A sample is one delivery (send to one member's
receive, timed when its bytes arrive: ``bench/loadgen/wsframes.py``); ``msg/s`` counts
deliveries. Each size is its own measured window.

Run as ``python -m bench.loadgen.ws_fanout --url ws://127.0.0.1:PORT/ws/room/``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from typing import Any

from bench.loadgen.common import emit, run, summarize_ns
from bench.loadgen.wsframes import close_frame_sockets, open_frame_sockets


class Room:
    def __init__(self, size: int) -> None:
        self.size = size
        self.pending: dict[int, int] = {}
        self.done: dict[int, asyncio.Event] = {}
        self.latencies_ns: list[int] = []
        self.measuring = False
        self.errors = 0
        self.samples: list[str] = []

    def delivered(self, text: str, now: int) -> None:
        """One member got ``text`` at ``now`` (its bytes' arrival, ``perf_counter_ns``)."""
        try:
            seq_text, sent_text, counted = text.split(" ")
            seq, sent = int(seq_text), int(sent_text)
        except ValueError:
            self.errors += 1
            if len(self.samples) < 5:
                self.samples.append(f"unexpected frame {text[:60]!r}")
            return
        if counted == "1" and self.measuring:
            self.latencies_ns.append(now - sent)
        left = self.pending.get(seq)
        if left is None:
            self.errors += 1
            return
        if left <= 1:
            del self.pending[seq]
            self.done.pop(seq).set()
        else:
            self.pending[seq] = left - 1


async def run_size(args: argparse.Namespace, size: int) -> dict[str, Any]:
    room = Room(size)
    url = f"{args.url}fan{size}-{uuid.uuid4().hex[:8]}/"
    sockets = await open_frame_sockets(url, size, lambda _member, text, arrived: room.delivered(text, arrived), 30.0)
    sender = sockets[0]
    await asyncio.sleep(0.3)  # let every connect() handler finish its group_add
    label = f"fan-out x{size}"
    seq = 0
    phase_end = time.perf_counter() + args.warmup
    measured_from = 0.0
    measuring_phase = False
    while True:
        now = time.perf_counter()
        if now >= phase_end:
            if measuring_phase:
                break
            measuring_phase = True
            room.measuring = True
            emit("measure_start", label=label)
            measured_from = now
            phase_end = now + args.duration
        seq += 1
        done = room.done[seq] = asyncio.Event()
        room.pending[seq] = size
        sender.send(f"{seq} {time.perf_counter_ns()} {1 if measuring_phase else 0}")
        try:
            await asyncio.wait_for(done.wait(), args.recv_timeout)
        except TimeoutError:
            room.errors += 1
            reached = size - room.pending.get(seq, 0)
            room.samples.append(f"x{size}: message {seq} reached {reached} of {size} in {args.recv_timeout}s")
            break
    room.measuring = False
    seconds = time.perf_counter() - measured_from
    emit("measure_end", label=label)
    await close_frame_sockets(sockets)
    summary = summarize_ns(room.latencies_ns, seconds)
    return {**summary, "label": label, "connections": size, "errors": room.errors, "error_samples": room.samples}


async def main(args: argparse.Namespace) -> None:
    rows: list[dict[str, Any]] = []
    for size in args.sizes:
        rows.append(await run_size(args, size))
    emit("result", data={"rows": rows})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="room URL prefix, e.g. ws://127.0.0.1:8000/ws/room/")
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[10, 100, 1000])
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--recv-timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    if not args.url.startswith(("ws://127.", "ws://localhost")):
        parser.error("load goes to this machine only")
    return args


if __name__ == "__main__":
    run(main(parse_args()))
