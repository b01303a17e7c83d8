"""The raw redis-py floor: PING and a 2-hop LPUSH/BRPOP echo, no server of ours involved."""

from __future__ import annotations

from typing import Any

from bench.scenarios.base import Options, Row, Scenario, Window, row_from_summary
from bench.systems import Context, System


class RedisFloor(Scenario):
    name = "redis-floor"
    description = "redis-py round trips straight to Redis: the floor under any Redis-backed layer"

    def applies_to(self, system: System) -> bool:
        return system.side == "baseline"

    def durations(self, options: Options) -> tuple[float, float]:
        return (0.2, 0.5) if options.quick else (0.5, 2.0)

    def loadgen_argv(self, system: System, ctx: Context, options: Options, python: str) -> list[str]:
        warmup, duration = self.durations(options)
        return [
            python,
            "-m",
            "bench.loadgen.redis_floor",
            "--url",
            system.redis_url(ctx) or "",
            "--concurrency",
            str(options.connections),
            "--warmup",
            str(warmup),
            "--duration",
            str(duration),
        ]

    def timeout(self, options: Options) -> float:
        warmup, duration = self.durations(options)
        return 4 * (warmup + duration) + 60.0

    def rows(self, system: System, result: dict[str, Any], windows: list[Window], options: Options) -> list[Row]:
        by_label = {w.label: w for w in windows}
        rows = []
        for item in result.get("rows", []):
            label = str(item["label"])
            rows.append(row_from_summary(self.name, system, label, item, by_label.get(label), int(item.get("concurrency", 0))))
        return rows
