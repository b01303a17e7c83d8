"""Routing for the UDP end-to-end tests: the example's echo consumer, plus counting.

The count of handled datagrams is what the test compares with the gateway's counters. It
is answered on request (a ``stats?<nonce>`` datagram) so the test can tell when the worker has
caught up, and written to ``UDP_TEST_HANDLED_FILE`` when the process exits cleanly.
"""

from __future__ import annotations

import atexit
import json
import os

from udpdemo.consumers import UppercaseEchoConsumer

from switchboard.consumers import ProtocolTypeRouter

# Per process, not per instance: UDP consumer instances must not hold state, but the test
# needs one number for the whole worker process.
HANDLED = {"datagrams": 0, "replies_dropped": 0}


class CountingEchoConsumer(UppercaseEchoConsumer):
    """The example's uppercase echo; ``stats?`` is answered with the handled count."""

    async def datagram_received(self, data: bytes, client: tuple[str, int]) -> None:
        HANDLED["datagrams"] += 1
        if data.startswith(b"stats?"):
            answer = b"handled=%d;%s" % (HANDLED["datagrams"], data.removeprefix(b"stats?"))
            if not await self.send_datagram(answer, client):
                HANDLED["replies_dropped"] += 1
            return
        await super().datagram_received(data, client)


@atexit.register
def _write_handled() -> None:
    path = os.environ.get("UDP_TEST_HANDLED_FILE")
    if path:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(HANDLED, handle)


application = ProtocolTypeRouter({"udp": CountingEchoConsumer.as_asgi()})
