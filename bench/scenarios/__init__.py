"""Scenario registry: name to instance, in the order they run."""

from __future__ import annotations

from bench.scenarios.base import Options, Row, Scenario, Window
from bench.scenarios.http_get import HttpDb, HttpGet
from bench.scenarios.idle_memory import IdleMemory
from bench.scenarios.mqtt_rtt import MqttRtt
from bench.scenarios.redis_floor import RedisFloor
from bench.scenarios.udp_echo import UdpEcho
from bench.scenarios.ws_echo import WsEcho
from bench.scenarios.ws_echo_paced import WsEchoPaced
from bench.scenarios.ws_fanout import WsFanout
from bench.systems import SYSTEMS

__all__ = ["SCENARIOS", "Options", "Row", "Scenario", "Window", "select"]

SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        RedisFloor(),
        WsEcho(),
        WsFanout(),
        WsEchoPaced(),  # after ws-echo and ws-fanout: it paces at half of their peaks
        HttpGet(),
        HttpDb(),
        IdleMemory("idle-ws", "ws"),
        IdleMemory("idle-poll", "poll"),
        # The protocol plugins' round trips, each on its own three systems (Switchboard
        # split and run, and a bare baseline); WebRTC and SMS run only in bench.plugins.
        # Shorter windows than bench.plugins (0.5 s + 2 s for xN; x1 gets 0.25 s + 0.8 s)
        # and one round keep the whole run within its ten minutes (550 s with two rounds
        # on a slow day of the 2-core machine).
        UdpEcho(max_times=(0.5, 2.0), single_round=True),
        MqttRtt(max_times=(0.5, 2.0), single_round=True),
    )
}

# The plugin scenarios' own systems join the harness's (they serve no Django site, so no
# other scenario applies to them).
SYSTEMS.update({s.name: s for scenario in SCENARIOS.values() for s in getattr(scenario, "own_systems", ())})


def select(names: list[str] | None) -> list[Scenario]:
    """Scenarios by name, in :data:`SCENARIOS` order; ``None`` means all."""
    if not names:
        return list(SCENARIOS.values())
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    return [SCENARIOS[n] for n in SCENARIOS if n in names]
