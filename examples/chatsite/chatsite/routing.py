"""The application workers run: one routing for every protocol, as in Django Channels."""

from django.core.asgi import get_asgi_application

django_http = get_asgi_application()  # set Django up before consumers import models

from chat.consumers import ChatConsumer  # noqa: E402
from django.urls import path  # noqa: E402
from emaildemo.consumers import MailToChatConsumer  # noqa: E402
from udpdemo.consumers import UppercaseEchoConsumer  # noqa: E402

from switchboard.consumers import ProtocolTypeRouter, URLRouter  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_http,
        "websocket": URLRouter([path("ws/chat/<str:room>/", ChatConsumer.as_asgi())]),
        "udp": UppercaseEchoConsumer.as_asgi(),
        "email": MailToChatConsumer.as_asgi(),
    }
)
