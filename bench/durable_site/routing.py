"""Routing of the durable-delivery benchmark's Switchboard processes."""

from switchboard.consumers import ChannelNameRouter, ProtocolTypeRouter

from .consumers import MailConsumer, MqttConsumer, TaskConsumer

application = ProtocolTypeRouter({
    "email": MailConsumer.as_asgi(),
    "mqtt": MqttConsumer.as_asgi(),
    "channel": ChannelNameRouter({"bench.tasks": TaskConsumer.as_asgi()}),
})
