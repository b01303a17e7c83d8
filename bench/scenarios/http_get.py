"""Plain Django views over keep-alive connections, N connections each a closed loop.

``http-get``: ``GET /hello/``, a ``JsonResponse`` and nothing else: the cost of the server
and of Django's request handling. ``http-db``: ``GET /db/``, one indexed PostgreSQL query
through the ORM (bench/benchapp/), the smallest view that touches a database, where how a
server keeps its database connections shows.

Both run on every system that serves HTTP, the plain Django servers included, and say
under their table whether Switchboard meets issue 14's targets against them.
"""

from __future__ import annotations

import math
import os
import subprocess
from collections.abc import Sequence
from typing import Any

from bench.scenarios.base import Options, Row, Scenario, Window, row_from_summary
from bench.systems import BENCH_DIR, Context, System

#: Issue 14's targets: (switchboard system, compared system, least req/s ratio).
RATE_TARGETS: tuple[tuple[str, str, float], ...] = (
    ("switchboard-split", "gunicorn-gthread", 1.0),
    ("switchboard-run", "gunicorn-gthread-1w", 1.2),
    ("switchboard-split", "channels-uvicorn-2w", 3.0),
    ("switchboard-run", "channels-uvicorn", 3.0),
)
#: Most server CPU per request for ``switchboard-split`` (gateway + worker, microseconds).
CPU_TARGET_US = 600.0


class HttpView(Scenario):
    """GET one path of the sites from N keep-alive connections (bench/loadgen/http_get.py)."""

    path = "/hello/"

    def applies_to(self, system: System) -> bool:
        return system.serves_http

    def window(self, options: Options) -> tuple[float, float]:
        """Warm-up and counted seconds."""
        return options.warmup, options.duration

    def loadgen_argv(self, system: System, ctx: Context, options: Options, python: str) -> list[str]:
        warmup, duration = self.window(options)
        return [
            python, "-m", "bench.loadgen.http_get",
            "--url", f"http://{ctx.host}:{ctx.port}{self.path}",
            "--connections", str(options.connections),
            "--warmup", str(warmup), "--duration", str(duration),
        ]

    def rows(self, system: System, result: dict[str, Any], windows: list[Window], options: Options) -> list[Row]:
        row = row_from_summary(
            self.name, system, system.name, result, windows[0] if windows else None, int(result.get("connections", 0))
        )
        row.errors = int(result.get("errors", 0))
        row.notes.extend(str(s) for s in result.get("error_samples", []))
        return [row]

    def summary(self, rows: Sequence[Row]) -> list[str]:
        return self.verdicts(rows) + self.cpu_by_process(rows)

    @staticmethod
    def cpu_by_process(rows: Sequence[Row]) -> list[str]:
        """Server CPU per request of each process, for systems of several (split, gunicorn).

        What the total hides: a split worker's Django path next to a gunicorn worker's, and
        what the gateway and Redis add on top (issue 14's analysis of http-db).
        """
        lines = []
        for row in rows:
            roles = {key.partition(":")[2]: seconds for key, seconds in row.extra.items() if key.startswith("cpu_s:")}
            if not roles and row.system.startswith("gunicorn"):
                roles = {"master and workers": row.server_cpu_s}  # one process tree, read as one
            if not row.count or not roles or math.isnan(row.server_cpu_s):
                continue
            parts = [f"{role} {seconds / row.count * 1e6:,.0f} us" for role, seconds in roles.items()]
            if not math.isnan(row.redis_cpu_s) and row.redis_cpu_s > 0.01 * row.server_cpu_s:
                parts.append(f"Redis {row.redis_cpu_s / row.count * 1e6:,.0f} us")
            lines.append(f"`{row.system}` CPU per request by process: " + ", ".join(parts))
        return lines

    def headline(self, rows: Sequence[Row]) -> list[str]:
        lines = self.verdicts(rows)
        return [f"`{self.name}` targets (issue 14): " + "; ".join(lines)] if lines else []

    def verdicts(self, rows: Sequence[Row]) -> list[str]:
        """Each of issue 14's targets whose two systems ran: the ratio and met / not met."""
        best = {r.system: r for r in rows if r.count and not math.isnan(r.rate)}
        lines = []
        for ours, theirs, least in RATE_TARGETS:
            if ours in best and theirs in best:
                ratio = best[ours].rate / best[theirs].rate
                verdict = "met" if ratio >= least else "**not met**"
                lines.append(f"`{ours}` / `{theirs}` req/s {ratio:.2f}x (target >= {least:g}x): {verdict}")
        split = best.get("switchboard-split")
        if split is not None and not math.isnan(split.cpu_us_per_msg):
            verdict = "met" if split.cpu_us_per_msg <= CPU_TARGET_US else "**not met**"
            lines.append(
                f"`switchboard-split` server CPU per request {split.cpu_us_per_msg:,.0f} us "
                f"(target <= {CPU_TARGET_US:,.0f} us): {verdict}"
            )
        return lines


class HttpGet(HttpView):
    name = "http-get"
    description = "GET /hello/ (a plain Django JsonResponse view) over keep-alive connections"
    path = "/hello/"


class HttpDb(HttpView):
    name = "http-db"
    description = "GET /db/ (one indexed PostgreSQL query through the Django ORM) over keep-alive connections"
    path = "/db/"
    # One round, a shorter window (0.5 s warm-up, 3 s counted) and not on daphne (not
    # among issue 14's systems), so the whole run keeps within its ten minutes with the
    # four plain Django servers added. switchboard-split-2w runs it: a query's CPU in one
    # worker process is paid under one GIL, and a second worker is the answer a site
    # with database-bound views has, as gunicorn's second worker process is.
    single_round = True

    def applies_to(self, system: System) -> bool:
        return system.serves_http and system.family_name != "channels-daphne"

    def window(self, options: Options) -> tuple[float, float]:
        return min(options.warmup, 0.5), min(options.duration, 3.0)

    def prepare(self, main_python: str) -> None:
        """Create and fill the table (once; later runs find it ready)."""
        env = {**os.environ, "PYTHONPATH": str(BENCH_DIR), "DJANGO_SETTINGS_MODULE": "django_site.settings"}
        done = subprocess.run(
            [main_python, "-m", "benchapp.prepare"], cwd=BENCH_DIR, env=env, capture_output=True, text=True,
            timeout=120, check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"could not prepare the PostgreSQL table: {(done.stderr or done.stdout)[-1500:]}")
