"""Low-level HTTP consumers: full control of one response per URL.

The request body may arrive in several ``http.request`` events; it is assembled and
handed to ``handle(body)`` once the last one arrives. ``handle`` answers with
``send_response`` or with ``send_headers`` followed by ``send_body`` calls; passing
``more_body=True`` keeps the response open, which is how streamed responses and
server-sent events are written.

When ``handle`` returns with the response finished (a body sent with ``more_body=False``),
``disconnect()`` runs and the instance ends, as in Channels. When it returns with the
response *unfinished* — headers sent and the body left open (server-sent events), or
nothing sent yet (long-poll) — the instance stays alive: other messages, such as group
messages, reach their handlers (``chat_message``), which write to the response with
``send_body``. The instance ends, after ``disconnect()``, once a handler finishes the
response or raises, or the client goes away (``http.disconnect``). An instance cancelled
while it waits (a worker shutting down) does not call ``disconnect()``: the client has not
left, and its connection may go on with another worker. Loop in ``handle`` instead and the
instance cannot see ``http.disconnect`` until the loop ends: keep ``handle`` short and let
handlers do the writing.
"""

from __future__ import annotations

from .asgi import Message
from .base import AsyncConsumer, SyncConsumer
from .db import database_sync_to_async
from .exceptions import StopConsumer
from .headers import Headers, normalize_headers


def response_start(status: int, headers: Headers | None) -> Message:
    return {"type": "http.response.start", "status": status, "headers": normalize_headers(headers)}


def response_body(body: bytes, more_body: bool) -> Message:
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise TypeError(f"response body must be bytes, not {type(body).__name__} (encode it first)")
    return {"type": "http.response.body", "body": bytes(body), "more_body": more_body}


class _Exchange:
    """Where one request/response exchange stands, as seen from the consumer's sends."""

    __slots__ = ("disconnected", "finished", "handled", "started")

    def __init__(self) -> None:
        self.started = False  # http.response.start went out
        self.finished = False  # the last body (more_body=False) went out
        self.handled = False  # handle() returned without raising
        self.disconnected = False  # disconnect() ran

    def observe(self, message: Message) -> None:
        kind = message.get("type")
        if kind == "http.response.start":
            self.started = True
        elif kind == "http.response.body" and not message.get("more_body", False):
            self.finished = True

    @property
    def over(self) -> bool:
        """handle() is done and so is the response: nothing more for this instance to do."""
        return self.handled and self.finished

    def first_disconnect(self) -> bool:
        """True the first time only, so ``disconnect()`` runs once whatever ends the instance."""
        if self.disconnected:
            return False
        self.disconnected = True
        return True


class AsyncHttpConsumer(AsyncConsumer):
    """Asynchronous HTTP consumer: override ``handle(body)``."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.body: list[bytes] = []
        self._exchange = _Exchange()

    async def send(self, message: Message) -> None:
        self._exchange.observe(message)
        await super().send(message)

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

    async def _disconnect_once(self) -> None:
        if self._exchange.first_disconnect():
            await self.disconnect()

    async def dispatch(self, message: Message) -> None:
        try:
            await super().dispatch(message)
        except StopConsumer:
            raise
        except Exception:
            # A failing handler ends the instance: the consumer still gets its disconnect().
            await self._disconnect_once()
            raise
        if self._exchange.over:
            await self._disconnect_once()
            raise StopConsumer()

    async def http_request(self, message: Message) -> None:
        chunk = message.get("body")
        if chunk:
            self.body.append(chunk)
        if message.get("more_body"):
            return
        try:
            await self.handle(b"".join(self.body))
        except BaseException:  # failed or cancelled: disconnect() runs, as in Channels
            await self._disconnect_once()
            raise
        self._exchange.handled = True

    async def http_disconnect(self, message: Message) -> None:
        await self._disconnect_once()
        raise StopConsumer()


class HttpConsumer(SyncConsumer):
    """Synchronous HTTP consumer: override ``handle(body)``; it runs in Django's sync thread."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.body: list[bytes] = []
        self._exchange = _Exchange()

    def send(self, message: Message) -> None:  # type: ignore[override]
        self._exchange.observe(message)
        super().send(message)

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

    def _disconnect_once(self) -> None:
        if self._exchange.first_disconnect():
            self.disconnect()

    async def dispatch(self, message: Message) -> None:
        try:
            await super().dispatch(message)
        except StopConsumer:
            raise
        except Exception:
            # A failing handler ends the instance: the consumer still gets its disconnect().
            await database_sync_to_async(self._disconnect_once)()
            raise
        if self._exchange.over:
            await database_sync_to_async(self._disconnect_once)()
            raise StopConsumer()

    def http_request(self, message: Message) -> None:
        chunk = message.get("body")
        if chunk:
            self.body.append(chunk)
        if message.get("more_body"):
            return
        try:
            self.handle(b"".join(self.body))
        except BaseException:  # as in Channels: disconnect() runs whatever handle() did
            self._disconnect_once()
            raise
        self._exchange.handled = True

    def http_disconnect(self, message: Message) -> None:
        self._disconnect_once()
        raise StopConsumer()
