"""UDP echo through the ``udp`` plugin, beside a bare asyncio ``DatagramProtocol`` echo."""

from __future__ import annotations

from bench.scenarios.base import Options
from bench.scenarios.plugin_base import BareSystem, PluginScenario, switchboard_pair
from bench.systems import Context, System


class BareUdpEcho(BareSystem):
    def __init__(self) -> None:
        super().__init__("udp", "asyncio DatagramProtocol echo on uvloop, one process (bench/plugins_site/bare_udp.py)")

    def argv(self, ctx: Context) -> list[str]:
        point = self.endpoint
        return [ctx.main_python, "-m", "plugins_site.bare_udp", "--bind", f"{point['host']}:{point['udp_port']}"]


class UdpEcho(PluginScenario):
    name = "udp-echo"
    description = "UDP datagrams echoed by a consumer: N in flight from one client socket"
    plugin = "udp"
    own_systems = (*switchboard_pair("udp"), BareUdpEcho())

    def loadgen_argv(self, system: System, ctx: Context, options: Options, python: str) -> list[str]:
        point = system.endpoint  # type: ignore[attr-defined]
        return [
            python, "-m", "bench.loadgen.udp_echo",
            "--host", point["host"], "--port", str(point["udp_port"]),
            "--window", str(options.connections), *self.common_args(options),
        ]
