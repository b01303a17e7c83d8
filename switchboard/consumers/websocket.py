"""WebSocket consumers with the Django Channels API.

``connect()`` accepts by default; raising ``DenyConnection`` there closes the socket
before it is accepted (the client sees HTTP 403), raising ``AcceptConnection`` accepts it. ``groups`` are joined before
``connect()`` runs and left before ``disconnect()``, and the instance ends with
``StopConsumer`` once the socket is gone.
"""

from __future__ import annotations

import json
from typing import Any

from asgiref.sync import async_to_sync

from .asgi import Message
from .base import AsyncConsumer, SyncConsumer
from .exceptions import AcceptConnection, DenyConnection, StopConsumer
from .headers import Headers, normalize_headers


def accept_message(subprotocol: str | None, headers: Headers | None) -> Message:
    message: Message = {"type": "websocket.accept", "subprotocol": subprotocol}
    if headers:
        message["headers"] = normalize_headers(headers)
    return message


def send_message(text_data: str | None, bytes_data: bytes | None) -> Message:
    if text_data is not None:
        return {"type": "websocket.send", "text": text_data}
    if bytes_data is not None:
        return {"type": "websocket.send", "bytes": bytes_data}
    raise ValueError("You must pass one of bytes_data or text_data")


def close_message(code: int | bool | None, reason: str | None) -> Message:
    message: Message = {"type": "websocket.close"}
    # ``send(..., close=True)`` passes True: close without a code (the server uses 1000).
    if code is not None and code is not True and code is not False:
        message["code"] = code
    if reason:
        message["reason"] = reason
    return message


def disconnect_code(message: Message) -> int:
    code = message.get("code")
    return code if isinstance(code, int) else 1005  # ASGI's "no status received"


class WebsocketConsumer(SyncConsumer):
    """Synchronous WebSocket consumer: override connect, receive and disconnect."""

    def websocket_connect(self, message: Message) -> None:
        async_to_sync(self.join_groups)()
        try:
            self.connect()
        except AcceptConnection:
            self.accept()
        except DenyConnection:
            self.close()

    def connect(self) -> None:
        self.accept()

    def accept(self, subprotocol: str | None = None, headers: Headers | None = None) -> None:
        super().send(accept_message(subprotocol, headers))

    def websocket_receive(self, message: Message) -> None:
        if message.get("text") is not None:
            self.receive(text_data=message["text"])
        else:
            self.receive(bytes_data=message.get("bytes"))

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        pass

    def send(  # type: ignore[override]
        self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool | int = False
    ) -> None:
        super().send(send_message(text_data, bytes_data))
        if close:
            self.close(close)

    def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        super().send(close_message(code, reason))

    def websocket_disconnect(self, message: Message) -> None:
        async_to_sync(self.leave_groups)()
        self.disconnect(disconnect_code(message))
        raise StopConsumer()

    def disconnect(self, code: int) -> None:
        pass


class AsyncWebsocketConsumer(AsyncConsumer):
    """Asynchronous WebSocket consumer: override connect, receive and disconnect."""

    async def websocket_connect(self, message: Message) -> None:
        await self.join_groups()
        try:
            await self.connect()
        except AcceptConnection:
            await self.accept()
        except DenyConnection:
            await self.close()

    async def connect(self) -> None:
        await self.accept()

    async def accept(self, subprotocol: str | None = None, headers: Headers | None = None) -> None:
        await super().send(accept_message(subprotocol, headers))

    async def websocket_receive(self, message: Message) -> None:
        if message.get("text") is not None:
            await self.receive(text_data=message["text"])
        else:
            await self.receive(bytes_data=message.get("bytes"))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        pass

    async def send(  # type: ignore[override]
        self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool | int = False
    ) -> None:
        await super().send(send_message(text_data, bytes_data))
        if close:
            await self.close(close)

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        await super().send(close_message(code, reason))

    async def websocket_disconnect(self, message: Message) -> None:
        await self.leave_groups()
        await self.disconnect(disconnect_code(message))
        raise StopConsumer()

    async def disconnect(self, code: int) -> None:
        pass


class JsonWebsocketConsumer(WebsocketConsumer):
    """WebSocket consumer exchanging JSON text frames: override receive_json."""

    def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        if text_data is None:
            raise ValueError("No text section for incoming WebSocket frame!")
        self.receive_json(self.decode_json(text_data), **kwargs)

    def receive_json(self, content: Any, **kwargs: Any) -> None:
        pass

    def send_json(self, content: Any, close: bool | int = False) -> None:
        self.send(text_data=self.encode_json(content), close=close)

    @classmethod
    def decode_json(cls, text_data: str) -> Any:
        return json.loads(text_data)

    @classmethod
    def encode_json(cls, content: Any) -> str:
        return json.dumps(content)


class AsyncJsonWebsocketConsumer(AsyncWebsocketConsumer):
    """Asynchronous JSON WebSocket consumer: override receive_json."""

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        if text_data is None:
            raise ValueError("No text section for incoming WebSocket frame!")
        await self.receive_json(await self.decode_json(text_data), **kwargs)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        pass

    async def send_json(self, content: Any, close: bool | int = False) -> None:
        await self.send(text_data=await self.encode_json(content), close=close)

    @classmethod
    async def decode_json(cls, text_data: str) -> Any:
        return json.loads(text_data)

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        return json.dumps(content)
