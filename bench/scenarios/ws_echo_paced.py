"""Open-loop WebSocket echo (and group fan-out) at half of each system's own peak.

The closed-loop ``ws-echo`` and ``ws-fanout`` give each system's peak rate; this scenario
sends at a fixed rate, half of that peak, on a schedule that never waits for answers
(``bench/loadgen/ws_paced.py``), and reports the latency the system gives at that load.
The issue's target for Switchboard is read from it: echo and fan-out through the Redis
layer, p99 under 5 ms at half of the peak rate.

The peaks come from earlier in the same run: the runner hands every row measured so far
to :meth:`WsEchoPaced.use_prior`, and the scenario runs in the last round, so it halves
the best ``ws-echo`` round (the one the ``ws-echo`` table shows) and the ``ws-fanout``
x100 row. Without them (``--scenarios ws-echo-paced`` alone) it sends at ``--pace-rate``
(echo messages/s) and ``--pace-fanout-rate`` (deliveries/s), and leaves fan-out out when
neither a peak nor a rate is known.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from bench.scenarios.base import Options, Row, Scenario, Window, row_from_summary
from bench.systems import SYSTEMS, Context, System

#: The issue's latency target at half of the peak rate.
TARGET_P99_MS = 5.0
#: The fan-out room paced at half of its peak (as measured by ws-fanout).
FANOUT_SIZE = 100
#: Achieved below this share of the target rate means the load asked for was not carried.
RATE_TOLERANCE = 0.95
#: Sends go out in ticks of at least 1 ms (the timer resolution), so a p99 send lag of 1-3 ms
#: is the schedule's own jitter (measured with a no-op send on the shared machine); above
#: this, the client was short of CPU and its load burstier than asked.
LAG_NOTE_MS = 5.0


class WsEchoPaced(Scenario):
    name = "ws-echo-paced"
    description = (
        "WebSocket echo (50 connections) and a 100-member room, open loop at half of the system's own "
        "closed-loop peak: latency at a fixed load"
    )
    # One round, the last: it halves the best ws-echo round, which is known only then.
    last_round = True

    def __init__(self) -> None:
        #: system name -> (echo msg/s, where it came from, fan-out deliveries/s or 0, where from)
        self.plan: dict[str, tuple[float, str, float, str]] = {}

    def applies_to(self, system: System) -> bool:
        return system.serves_http and system.serves_websocket

    def durations(self, options: Options) -> tuple[float, float]:
        """(warm-up, counted) of each phase; the rate is fixed, so a short window suffices."""
        return (0.3, 1.0) if options.quick else (min(options.warmup, 0.5), min(options.duration, 3.0))

    def use_prior(self, system: System, options: Options, prior: Sequence[Row]) -> None:
        echo = [r.rate for r in prior if r.scenario == "ws-echo" and r.system == system.name and r.count]
        fan = [
            r.rate
            for r in prior
            if r.scenario == "ws-fanout" and r.system == system.name and r.label == f"fan-out x{FANOUT_SIZE}" and r.count
        ]
        if echo:
            echo_rate, echo_from = max(echo) / 2, f"half of its ws-echo peak {max(echo):,.0f} msg/s"
        elif options.pace_rate:
            echo_rate, echo_from = options.pace_rate, "--pace-rate (no ws-echo peak in this run)"
        else:
            raise RuntimeError(f"no ws-echo peak of {system.name} in this run and no --pace-rate: nothing to pace at")
        if fan:
            fan_rate, fan_from = max(fan) / 2, f"half of its ws-fanout x{FANOUT_SIZE} rate {max(fan):,.0f} deliveries/s"
        elif options.pace_fanout_rate:
            fan_rate, fan_from = options.pace_fanout_rate, "--pace-fanout-rate (no ws-fanout peak in this run)"
        else:
            fan_rate, fan_from = 0.0, f"fan-out left out: no ws-fanout x{FANOUT_SIZE} rate in this run, no --pace-fanout-rate"
        self.plan[system.name] = (echo_rate, echo_from, fan_rate, fan_from)

    def loadgen_argv(self, system: System, ctx: Context, options: Options, python: str) -> list[str]:
        echo_rate, _, fan_rate, _ = self.plan[system.name]
        warmup, duration = self.durations(options)
        argv = [
            python, "-m", "bench.loadgen.ws_paced",
            "--url", f"ws://{ctx.host}:{ctx.port}/ws/echo/",
            "--connections", str(options.connections),
            "--rate", f"{echo_rate:.1f}",
            "--warmup", str(warmup), "--duration", str(duration),
        ]
        if fan_rate:
            argv += [
                "--room-url", f"ws://{ctx.host}:{ctx.port}/ws/room/",
                "--fanout-size", str(FANOUT_SIZE), "--fanout-rate", f"{fan_rate:.1f}",
                "--fanout-warmup", str(warmup), "--fanout-duration", str(duration),
            ]
        return argv

    def timeout(self, options: Options) -> float:
        warmup, duration = self.durations(options)
        return 2 * (warmup + duration) + 90.0

    def rows(self, system: System, result: dict[str, Any], windows: list[Window], options: Options) -> list[Row]:
        by_label = {w.label: w for w in windows}
        _, echo_from, _, fan_from = self.plan.get(system.name, (0.0, "", 0.0, ""))
        rows = []
        for item in result.get("rows", []):
            label = str(item["label"])
            row = row_from_summary(self.name, system, label, item, by_label.get(label), int(item.get("connections", 0)))
            row.errors = int(item.get("errors", 0))
            target = float(item.get("target_rate", math.nan))
            row.extra["target_rate"] = target
            row.extra["from_peak"] = 1.0 if (echo_from if label == "echo" else fan_from).startswith("half") else 0.0
            for key in ("send_lag_p99_ms", "send_lag_max_ms"):
                row.extra[key] = float(item[key]) if item.get(key) is not None else math.nan
            row.notes.append(f"{label}: {echo_from if label == 'echo' else fan_from}")
            for key in ("late", "missing", "mismatches", "send_errors"):
                if item.get(key):
                    row.notes.append(f"{label}: {item[key]:,} {key.replace('_', ' ')}")
            if row.rate < RATE_TOLERANCE * target:
                row.notes.append(f"{label}: carried {row.rate:,.0f} of the {target:,.0f}/s asked for")
            lag = row.extra["send_lag_p99_ms"]
            if lag > LAG_NOTE_MS:
                row.notes.append(f"{label}: the client fell behind its schedule (send lag p99 {lag:.1f} ms)")
            row.notes.extend(f"{label}: {sample}" for sample in item.get("error_samples", []))
            rows.append(row)
        if rows and len(rows) == 1:
            error = result.get("fanout_error")
            rows[0].notes.append(f"fan-out failed: {error}" if error else fan_from)
        return rows

    def summary(self, rows: Sequence[Row]) -> list[str]:
        """One verdict line per Switchboard measurement: p99 under 5 ms at half of its peak?"""
        lines = [verdict(row) for row in rows if row.side == "switchboard"]
        if lines:
            lines.insert(
                0,
                f"Target: p99 under {TARGET_P99_MS:g} ms at half of the system's own peak rate, "
                "with no late, missing or out-of-order message:",
            )
        return lines

    def headline(self, rows: Sequence[Row]) -> list[str]:
        """The issue's target in one line: echo and fan-out through the Redis layer."""
        parts = []
        for row in rows:
            if row.side == "switchboard" and uses_redis(row.system):
                met, _ = judge(row)
                parts.append(
                    f"`{row.system}` {row.label} **{'met' if met else 'not met'}** "
                    f"(p99 {row.p99_ms:.2f} ms at {row.rate:,.0f}/s, {row.errors:,} errors)"
                )
        if not parts:
            return []
        return [
            f"Target, p99 under {TARGET_P99_MS:g} ms at half of Switchboard's peak rate through the Redis layer "
            f"(`{self.name}` below): " + "; ".join(parts)
        ]


def uses_redis(system_name: str) -> bool:
    system = SYSTEMS.get(system_name.split("@")[0])  # a --baseline commit runs as its system
    return system is not None and system.redis_db is not None


def judge(row: Row) -> tuple[bool, list[str]]:
    """Whether ``row`` meets the target, and what is wrong if it does not."""
    target = row.extra.get("target_rate", math.nan)
    why = []
    if not row.p99_ms < TARGET_P99_MS:
        why.append(f"p99 {row.p99_ms:.2f} ms")
    if row.errors:
        why.append(f"{row.errors:,} late, missing or out of order")
    if not row.rate >= RATE_TOLERANCE * target:
        why.append(f"carried {row.rate:,.0f} of {target:,.0f}/s")
    return not why, why


def verdict(row: Row) -> str:
    met, why = judge(row)
    layer = "Redis layer" if uses_redis(row.system) else "in-memory layer"
    unit = "msg/s" if row.label == "echo" else "deliveries/s"
    target = row.extra.get("target_rate", math.nan)
    asked = "half of its peak" if row.extra.get("from_peak") else "set by option, not a measured peak"
    why = why[1:] if why and why[0].startswith("p99") else why  # the line gives the p99 anyway
    return (
        f"`{row.system}` ({layer}), {row.label}: p99 {row.p99_ms:.2f} ms at {row.rate:,.0f} {unit} "
        f"(asked {target:,.0f}: {asked}): {'met' if met else 'NOT met'}"
        + (f" ({'; '.join(why)})" if why else "")
    )
