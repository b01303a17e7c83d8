"""Plain Django view: keep-alive GET /hello/ from N connections, closed loop."""

from __future__ import annotations

from typing import Any

from bench.scenarios.base import Options, Row, Scenario, Window, row_from_summary
from bench.systems import Context, System


class HttpGet(Scenario):
    name = "http-get"
    description = "GET /hello/ (a plain Django JsonResponse view) over keep-alive connections"

    def applies_to(self, system: System) -> bool:
        return system.serves_http

    def loadgen_argv(self, system: System, ctx: Context, options: Options, python: str) -> list[str]:
        return [
            python, "-m", "bench.loadgen.http_get",
            "--url", f"http://{ctx.host}:{ctx.port}/hello/",
            "--connections", str(options.connections),
            "--warmup", str(options.warmup), "--duration", str(options.duration),
        ]

    def rows(self, system: System, result: dict[str, Any], windows: list[Window], options: Options) -> list[Row]:
        row = row_from_summary(
            self.name, system, system.name, result, windows[0] if windows else None, int(result.get("connections", 0))
        )
        row.errors = int(result.get("errors", 0))
        row.notes.extend(str(s) for s in result.get("error_samples", []))
        return [row]
