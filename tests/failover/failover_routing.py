"""Routing of the failover deployments: chat rooms over WebSocket, and the durable chat log."""

from failover_consumers import ChatLogConsumer, RoomConsumer

from switchboard.consumers import ChannelNameRouter, ProtocolTypeRouter, URLRouter

application = ProtocolTypeRouter(
    {
        "websocket": URLRouter(RoomConsumer.routes()),
        "channel": ChannelNameRouter({"chatlog": ChatLogConsumer.as_asgi()}),
    }
)
