"""A chat member over a WebRTC data channel, in the same rooms as the WebSocket chat.

The WebSocket ``ChatConsumer`` (``chat/consumers.py``) and this consumer join the same
group, ``chat.<room>``, and speak the same group message, ``{"type": "chat.message",
"message": ..., "user": ...}``: a browser on a data channel and browsers on WebSockets
see each other's messages, with who posted them, and neither consumer knows the other's
protocol.
"""

from __future__ import annotations

from typing import Any

from chat.consumers import chat_payload, room_group
from showcase.feed import publish

from switchboard.consumers import DenyConnection
from switchboard.consumers.webrtc import AsyncJsonWebrtcConsumer

#: The data channel the page opens for chat messages.
CHAT_LABEL = "chat"


class WebrtcChatConsumer(AsyncJsonWebrtcConsumer):
    """One browser peer in room ``url_route["room"]``; JSON ``{"message": ...}`` both ways.

    With ``post_requires_login`` (set by the example's routing, behind
    ``AuthMiddlewareStack``: the signaling request carried the site's cookies) only a
    logged-in user may post, as on the WebSocket chat. A room name that cannot be a group
    name is refused in ``connect()`` (the peer is closed, nothing is logged as an error);
    the example's ``path_pattern`` refuses it even earlier, at signaling (404).
    """

    post_requires_login: bool = False
    group: str | None = None

    async def connect(self) -> None:
        self.room = self.scope["url_route"]["kwargs"]["room"]
        self.group = room_group(self.room)
        if self.group is None:
            raise DenyConnection(f"no such room: {self.room!r}")
        await self.channel_layer.group_add(self.group, self.channel_name)

    async def disconnect(self, reason: str) -> None:
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    def poster(self) -> str | None:
        """Who posts from this peer: a username, "" when logins are off, else None (may not post)."""
        user = self.scope.get("user")
        if user is not None and user.is_authenticated:
            return str(user.get_username())
        return None if self.post_requires_login else ""

    async def receive_json(self, label: str, content: Any) -> None:
        if label != CHAT_LABEL or self.group is None:
            return
        poster = self.poster()
        if poster is None:
            await self.send_json(CHAT_LABEL, {"error": "log in to post"})
            return
        try:
            message = str(content["message"])[:2000]
        except (KeyError, TypeError):
            await self.send_json(CHAT_LABEL, {"error": 'send JSON like {"message": "hi"}'})
            return
        event = {"type": "chat.message", "message": message}
        if poster:
            event["user"] = poster
        await self.channel_layer.group_send(self.group, event)
        await publish(self.channel_layer, "webrtc", f"{poster or 'someone'} in {self.room}: {message}")

    async def invalid_json(self, label: str, text: str | None, bytes_data: bytes | None, error: str) -> None:
        await self.send_json(CHAT_LABEL, {"error": 'send JSON like {"message": "hi"}'})

    async def chat_message(self, event: dict[str, Any]) -> None:
        """A message of the room, from any member (WebSocket or WebRTC), with its poster when known."""
        await self.send_json(CHAT_LABEL, chat_payload(event))
