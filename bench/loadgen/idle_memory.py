"""Idle connections held open: server memory per connection (WebSockets or long-polls).

Opens ``--count`` connections with a minimal raw client (one asyncio Protocol per socket,
no WebSocket library: the client must stay small enough to hold 10,000 of them), waits
until every WebSocket handshake completed (or every long-poll request was sent and the
server's memory stopped growing), then reads the resident memory (``VmRSS``) of the server
processes listed in ``BENCH_SERVER_PIDS`` (the first is the gateway, or the only
process). The result is the RSS growth per held connection, per process and in all.

Run as ``python -m bench.loadgen.idle_memory --url ws://127.0.0.1:PORT/ws/echo/ --count 10000``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import time
from pathlib import Path
from urllib.parse import urlsplit

from bench.loadgen.common import emit, run


def rss_kib(pid: int) -> int:
    """Resident memory of ``pid`` and its children (uvicorn --workers), in KiB."""
    total = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total += int(line.split()[1])
    return total


class Held(asyncio.Protocol):
    """One connection: sends its request, notes the 101 (WebSocket), then stays idle."""

    def __init__(self, request: bytes, done: asyncio.Future[bool] | None) -> None:
        self.request = request
        self.done = done
        self.transport: asyncio.Transport | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_result(data.startswith(b"HTTP/1.1 101"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.done is not None and not self.done.done():
            self.done.set_result(False)


async def main(args: argparse.Namespace) -> None:
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    pids = [int(p) for p in os.environ.get("BENCH_SERVER_PIDS", "").split(",") if p]
    if not pids:
        raise SystemExit("BENCH_SERVER_PIDS is not set: run me from the harness")
    websocket = url.scheme == "ws"
    loop = asyncio.get_running_loop()
    before = [rss_kib(pid) for pid in pids]
    emit("measure_start", label=args.label)
    started = time.perf_counter()
    held: list[Held] = []
    failed = 0
    for start in range(0, args.count, args.wave):
        futures = []
        for _ in range(start, min(args.count, start + args.wave)):
            if websocket:
                key = base64.b64encode(os.urandom(16)).decode()
                request = (
                    f"GET {url.path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
                done: asyncio.Future[bool] | None = loop.create_future()
            else:
                request = f"GET {url.path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
                done = None
            futures.append(done)
            try:
                _transport, protocol = await loop.create_connection(lambda r=request, d=done: Held(r, d), host, port)
            except OSError:
                failed += 1
                continue
            held.append(protocol)
        if websocket:
            results = await asyncio.gather(*(asyncio.wait_for(f, 30) for f in futures if f is not None), return_exceptions=True)
            failed += sum(1 for r in results if r is not True)
    # Let the server finish what the last wave started (long-polls reach the worker, and
    # the gateway's memory settles): wait until RSS stops growing.
    last = sum(rss_kib(pid) for pid in pids)
    for _ in range(20):
        await asyncio.sleep(0.5)
        now = sum(rss_kib(pid) for pid in pids)
        if now - last < 64:
            break
        last = now
    after = [rss_kib(pid) for pid in pids]
    alive = sum(1 for h in held if not h.lost)
    seconds = time.perf_counter() - started
    emit("measure_end", label=args.label)
    for h in held:
        if h.transport is not None:
            h.transport.abort()
    per_process = [(a - b) / max(alive, 1) for a, b in zip(after, before)]
    emit(
        "result",
        data={
            "label": args.label,
            "count": args.count,
            "held": alive,
            "failed": failed,
            "seconds": seconds,
            "rss_before_kib": before,
            "rss_after_kib": after,
            "kib_per_conn": per_process,
            "kib_per_conn_total": sum(per_process),
        },
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="ws://.../ws/echo/ for WebSockets, http://.../poll/ for long-polls")
    parser.add_argument("--count", type=int, default=10000)
    parser.add_argument("--wave", type=int, default=250)
    parser.add_argument("--label", default="idle")
    args = parser.parse_args(argv)
    if not args.url.startswith(("ws://127.", "http://127.", "ws://localhost", "http://localhost")):
        parser.error("load goes to this machine only")
    return args


if __name__ == "__main__":
    run(main(parse_args()))
