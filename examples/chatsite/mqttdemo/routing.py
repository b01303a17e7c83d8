"""The MQTT entry of the example's ``ProtocolTypeRouter``: one route per topic filter."""

from __future__ import annotations

from switchboard.consumers.mqtt import TopicRouter

from .consumers import PREFIX, REPLIES, TemperatureConsumer, UpperRpcConsumer

#: ``ProtocolTypeRouter({..., "mqtt": mqtt_application})``. The first matching filter wins;
#: the gateway's ``subscriptions`` option decides what reaches the router at all.
mqtt_application = TopicRouter(
    {
        f"{PREFIX}/sensors/+/temp": TemperatureConsumer.as_asgi(),
        f"{PREFIX}/rpc/+": UpperRpcConsumer.as_asgi(),
    }
)

#: The matching ``SWITCHBOARD["PROTOCOLS"]["mqtt"]["subscriptions"]``.
SUBSCRIPTIONS = [f"{PREFIX}/sensors/+/temp", f"{PREFIX}/rpc/+"]

#: The matching ``SWITCHBOARD["PROTOCOLS"]["mqtt"]["publish_topics"]``: where these
#: consumers publish (alerts, RPC answers), and nowhere else, whatever a request says.
PUBLISH_TOPICS = [f"{PREFIX}/alerts/+", f"{PREFIX}/rpc/+/reply", REPLIES]
