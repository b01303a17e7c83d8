"""The live feed: every demo tells the ``showcase.feed`` group what just arrived.

A chat post, an e-mail, an SMS, an MQTT reading, a UDP datagram, a WebRTC message, a
finished background job: each consumer that handles one calls :func:`publish` (or
:func:`publish_sync` from sync code) with its protocol and one line of text, and every
open feed page (``FeedConsumer``, a WebSocket in the group) shows it. It is an ordinary
``group_send``: with nobody watching, the group is empty and the message goes nowhere,
and a watcher that cannot keep up misses lines rather than slowing the demos down (the
layer drops group messages to a full channel).
"""

from __future__ import annotations

import datetime
from typing import Any

from asgiref.sync import async_to_sync

#: The group every feed page joins.
FEED_GROUP = "showcase.feed"
#: Longest text of one feed line (the rest is cut off with an ellipsis).
MAX_TEXT = 200


def feed_event(protocol: str, text: str) -> dict[str, Any]:
    """The group message: ``{"type": "feed.event", "protocol", "text", "at"}`` (UTC, ISO 8601)."""
    if len(text) > MAX_TEXT:
        text = text[: MAX_TEXT - 1] + "…"
    at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return {"type": "feed.event", "protocol": protocol, "text": text, "at": at}


async def publish(layer: Any, protocol: str, text: str) -> None:
    """Show one line on every open feed page; ``layer`` is the consumer's ``self.channel_layer``."""
    await layer.group_send(FEED_GROUP, feed_event(protocol, text))


def publish_sync(layer: Any, protocol: str, text: str) -> None:
    """:func:`publish` for sync consumers (runs the send on the worker's loop)."""
    async_to_sync(layer.group_send)(FEED_GROUP, feed_event(protocol, text))
