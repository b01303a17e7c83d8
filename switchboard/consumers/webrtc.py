"""WebRTC data channel consumers, shaped like the WebSocket consumers.

A consumer instance is one peer (``specs/webrtc.md``): ``connect()`` when the peer
connection is up, ``channel_open(label)`` / ``channel_message(label, ...)`` /
``channel_close(label)`` for its data channels, ``disconnect(reason)`` once at the end.
``send(label, ...)`` writes to one of the peer's open channels and ``close()`` ends the
peer. ``groups`` are joined before ``connect()`` and left before ``disconnect()``, exactly
as for ``WebsocketConsumer``, and group messages (``chat.message``) reach handlers the same
way, so one room can mix WebSocket and WebRTC members.

There is no accept step: signaling already agreed to the peer. To refuse one, raise
``DenyConnection`` in ``connect()`` (or call ``close()``).

``JsonWebrtcConsumer`` / ``AsyncJsonWebrtcConsumer`` exchange JSON text messages. A
message that is not JSON text goes to ``invalid_json`` (logs by default) rather than
raising: a peer's bad input must not end the consumer instance, which would leave the
peer's later events without their consumer.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from asgiref.sync import async_to_sync

from .asgi import Message
from .base import AsyncConsumer, SyncConsumer
from .exceptions import DenyConnection, StopConsumer

logger = logging.getLogger("switchboard.consumers.webrtc")

CLOSE_MESSAGE: Message = {"type": "webrtc.close"}


def send_message(label: str, text: str | None, bytes_data: bytes | None) -> Message:
    """A ``webrtc.datachannel.send`` message; TypeError for what can never be valid.

    The gateway checks it again (and the channel, and the sizes) and counts refusals;
    catching plain mistakes here points the developer at their own line.
    """
    if not isinstance(label, str):
        raise TypeError(f"label must be a str, got {type(label).__name__}")
    if (text is None) == (bytes_data is None):
        raise TypeError("send needs exactly one of text and bytes_data")
    if text is not None:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return {"type": "webrtc.datachannel.send", "label": label, "text": text}
    if not isinstance(bytes_data, bytes | bytearray | memoryview):
        raise TypeError(f"bytes_data must be bytes, got {type(bytes_data).__name__}")
    return {"type": "webrtc.datachannel.send", "label": label, "bytes": bytes(bytes_data)}


def message_data(message: Message) -> tuple[str, str | None, bytes | None]:
    """``(label, text, bytes)`` of a ``webrtc.datachannel.message`` event."""
    return message["label"], message.get("text"), message.get("bytes")


class AsyncWebrtcConsumer(AsyncConsumer):
    """Asynchronous WebRTC consumer: override connect, channel_message, disconnect..."""

    async def webrtc_connect(self, message: Message) -> None:
        await self.join_groups()
        try:
            await self.connect()
        except DenyConnection:
            await self.close()

    async def connect(self) -> None:
        """The peer is connected. Raise ``DenyConnection`` to close it."""

    async def webrtc_datachannel_open(self, message: Message) -> None:
        await self.channel_open(message["label"])

    async def channel_open(self, label: str) -> None:
        """The peer opened data channel ``label``; ``send(label, ...)`` works from now on."""

    async def webrtc_datachannel_message(self, message: Message) -> None:
        label, text, data = message_data(message)
        await self.channel_message(label, text=text, bytes_data=data)

    async def channel_message(self, label: str, text: str | None = None, bytes_data: bytes | None = None) -> None:
        """One message on channel ``label``: exactly one of ``text`` and ``bytes_data``."""

    async def webrtc_datachannel_close(self, message: Message) -> None:
        await self.channel_close(message["label"])

    async def channel_close(self, label: str) -> None:
        """Channel ``label`` closed."""

    async def send(  # type: ignore[override]
        self, label: str, text: str | None = None, bytes_data: bytes | None = None
    ) -> None:
        """Send one message on the peer's open channel ``label``."""
        await super().send(send_message(label, text, bytes_data))

    async def close(self) -> None:
        """Close the peer; ``disconnect("consumer_closed")`` follows."""
        await super().send(dict(CLOSE_MESSAGE))

    async def webrtc_disconnect(self, message: Message) -> None:
        await self.leave_groups()
        await self.disconnect(str(message.get("reason", "")))
        raise StopConsumer()

    async def disconnect(self, reason: str) -> None:
        """The peer is gone (``reason`` as in specs/webrtc.md: closed, failed, ...)."""


class WebrtcConsumer(SyncConsumer):
    """Synchronous WebRTC consumer (handlers run in a thread and may use the ORM)."""

    def webrtc_connect(self, message: Message) -> None:
        async_to_sync(self.join_groups)()
        try:
            self.connect()
        except DenyConnection:
            self.close()

    def connect(self) -> None:
        """The peer is connected. Raise ``DenyConnection`` to close it."""

    def webrtc_datachannel_open(self, message: Message) -> None:
        self.channel_open(message["label"])

    def channel_open(self, label: str) -> None:
        """The peer opened data channel ``label``."""

    def webrtc_datachannel_message(self, message: Message) -> None:
        label, text, data = message_data(message)
        self.channel_message(label, text=text, bytes_data=data)

    def channel_message(self, label: str, text: str | None = None, bytes_data: bytes | None = None) -> None:
        """One message on channel ``label``: exactly one of ``text`` and ``bytes_data``."""

    def webrtc_datachannel_close(self, message: Message) -> None:
        self.channel_close(message["label"])

    def channel_close(self, label: str) -> None:
        """Channel ``label`` closed."""

    def send(  # type: ignore[override]
        self, label: str, text: str | None = None, bytes_data: bytes | None = None
    ) -> None:
        """Send one message on the peer's open channel ``label``."""
        super().send(send_message(label, text, bytes_data))

    def close(self) -> None:
        """Close the peer; ``disconnect("consumer_closed")`` follows."""
        super().send(dict(CLOSE_MESSAGE))

    def webrtc_disconnect(self, message: Message) -> None:
        async_to_sync(self.leave_groups)()
        self.disconnect(str(message.get("reason", "")))
        raise StopConsumer()

    def disconnect(self, reason: str) -> None:
        """The peer is gone."""


def _log_invalid(consumer: object, label: str, error: str) -> None:
    logger.warning("%s: message on channel %r is not JSON text (%s); ignored", type(consumer).__name__, label, error)


class AsyncJsonWebrtcConsumer(AsyncWebrtcConsumer):
    """Asynchronous consumer exchanging JSON text messages: override ``receive_json``."""

    async def channel_message(self, label: str, text: str | None = None, bytes_data: bytes | None = None) -> None:
        if text is None:
            await self.invalid_json(label, text, bytes_data, "binary message")
            return
        try:
            content = await self.decode_json(text)
        except ValueError as exc:
            await self.invalid_json(label, text, bytes_data, str(exc))
            return
        await self.receive_json(label, content)

    async def receive_json(self, label: str, content: Any) -> None:
        """One decoded JSON message on channel ``label``."""

    async def invalid_json(self, label: str, text: str | None, bytes_data: bytes | None, error: str) -> None:
        """A message that is not JSON text; logged and ignored by default."""
        _log_invalid(self, label, error)

    async def send_json(self, label: str, content: Any) -> None:
        await self.send(label, text=await self.encode_json(content))

    @classmethod
    async def decode_json(cls, text: str) -> Any:
        return json.loads(text)

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        return json.dumps(content)


class JsonWebrtcConsumer(WebrtcConsumer):
    """Synchronous consumer exchanging JSON text messages: override ``receive_json``."""

    def channel_message(self, label: str, text: str | None = None, bytes_data: bytes | None = None) -> None:
        if text is None:
            self.invalid_json(label, text, bytes_data, "binary message")
            return
        try:
            content = self.decode_json(text)
        except ValueError as exc:
            self.invalid_json(label, text, bytes_data, str(exc))
            return
        self.receive_json(label, content)

    def receive_json(self, label: str, content: Any) -> None:
        """One decoded JSON message on channel ``label``."""

    def invalid_json(self, label: str, text: str | None, bytes_data: bytes | None, error: str) -> None:
        """A message that is not JSON text; logged and ignored by default."""
        _log_invalid(self, label, error)

    def send_json(self, label: str, content: Any) -> None:
        self.send(label, text=self.encode_json(content))

    @classmethod
    def decode_json(cls, text: str) -> Any:
        return json.loads(text)

    @classmethod
    def encode_json(cls, content: Any) -> str:
        return json.dumps(content)


__all__ = [
    "AsyncJsonWebrtcConsumer",
    "AsyncWebrtcConsumer",
    "JsonWebrtcConsumer",
    "WebrtcConsumer",
    "message_data",
    "send_message",
]
