"""The chat consumer: everyone in a room's group receives every message of that room."""

from __future__ import annotations

import json
from typing import Any

from switchboard.consumers import AsyncWebsocketConsumer


class ChatConsumer(AsyncWebsocketConsumer):
    """Join the room's group on connect; relay each message to the whole group."""

    async def connect(self) -> None:
        self.room = self.scope["url_route"]["kwargs"]["room"]
        self.group = f"chat.{self.room}"
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            data = json.loads(text_data or "")
            message = str(data["message"])[:2000]
        except (ValueError, KeyError, TypeError):
            await self.send(text_data=json.dumps({"error": "send JSON like {\"message\": \"hi\"}"}))
            return
        await self.channel_layer.group_send(self.group, {"type": "chat.message", "message": message})

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps({"message": event["message"]}))
