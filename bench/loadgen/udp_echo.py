"""UDP echo load: one socket, a window of N datagrams in flight, each answered by an echo.

Two measurements, one server start: ``x1`` (one datagram in flight: the round-trip
latency with nothing queued) and ``xN`` (N in flight: the rate). Each datagram carries a
slot and a sequence number and the echo must be the same bytes (bench.loadgen.windowed);
a datagram not answered within ``--lost-after`` seconds is counted lost and its slot
sends a new one. The window keeps the kernel's buffers from ever overflowing, so a lost
datagram is the server's doing.

Run as ``python -m bench.loadgen.udp_echo --port 9999``.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from typing import Any

from bench.loadgen.common import emit, run
from bench.loadgen.windowed import Window, measure, phases, wait_ready


class Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.window: Window | None = None
        self.errors: list[str] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.window is not None:
            self.window.on_reply(data)

    def error_received(self, exc: Exception) -> None:  # ICMP port unreachable while the server starts
        if len(self.errors) < 5:
            self.errors.append(repr(exc))


async def main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    sock.bind(("127.0.0.1", 0))
    transport, client = await loop.create_datagram_endpoint(Client, sock=sock)
    target = (args.host, args.port)
    window = Window(lambda slot, payload: transport.sendto(payload, target), size=args.size,
                    lost_after=args.lost_after, max_sends=args.max_sends)
    client.window = window
    try:
        if not await wait_ready(window, args.ready_timeout):
            print(f"udp_echo: no echo from {target} within {args.ready_timeout}s", file=sys.stderr)
            sys.exit(2)
        rows = [await measure(window, label, slots, warmup, duration)
                for label, slots, warmup, duration in phases(args.window, args.warmup, args.duration)]
    finally:
        transport.close()
    emit("result", data={"rows": rows, "window": args.window, "size": args.size, "socket_errors": client.errors})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--window", type=int, default=50, help="datagrams in flight in the xN measurement")
    parser.add_argument("--size", type=int, default=64, help="payload bytes")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--lost-after", type=float, default=1.0)
    parser.add_argument("--ready-timeout", type=float, default=30.0)
    parser.add_argument("--max-sends", type=int, default=5_000_000, help="cap on datagrams per measurement")
    args = parser.parse_args(argv)
    if not args.host.startswith("127."):
        parser.error("load goes to this machine only")
    return args


if __name__ == "__main__":
    run(main(parse_args()))
