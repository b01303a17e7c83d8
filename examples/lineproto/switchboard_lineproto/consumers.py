"""Consumers for the line protocol: override ``receive_line``, answer with ``send_line``.

The worker side of ``lineproto.md``, in the style of Switchboard's own consumer bases
(``switchboard.consumers.udp``): one handler per event type, helpers that build valid
replies. A TCP connection is sticky, so one instance sees all of a client's lines in
order and may keep per-connection state in attributes (a name, a login), as a WebSocket
consumer does. Group messages reach it as for any consumer (``channel_name`` is the
connection's reply channel).
"""

from __future__ import annotations

from typing import cast

from switchboard.consumers.asgi import Message
from switchboard.consumers.base import AsyncConsumer
from switchboard.consumers.exceptions import StopConsumer

from .messages import LineCloseEvent, LineSendEvent


class AsyncLineConsumer(AsyncConsumer):
    """Async line consumer: override :meth:`receive_line` (and :meth:`connect`, :meth:`disconnect`)."""

    async def line_connect(self, message: Message) -> None:
        await self.connect()

    async def connect(self) -> None:
        """A client connected; greet it with :meth:`send_line` or turn it away with :meth:`close`."""

    async def line_received(self, message: Message) -> None:
        await self.receive_line(message["text"])

    async def receive_line(self, text: str) -> None:
        """Handle one line (without its terminator). Override this."""
        raise NotImplementedError(f"{type(self).__name__} must define receive_line(text)")

    async def send_line(self, text: str) -> None:
        """Write ``text`` to the client as one line (the gateway adds the terminator)."""
        if not isinstance(text, str):
            raise TypeError(f"send_line needs str, got {type(text).__name__}")
        reply: LineSendEvent = {"type": "line.send", "text": text}
        await self.send(cast(Message, reply))  # a TypedDict is a dict at run time

    async def close(self, text: str | None = None) -> None:
        """End the connection, writing ``text`` as a last line first if given."""
        reply: LineCloseEvent = {"type": "line.close", "text": text}
        await self.send(cast(Message, reply))  # a TypedDict is a dict at run time

    async def line_disconnect(self, message: Message) -> None:
        await self.disconnect(message["reason"])
        raise StopConsumer()

    async def disconnect(self, reason: str) -> None:
        """The connection ended (``reason`` as in lineproto.md, *Disconnect*)."""


#: The async consumer under the short name: there is no older sync API to stay compatible with.
LineConsumer = AsyncLineConsumer
