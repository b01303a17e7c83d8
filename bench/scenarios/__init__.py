"""Scenario registry: name to instance, in the order they run."""

from __future__ import annotations

from bench.scenarios.base import Options, Row, Scenario, Window
from bench.scenarios.redis_floor import RedisFloor
from bench.scenarios.ws_echo import WsEcho

__all__ = ["SCENARIOS", "Options", "Row", "Scenario", "Window", "select"]

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (RedisFloor(), WsEcho())}


def select(names: list[str] | None) -> list[Scenario]:
    """Scenarios by name, in :data:`SCENARIOS` order; ``None`` means all."""
    if not names:
        return list(SCENARIOS.values())
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    return [SCENARIOS[n] for n in SCENARIOS if n in names]
