"""Consumers and routers with the Django Channels API, run by Switchboard workers.

Write ``consumers.py`` and ``routing.py`` as with Channels, importing from
``switchboard.consumers`` instead of ``channels``::

    from switchboard.consumers import AsyncWebsocketConsumer, ProtocolTypeRouter, URLRouter

The one behavioural difference: under a gateway, ``self.channel_name`` is the
connection's reply channel and group messages arrive through the normal ``receive``
(see :mod:`switchboard.consumers.base`).
"""

from switchboard.gateway.layers import get_channel_layer

from .auth import AuthMiddleware, AuthMiddlewareStack, login, logout
from .base import AsyncConsumer, SyncConsumer
from .db import database_sync_to_async
from .durable import delivery_of, idempotent
from .exceptions import DenyConnection, RouteNotFound, StopConsumer
from .http import AsyncHttpConsumer, HttpConsumer
from .middleware import BaseMiddleware
from .routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter
from .security import AllowedHostsOriginValidator, OriginValidator
from .sessions import CookieMiddleware, SessionMiddleware, SessionMiddlewareStack
from .websocket import AsyncJsonWebsocketConsumer, AsyncWebsocketConsumer, JsonWebsocketConsumer, WebsocketConsumer

__all__ = [
    "AllowedHostsOriginValidator",
    "AsyncConsumer",
    "AsyncHttpConsumer",
    "AsyncJsonWebsocketConsumer",
    "AsyncWebsocketConsumer",
    "AuthMiddleware",
    "AuthMiddlewareStack",
    "BaseMiddleware",
    "ChannelNameRouter",
    "CookieMiddleware",
    "DenyConnection",
    "HttpConsumer",
    "JsonWebsocketConsumer",
    "OriginValidator",
    "ProtocolTypeRouter",
    "RouteNotFound",
    "SessionMiddleware",
    "SessionMiddlewareStack",
    "StopConsumer",
    "SyncConsumer",
    "URLRouter",
    "WebsocketConsumer",
    "database_sync_to_async",
    "delivery_of",
    "get_channel_layer",
    "idempotent",
    "login",
    "logout",
]

# Protocol plugins' consumers load on first use, so a project that installs only some
# protocol extras (paho-mqtt, aiortc, twilio...) can still import this package.
_LAZY = {
    "AsyncUdpConsumer": "udp",
    "UdpConsumer": "udp",
    "SyncUdpConsumer": "udp",
    "EmailConsumer": "email",
    "SyncEmailConsumer": "email",
    "ReceivedEmail": "email",
    "MqttConsumer": "mqtt",
    "SyncMqttConsumer": "mqtt",
    "TopicRouter": "mqtt",
    "SmsConsumer": "sms",
    "SyncSmsConsumer": "sms",
    "WebrtcConsumer": "webrtc",
    "AsyncWebrtcConsumer": "webrtc",
    "AsyncJsonWebrtcConsumer": "webrtc",
    "JsonWebrtcConsumer": "webrtc",
    "AsyncLongPollConsumer": "longpoll",
    "LongPollConsumer": "longpoll",
    "publish": "longpoll",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
