"""Low-level HTTP consumers: full control of one response per URL.

The request body may arrive in several ``http.request`` events; it is assembled and
handed to ``handle(body)`` once the last one arrives. ``handle`` answers with
``send_response`` or with ``send_headers`` followed by ``send_body`` calls; passing
``more_body=True`` keeps the response open, which is how streamed responses and
server-sent events are written. When ``handle`` returns (or the client goes away)
``disconnect()`` runs and the instance ends.
"""

from __future__ import annotations

from .asgi import Message
from .base import AsyncConsumer, SyncConsumer
from .exceptions import StopConsumer
from .headers import Headers, normalize_headers


def response_start(status: int, headers: Headers | None) -> Message:
    return {"type": "http.response.start", "status": status, "headers": normalize_headers(headers)}


def response_body(body: bytes, more_body: bool) -> Message:
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise TypeError(f"response body must be bytes, not {type(body).__name__} (encode it first)")
    return {"type": "http.response.body", "body": bytes(body), "more_body": more_body}


class AsyncHttpConsumer(AsyncConsumer):
    """Asynchronous HTTP consumer: override ``handle(body)``."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.body: list[bytes] = []

    async def send_headers(self, *, status: int = 200, headers: Headers | None = None) -> None:
        await self.send(response_start(status, headers))

    async def send_body(self, body: bytes, *, more_body: bool = False) -> None:
        await self.send(response_body(body, more_body))

    async def send_response(self, status: int, body: bytes, *, headers: Headers | None = None) -> None:
        await self.send_headers(status=status, headers=headers)
        await self.send_body(body)

    async def handle(self, body: bytes) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define handle(body)")

    async def disconnect(self) -> None:
        pass

    async def http_request(self, message: Message) -> None:
        chunk = message.get("body")
        if chunk:
            self.body.append(chunk)
        if message.get("more_body"):
            return
        try:
            await self.handle(b"".join(self.body))
        finally:
            await self.disconnect()
        raise StopConsumer()

    async def http_disconnect(self, message: Message) -> None:
        await self.disconnect()
        raise StopConsumer()


class HttpConsumer(SyncConsumer):
    """Synchronous HTTP consumer: override ``handle(body)``; it runs in Django's sync thread."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.body: list[bytes] = []

    def send_headers(self, *, status: int = 200, headers: Headers | None = None) -> None:
        self.send(response_start(status, headers))

    def send_body(self, body: bytes, *, more_body: bool = False) -> None:
        self.send(response_body(body, more_body))

    def send_response(self, status: int, body: bytes, *, headers: Headers | None = None) -> None:
        self.send_headers(status=status, headers=headers)
        self.send_body(body)

    def handle(self, body: bytes) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define handle(body)")

    def disconnect(self) -> None:
        pass

    def http_request(self, message: Message) -> None:
        chunk = message.get("body")
        if chunk:
            self.body.append(chunk)
        if message.get("more_body"):
            return
        try:
            self.handle(b"".join(self.body))
        finally:
            self.disconnect()
        raise StopConsumer()

    def http_disconnect(self, message: Message) -> None:
        self.disconnect()
        raise StopConsumer()
