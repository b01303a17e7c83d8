"""Signed Twilio SMS webhooks answered inline through the ``sms`` plugin, beside a bare Django view."""

from __future__ import annotations

from bench.plugins_site.common import SMS_INBOUND_PATH
from bench.scenarios.base import Options
from bench.scenarios.plugin_base import BareSystem, PluginScenario, switchboard_pair
from bench.systems import Context, System


class BareSmsView(BareSystem):
    def __init__(self) -> None:
        super().__init__("sms", "an async Django view (signature check + the same TwiML) on uvicorn, one process "
                                "(bench/plugins_site/bare_sms_urls.py)")

    def argv(self, ctx: Context) -> list[str]:
        point = self.endpoint
        return [
            ctx.main_python, "-m", "uvicorn", "plugins_site.bare_sms_asgi:application",
            "--host", point["host"], "--port", str(point["http_port"]),
            # What the http plugin runs: uvloop, httptools, no lifespan, no server header.
            "--loop", "uvloop", "--http", "httptools", "--lifespan", "off", "--no-server-header",
            "--log-level", "warning", "--no-access-log",
        ]

    def env(self, ctx: Context) -> dict[str, str]:
        return {**super().env(ctx), "DJANGO_SETTINGS_MODULE": "plugins_site.bare_sms_settings"}


class SmsRtt(PluginScenario):
    name = "sms-rtt"
    description = "signed Twilio webhook -> consumer -> inline TwiML reply, N keep-alive connections"
    plugin = "sms"
    own_systems = (*switchboard_pair("sms"), BareSmsView())

    def loadgen_argv(self, system: System, ctx: Context, options: Options, python: str) -> list[str]:
        point = system.endpoint  # type: ignore[attr-defined]
        return [
            python, "-m", "bench.loadgen.sms_rtt",
            "--url", f"http://{point['host']}:{point['http_port']}{SMS_INBOUND_PATH}",
            "--connections", str(options.connections), *self.common_args(options),
        ]
