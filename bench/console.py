"""``python -m bench.console``: what the operator's console costs the gateway that serves it.

The question (issue 19): with the console page open, does the gateway's CPU per message
grow by more than 5%? The console is mounted on the gateway's own port
(``CONSOLE.mount``, the setup where the gateway pays most: it runs the collector and
serves the page), the benchmark site's WebSocket echo is driven at a fixed rate by the
shared open-loop generator (``bench.loadgen.ws_paced``: every condition carries the same
messages per second, so CPU per message compares like with like; a closed loop's rate, and
with it the batching per message, moves with the machine's noise), and the gateway's CPU
seconds are read from ``/proc`` at the generator's ``measure_start`` and ``measure_end``
lines.

Three conditions, each on a fresh gateway + worker over Redis, rotated over rounds (so
drift on a shared machine lands on all of them):

- ``off``: no console (for reference: what mounting it costs before anyone looks);
- ``closed``: the console is mounted and collecting (one status round per second), no page;
- ``open``: the same with ``--pages`` pages open. A page is one reader of
  ``/api/stream``, which is all the page reads: one frame per refresh, the same bytes a
  browser gets, without a browser's own CPU on this 2-core machine.

Reported: messages, gateway CPU and CPU µs per message per round, each condition's median
and spread, and the verdict: how much an open page adds to the gateway's CPU per message
(the exit code is 1 above 5%).

Per-round noise on a shared 2-core machine is around ±10%, more than the effect measured,
so the run also measures each condition once with no load at all (``--idle`` seconds of
the gateway's CPU): that isolates the console's own fixed cost per second, which divided by
the rate is its share of each message, and the verdict uses it (the console does no work
per message: its cost is per refresh and per page). Writes ``bench/results/console-<stamp>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.procs import ProcSpec, ServerProcess, free_port, read_usage, stop_together, wait_for_port
from bench.systems import BENCH_DIR, REPO_DIR

RESULTS_DIR = BENCH_DIR / "results"
MOUNT = "/switchboard/console"
HOST = "127.0.0.1"


@dataclass
class Round:
    condition: str
    round: int
    messages: int
    seconds: float
    gateway_cpu_s: float
    frames_read: int
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def cpu_us_per_msg(self) -> float:
        return self.gateway_cpu_s / self.messages * 1e6 if self.messages else float("nan")


class Page(threading.Thread):
    """One open console page, as the server sees it: a reader of the event stream."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.frames = 0
        self.stopping = threading.Event()
        self.connection = http.client.HTTPConnection(HOST, port, timeout=30)

    def run(self) -> None:
        try:
            self.connection.request("GET", f"{MOUNT}/api/stream")
            response = self.connection.getresponse()
            while not self.stopping.is_set():
                line = response.readline()
                if not line:
                    return
                if line.startswith(b"event: frame"):
                    self.frames += 1
        except OSError:
            return

    def stop(self) -> None:
        """End the read from outside: shut the socket down so the blocked read returns."""
        self.stopping.set()
        sock = self.connection.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.join(10)
        self.connection.close()


def _start(port: int, redis_url: str, log_dir: Path, tag: str, *, console: bool) -> list[ServerProcess]:
    env = {
        "PYTHONPATH": f"{BENCH_DIR}{os.pathsep}{REPO_DIR}",
        "BENCH_BIND": f"{HOST}:{port}",
        "BENCH_REDIS_URL": redis_url,
        "BENCH_REDIS_PREFIX": f"bench-console-{secrets.token_hex(4)}:",
        "BENCH_CONSOLE_MOUNT": MOUNT if console else "",
    }
    procs = []
    for role in ("gateway", "worker"):
        argv = [sys.executable, "-m", "switchboard", role, "--settings", "switchboard_site.settings"]
        spec = ProcSpec(role, argv, REPO_DIR, env)
        procs.append(ServerProcess(spec, log_dir / f"{tag}-{role}.log"))
    return procs


def _site_ready(port: int, timeout: float = 60) -> None:
    """Wait until a request goes through gateway and worker (the worker is reading)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            connection = http.client.HTTPConnection(HOST, port, timeout=5)
            connection.request("GET", "/hello/")
            status = connection.getresponse().status
            connection.close()
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError("the site did not answer through gateway and worker")


def _console_ready(port: int, timeout: float = 60) -> None:
    """Wait until the console has made its first frame with both processes in it."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            connection = http.client.HTTPConnection(HOST, port, timeout=5)
            connection.request("GET", f"{MOUNT}/api/frame")
            body = json.loads(connection.getresponse().read())
            connection.close()
            if body.get("frame") and len(body["frame"]["processes"]) >= 2:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    raise TimeoutError("the console made no frame with the gateway and the worker")


def _load(port: int, args: argparse.Namespace, gateway_pid: int, log: Path) -> tuple[dict[str, Any], float]:
    """Run the WebSocket echo generator; its result and the gateway's CPU over its window."""
    argv = [sys.executable, "-m", "bench.loadgen.ws_paced", "--url", f"ws://{HOST}:{port}/ws/echo/",
            "--connections", str(args.connections), "--rate", str(args.rate),
            "--warmup", str(args.warmup), "--duration", str(args.duration)]
    env = {**os.environ, "PYTHONPATH": str(REPO_DIR), "PYTHONUNBUFFERED": "1"}
    cpu_start = cpu_end = None
    result: dict[str, Any] = {}
    with open(log, "wb") as stderr:
        process = subprocess.Popen(argv, cwd=REPO_DIR, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
        assert process.stdout is not None
        for line in process.stdout:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            usage = read_usage(gateway_pid)
            if message.get("event") == "measure_start" and usage is not None:
                cpu_start = usage.cpu_seconds
            elif message.get("event") == "measure_end" and usage is not None:
                cpu_end = usage.cpu_seconds
            elif message.get("event") == "result":
                result = message["data"]["rows"][0]
        process.wait(60)
    if cpu_start is None or cpu_end is None or not result:
        raise RuntimeError(f"the load generator gave no measurement; see {log}")
    return result, cpu_end - cpu_start


def idle_cost(condition: str, args: argparse.Namespace, log_dir: Path) -> float:
    """Gateway CPU milliseconds per second with no traffic, under ``condition``."""
    port = free_port()
    procs = _start(port, args.redis, log_dir, f"idle-{condition}", console=condition != "off")
    pages: list[Page] = []
    try:
        wait_for_port(HOST, port, 60, procs)
        _site_ready(port)
        if condition != "off":
            _console_ready(port)
        if condition == "open":
            pages = [Page(port) for _ in range(args.pages)]
            for page in pages:
                page.start()
        time.sleep(2.0)
        before, started = read_usage(procs[0].pid), time.monotonic()
        time.sleep(args.idle)
        after, seconds = read_usage(procs[0].pid), time.monotonic() - started
    finally:
        for page in pages:
            page.stop()
        stop_together(procs)
    if before is None or after is None:
        raise RuntimeError("the gateway exited during the idle measurement")
    return (after.cpu_seconds - before.cpu_seconds) / seconds * 1000


def run_round(condition: str, number: int, args: argparse.Namespace, log_dir: Path) -> Round:
    port = free_port()
    procs = _start(port, args.redis, log_dir, f"{condition}-{number}", console=condition != "off")
    pages: list[Page] = []
    try:
        wait_for_port(HOST, port, 60, procs)
        _site_ready(port)
        if condition != "off":
            _console_ready(port)
        if condition == "open":
            pages = [Page(port) for _ in range(args.pages)]
            for page in pages:
                page.start()
        result, cpu = _load(port, args, procs[0].pid, log_dir / f"{condition}-{number}-loadgen.log")
    finally:
        for page in pages:
            page.stop()
        stop_together(procs)
    return Round(condition, number, int(result["count"]), float(result["seconds"]), cpu,
                 sum(page.frames for page in pages), float(result["p50_ms"]), float(result["p99_ms"]),
                 int(result["errors"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per condition (default 3)")
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per round (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=20, help="WebSocket echo connections (default 20)")
    parser.add_argument("--rate", type=float, default=2000.0, help="echo messages per second, fixed (default 2000)")
    parser.add_argument("--pages", type=int, default=1, help="console pages open in the 'open' condition (default 1)")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of the no-traffic measurement (0: skip)")
    parser.add_argument("--redis", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/12"))
    args = parser.parse_args(argv)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    log_dir = RESULTS_DIR / f"console-{stamp}-logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    rounds: list[Round] = []
    conditions = ("off", "closed", "open")
    idle: dict[str, float] = {}
    if args.idle > 0:
        for condition in conditions:
            idle[condition] = idle_cost(condition, args, log_dir)
            print(f"idle {condition:6}: gateway {idle[condition]:.1f} ms CPU per second", flush=True)
    for number in range(args.rounds):
        order = conditions[number % 3 :] + conditions[: number % 3]
        for condition in order:
            row = run_round(condition, number, args, log_dir)
            rounds.append(row)
            print(f"round {number} {condition:6}: {row.messages} msgs in {row.seconds:.1f} s, "
                  f"gateway {row.gateway_cpu_s:.2f} s CPU, "
                  f"{row.cpu_us_per_msg:.1f} µs/msg, p99 {row.p99_ms:.2f} ms, frames read {row.frames_read}, "
                  f"errors {row.errors}", flush=True)
    per_condition = {c: [r.cpu_us_per_msg for r in rounds if r.condition == c] for c in conditions}
    medians = {c: statistics.median(values) for c, values in per_condition.items()}
    ratio = medians["open"] / medians["closed"]
    spread = ", ".join(f"{c} {medians[c]:.1f} ({min(v):.0f}-{max(v):.0f})" for c, v in per_condition.items())
    print(f"\ngateway CPU per message at {args.rate:g} msg/s, median (min-max) of {args.rounds} rounds, µs: {spread}; "
          f"open/closed {100 * (ratio - 1):+.1f}%")
    page_share = ratio - 1
    if idle:
        collector = idle["closed"] - idle["off"]
        page = idle["open"] - idle["closed"]
        page_share = page / args.rate * 1000 / medians["closed"]
        print(f"the console's own CPU, measured without traffic: collector {collector:+.1f} ms/s "
              f"({collector / args.rate * 1000:+.2f} µs/msg, {100 * collector / args.rate * 1000 / medians['off']:+.1f}%), "
              f"{args.pages} open page(s) {page:+.1f} ms/s ({page / args.rate * 1000:+.2f} µs/msg, "
              f"{100 * page_share:+.1f}%) at {args.rate:g} msg/s")
    verdict = "within" if page_share <= 0.05 else "OVER"
    print(f"the page open: {100 * page_share:+.1f}% gateway CPU per message ({verdict} the 5% budget"
          f"{'; from the no-traffic measurement, the loaded rounds being noisier than that' if idle else ''})")
    out = RESULTS_DIR / f"console-{stamp}.json"
    out.write_text(json.dumps({
        "args": vars(args),
        "rounds": [{**asdict(r), "cpu_us_per_msg": r.cpu_us_per_msg} for r in rounds],
        "median_cpu_us_per_msg": medians,
        "open_over_closed": ratio,
        "closed_over_off": medians["closed"] / medians["off"],
        "idle_cpu_ms_per_s": idle,
        "page_share": page_share,
    }, indent=2))
    print(f"wrote {out.relative_to(REPO_DIR)}")
    return 0 if page_share <= 0.05 else 1


if __name__ == "__main__":
    sys.exit(main())
