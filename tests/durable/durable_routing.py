"""Routing of the durable-delivery fault tests: one recording consumer per source."""

from durable_app.consumers import MailRecorder, MqttRecorder, SmsRecorder, TaskRunner

from switchboard.consumers import ChannelNameRouter, ProtocolTypeRouter

application = ProtocolTypeRouter({
    "email": MailRecorder.as_asgi(),
    "mqtt": MqttRecorder.as_asgi(),
    "sms": SmsRecorder.as_asgi(),
    "channel": ChannelNameRouter({"tasks": TaskRunner.as_asgi()}),
})
