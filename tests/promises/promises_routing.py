"""Routing of the promises deployments: long-poll, ordering logs, echo consumers, UDP."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

django_http = get_asgi_application()  # set Django up before consumers import anything

from django.urls import path, re_path  # noqa: E402
from longpolldemo.consumers import ChatPollConsumer  # noqa: E402
from promises_consumers import (  # noqa: E402
    EchoConsumer,
    GroupPollConsumer,
    HeldCountConsumer,
    OrderedUdpLogConsumer,
    OrderLogConsumer,
    PidConsumer,
    PublishConsumer,
    SpreadUdpLogConsumer,
)

from switchboard.consumers import ProtocolTypeRouter, URLRouter  # noqa: E402
from switchboard.consumers.asgi import Receive, Scope, Send  # noqa: E402

_ordered_udp = OrderedUdpLogConsumer.as_asgi()
_spread_udp = SpreadUdpLogConsumer.as_asgi()


async def udp_application(scope: Scope, receive: Receive, send: Send) -> None:
    """Routing is by protocol only: pick the consumer by the socket's port (docs/udp.md)."""
    ordered_port = int(os.environ.get("PROMISES_UDP_ORDERED_PORT", "0"))
    app = _ordered_udp if scope["server"][1] == ordered_port else _spread_udp
    await app(scope, receive, send)


application = ProtocolTypeRouter(
    {
        "http": URLRouter(
            [
                path("poll/<str:group>/", GroupPollConsumer.as_asgi()),
                path("poll-short/<str:group>/", GroupPollConsumer.as_asgi(timeout=1.0)),
                path("poll-small/<str:group>/", GroupPollConsumer.as_asgi(history=3)),
                path("poll-chat/<str:room>/", ChatPollConsumer.as_asgi()),
                path("held/", HeldCountConsumer.as_asgi()),
                path("publish/<str:group>/", PublishConsumer.as_asgi()),
                path("pid/", PidConsumer.as_asgi()),
                re_path(r"", django_http),  # the demo's page: a plain Django view
            ]
        ),
        "websocket": URLRouter(
            [
                path("ws/log/<str:name>/", OrderLogConsumer.as_asgi()),
                path("ws/ordered-log/<str:name>/", OrderLogConsumer.as_asgi(ordered=True)),
                path("ws/echo/", EchoConsumer.as_asgi()),
            ]
        ),
        "udp": udp_application,
    }
)
