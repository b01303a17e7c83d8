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
from django.conf import settings

from switchboard.consumers.longpoll import AsyncLongPollConsumer


def hold_seconds(longest: float = 20.0) -> float:
    """How long to hold a poll: ``longest``, or less when the gateway gives up sooner.

    The gateway answers 503 to a request whose response has not started within the http
    plugin's ``response_timeout``; gateway and workers read the same settings here, so
    stay at two thirds of it (the example sets 30 s; its e2e tests 10 s).
    """
    http_options = getattr(settings, "SWITCHBOARD", {}).get("PROTOCOLS", {}).get("http", {})
    return min(longest, float(http_options.get("response_timeout", 60.0)) * 2 / 3)


class ChatPollConsumer(AsyncLongPollConsumer):
    """One held GET per poll; ``chat_message`` answers it with ``{"message", "user"?}``."""

    timeout = hold_seconds()

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
