"""WebSocket echo load: N connections, each a closed loop of send-then-wait-for-echo.

Closed loop (one message in flight per connection) measures latency honestly: a slow
server lowers the rate instead of growing an unbounded queue in front of it. Each frame
carries the connection number, a sequence number and the send time, and the echo is
checked against them, so a lost or reordered reply is counted as an error, not a sample.

Run as ``python -m bench.loadgen.ws_echo --url ws://127.0.0.1:PORT/ws/echo/``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

from bench.loadgen.common import emit, run, summarize_ns


@dataclass
class State:
    """Shared by all connections: the phase flags and what was measured."""

    measuring: bool = False
    stopping: bool = False
    latencies_ns: list[int] = field(default_factory=list)
    connected: int = 0
    connect_errors: int = 0
    expected: int = 0
    all_connected: asyncio.Event = field(default_factory=asyncio.Event)
    errors: int = 0
    mismatches: int = 0
    error_samples: list[str] = field(default_factory=list)

    def connect_outcome(self, ok: bool) -> None:
        """Count one finished handshake; the run starts once every connection has one."""
        if ok:
            self.connected += 1
        else:
            self.connect_errors += 1
        if self.connected + self.connect_errors >= self.expected:
            self.all_connected.set()

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what)


async def echo_loop(ws: ClientConnection, number: int, state: State, args: argparse.Namespace) -> None:
    """Send, wait for the echo, record the round trip; until the run stops or the cap is hit."""
    sequence = 0
    recv_timeout: float = args.recv_timeout
    payload: str = args.payload
    while not state.stopping and sequence < args.max_per_connection:
        counted = state.measuring
        sent_at = time.perf_counter_ns()
        await ws.send(f'{{"c":{number},"s":{sequence},"t":{sent_at},"p":"{payload}"}}')
        try:
            reply = await asyncio.wait_for(ws.recv(), recv_timeout)
        except TimeoutError:
            state.error(f"connection {number}: no echo within {recv_timeout}s")
            return
        received_at = time.perf_counter_ns()
        try:
            data = json.loads(reply)
            ok = data["c"] == number and data["s"] == sequence and data["t"] == sent_at
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            state.mismatches += 1
            state.error(f"connection {number}: unexpected reply {str(reply)[:80]!r}")
            return
        # Only round trips wholly inside the window count, so warm-up and wind-down don't.
        if counted and state.measuring:
            state.latencies_ns.append(received_at - sent_at)
        sequence += 1


async def client(url: str, number: int, state: State, args: argparse.Namespace, ready: asyncio.Event) -> None:
    """One connection: connect (counted), wait for the start signal, run the echo loop."""
    try:
        # No permessage-deflate: compression would measure zlib, and servers differ in it.
        async with connect(url, compression=None, open_timeout=args.connect_timeout, max_queue=None) as ws:
            state.connect_outcome(True)
            await ready.wait()
            await echo_loop(ws, number, state, args)
    except (OSError, TimeoutError, WebSocketException) as exc:
        if ready.is_set():
            state.error(f"connection {number}: {exc!r}")
        else:
            state.connect_outcome(False)
            state.error(f"connect {number}: {exc!r}")


async def main(args: argparse.Namespace) -> None:
    state = State(expected=args.connections)
    ready = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    # Connect in small waves: a burst of 1000 handshakes is its own scenario, not this one.
    for number in range(args.connections):
        tasks.append(asyncio.create_task(client(args.url, number, state, args, ready)))
        if number % 25 == 24:
            await asyncio.sleep(0.01)
    try:
        await asyncio.wait_for(state.all_connected.wait(), args.connect_timeout + 1)
    except TimeoutError:
        pass  # run with whatever connected; the result says how many did
    ready.set()
    await asyncio.sleep(args.warmup)
    emit("measure_start")
    state.measuring = True
    started = time.perf_counter()
    await asyncio.sleep(args.duration)
    state.measuring = False
    seconds = time.perf_counter() - started
    emit("measure_end")
    state.stopping = True
    _done, pending = await asyncio.wait(tasks, timeout=args.recv_timeout + 5)
    for task in pending:
        task.cancel()
    summary = summarize_ns(state.latencies_ns, seconds)
    emit(
        "result",
        data={
            **summary,
            "connections": args.connections,
            "connected": state.connected,
            "connect_errors": state.connect_errors,
            "errors": state.errors,
            "mismatches": state.mismatches,
            "error_samples": state.error_samples,
            "unfinished_clients": len(pending),
        },
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connect-timeout", type=float, default=15.0)
    parser.add_argument("--recv-timeout", type=float, default=10.0)
    parser.add_argument("--payload", default="x" * 32, help="filler text carried in each frame (letters only)")
    parser.add_argument("--max-per-connection", type=int, default=500_000, help="hard cap on messages per connection")
    args = parser.parse_args(argv)
    if not args.payload.isalnum():
        parser.error("--payload must be letters and digits (it is put into JSON unescaped)")
    if not args.url.startswith(("ws://127.", "ws://localhost")):
        parser.error("load goes to this machine only: the URL must be ws://127.x or ws://localhost")
    return args


if __name__ == "__main__":
    run(main(parse_args()))
