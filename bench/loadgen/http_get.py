"""Plain Django view load: N keep-alive HTTP/1.1 connections, each a closed GET loop.

A deliberately small client on asyncio streams (no HTTP library): it writes one request,
reads the status line and headers, then exactly Content-Length bytes of body, checks the
status is 200, and sends the next request on the same connection. A server that does not
keep connections alive (gunicorn's sync worker answers ``Connection: close``) gets a new
connection for the next request, and that connect counts in the next request's latency.

Run as ``python -m bench.loadgen.http_get --url http://127.0.0.1:PORT/hello/``.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from urllib.parse import urlsplit

from bench.loadgen.common import emit, run, summarize_ns


class State:
    def __init__(self) -> None:
        self.measuring = False
        self.stopping = False
        self.latencies_ns: list[int] = []
        self.errors = 0
        self.samples: list[str] = []

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.samples) < 5:
            self.samples.append(what)


async def client(host: str, port: int, request: bytes, state: State, ready: asyncio.Event) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        state.error(f"connect: {exc!r}")
        return
    await ready.wait()
    reconnect = False
    try:
        while not state.stopping:
            counted = state.measuring
            sent = time.perf_counter_ns()
            if reconnect:
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                reconnect = False
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = head[9:12]
            length = -1
            for line in head.split(b"\r\n")[1:]:
                name = line[:15].lower()
                if name == b"content-length:":
                    length = int(line[15:])
                elif name[:11] == b"connection:" and line[11:].strip().lower() == b"close":
                    reconnect = True
            if length > 0:
                await reader.readexactly(length)
            elif length < 0:  # chunked (Django's ASGI handler sends no Content-Length)
                while True:
                    size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
                    await reader.readexactly(size + 2)
                    if size == 0:
                        break
            if status != b"200":
                state.error(f"status {status!r}")
                return
            if counted and state.measuring:
                state.latencies_ns.append(time.perf_counter_ns() - sent)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        if not state.stopping:
            state.error(repr(exc))
    finally:
        writer.close()


async def main(args: argparse.Namespace) -> None:
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    request = f"GET {url.path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
    state = State()
    ready = asyncio.Event()
    tasks = [asyncio.create_task(client(host, port, request, state, ready)) for _ in range(args.connections)]
    await asyncio.sleep(0.2)
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
    _done, pending = await asyncio.wait(tasks, timeout=10)
    for task in pending:
        task.cancel()
    emit("result", data={**summarize_ns(state.latencies_ns, seconds), "connections": args.connections,
                         "errors": state.errors, "error_samples": state.samples})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args(argv)
    if not args.url.startswith(("http://127.", "http://localhost")):
        parser.error("load goes to this machine only")
    return args


if __name__ == "__main__":
    run(main(parse_args()))
