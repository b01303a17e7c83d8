"""An uppercase echo server over UDP.

Try it with ``nc -u 127.0.0.1 9999`` once the gateway binds the udp plugin there: every
line you type comes back in capitals.
"""

from __future__ import annotations

from showcase.feed import publish

from switchboard.consumers.udp import AsyncUdpConsumer


class UppercaseEchoConsumer(AsyncUdpConsumer):
    """Answers every datagram with the same bytes in upper case, to whoever sent it.

    Stateless on purpose: one instance serves every peer of the socket, and each worker
    may run its own instance, so nothing is kept between datagrams.
    """

    async def datagram_received(self, data: bytes, client: tuple[str, int]) -> None:
        await self.send_datagram(data.upper(), client)
        await publish(self.channel_layer, "udp", f"{client[0]}:{client[1]} sent {data[:100].decode(errors='replace')!r}")
