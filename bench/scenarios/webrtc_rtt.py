"""WebRTC data channel echo through the ``webrtc`` plugin, beside a bare aiortc echo peer."""

from __future__ import annotations

from bench.plugins_site.common import WEBRTC_OFFER_PATH
from bench.scenarios.base import Options
from bench.scenarios.plugin_base import BareSystem, PluginScenario, switchboard_pair
from bench.systems import Context, System

PEERS = 4


class BareWebrtcEcho(BareSystem):
    def __init__(self) -> None:
        super().__init__("webrtc", "aiortc answering peer echoing on its data channels, aiohttp signaling "
                                   "(bench/plugins_site/bare_webrtc.py)")

    def argv(self, ctx: Context) -> list[str]:
        point = self.endpoint
        return [ctx.main_python, "-m", "plugins_site.bare_webrtc", "--bind", f"{point['host']}:{point['http_port']}"]


class WebrtcRtt(PluginScenario):
    name = "webrtc-rtt"
    description = f"WebRTC data channel echo: {PEERS} aiortc client peers, N messages in flight over them"
    plugin = "webrtc"
    own_systems = (*switchboard_pair("webrtc"), BareWebrtcEcho())

    def loadgen_argv(self, system: System, ctx: Context, options: Options, python: str) -> list[str]:
        point = system.endpoint  # type: ignore[attr-defined]
        return [
            python, "-m", "bench.loadgen.webrtc_rtt",
            "--url", f"http://{point['host']}:{point['http_port']}{WEBRTC_OFFER_PATH}",
            "--peers", str(min(PEERS, options.connections)),
            "--window", str(options.connections), *self.common_args(options),
        ]
