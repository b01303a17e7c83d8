"""The command-line tests' application: Django for HTTP, a WebSocket that refuses one path, a UDP echo."""

from django.core.asgi import get_asgi_application

django_http = get_asgi_application()

from switchboard.consumers import AsyncWebsocketConsumer, ProtocolTypeRouter  # noqa: E402
from switchboard.consumers.email import EmailConsumer  # noqa: E402
from switchboard.consumers.udp import AsyncUdpConsumer  # noqa: E402


class Echo(AsyncWebsocketConsumer):
    """Accepts, except on /ws/refused/ (closed before accepting: the client sees 403)."""

    async def connect(self) -> None:
        if self.scope["path"] == "/ws/refused/":
            await self.close()
            return
        await self.accept()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(text_data=f"echo:{text_data}")


class UdpEcho(AsyncUdpConsumer):
    async def datagram_received(self, data: bytes, client: tuple[str, int]) -> None:
        await self.send_datagram(data, client)


class Mail(EmailConsumer):
    async def email_received(self, message: dict[str, object]) -> None:
        pass


application = ProtocolTypeRouter(
    {"http": django_http, "websocket": Echo.as_asgi(), "udp": UdpEcho.as_asgi(), "email": Mail.as_asgi()}
)
