"""Routing of the WebRTC e2e site: the example's chat consumers (WebSocket and WebRTC) plus
the test consumers."""

from django.core.asgi import get_asgi_application

django_http = get_asgi_application()

from chat.consumers import ChatConsumer  # noqa: E402
from django.urls import path  # noqa: E402
from webrtc_consumers import EchoConsumer, SyncJsonEchoConsumer  # noqa: E402
from webrtcdemo.consumers import WebrtcChatConsumer  # noqa: E402

from switchboard.consumers import ProtocolTypeRouter, URLRouter  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_http,
        "websocket": URLRouter([path("ws/chat/<str:room>/", ChatConsumer.as_asgi())]),
        "webrtc": URLRouter(
            [
                path("webrtc/offer/test/echo/", EchoConsumer.as_asgi()),
                path("webrtc/offer/test/json/", SyncJsonEchoConsumer.as_asgi()),
                path("webrtc/offer/<str:room>/", WebrtcChatConsumer.as_asgi()),
            ]
        ),
    }
)
