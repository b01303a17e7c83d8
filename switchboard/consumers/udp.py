"""UDP consumers: override ``datagram_received``, answer with ``send_datagram``.

A UDP gateway connection is a whole bound socket (``specs/udp.md``), so one consumer
instance sees the datagrams of every peer, and several workers may each run an instance
for the same socket. Keep per-peer state outside the instance (database, cache, groups),
keyed by ``client``.

Sending is best effort, as UDP is: when the gateway's reply channel is full the datagram
is dropped and ``send_datagram`` returns False instead of raising, so back-pressure never
kills the instance (which would lose every datagram queued for it in the worker).
"""

from __future__ import annotations

import logging
from typing import Any

from switchboard.gateway.layers import ChannelFull

from .asgi import Message
from .base import AsyncConsumer, SyncConsumer

logger = logging.getLogger("switchboard.consumers.udp")

Address = tuple[str, int]


def datagram_of(message: Message) -> tuple[bytes, Address]:
    """``(data, client)`` from a ``udp.datagram`` event, with the client as a tuple."""
    host, port = message["client"]
    return message["data"], (host, port)


def send_message(data: bytes | bytearray | memoryview, address: Any) -> Message:
    """Build a ``udp.send`` message; TypeError for what can never be valid.

    The gateway validates the rest (IP literal, port range, size) and counts bad sends;
    catching the plain type mistakes here points the developer at their own line.
    """
    if isinstance(data, str) or not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"send_datagram needs bytes, got {type(data).__name__} (encode text first)")
    if not isinstance(address, list | tuple) or len(address) != 2:
        raise TypeError(f"address must be a (host, port) pair, got {address!r}")
    host, port = address
    return {"type": "udp.send", "data": bytes(data), "address": [host, port]}


class AsyncUdpConsumer(AsyncConsumer):
    """Async UDP consumer: override :meth:`datagram_received`."""

    async def udp_datagram(self, message: Message) -> None:
        """Dispatch target of ``udp.datagram`` events."""
        data, client = datagram_of(message)
        await self.datagram_received(data, client)

    async def datagram_received(self, data: bytes, client: Address) -> None:
        """Handle one datagram from ``client`` (``(host, port)``). Override this."""
        raise NotImplementedError(f"{type(self).__name__} must define datagram_received(data, client)")

    async def send_datagram(self, data: bytes | bytearray | memoryview, address: Any) -> bool:
        """Send ``data`` to ``address`` through the socket the datagram came in on.

        Returns False (and logs) when the gateway's reply channel is full: the datagram is
        dropped, as the network itself might have dropped it.
        """
        try:
            await self.send(send_message(data, address))
        except ChannelFull:
            logger.warning("udp reply to %s dropped: the gateway's reply channel is full", address[0])
            return False
        return True


#: ``UdpConsumer`` is the async consumer: unlike ``WebsocketConsumer`` there is no older
#: synchronous API of that name to stay compatible with.
UdpConsumer = AsyncUdpConsumer


class SyncUdpConsumer(SyncConsumer):
    """Synchronous UDP consumer (runs in a thread; may use the ORM)."""

    def udp_datagram(self, message: Message) -> None:
        """Dispatch target of ``udp.datagram`` events."""
        data, client = datagram_of(message)
        self.datagram_received(data, client)

    def datagram_received(self, data: bytes, client: Address) -> None:
        """Handle one datagram from ``client`` (``(host, port)``). Override this."""
        raise NotImplementedError(f"{type(self).__name__} must define datagram_received(data, client)")

    def send_datagram(self, data: bytes | bytearray | memoryview, address: Any) -> bool:
        """Send ``data`` to ``address``; False when the gateway's reply channel is full."""
        try:
            self.send(send_message(data, address))
        except ChannelFull:
            logger.warning("udp reply to %s dropped: the gateway's reply channel is full", address[0])
            return False
        return True


__all__ = ["AsyncUdpConsumer", "SyncUdpConsumer", "UdpConsumer", "datagram_of", "send_message"]
