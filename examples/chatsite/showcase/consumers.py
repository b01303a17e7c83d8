"""The live feed's WebSocket: join ``showcase.feed``, pass every event on as JSON."""

from __future__ import annotations

from typing import Any

from switchboard.consumers import AsyncJsonWebsocketConsumer

from .feed import FEED_GROUP


class FeedConsumer(AsyncJsonWebsocketConsumer):
    """Read only: the page shows ``{"protocol", "text", "at"}`` for each event; input is ignored."""

    groups = [FEED_GROUP]

    async def connect(self) -> None:
        await self.accept()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        pass  # a feed is for watching: what a client sends is not even decoded

    async def feed_event(self, event: dict[str, Any]) -> None:
        await self.send_json({"protocol": event["protocol"], "text": event["text"], "at": event["at"]})
