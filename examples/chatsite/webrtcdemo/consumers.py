"""A chat member over a WebRTC data channel, in the same rooms as the WebSocket chat.

The WebSocket ``ChatConsumer`` (``chat/consumers.py``) and this consumer join the same
group, ``chat.<room>``, and speak the same group message, ``{"type": "chat.message",
"message": ...}``: a browser on a data channel and browsers on WebSockets see each other's
messages, and neither consumer knows the other's protocol.
"""

from __future__ import annotations

from typing import Any

from switchboard.consumers.webrtc import AsyncJsonWebrtcConsumer

#: The data channel the page opens for chat messages.
CHAT_LABEL = "chat"


class WebrtcChatConsumer(AsyncJsonWebrtcConsumer):
    """One browser peer in room ``url_route["room"]``; JSON ``{"message": ...}`` both ways.

    With ``post_requires_login`` (set by the example's routing, behind
    ``AuthMiddlewareStack``: the signaling request carried the site's cookies) only a
    logged-in user may post, as on the WebSocket chat. In this site the gateway already
    refuses offers of visitors who are not logged in (the webrtc plugin's
    ``require_login`` is on wherever the site has logins, docs/webrtc.md): a peer costs the
    gateway sockets and a slot, which strangers must not be able to fill.
    """

    post_requires_login: bool = False

    async def connect(self) -> None:
        self.room = self.scope["url_route"]["kwargs"]["room"]
        self.group = f"chat.{self.room}"
        await self.channel_layer.group_add(self.group, self.channel_name)

    async def disconnect(self, reason: str) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, label: str, content: Any) -> None:
        if label != CHAT_LABEL:
            return
        user = self.scope.get("user")
        if self.post_requires_login and (user is None or not user.is_authenticated):
            await self.send_json(CHAT_LABEL, {"error": "log in to post"})
            return
        try:
            message = str(content["message"])[:2000]
        except (KeyError, TypeError):
            await self.send_json(CHAT_LABEL, {"error": 'send JSON like {"message": "hi"}'})
            return
        await self.channel_layer.group_send(self.group, {"type": "chat.message", "message": message})

    async def invalid_json(self, label: str, text: str | None, bytes_data: bytes | None, error: str) -> None:
        await self.send_json(CHAT_LABEL, {"error": 'send JSON like {"message": "hi"}'})

    async def chat_message(self, event: dict[str, Any]) -> None:
        """A message of the room, from any member (WebSocket or WebRTC)."""
        await self.send_json(CHAT_LABEL, {"message": event["message"]})
