"""The core on a bad day, measured: deploy pauses, dead-worker detection, a chat storm.

Each command starts the benchmark site (``bench/switchboard_site``) as ``switchboard
gateway`` + ``switchboard worker`` processes over the Redis layer (a db and key prefix of
its own), drives real WebSocket clients on loopback, and prints one JSON object.

``deploy`` (issue 12 item 11)
    ``--sockets`` echo sockets each send one numbered message every ``--interval``. Worker
    A serves them; worker B is already running. A gets SIGTERM (a rolling deploy): the
    pause is, per socket, the longest gap between two echoes around the handover. Then
    worker C starts, B (now serving everything) gets SIGKILL: the detection time is how
    long the sockets' echoes stop, and the messages sent meanwhile are lost (at most once).
    Every echo must come back in order; lost and out-of-order messages are counted.

``bytes`` (issue 12 item 9)
    No worker runs; ``--requests`` POSTs of ``--size`` bytes arrive at once. Reports how
    many bytes the layer then holds for the HTTP pool channel, how many requests were
    refused (503) and Redis's ``used_memory`` growth. The pool channel stops at its byte
    capacity (``byte_capacity``, default 256 MiB; ``--byte-capacity`` sets it).

``chat`` (issue 12 item 8)
    ``--sockets`` sockets in rooms of ``--room-size`` (``/ws/room/<name>/``: each frame goes
    to every member through ``group_send``), each posting ``--posts`` messages every
    ``--interval``. Counts deliveries (each post should reach every member of its room),
    closes by code, and worker log lines with ``ChannelFull`` or a traceback.

Run from the repository root, e.g. ``.venv/bin/python -m bench.faults deploy`` or
``.venv/bin/python -m bench.faults chat --sockets 2000``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.procs import ProcSpec, ServerProcess, free_port, read_usage, wait_for_port

BENCH_DIR = Path(__file__).resolve().parent


# -- the deployment --------------------------------------------------------------------


@dataclass
class Site:
    """Gateway and workers of the benchmark site, with their logs in ``log_dir``."""

    redis_url: str
    log_dir: Path
    port: int = field(default_factory=free_port)
    prefix: str = field(default_factory=lambda: f"bench-faults-{os.getpid()}:")
    extra_env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, ServerProcess] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        return {
            "BENCH_BIND": f"127.0.0.1:{self.port}",
            "BENCH_REDIS_URL": self.redis_url,
            "BENCH_REDIS_PREFIX": self.prefix,
            "PYTHONPATH": str(BENCH_DIR),
            "PYTHONUNBUFFERED": "1",
            "BENCH_LOG_LEVEL": "INFO",
            **self.extra_env,
        }

    def start(self, role: str, command: str) -> ServerProcess:
        argv = [sys.executable, "-m", "switchboard", command, "--settings", "switchboard_site.settings",
                "--pythonpath", str(BENCH_DIR), "--log-level", "INFO"]
        proc = ServerProcess(ProcSpec(role, argv, BENCH_DIR, self.env()), self.log_dir / f"{role}.log")
        self.procs[role] = proc
        return proc

    def wait_ready(self) -> None:
        wait_for_port("127.0.0.1", self.port, 60, self.procs.values())

    def signal(self, role: str, sig: int) -> None:
        os.kill(self.procs[role].pid, sig)

    def log(self, role: str) -> str:
        return self.procs[role].log_path.read_text(errors="replace")

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop(15)
        with redis.Redis.from_url(self.redis_url) as client:
            for key in client.scan_iter(match=self.prefix + "*", count=1000):
                client.unlink(key)


async def wait_worker_listening(site: Site, role: str, timeout: float = 60) -> None:
    """Until the worker has logged that it reads its channels (its pops are running)."""
    end = time.monotonic() + timeout
    while "listening on" not in site.log(role):
        if not site.procs[role].alive():
            raise RuntimeError(f"{role} exited:\n{site.procs[role].log_tail()}")
        if time.monotonic() > end:
            raise TimeoutError(f"{role} did not start in {timeout}s")
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.5)  # from that line to its first blocking pop


# -- deploy: pauses and dead-worker detection -------------------------------------------


class EchoClient:
    """One echo socket sending ``<n>`` every interval; records when each echo came back."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.sent: dict[int, float] = {}
        self.echoes: list[tuple[float, int]] = []
        self.first = asyncio.Event()
        self.closed: int | None = None

    async def send_loop(self, interval: float, stop: asyncio.Event) -> None:
        n = 0
        next_at = time.monotonic()
        while not stop.is_set():
            n += 1
            self.sent[n] = time.monotonic()
            try:
                await self.ws.send(str(n))
            except ConnectionClosed:
                return
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def read_loop(self) -> None:
        try:
            async for frame in self.ws:
                self.echoes.append((time.monotonic(), int(frame)))
                self.first.set()
        except ConnectionClosed as exc:
            self.closed = exc.rcvd.code if exc.rcvd else 1006
        else:
            self.closed = self.ws.close_code

    def gap_around(self, start: float, end: float) -> float:
        """The longest time without an echo between ``start`` and ``end``."""
        times = [start] + [t for t, _n in self.echoes if start <= t <= end] + [end]
        return max(b - a for a, b in itertools.pairwise(times))

    def lost_and_disorder(self, upto: int) -> tuple[int, int]:
        got = [n for _t, n in self.echoes if n <= upto]
        disorder = sum(1 for a, b in itertools.pairwise(got) if b < a)
        return upto - len(set(got)), disorder


async def deploy(args: argparse.Namespace) -> dict[str, Any]:
    site = Site(args.redis_url, Path(args.log_dir), extra_env=dict(args.env))
    try:
        site.start("gateway", "gateway")
        site.start("worker-a", "worker")
        site.wait_ready()
        await wait_worker_listening(site, "worker-a")
        clients = [EchoClient(await connect(f"ws://127.0.0.1:{site.port}/ws/echo/", open_timeout=30))
                   for _ in range(args.sockets)]
        stop = asyncio.Event()
        tasks = [asyncio.create_task(c.read_loop()) for c in clients]
        # Every socket claimed by A before B starts, so the deploy moves all of them.
        for client in clients:
            await client.ws.send("0")
        await asyncio.gather(*(c.first.wait() for c in clients))
        site.start("worker-b", "worker")
        await wait_worker_listening(site, "worker-b")
        tasks += [asyncio.create_task(c.send_loop(args.interval, stop)) for c in clients]
        await asyncio.sleep(args.settle)

        term_at = time.monotonic()
        site.signal("worker-a", signal.SIGTERM)
        await asyncio.sleep(args.window)
        handover = [c.gap_around(term_at, time.monotonic()) for c in clients]
        a_exit = await asyncio.to_thread(site.procs["worker-a"].popen.wait, 30)

        site.start("worker-c", "worker")
        await wait_worker_listening(site, "worker-c")
        await asyncio.sleep(args.settle)
        kill_at = time.monotonic()
        site.signal("worker-b", signal.SIGKILL)
        await asyncio.sleep(args.window + 1)
        detection = [c.gap_around(kill_at, time.monotonic()) for c in clients]
        stop.set()
        await asyncio.sleep(1.0)
        upto = min(max(c.sent) for c in clients)
        lost_disorder = [c.lost_and_disorder(upto) for c in clients]
        for client in clients:
            await client.ws.close()
        await asyncio.gather(*tasks, return_exceptions=True)
        gateway_log = site.log("gateway")
        return {
            "sockets": args.sockets,
            "interval_s": args.interval,
            "handover_pause_s": summary(handover),
            "worker_a_exit": a_exit,
            "dead_worker_gap_s": summary(detection),
            "lost_after_kill": sum(lost for lost, _d in lost_disorder),
            "out_of_order": sum(d for _l, d in lost_disorder),
            "closed_early": sum(1 for c in clients if c.closed not in (None, 1000)),
            "gateway_says": [line for line in gateway_log.splitlines() if "is stopping" in line or "heartbeats" in line][-3:],
        }
    finally:
        site.stop()


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median": round(statistics.median(ordered), 3),
        "p90": round(ordered[int(0.9 * (len(ordered) - 1))], 3),
        "max": round(ordered[-1], 3),
    }


# -- chat: a storm of posts in many rooms -----------------------------------------------


class Member:
    """One room member: posts ``<name>:<k>`` every interval and counts what it receives."""

    def __init__(self, name: str, room: str, ws: ClientConnection) -> None:
        self.name = name
        self.room = room
        self.ws = ws
        self.received: collections.Counter[str] = collections.Counter()
        self.arrivals: list[float] = []
        self.closed: int | None = None

    async def post_loop(self, posts: int, interval: float, start: float) -> None:
        for k in range(posts):
            await asyncio.sleep(max(0.0, start + k * interval - time.monotonic()))
            try:
                await self.ws.send(f"{self.name}:{k}:{time.monotonic()}")
            except ConnectionClosed:
                return

    async def read_loop(self) -> None:
        try:
            async for frame in self.ws:
                text = frame if isinstance(frame, str) else frame.decode()
                poster, _k, sent = text.split(":")
                self.received[poster] += 1
                self.arrivals.append(time.monotonic() - float(sent))
        except ConnectionClosed as exc:
            self.closed = exc.rcvd.code if exc.rcvd else 1006


async def chat(args: argparse.Namespace) -> dict[str, Any]:
    site = Site(args.redis_url, Path(args.log_dir), extra_env=dict(args.env))
    try:
        site.start("gateway", "gateway")
        for index in range(args.workers):
            site.start(f"worker{index}", "worker")
        site.wait_ready()
        for index in range(args.workers):
            await wait_worker_listening(site, f"worker{index}")
        rooms = args.sockets // args.room_size
        members: list[Member] = []
        for start in range(0, args.sockets, 100):
            batch = [(f"m{i}", f"room{i % rooms}") for i in range(start, min(args.sockets, start + 100))]
            sockets = await asyncio.gather(*(
                connect(f"ws://127.0.0.1:{site.port}/ws/room/{room}/", open_timeout=60, max_queue=None, compression=None)
                for _name, room in batch
            ))
            members += [Member(name, room, ws) for (name, room), ws in zip(batch, sockets)]
        readers = [asyncio.create_task(m.read_loop()) for m in members]
        await asyncio.sleep(2.0)  # every connect() handler has joined its group
        began = time.monotonic() + 0.5
        await asyncio.gather(*(m.post_loop(args.posts, args.interval, began) for m in members))
        posted_for = time.monotonic() - began
        expected = args.sockets * args.posts * args.room_size
        end = time.monotonic() + args.drain
        last_total, last_change = -1, time.monotonic()
        while time.monotonic() < end:
            total = sum(sum(m.received.values()) for m in members)
            if total >= expected:
                break
            if total != last_total:
                last_total, last_change = total, time.monotonic()
            elif time.monotonic() - last_change > 10:
                break  # nothing arrived for 10 s: the rest is not coming
            await asyncio.sleep(0.2)
        delivered = sum(sum(m.received.values()) for m in members)
        latencies = sorted(x for m in members for x in m.arrivals)
        closes = collections.Counter(str(m.closed) for m in members if m.closed is not None)
        for member in members:
            await member.ws.close()
        await asyncio.gather(*readers, return_exceptions=True)
        worker_logs = "\n".join(site.log(f"worker{i}") for i in range(args.workers))
        gateway_log = site.log("gateway")
        status = layer_drops(site)
        cpu = {role: round(usage.cpu_seconds, 1) for role, proc in site.procs.items() if (usage := read_usage(proc.pid))}
        return {
            "sockets": args.sockets,
            "rooms": rooms,
            "room_size": args.room_size,
            "posts_per_socket": args.posts,
            "interval_s": args.interval,
            "posting_took_s": round(posted_for, 2),
            "offered_deliveries_per_s": round(args.sockets * args.room_size / args.interval),
            "expected": expected,
            "delivered": delivered,
            "delivered_pct": round(100 * delivered / expected, 2),
            "latency_s": {"p50": pct(latencies, 0.5), "p99": pct(latencies, 0.99), "max": pct(latencies, 1.0)},
            "closes": dict(closes),
            "worker_channel_full_lines": len(re.findall(r"ChannelFull", worker_logs)),
            "tracebacks": worker_logs.count("Traceback") + gateway_log.count("Traceback"),
            "shed_lines": [line for line in worker_logs.splitlines() if "shed" in line][-3:],
            "counters": status,
            "cpu_s": cpu,
        }
    finally:
        site.stop()


async def large_bodies(args: argparse.Namespace) -> dict[str, Any]:
    import concurrent.futures
    import http.client

    env = dict(args.env)
    if args.byte_capacity:
        env["BENCH_LAYER_OPTIONS"] = json.dumps({"channel_byte_capacity": {"switchboard.*": args.byte_capacity}})
    site = Site(args.redis_url, Path(args.log_dir), extra_env=env)
    body = os.urandom(args.size)

    def post() -> int:
        connection = http.client.HTTPConnection("127.0.0.1", site.port, timeout=120)
        try:
            connection.request("POST", "/upload/", body=body, headers={"Content-Type": "application/octet-stream"})
            return connection.getresponse().status
        except OSError:
            return -1
        finally:
            connection.close()

    client = redis.Redis.from_url(args.redis_url)
    try:
        site.start("gateway", "gateway")
        site.wait_ready()
        before = int(client.info("memory")["used_memory"])
        loop = asyncio.get_running_loop()
        with concurrent.futures.ThreadPoolExecutor(max_workers=args.requests) as pool:
            calls = [loop.run_in_executor(pool, post) for _ in range(args.requests)]
            # The refused ones are answered after the gateway's event_wait; the stored ones
            # would wait for a worker until response_timeout (60 s): look before that.
            await asyncio.sleep(args.settle)
            items = client.lrange(f"{site.prefix}switchboard.http", 0, -1)
            after = int(client.info("memory")["used_memory"])
            answered = [call.result() for call in calls if call.done()]
            site.stop()
            await asyncio.gather(*calls)
        return {
            "requests": args.requests,
            "size": args.size,
            "stored_requests": len(items),
            "stored_mib": round(sum(len(item) for item in items) / 2**20, 1),
            "refused_503": answered.count(503),
            "redis_used_memory_growth_mib": round((after - before) / 2**20, 1),
        }
    finally:
        client.close()


def layer_drops(site: Site) -> dict[str, Any]:
    """What ``switchboard status`` says about drops, while the processes still run."""
    import subprocess

    result = subprocess.run(
        [sys.executable, "-m", "switchboard", "status", "--once", "--json", "--settings", "switchboard_site.settings",
         "--pythonpath", str(BENCH_DIR)],
        cwd=BENCH_DIR, env={**os.environ, **site.env()}, capture_output=True, text=True, timeout=60, check=False,
    )
    try:
        rows = json.loads(result.stdout.strip().splitlines()[-1])["processes"]
    except (ValueError, IndexError, KeyError):
        return {"status_error": (result.stderr or result.stdout)[-300:]}
    return {f"{row.get('kind')}:{row.get('id')}": row.get("drops", {}) for row in rows}


def pct(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(fraction * len(values)))], 3)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/2")
    parser.add_argument("--log-dir", default=None)
    parser.add_argument("--env", type=lambda s: tuple(s.split("=", 1)), action="append", default=[],
                        help="NAME=VALUE for the site's processes (repeatable; e.g. PYTHONPATH=<other checkout>:bench)")
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("deploy")
    d.add_argument("--sockets", type=int, default=50)
    d.add_argument("--interval", type=float, default=0.1)
    d.add_argument("--settle", type=float, default=2.0)
    d.add_argument("--window", type=float, default=7.0)
    b = sub.add_parser("bytes")
    b.add_argument("--requests", type=int, default=300)
    b.add_argument("--size", type=int, default=1_000_000)
    b.add_argument("--byte-capacity", type=int, default=0, help="channel_byte_capacity of switchboard.* (0: the default)")
    b.add_argument("--settle", type=float, default=20.0)
    c = sub.add_parser("chat")
    c.add_argument("--sockets", type=int, default=2000)
    c.add_argument("--room-size", type=int, default=20)
    c.add_argument("--posts", type=int, default=3)
    c.add_argument("--interval", type=float, default=0.5)
    c.add_argument("--workers", type=int, default=1)
    c.add_argument("--drain", type=float, default=90.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-faults-") as tmp:
        args.log_dir = args.log_dir or tmp
        commands = {"deploy": deploy, "bytes": large_bodies, "chat": chat}
        result = asyncio.run(commands[args.command](args))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
