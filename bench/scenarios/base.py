"""The Scenario interface and the result row every scenario produces.

A scenario names the load generator to run (a separate process, see bench.loadgen) and
turns its result into :class:`Row`s. The runner owns everything around it: starting the
system, CPU and memory of the servers, Redis CPU, stopping and flushing. A new scenario
(group fan-out, HTTP GET, long-poll, UDP, MQTT) is one module with one subclass, plus a
load generator, registered in :data:`bench.scenarios.SCENARIOS`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.systems import Context, System


@dataclass(frozen=True)
class Options:
    """Run-wide knobs a scenario reads (``--quick`` shrinks the times)."""

    quick: bool
    connections: int
    warmup: float
    duration: float
    #: ``ws-echo-paced`` when the run has no ``ws-echo`` (``ws-fanout`` x100) peak of the
    #: system to halve: echo messages/s (fan-out deliveries/s) to send instead.
    pace_rate: float | None = None
    pace_fanout_rate: float | None = None


@dataclass(frozen=True)
class Window:
    """What the runner saw between one ``measure_start`` and ``measure_end`` pair."""

    label: str | None
    wall_s: float
    server_cpu_s: float
    loadgen_cpu_s: float
    redis_cpu_s: float
    machine_cpu_s: float = math.nan  # all cores, every process: to spot outside interference
    #: Seconds the servers' threads waited on a run queue for a core (/proc schedstat).
    server_wait_s: float = math.nan
    #: Each node's share of ``redis_cpu_s`` when the system has several (a Redis Cluster).
    redis_nodes_cpu_s: tuple[tuple[str, float], ...] = ()
    #: Each server process's share of ``server_cpu_s`` by role (``gateway``, ``worker1``),
    #: when there are several: the capacity model's CPU per message of each kind of process.
    server_roles_cpu_s: tuple[tuple[str, float], ...] = ()

    @property
    def other_cpu_s(self) -> float:
        """CPU used by anything other than servers, client and Redis in the window."""
        rest = self.machine_cpu_s - self.server_cpu_s - self.loadgen_cpu_s - self.redis_cpu_s
        return max(0.0, rest)  # the samples are a few ms apart: never show a small negative


@dataclass
class Row:
    """One line of the results table."""

    scenario: str
    system: str
    side: str
    label: str
    connections: int
    count: int
    seconds: float
    rate: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    errors: int = 0
    server_processes: int = 0
    server_cpu_s: float = math.nan
    server_cpu_total_s: float = math.nan
    peak_rss_mb: float = math.nan
    redis_cpu_s: float = math.nan
    loadgen_cpu_s: float = math.nan
    other_cpu_s: float = math.nan
    server_wait_s: float = math.nan
    round: int = 1
    notes: list[str] = field(default_factory=list)
    #: Scenario-specific numbers (idle-memory: KiB per connection), shown by its own columns.
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def cpu_us_per_msg(self) -> float:
        """Server CPU per completed message: the cost, independent of the rate reached."""
        if not self.count or math.isnan(self.server_cpu_s):
            return math.nan
        return self.server_cpu_s / self.count * 1e6


class Scenario(ABC):
    """One kind of load, runnable against every system it applies to."""

    name: str
    description: str
    #: Run in the first round only (a measurement that outside CPU load cannot disturb).
    single_round: bool = False
    #: Run in the last round only (a scenario that reads the best of the earlier rounds).
    last_round: bool = False

    @abstractmethod
    def applies_to(self, system: System) -> bool:
        """Whether this scenario makes sense for ``system``."""

    @abstractmethod
    def loadgen_argv(self, system: System, ctx: Context, options: Options, python: str) -> list[str]:
        """Command line of the load generator process."""

    def timeout(self, options: Options) -> float:
        """Hard limit on the load generator process, in seconds."""
        return options.warmup + options.duration + 60.0

    def prepare(self, main_python: str) -> None:
        """Called once before the run's first pair of this scenario (``http-db``: its table).

        Raising drops the scenario from the run as a failure, with the message.
        """
        return None

    def use_prior(self, system: System, options: Options, prior: Sequence[Row]) -> None:
        """Called by the runner before ``system`` is started, with every row of the run so far.

        For a scenario whose load depends on an earlier measurement (``ws-echo-paced``:
        half of the system's ``ws-echo`` peak). Raising here fails the pair before any
        server starts.
        """
        return None

    def summary(self, rows: Sequence[Row]) -> list[str]:
        """Lines printed under the scenario's table (its best rows); none by default."""
        return []

    def headline(self, rows: Sequence[Row]) -> list[str]:
        """Lines for the top of the Results (a target met or not); none by default."""
        return []

    @abstractmethod
    def rows(self, system: System, result: dict[str, Any], windows: list[Window], options: Options) -> list[Row]:
        """Turn the generator's result (and the runner's windows) into table rows."""


def row_from_summary(
    scenario: str, system: System, label: str, summary: dict[str, Any], window: Window | None, connections: int
) -> Row:
    """A :class:`Row` from a :func:`bench.loadgen.common.summarize_ns` summary."""
    row = Row(
        scenario=scenario,
        system=system.name,
        side=system.side,
        label=label,
        connections=connections,
        count=int(summary.get("count", 0)),
        seconds=float(summary.get("seconds", 0.0)),
        rate=float(summary.get("rate", 0.0)),
        p50_ms=float(summary.get("p50_ms", math.nan)),
        p90_ms=float(summary.get("p90_ms", math.nan)),
        p99_ms=float(summary.get("p99_ms", math.nan)),
        max_ms=float(summary.get("max_ms", math.nan)),
        mean_ms=float(summary.get("mean_ms", math.nan)),
    )
    if window is not None:
        row.server_cpu_s = window.server_cpu_s
        row.redis_cpu_s = window.redis_cpu_s
        row.loadgen_cpu_s = window.loadgen_cpu_s
        row.other_cpu_s = window.other_cpu_s
        row.server_wait_s = window.server_wait_s
        for role, seconds in window.server_roles_cpu_s:
            row.extra[f"cpu_s:{role}"] = seconds
        for node, seconds in window.redis_nodes_cpu_s:
            row.extra[f"redis_cpu_s:{node}"] = seconds
        if window.redis_nodes_cpu_s:
            busiest, seconds = max(window.redis_nodes_cpu_s, key=lambda item: item[1])
            row.notes.append(f"busiest Redis node {busiest}: {seconds:.2f} s of the {window.redis_cpu_s:.2f} s")
    return row
