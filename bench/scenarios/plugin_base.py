"""What the protocol-plugin scenarios share: their systems, and turning results into rows.

Each plugin scenario (``udp-echo``, ``mqtt-rtt``, ``webrtc-rtt``, ``sms-rtt``) brings its
own three systems, listed in its ``own_systems``:

- ``<plugin>-switchboard-split``: ``switchboard gateway`` + ``switchboard worker`` over the
  Redis layer (db :data:`PLUGIN_REDIS_DB`), configured by ``bench/plugins_site``;
- ``<plugin>-switchboard-run``: ``switchboard run``, one process, in-memory layer;
- ``<plugin>-bare``: the baseline, the least code that answers the same requests with the
  same library (``bench/plugins_site/bare_*``), side ``"bare"``.

None of them serves the Django benchmark site, so ``serves_http`` is False and the runner
does not probe them; each load generator instead waits for a first answer through the
whole stack (gateway, layer, worker) before its clock starts. A system picks free ports
(and an MQTT topic prefix) each time it is started, in :meth:`PluginSystem.processes`,
and the scenario reads them from ``system.endpoint`` in ``loadgen_argv``: the runner
always calls ``processes`` first, then ``loadgen_argv``, one system at a time.

Every load generator measures twice per start: ``x1`` (one request in flight: latency
with nothing queued) and ``xN`` (``--connections`` in flight: the rate).
"""

from __future__ import annotations

import math
import os
import secrets
import socket
from abc import abstractmethod
from typing import Any

from bench.procs import ProcSpec, free_port
from bench.scenarios.base import Options, Row, Scenario, Window, row_from_summary
from bench.systems import BENCH_DIR, Context, System

#: The Redis db of the plugin benches' split-mode systems (the harness uses 11-13).
PLUGIN_REDIS_DB = 14
#: The shared Mosquitto; every run uses a topic prefix of its own below it.
MQTT_BROKER = os.environ.get("BENCH_MQTT_BROKER", "mqtt://127.0.0.1:1883")


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port nothing is bound to right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def new_endpoint(plugin: str, host: str) -> dict[str, Any]:
    """Fresh addresses for one start of a ``plugin`` server."""
    if plugin == "udp":
        return {"host": host, "udp_port": free_udp_port(host)}
    if plugin == "mqtt":
        return {"broker": MQTT_BROKER, "mqtt_prefix": f"bench-{secrets.token_hex(4)}"}
    return {"host": host, "http_port": free_port(host)}  # webrtc signaling, sms webhooks


class PluginSystem(System):
    """A server of one plugin bench; it picks its addresses when it is started."""

    serves_http = False
    plugin: str

    def __init__(self) -> None:
        self.endpoint: dict[str, Any] = {}

    def processes(self, ctx: Context) -> list[ProcSpec]:
        self.endpoint = new_endpoint(self.plugin, ctx.host)
        return self.specs(ctx)

    @abstractmethod
    def specs(self, ctx: Context) -> list[ProcSpec]:
        """The processes, once ``self.endpoint`` holds this start's addresses."""

    def env(self, ctx: Context) -> dict[str, str]:
        env = self.base_env(ctx)
        point = self.endpoint
        if "udp_port" in point:
            env["BENCH_UDP_BIND"] = f"{point['host']}:{point['udp_port']}"
        if "http_port" in point:
            env["BENCH_BIND"] = f"{point['host']}:{point['http_port']}"
        if "mqtt_prefix" in point:
            env["BENCH_MQTT_BROKER"] = point["broker"]
            env["BENCH_MQTT_PREFIX"] = point["mqtt_prefix"]
        return env


class SwitchboardPlugin(PluginSystem):
    """Switchboard with one plugin (bench/plugins_site): ``split`` (gateway + worker) or ``run``."""

    side = "switchboard"
    baseline_capable = True

    def __init__(self, plugin: str, mode: str) -> None:
        super().__init__()
        if mode not in ("split", "run"):
            raise ValueError(mode)
        self.plugin = plugin
        self.mode = mode
        self.name = f"{plugin}-switchboard-{mode}"
        self.aliases = (f"switchboard-{mode}",)  # `--systems switchboard-run` takes it too
        extra = " + http" if plugin in ("webrtc", "sms") else ""
        if mode == "split":
            self.redis_db = PLUGIN_REDIS_DB
            self.description = f"switchboard gateway ({plugin}{extra} plugin) + 1 worker, Redis layer"
        else:
            self.redis_db = None  # `run` always uses the in-memory layer
            self.description = f"switchboard run ({plugin}{extra} plugin; one process, in-memory layer)"

    def command(self, ctx: Context, *args: str) -> list[str]:
        return [
            ctx.main_python, "-m", "switchboard", *args,
            "--settings", "plugins_site.settings", "--pythonpath", str(self.bench_dir), "--log-level", "WARNING",
        ]

    def env(self, ctx: Context) -> dict[str, str]:
        return {**super().env(ctx), "BENCH_PLUGIN": self.plugin}

    def specs(self, ctx: Context) -> list[ProcSpec]:
        env = self.env(ctx)
        if self.mode == "run":
            return [ProcSpec("server", self.command(ctx, "run"), self.bench_dir, env)]
        return [
            ProcSpec("gateway", self.command(ctx, "gateway"), self.bench_dir, env),
            ProcSpec("worker1", self.command(ctx, "worker"), self.bench_dir, env),
        ]


class BareSystem(PluginSystem):
    """A baseline: one process of ``bench/plugins_site/bare_*``, no Switchboard."""

    side = "bare"
    redis_db = None

    def __init__(self, plugin: str, description: str) -> None:
        super().__init__()
        self.plugin = plugin
        self.name = f"{plugin}-bare"
        self.aliases = ("bare",)
        self.description = description

    @abstractmethod
    def argv(self, ctx: Context) -> list[str]:
        """The command line, once ``self.endpoint`` is set."""

    def specs(self, ctx: Context) -> list[ProcSpec]:
        return [ProcSpec("bare", self.argv(ctx), BENCH_DIR, self.env(ctx))]


def switchboard_pair(plugin: str) -> tuple[SwitchboardPlugin, SwitchboardPlugin]:
    return SwitchboardPlugin(plugin, "split"), SwitchboardPlugin(plugin, "run")


class PluginScenario(Scenario):
    """A plugin bench: its own systems, two labelled windows (``x1``, ``xN``) per start."""

    plugin: str
    #: The systems this scenario runs on (and only these); register them with the harness.
    own_systems: tuple[PluginSystem, ...] = ()

    def __init__(self, max_times: tuple[float, float] | None = None, *, single_round: bool = False) -> None:
        #: Upper bounds on (warm-up, counted seconds): the shared harness runs these
        #: scenarios with shorter windows than its own default 1 s + 5 s.
        self.max_times = max_times
        #: One round in the shared harness, where the whole run must fit in ten minutes.
        self.single_round = single_round

    def applies_to(self, system: System) -> bool:
        # By family: a ``--baseline`` copy (``udp-switchboard-run@abc1234``) runs where its current self does.
        return any(system.family_name == own.name for own in self.own_systems)

    def window_times(self, options: Options) -> tuple[float, float]:
        """(warm-up, counted seconds) of the xN window; x1 gets about half and 40 %."""
        if self.max_times is None:
            return options.warmup, options.duration
        return min(options.warmup, self.max_times[0]), min(options.duration, self.max_times[1])

    def timeout(self, options: Options) -> float:
        warmup, duration = self.window_times(options)
        # readiness (up to 30 s) + x1 + xN + drains + peer set-up, with room to spare
        return 2 * (warmup + duration) + 75.0

    def common_args(self, options: Options) -> list[str]:
        warmup, duration = self.window_times(options)
        return ["--warmup", str(warmup), "--duration", str(duration)]

    @abstractmethod
    def loadgen_argv(self, system: System, ctx: Context, options: Options, python: str) -> list[str]:
        """Command line of the load generator (reads ``system.endpoint``)."""

    def rows(self, system: System, result: dict[str, Any], windows: list[Window], options: Options) -> list[Row]:
        by_label = {w.label: w for w in windows}
        rows = []
        for item in result.get("rows", []):
            label = str(item["label"])
            row = row_from_summary(self.name, system, label, item, by_label.get(label), int(item.get("concurrency", 0)))
            row.errors = int(item.get("errors", 0))
            if "broker_cpu_s" in item:  # mqtt-rtt: Mosquitto's CPU in the counted window
                row.extra["broker_cpu_s"] = float(item["broker_cpu_s"] if item["broker_cpu_s"] is not None else math.nan)
            if item.get("lost"):
                row.notes.append(f"{label}: {item['lost']} request(s) unanswered within the loss timeout (counted as errors)")
            if item.get("late"):
                row.notes.append(f"{label}: {item['late']} answer(s) arrived after their request was counted lost")
            if item.get("capped"):
                row.notes.append(f"{label}: hit the load generator's request cap before the time was up")
            row.notes.extend(f"{label}: {sample}" for sample in item.get("error_samples", []))
            rows.append(row)
        return rows
