"""Runs one scenario against one freshly started system and returns its rows.

The order for every pair: flush the system's Redis db, start its processes, wait for the
port and a real round trip through the whole stack, start the load generator in its own
process, snapshot CPU at the generator's ``measure_start``/``measure_end`` lines, read the
servers' total CPU and peak RSS, stop them (SIGTERM, then SIGKILL), flush the db again.
"""

from __future__ import annotations

import json
import math
import os
import queue
import subprocess
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bench.cluster import RedisNode
from bench.procs import (
    ServerProcess,
    free_port,
    machine_cpu_seconds,
    process_tree,
    read_usage,
    run_delay_seconds,
    stop_together,
    tree_usage,
    wait_for_listeners,
    wait_for_port,
)
from bench.redisutil import redis_cpu_seconds
from bench.scenarios import Options, Row, Scenario, Window
from bench.systems import REPO_DIR, Context, System

HOST = "127.0.0.1"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


@dataclass
class RunFailure:
    """A system/scenario pair that could not be measured, and why."""

    scenario: str
    system: str
    error: str
    logs: dict[str, str] = field(default_factory=dict)


def probe(ctx: Context, deadline: float, websocket: bool = True, times: int = 1) -> None:
    """Wait until a request crosses the whole stack: an HTTP view, then a WebSocket echo.

    The port alone is not enough in split mode: the gateway listens before any worker reads
    the layer, and a run must not start its clock while events pile up in Redis. Servers
    without WebSockets (the plain Django ones) are probed with the view only. ``times``
    connections in a row must echo: with several gateways on one port the kernel picks one
    per connection, and a few tries reach each of them with high probability.
    """
    from websockets.sync.client import connect

    last_error: Exception | None = None
    done = 0
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{ctx.host}:{ctx.port}/hello/", timeout=5) as response:
                response.read()
            if not websocket:
                return
            with connect(f"ws://{ctx.host}:{ctx.port}/ws/echo/", open_timeout=5, compression=None) as ws:
                ws.send("probe")
                if ws.recv(timeout=5) != "probe":
                    raise RuntimeError("the echo probe got a different reply")
            done += 1
            if done >= times:
                return
            continue
        except Exception as exc:  # any failure means not ready yet; the last one is reported
            last_error = exc
            time.sleep(0.2)
    raise TimeoutError(f"not ready after {START_TIMEOUT:.0f}s: {last_error!r}")


def _reader(stream: IO[str], lines: queue.Queue[str | None]) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


@dataclass(frozen=True)
class _Sample:
    """One instant's readings: :class:`Window`'s numbers in its field order (Redis summed),
    and the parts: each Redis node's CPU, each server process's (by role)."""

    totals: tuple[float, ...]
    redis_nodes: dict[str, float]
    roles: dict[str, float]


class _Sampler:
    """CPU readings at one instant: servers, load generator, every Redis node of the system."""

    def __init__(self, servers: Mapping[str, int], loadgen_pid: int, nodes: Sequence[RedisNode]) -> None:
        self.servers = dict(servers)
        self.loadgen_pid = loadgen_pid
        self.nodes = list(nodes)

    def sample(self) -> _Sample:
        loadgen = read_usage(self.loadgen_pid)
        by_node = {node.label: redis_cpu_seconds(node.host, node.port) for node in self.nodes}
        by_role = {role: tree_usage([pid]).cpu_seconds for role, pid in self.servers.items()}
        pids = list(self.servers.values())
        totals = (
            time.perf_counter(),
            sum(by_role.values()),
            loadgen.cpu_seconds if loadgen else math.nan,
            sum(by_node.values()),
            machine_cpu_seconds(),
            run_delay_seconds(pids),
        )
        return _Sample(totals, by_node, by_role)


def _window(label: str | None, start: _Sample, end: _Sample) -> Window:
    def parts(first: dict[str, float], last: dict[str, float]) -> tuple[tuple[str, float], ...]:
        # One part is the total itself: nothing to add.
        return tuple((name, last[name] - first[name]) for name in first) if len(first) > 1 else ()

    wall, server, loadgen, redis_cpu, machine, wait = (b - a for a, b in zip(start.totals, end.totals))
    return Window(
        label,
        wall_s=wall,
        server_cpu_s=server,
        loadgen_cpu_s=loadgen,
        redis_cpu_s=redis_cpu,
        machine_cpu_s=machine,
        server_wait_s=wait,
        redis_nodes_cpu_s=parts(start.redis_nodes, end.redis_nodes),
        server_roles_cpu_s=parts(start.roles, end.roles),
    )


def run_loadgen(
    argv: list[str],
    timeout: float,
    log_path: Path,
    nodes: Sequence[RedisNode],
    server_pids: list[int],
    roles: Sequence[str] = (),
) -> tuple[dict[str, Any], list[Window]]:
    """Run the generator process, turning its protocol lines into windows and a result.

    ``nodes`` are the Redis servers whose CPU is counted; ``roles`` name ``server_pids``
    (``gateway``, ``worker1``, ...) so each window also has each process's CPU.
    """
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_DIR),
        "PYTHONUNBUFFERED": "1",
        # For generators that read the servers' memory (idle-memory); the first is the
        # gateway (or the only process).
        "BENCH_SERVER_PIDS": ",".join(str(pid) for pid in server_pids),
    }
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv, cwd=REPO_DIR, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log, text=True
        )
        names = list(roles) if len(roles) == len(server_pids) else [f"server{i + 1}" for i in range(len(server_pids))]
        sampler = _Sampler(dict(zip(names, server_pids)), process.pid, nodes)
        lines: queue.Queue[str | None] = queue.Queue()
        assert process.stdout is not None
        threading.Thread(target=_reader, args=(process.stdout, lines), daemon=True).start()
        deadline = time.monotonic() + timeout
        windows: list[Window] = []
        result: dict[str, Any] | None = None
        start: _Sample | None = None
        label: str | None = None
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"load generator still running after {timeout:.0f}s")
                try:
                    line = lines.get(timeout=remaining)
                except queue.Empty:
                    continue
                if line is None:
                    break
                try:
                    message = json.loads(line)
                except ValueError:
                    continue
                event = message.get("event")
                if event == "measure_start":
                    start, label = sampler.sample(), message.get("label")
                elif event == "measure_end" and start is not None:
                    end = sampler.sample()
                    windows.append(_window(label, start, end))
                    start = None
                elif event == "result":
                    result = message.get("data", {})
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(5)
    if result is None:
        tail = log_path.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"load generator exited with {process.returncode} and no result:\n{tail}")
    return result, windows


def run_pair(
    system: System,
    scenario: Scenario,
    options: Options,
    *,
    main_python: str,
    env_python: str | None,
    log_dir: Path,
    prior: Sequence[Row] = (),
) -> list[Row] | RunFailure:
    """Measure ``scenario`` on a fresh ``system``; never raises for a system's failure.

    ``prior`` is every row measured earlier in the run, for scenarios whose load depends
    on one (:meth:`Scenario.use_prior`).
    """
    ctx = Context(HOST, free_port(HOST) if system.serves_http else 0, main_python, env_python)
    started: list[ServerProcess] = []
    pair_dir = log_dir / f"{scenario.name}--{system.name}"
    pair_dir.mkdir(parents=True, exist_ok=True)
    try:
        scenario.use_prior(system, options, prior)
        system.start_services(pair_dir)
        system.flush(ctx)
        for spec in system.processes(ctx):
            started.append(ServerProcess(spec, pair_dir / f"{spec.role}.log"))
        if system.serves_http:
            deadline = time.monotonic() + START_TIMEOUT
            wait_for_port(ctx.host, ctx.port, START_TIMEOUT, started)
            # Several gateways on one port (reuse_port): the first to listen must not start
            # the clock while the others still import Django.
            wait_for_listeners(ctx.host, ctx.port, system.listeners, deadline - time.monotonic(), started)
            probe(ctx, deadline, websocket=system.serves_websocket, times=4 * system.listeners)
        pids = [p.pid for p in started]
        result, windows = run_loadgen(
            scenario.loadgen_argv(system, ctx, options, main_python),
            scenario.timeout(options),
            pair_dir / "loadgen.log",
            system.redis_nodes(ctx),
            pids,
            [p.spec.role for p in started],
        )
        died = [p.spec.role for p in started if not p.alive()]
        total = tree_usage(pids)
        process_count = sum(len(process_tree(pid)) for pid in pids)
        rows = scenario.rows(system, result, windows, options)
        # Stop here, not only in `finally`, so an unclean shutdown shows up in the notes.
        # All at once: a split system's gateway and workers drain in parallel.
        stop_notes = stop_together(list(reversed(started)), STOP_TIMEOUT)
        for row in rows:
            if started:
                row.server_processes = process_count
                row.server_cpu_total_s = total.cpu_seconds
                row.peak_rss_mb = total.peak_rss_bytes / 2**20
            else:
                row.server_cpu_s = math.nan
            if died:
                row.notes.append(f"server process(es) died during the run: {', '.join(died)}")
            row.notes.extend(stop_notes)
        return rows
    except Exception as exc:
        logs = {p.spec.role: p.log_tail(40) for p in started}
        return RunFailure(scenario.name, system.name, f"{type(exc).__name__}: {exc}", logs)
    finally:
        stop_together(list(reversed(started)), STOP_TIMEOUT)  # no-op for processes already stopped
        try:
            system.flush(ctx)
        except Exception as exc:  # a failed flush must not hide the run's own outcome
            print(f"bench: could not flush {system.name}'s Redis db: {exc!r}")
        finally:
            system.stop_services()
