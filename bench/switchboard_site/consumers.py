"""The benchmark consumers, written with Switchboard (mirror of channels_site)."""

from typing import Any

from switchboard.consumers import AsyncHttpConsumer, AsyncWebsocketConsumer


class EchoConsumer(AsyncWebsocketConsumer):
    """Send every frame straight back: the client's timestamp rides inside the text."""

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is not None:
            await self.send(text_data=text_data)
        else:
            await self.send(bytes_data=bytes_data)


class RoomConsumer(AsyncWebsocketConsumer):
    """Group chat: each frame goes to every member of ``room.<name>``."""

    async def connect(self) -> None:
        self.group = "room." + self.scope["url_route"]["kwargs"]["name"]
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.channel_layer.group_send(self.group, {"type": "room.message", "text": text_data or ""})

    async def room_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["text"])


class LongPollConsumer(AsyncHttpConsumer):
    """A held long-poll: takes the request and answers nothing (the idle-memory scenario)."""

    async def handle(self, body: bytes) -> None:
        pass
