"""One refresh of the console: ``switchboard.status`` answers in, what the page shows out.

Sans-I/O (the collector does the asking): given the latest answer of every process, the
channel backlogs and the layer's latencies, :class:`FrameBuilder` computes

- per process: state, uptime, CPU% (from two answers' ``cpu`` and ``time``), memory;
- per protocol: open connections, messages in/out per second, totals, handler-time
  p50/p99 over the last ``window`` seconds, refusals and drops by reason;
- the points the charts add (:class:`~switchboard.console.history.History`).

Rates are computed per process, from the process's own clock (``time`` of its two
answers), then summed: a process that appears, restarts or goes away changes the total
without a spike, and a slow answer does not stretch anyone else's interval.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from switchboard.gateway.figures import protocol_of_counter
from switchboard.gateway.latency import difference, quantile

#: Drop components that are not a plugin: counted for the cluster, not a protocol.
CORE_COMPONENTS = frozenset({"layer", "gateway", "worker"})


@dataclass
class _Previous:
    """What one process said last time, to difference against."""

    time: float
    cpu: float | None
    protocols: dict[str, tuple[int, int]] = field(default_factory=dict)
    handler_times: dict[str, list[int]] = field(default_factory=dict)


@dataclass(frozen=True)
class Channel:
    """One channel's backlog as the collector measured it."""

    name: str
    kind: str  # pool, named, worker, gateway
    backlog: int
    capacity: int


def _number(value: Any, default: float = 0.0) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else default


class FrameBuilder:
    """Keeps what rates and quantiles need between refreshes; see the module docstring."""

    def __init__(self, *, interval: float = 1.0, window: float = 10.0, lost_after: float | None = None) -> None:
        self.interval = interval
        self.lost_after = lost_after if lost_after is not None else 2.5 * interval
        self._previous: dict[str, _Previous] = {}
        # Handler-time bucket counts per protocol, one entry per refresh, for the window.
        self._window: collections.deque[dict[str, list[int]]] = collections.deque(maxlen=max(int(window / interval), 1))

    def build(
        self,
        rows: Sequence[Mapping[str, Any]],
        *,
        now: float,
        channels: Iterable[Channel] = (),
        nodes: Iterable[tuple[str, float | None]] = (),
        deadletters: Mapping[str, Any] | None = None,
    ) -> tuple[dict[str, Any], dict[str, float | None]]:
        """The frame for the page and the chart points of this refresh."""
        processes = []
        protocols: dict[str, dict[str, Any]] = {}
        cluster_drops: dict[str, int] = {}
        times_now: dict[str, list[int]] = {}
        seen_ids = set()
        for row in rows:
            process_id = str(row.get("id"))
            seen_ids.add(process_id)
            previous = self._previous.get(process_id)
            processes.append(self._process(row, previous))
            current = self._account(row, previous, protocols, cluster_drops, times_now)
            self._previous[process_id] = current
        for gone in set(self._previous) - seen_ids:
            del self._previous[gone]
        self._window.append(times_now)
        self._quantiles(protocols)
        channel_list = [{"name": c.name, "kind": c.kind, "backlog": c.backlog, "capacity": c.capacity} for c in channels]
        node_list = [{"name": name, "latency_ms": None if s is None else round(s * 1000, 3)} for name, s in nodes]
        frame = {
            "time": now,
            "interval": self.interval,
            "processes": processes,
            "protocols": dict(sorted(protocols.items())),
            "drops": dict(sorted(cluster_drops.items())),
            "channels": channel_list,
            "layer": {"nodes": node_list},
            "deadletters": deadletters,
        }
        return frame, self._points(frame)

    # -- per process -------------------------------------------------------------------

    def _process(self, row: Mapping[str, Any], previous: _Previous | None) -> dict[str, Any]:
        gateway = row.get("gateway") or {}
        worker = row.get("worker") or {}
        part = gateway or worker
        seen = _number(row.get("last_seen"))
        state = str(row.get("state", "?"))
        if seen > self.lost_after:
            state = "lost?"
        cpu, when = row.get("cpu"), _number(row.get("time"))
        cpu_percent = None
        if previous is not None and previous.cpu is not None and isinstance(cpu, (int, float)) and when > previous.time:
            cpu_percent = round(max(float(cpu) - previous.cpu, 0.0) / (when - previous.time) * 100, 1)
        return {
            "id": row.get("id"),
            "kind": row.get("kind"),
            "host": row.get("host"),
            "pid": row.get("pid"),
            "state": state,
            "uptime": _number(row.get("uptime")),
            "version": row.get("version"),
            "cpu_percent": cpu_percent,
            "rss": row.get("rss"),
            "seen": round(seen, 1),
            "connections": dict(row.get("connections") or {}),
            "events_in": part.get("events_in"),
            "events_out": part.get("events_out"),
            "drops": sum((row.get("drops") or {}).values()),
            "claimed": part.get("claimed"),
            "instances": worker.get("instances"),
            "queued": worker.get("queued") if worker else gateway.get("held"),
        }

    # -- per protocol ------------------------------------------------------------------

    def _account(
        self,
        row: Mapping[str, Any],
        previous: _Previous | None,
        protocols: dict[str, dict[str, Any]],
        cluster_drops: dict[str, int],
        times_now: dict[str, list[int]],
    ) -> _Previous:
        when = _number(row.get("time"))
        cpu = row.get("cpu")
        current = _Previous(when, float(cpu) if isinstance(cpu, (int, float)) else None)
        gateway = row.get("gateway") or {}
        elapsed = when - previous.time if previous is not None else 0.0
        for protocol, figures in (gateway.get("protocols") or {}).items():
            entry = self._protocol(protocols, protocol)
            count_in, count_out = int(figures.get("in", 0)), int(figures.get("out", 0))
            entry["open"] += int(figures.get("open", 0))
            entry["opened"] += int(figures.get("opened", 0))
            entry["in"] += count_in
            entry["out"] += count_out
            current.protocols[protocol] = (count_in, count_out)
            before = previous.protocols.get(protocol) if previous is not None else None
            if before is not None and elapsed > 0:
                # A counter that went down means the process restarted under the same id.
                entry["in_rate"] += max(count_in - before[0], 0) / elapsed
                entry["out_rate"] += max(count_out - before[1], 0) / elapsed
        for key, value in (gateway.get("refusals") or {}).items():
            protocol, _, reason = str(key).partition(".")
            refusals = self._protocol(protocols, protocol)["refusals"]
            refusals[reason] = refusals.get(reason, 0) + int(value)
        plugins = set(gateway.get("plugins") or ())
        served = gateway.get("plugin_protocols") or {}
        for key, value in (row.get("drops") or {}).items():
            component, _, reason = str(key).partition(".")
            if component in CORE_COMPONENTS or component not in plugins:
                cluster_drops[str(key)] = cluster_drops.get(str(key), 0) + int(value)
                continue
            protocol = protocol_of_counter(component, reason, served.get(component) or ())
            reason = reason[len(protocol) + 1 :] if reason.startswith(protocol + ".") else reason
            drops = self._protocol(protocols, protocol)["drops"]
            drops[reason] = drops.get(reason, 0) + int(value)
        worker = row.get("worker") or {}
        for protocol, counts in (worker.get("handler_times") or {}).items():
            if not isinstance(counts, list):
                continue
            current.handler_times[protocol] = counts
            before_counts = previous.handler_times.get(protocol) if previous is not None else None
            if previous is None:
                continue  # first answer: its counts cover the process's whole life, not this window
            delta = difference(counts, before_counts)
            total = times_now.setdefault(protocol, [0] * len(delta))
            if len(total) == len(delta):
                times_now[protocol] = [a + b for a, b in zip(total, delta)]
            self._protocol(protocols, protocol)
        return current

    @staticmethod
    def _protocol(protocols: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
        entry = protocols.get(name)
        if entry is None:
            entry = protocols[name] = {
                "open": 0,
                "opened": 0,
                "in": 0,
                "out": 0,
                "in_rate": 0.0,
                "out_rate": 0.0,
                "p50_ms": None,
                "p99_ms": None,
                "handled": 0,
                "refusals": {},
                "drops": {},
            }
        return entry

    def _quantiles(self, protocols: dict[str, dict[str, Any]]) -> None:
        summed: dict[str, list[int]] = {}
        for tick in self._window:
            for protocol, counts in tick.items():
                total = summed.get(protocol)
                summed[protocol] = (
                    list(counts) if total is None or len(total) != len(counts) else [a + b for a, b in zip(total, counts)]
                )
        for protocol, counts in summed.items():
            entry = self._protocol(protocols, protocol)
            for key, q in (("p50_ms", 0.5), ("p99_ms", 0.99)):
                value = quantile(counts, q)
                entry[key] = None if value is None else round(value * 1000, 3)
            entry["handled"] = sum(counts)

    # -- chart points ------------------------------------------------------------------

    @staticmethod
    def _points(frame: Mapping[str, Any]) -> dict[str, float | None]:
        points: dict[str, float | None] = {}
        for protocol, entry in frame["protocols"].items():
            points[f"{protocol}.in"] = entry["in_rate"]
            points[f"{protocol}.out"] = entry["out_rate"]
            points[f"{protocol}.open"] = entry["open"]
            points[f"{protocol}.p50"] = entry["p50_ms"]
            points[f"{protocol}.p99"] = entry["p99_ms"]
        latencies = [node["latency_ms"] for node in frame["layer"]["nodes"] if node["latency_ms"] is not None]
        points["layer.latency"] = max(latencies) if latencies else None
        points["channels.backlog"] = sum(channel["backlog"] for channel in frame["channels"])
        points["processes"] = len(frame["processes"])
        return points
