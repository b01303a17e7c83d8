"""Scenario registry: name to instance, in the order they run."""

from __future__ import annotations

from bench.scenarios.base import Options, Row, Scenario, Window
from bench.scenarios.http_get import HttpGet
from bench.scenarios.idle_memory import IdleMemory
from bench.scenarios.redis_floor import RedisFloor
from bench.scenarios.ws_echo import WsEcho
from bench.scenarios.ws_fanout import WsFanout

__all__ = ["SCENARIOS", "Options", "Row", "Scenario", "Window", "select"]

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        RedisFloor(),
        WsEcho(),
        WsFanout(),
        HttpGet(),
        IdleMemory("idle-ws", "ws"),
        IdleMemory("idle-poll", "poll"),
    )
}


def select(names: list[str] | None) -> list[Scenario]:
    """Scenarios by name, in :data:`SCENARIOS` order; ``None`` means all."""
    if not names:
        return list(SCENARIOS.values())
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    return [SCENARIOS[n] for n in SCENARIOS if n in names]
