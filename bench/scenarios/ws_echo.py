"""WebSocket echo: N connections to /ws/echo/, each a closed send-and-wait loop."""

from __future__ import annotations

from typing import Any

from bench.scenarios.base import Options, Row, Scenario, Window, row_from_summary
from bench.systems import Context, System


class WsEcho(Scenario):
    name = "ws-echo"
    description = "WebSocket echo: each connection sends a timestamped frame and waits for it back"

    def applies_to(self, system: System) -> bool:
        return system.serves_http and system.serves_websocket

    def loadgen_argv(self, system: System, ctx: Context, options: Options, python: str) -> list[str]:
        return [
            python,
            "-m",
            "bench.loadgen.ws_echo",
            "--url",
            f"ws://{ctx.host}:{ctx.port}/ws/echo/",
            "--connections",
            str(options.connections),
            "--warmup",
            str(options.warmup),
            "--duration",
            str(options.duration),
        ]

    def rows(self, system: System, result: dict[str, Any], windows: list[Window], options: Options) -> list[Row]:
        row = row_from_summary(
            self.name, system, system.name, result, windows[0] if windows else None, int(result.get("connections", 0))
        )
        row.errors = int(result.get("errors", 0))
        if result.get("connected", 0) != result.get("connections", 0):
            row.notes.append(f"only {result.get('connected')} of {result.get('connections')} connected")
        row.notes.extend(str(s) for s in result.get("error_samples", []))
        return [row]
