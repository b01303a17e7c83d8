"""The application workers run: one routing for every protocol, as in Django Channels."""

from django.core.asgi import get_asgi_application

django_http = get_asgi_application()  # set Django up before consumers import models

from chat.consumers import ChatConsumer, ChatEventsConsumer  # noqa: E402
from django.urls import path, re_path  # noqa: E402
from emaildemo.consumers import MailToChatConsumer  # noqa: E402
from longpolldemo.consumers import ChatPollConsumer  # noqa: E402
from mqttdemo.routing import mqtt_application  # noqa: E402
from showcase.consumers import FeedConsumer  # noqa: E402
from smsdemo.consumers import AutoResponderConsumer  # noqa: E402
from thumbnails.consumers import CHANNEL as THUMBNAILS  # noqa: E402
from thumbnails.consumers import ThumbnailConsumer  # noqa: E402
from udpdemo.consumers import UppercaseEchoConsumer  # noqa: E402
from webrtcdemo.consumers import WebrtcChatConsumer  # noqa: E402

from switchboard.consumers import (  # noqa: E402
    AllowedHostsOriginValidator,
    AuthMiddlewareStack,
    ChannelNameRouter,
    ProtocolTypeRouter,
    URLRouter,
)

#: HTTP: server-sent events for one URL, every other URL to Django's views.
http_urlpatterns = [
    path("events/<str:room>/", ChatEventsConsumer.as_asgi()),
    path("poll/chat/<str:room>/", ChatPollConsumer.as_asgi()),
    re_path(r"", django_http),
]

#: WebSocket routes. Anyone may read the chat and the live feed; posting needs a login
#: (scope["user"]).
websocket_urlpatterns = [
    path("ws/chat/<str:room>/", ChatConsumer.as_asgi(post_requires_login=True)),
    path("ws/feed/", FeedConsumer.as_asgi()),
]

#: WebRTC signaling routes (the offer endpoint is mounted on the HTTP port).
webrtc_urlpatterns = [
    path("webrtc/offer/<str:room>/", WebrtcChatConsumer.as_asgi(post_requires_login=True)),
]

application = ProtocolTypeRouter(
    {
        "http": URLRouter(http_urlpatterns),
        # Pages of other sites may not open the chat socket with our users' cookies; the
        # session cookie then gives scope["user"], as request.user in a view.
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
        "udp": UppercaseEchoConsumer.as_asgi(),
        "email": MailToChatConsumer.as_asgi(),
        "sms": AutoResponderConsumer.as_asgi(),
        "mqtt": mqtt_application,
        # A browser on a data channel chats in the same rooms as the WebSocket clients,
        # with the same rules: the site's origin only, logged-in users post.
        "webrtc": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(webrtc_urlpatterns))),
        # Background work: what views send to the named channel "thumbnails".
        "channel": ChannelNameRouter({THUMBNAILS: ThumbnailConsumer.as_asgi()}),
    }
)
