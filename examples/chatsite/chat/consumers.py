"""The chat consumers: everyone in a room's group receives every message of that room.

Two ways in, one group per room (``chat.<room>``): a WebSocket (``ChatConsumer``: read and,
when logged in, post) and a server-sent event stream (``ChatEventsConsumer``: read only,
for ``EventSource`` and ``curl``). E-mail, MQTT and WebRTC demos post to the same groups
with the same message, ``{"type": "chat.message", "message": ...}``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from showcase.feed import publish

from switchboard.consumers import AsyncHttpConsumer, AsyncWebsocketConsumer

# Group names allow [A-Za-z0-9-_.] and 100 characters; "chat." takes 5 of them.
_ROOM_RE = re.compile(r"[A-Za-z0-9_-]{1,90}")


def room_group(room: str) -> str | None:
    """The group of chat room ``room``, or None when the name cannot be a group name."""
    return f"chat.{room}" if _ROOM_RE.fullmatch(room) else None


def chat_payload(event: dict[str, Any]) -> dict[str, Any]:
    """What a client sees of a ``chat.message``: the text, and who posted it when known."""
    payload = {"message": event["message"]}
    if event.get("user"):
        payload["user"] = event["user"]
    return payload


class ChatConsumer(AsyncWebsocketConsumer):
    """Join the room's group on connect; relay each message to the whole group.

    With ``post_requires_login`` (the example's routing sets it, behind
    ``AuthMiddlewareStack``) anyone may read but only a logged-in user may post; a post
    from anyone else is answered with an error and goes nowhere. Without it — a routing
    with no ``AuthMiddleware`` has no notion of users — everyone may post.
    """

    post_requires_login: bool = False
    group: str | None = None

    async def connect(self) -> None:
        self.room = self.scope["url_route"]["kwargs"]["room"]
        self.group = room_group(self.room)
        if self.group is None:
            await self.close()  # before accept: the client sees 403
            return
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    def poster(self) -> str | None:
        """Who may post from this connection: a username, "" when logins are off, else None."""
        if not self.post_requires_login:
            return ""
        user = self.scope.get("user")  # resolved by AuthMiddleware before connect()
        if user is None or not user.is_authenticated:
            return None
        return str(user.get_username())

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.group is None:
            return
        poster = self.poster()
        if poster is None:
            await self.send(text_data=json.dumps({"error": "log in to post"}))
            return
        try:
            data = json.loads(text_data or "")
            message = str(data["message"])[:2000]
        except (ValueError, KeyError, TypeError):
            await self.send(text_data=json.dumps({"error": "send JSON like {\"message\": \"hi\"}"}))
            return
        event = {"type": "chat.message", "message": message}
        if poster:
            event["user"] = poster
        await self.channel_layer.group_send(self.group, event)
        await publish(self.channel_layer, "websocket", f"{poster or 'someone'} in {self.room}: {message}")

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data=json.dumps(chat_payload(event)))


class ChatEventsConsumer(AsyncHttpConsumer):
    """``GET /events/<room>/``: the room's messages as server-sent events, one ``data:`` line each.

    ``handle()`` joins the room's group, sends the headers and a first comment line (so the
    client knows it is subscribed), and returns with the response open. Each group message
    then reaches ``chat_message``, which writes one event; the client going away ends the
    response and ``disconnect()`` leaves the group. Under Switchboard the request is sticky,
    so the group messages the gateway forwards reach this very instance.
    """

    group: str | None = None

    async def handle(self, body: bytes) -> None:
        if self.scope.get("method") != "GET":
            await self.send_response(405, b"GET only\n", headers={"Allow": "GET", "Content-Type": "text/plain"})
            return
        self.group = room_group(self.scope["url_route"]["kwargs"]["room"])
        if self.group is None:
            await self.send_response(404, b"No such room\n", headers={"Content-Type": "text/plain"})
            return
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.send_headers(
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",  # nginx: pass events on as they come
            }
        )
        await self.send_body(b": subscribed\n\n", more_body=True)

    async def chat_message(self, event: dict[str, Any]) -> None:
        # json.dumps escapes newlines, so one message is always exactly one data: line.
        await self.send_body(f"data: {json.dumps(chat_payload(event))}\n\n".encode(), more_body=True)

    async def disconnect(self) -> None:
        # From the URL, not only self.group: after a deploy another worker's instance may
        # carry the stream on, having seen the group messages but never handle().
        group = self.group or room_group(self.scope["url_route"]["kwargs"]["room"])
        if group is not None:
            await self.channel_layer.group_discard(group, self.channel_name)
