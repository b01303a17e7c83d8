"""MQTT request/reply through Mosquitto and the ``mqtt`` plugin, beside a bare paho echo client."""

from __future__ import annotations

from bench.scenarios.base import Options
from bench.scenarios.plugin_base import BareSystem, PluginScenario, switchboard_pair
from bench.systems import Context, System


class BareMqttEcho(BareSystem):
    def __init__(self) -> None:
        super().__init__("mqtt", "one paho client answering requests from on_message (bench/plugins_site/bare_mqtt.py)")

    def argv(self, ctx: Context) -> list[str]:
        point = self.endpoint
        return [ctx.main_python, "-m", "plugins_site.bare_mqtt", "--broker", point["broker"], "--prefix", point["mqtt_prefix"]]


class MqttRtt(PluginScenario):
    name = "mqtt-rtt"
    description = "MQTT request on <prefix>/req/<n>, reply on <prefix>/resp/<n>, QoS 0, through Mosquitto"
    plugin = "mqtt"
    own_systems = (*switchboard_pair("mqtt"), BareMqttEcho())

    def loadgen_argv(self, system: System, ctx: Context, options: Options, python: str) -> list[str]:
        point = system.endpoint  # type: ignore[attr-defined]
        return [
            python, "-m", "bench.loadgen.mqtt_rtt",
            "--broker", point["broker"], "--prefix", point["mqtt_prefix"],
            "--window", str(options.connections), *self.common_args(options),
        ]
