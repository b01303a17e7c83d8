"""WebSocket echo load: N connections, each a closed loop of send-then-wait-for-echo.

Closed loop (one message in flight per connection) measures latency honestly: a slow
server lowers the rate instead of growing an unbounded queue in front of it. The next
message leaves as the echo's bytes arrive (``bench/loadgen/wsframes.py``). Each frame
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

from websockets.exceptions import InvalidHandshake

from bench.loadgen.common import emit, run, summarize_ns
from bench.loadgen.wsframes import FrameSocket, open_frame_socket


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


class EchoConnection:
    """One connection's closed loop: the next message leaves as the echo of the last arrives.

    It runs in the socket's ``data_received`` (``bench/loadgen/wsframes.py``): no task
    wakes per message, and the round trip ends when the echo's bytes arrive.
    """

    def __init__(self, number: int, state: State, args: argparse.Namespace) -> None:
        self.number = number
        self.state = state
        self.payload: str = args.payload
        self.max_messages: int = args.max_per_connection
        self.sequence = 0
        self.sent_at = 0
        self.counted = False
        self.socket: FrameSocket | None = None
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def start(self, socket: FrameSocket) -> None:
        self.socket = socket
        self._send_next()

    def _send_next(self) -> None:
        if self.state.stopping or self.sequence >= self.max_messages or self.socket is None:
            self._finish()
            return
        self.counted = self.state.measuring
        self.sent_at = time.perf_counter_ns()
        try:
            self.socket.send(f'{{"c":{self.number},"s":{self.sequence},"t":{self.sent_at},"p":"{self.payload}"}}')
        except ConnectionError as exc:
            self.state.error(f"connection {self.number}: {exc!r}")
            self._finish()

    def on_text(self, reply: str, received_at: int) -> None:
        if self.finished.done():
            return
        try:
            data = json.loads(reply)
            ok = data["c"] == self.number and data["s"] == self.sequence and data["t"] == self.sent_at
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            self.state.mismatches += 1
            self.state.error(f"connection {self.number}: unexpected reply {reply[:80]!r}")
            self._finish()
            return
        # Only round trips wholly inside the window count, so warm-up and wind-down don't.
        if self.counted and self.state.measuring:
            self.state.latencies_ns.append(received_at - self.sent_at)
        self.sequence += 1
        self._send_next()

    def overdue(self, now_ns: int, timeout: float) -> bool:
        """Still waiting for an echo sent more than ``timeout`` s ago (then it is an error)."""
        return not self.finished.done() and self.sent_at > 0 and now_ns - self.sent_at > timeout * 1e9

    def _finish(self) -> None:
        if not self.finished.done():
            self.finished.set_result(None)


async def client(number: int, state: State, args: argparse.Namespace, ready: asyncio.Event) -> None:
    """One connection: connect (counted), wait for the start signal, run the echo loop."""
    echo = EchoConnection(number, state, args)
    try:
        socket = await open_frame_socket(args.url, echo.on_text, args.connect_timeout)
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        state.connect_outcome(False)
        state.error(f"connect {number}: {exc!r}")
        return
    state.connect_outcome(True)
    try:
        await ready.wait()
        echo.start(socket)
        while not echo.finished.done():
            await asyncio.wait([echo.finished, socket.closed], timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
            if echo.finished.done():
                break
            if socket.closed.done():
                state.error(f"connection {number}: closed by the server")
                break
            if echo.overdue(time.perf_counter_ns(), args.recv_timeout):
                state.error(f"connection {number}: no echo within {args.recv_timeout}s")
                break
    finally:
        await socket.close()


async def main(args: argparse.Namespace) -> None:
    state = State(expected=args.connections)
    ready = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    # Connect in small waves: a burst of 1000 handshakes is its own scenario, not this one.
    for number in range(args.connections):
        tasks.append(asyncio.create_task(client(number, state, args, ready)))
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
