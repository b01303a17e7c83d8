"""Memory per idle connection: 10,000 WebSockets, or 10,000 held long-polls, on one server."""

from __future__ import annotations

import math
from typing import Any

from bench.scenarios.base import Options, Row, Scenario, Window
from bench.systems import Context, System

# One process holds the connections on these systems; with two uvicorn workers the
# connections would split between them and "per process" would mean nothing. daphne is
# left out: on 2 cores it never finished 10,000 handshakes within the scenario's limit,
# so each run spent 2 x 120 s timing out (channels-uvicorn is the Channels comparison).
_SYSTEMS = {"switchboard-split", "switchboard-run", "channels-uvicorn"}


class IdleMemory(Scenario):
    single_round = True  # memory does not vary with outside CPU load: one round is enough

    def __init__(self, name: str, kind: str) -> None:
        self.name = name
        self.kind = kind
        what = "WebSockets (/ws/echo/, accepted)" if kind == "ws" else "long-polls (GET /poll/, held unanswered)"
        self.description = f"resident memory per idle connection: N {what}"

    def applies_to(self, system: System) -> bool:
        return system.family_name in _SYSTEMS

    def count(self, options: Options) -> int:
        return 1000 if options.quick else 10000

    def loadgen_argv(self, system: System, ctx: Context, options: Options, python: str) -> list[str]:
        if self.kind == "ws":
            url = f"ws://{ctx.host}:{ctx.port}/ws/echo/"
        else:
            url = f"http://{ctx.host}:{ctx.port}/poll/"
        label = f"{self.count(options):,} idle {'WebSockets' if self.kind == 'ws' else 'long-polls'}"
        return [python, "-m", "bench.loadgen.idle_memory", "--url", url, "--count", str(self.count(options)), "--label", label]

    def timeout(self, options: Options) -> float:
        return 120.0

    def rows(self, system: System, result: dict[str, Any], windows: list[Window], options: Options) -> list[Row]:
        per_process = result.get("kib_per_conn", [])
        row = Row(
            scenario=self.name,
            system=system.name,
            side=system.side,
            label=str(result.get("label", self.name)),
            connections=int(result.get("count", 0)),
            count=int(result.get("held", 0)),
            seconds=float(result.get("seconds", 0.0)),
            rate=math.nan,
            p50_ms=math.nan,
            p90_ms=math.nan,
            p99_ms=math.nan,
            max_ms=math.nan,
            mean_ms=math.nan,
            errors=int(result.get("failed", 0)),
        )
        row.extra = {
            "kib_first": float(per_process[0]) if per_process else math.nan,
            "kib_total": float(result.get("kib_per_conn_total", math.nan)),
        }
        if windows:
            row.server_cpu_s = windows[0].server_cpu_s
        if int(result.get("held", 0)) < int(result.get("count", 0)):
            row.notes.append(f"only {result.get('held')} of {result.get('count')} connections still open at the end")
        return [row]
