"""The application the workers run: the echo consumer of the plugin under test only.

A ``ProtocolTypeRouter`` with one entry, so the worker reads just that protocol's pool
channel (``switchboard.udp``, ``switchboard.mqtt``, ...). MQTT goes through a
``TopicRouter`` as docs/mqtt.md recommends; WebRTC peers through a ``URLRouter`` on the
signaling path, as in docs/webrtc.md.
"""

from django.conf import settings
from django.urls import path
from plugins_site.common import WEBRTC_OFFER_PATH, mqtt_request_topic
from plugins_site.consumers import MqttEchoConsumer, SmsEchoConsumer, UdpEchoConsumer, WebrtcEchoConsumer

from switchboard.consumers import ProtocolTypeRouter, URLRouter
from switchboard.consumers.mqtt import TopicRouter


def _build(plugin: str) -> ProtocolTypeRouter:
    if plugin == "udp":
        return ProtocolTypeRouter({"udp": UdpEchoConsumer.as_asgi()})
    if plugin == "mqtt":
        prefix = settings.MQTT_PREFIX
        routes = {mqtt_request_topic(prefix, "+"): MqttEchoConsumer.as_asgi(prefix=prefix)}
        return ProtocolTypeRouter({"mqtt": TopicRouter(routes)})
    if plugin == "webrtc":
        return ProtocolTypeRouter({"webrtc": URLRouter([path(WEBRTC_OFFER_PATH.lstrip("/"), WebrtcEchoConsumer.as_asgi())])})
    if plugin == "sms":
        return ProtocolTypeRouter({"sms": SmsEchoConsumer.as_asgi()})
    raise ValueError(f"BENCH_PLUGIN must be udp, mqtt, webrtc or sms, not {plugin!r}")


application = _build(settings.PLUGIN)
