"""The chat room over HTTP long-poll, for clients that can neither WebSocket nor EventSource.

``GET /poll/chat/<room>/`` is held until the next message of the room's group
(``chat.<room>``, the group the WebSocket chat posts to) and answered with it as JSON, or
after ``timeout`` seconds with no messages; the page then asks again at once.

Read only, like the server-sent event stream: posting stays on the WebSocket, behind the
login the example's routing asks for. Messages posted in the instant between one answer
and the next request are not seen by this client (at-most-once): the chat posts with a
plain ``group_send``; a site that must not miss any posts with
``switchboard.consumers.longpoll.publish`` and sets ``history`` here (docs/longpoll.md).
"""

from __future__ import annotations

from typing import Any

from chat.consumers import chat_payload, room_group

from switchboard.consumers.longpoll import AsyncLongPollConsumer


class ChatPollConsumer(AsyncLongPollConsumer):
    """One held GET per poll; ``chat_message`` answers it with ``{"message", "user"?}``."""

    # Well below the gateway's response_timeout (the example sets 30 s), which would
    # answer 503 to a request held longer.
    timeout = 20.0

    async def handle(self, body: bytes) -> None:
        if room_group(self.scope["url_route"]["kwargs"]["room"]) is None:
            await self.send_response(404, b"No such room\n", headers={"Content-Type": "text/plain"})
            return
        await super().handle(body)

    async def get_groups(self) -> list[str]:
        group = room_group(self.scope["url_route"]["kwargs"]["room"])
        return [group] if group is not None else []

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.reply(chat_payload(event))
