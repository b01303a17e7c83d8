"""Group chat fan-out: 1 sender, N receivers in one room, N = 10, 100 and 1,000."""

from __future__ import annotations

from typing import Any

from bench.scenarios.base import Options, Row, Scenario, Window, row_from_summary
from bench.systems import Context, System


class WsFanout(Scenario):
    name = "ws-fanout"
    description = "group chat: one sender, every member of the room gets each message (10, 100, 1,000 members)"
    # Three measured windows per run already; one round keeps the whole harness in 10 min.
    single_round = True

    def applies_to(self, system: System) -> bool:
        return system.serves_http and system.serves_websocket

    def sizes(self, options: Options) -> list[int]:
        return [10, 100] if options.quick else [10, 100, 1000]

    def durations(self, options: Options) -> tuple[float, float]:
        return (0.3, 1.0) if options.quick else (min(options.warmup, 0.5), min(options.duration, 2.5))

    def loadgen_argv(self, system: System, ctx: Context, options: Options, python: str) -> list[str]:
        warmup, duration = self.durations(options)
        return [
            python, "-m", "bench.loadgen.ws_fanout",
            "--url", f"ws://{ctx.host}:{ctx.port}/ws/room/",
            "--sizes", ",".join(str(n) for n in self.sizes(options)),
            "--warmup", str(warmup), "--duration", str(duration),
        ]

    def timeout(self, options: Options) -> float:
        warmup, duration = self.durations(options)
        return len(self.sizes(options)) * (warmup + duration + 30) + 30

    def rows(self, system: System, result: dict[str, Any], windows: list[Window], options: Options) -> list[Row]:
        by_label = {w.label: w for w in windows}
        rows = []
        for item in result.get("rows", []):
            label = str(item["label"])
            row = row_from_summary(self.name, system, label, item, by_label.get(label), int(item.get("connections", 0)))
            row.errors = int(item.get("errors", 0))
            row.notes.extend(f"{label}: {s}" for s in item.get("error_samples", []))
            rows.append(row)
        return rows
