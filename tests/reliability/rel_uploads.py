"""Upload endpoints of the reliability tests' worker: a streamed body must arrive whole.

The gateway sends a large request body in several ``http.request`` events (specs/http.md);
each endpoint answers ``<sha256 of the body> <bytes> <events>`` so a test can check the
body arrived intact, and in chunks, through each way a site reads bodies:

- ``/upload/raw``: a plain ASGI app counting the events itself;
- ``/upload/consumer``: Switchboard's ``AsyncHttpConsumer`` (which assembles the chunks);
- ``/upload/django``: a Django view through Django's own ``ASGIHandler`` (``rel_urls``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from switchboard.consumers.http import AsyncHttpConsumer

Message = dict[str, Any]
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def summary(body: bytes, events: int) -> bytes:
    return json.dumps({"sha256": hashlib.sha256(body).hexdigest(), "size": len(body), "events": events}).encode()


async def respond(send: Send, text: bytes) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [[b"content-type", b"application/json"], [b"content-length", str(len(text)).encode()]]})
    await send({"type": "http.response.body", "body": text})


async def raw(scope: Scope, receive: Receive, send: Send) -> None:
    parts: list[bytes] = []
    events = 0
    while True:
        event = await receive()
        if event["type"] == "http.disconnect":
            return
        events += 1
        parts.append(event.get("body", b""))
        if not event.get("more_body", False):
            break
    await respond(send, summary(b"".join(parts), events))


class UploadConsumer(AsyncHttpConsumer):
    """Counts the ``http.request`` events it was given; ``handle`` gets the assembled body."""

    channel_layer_alias = None
    events = 0

    async def http_request(self, message: Message) -> None:
        self.events += 1
        await super().http_request(message)

    async def handle(self, body: bytes) -> None:
        await self.send_response(200, summary(body, self.events), headers=[(b"content-type", b"application/json")])


_consumer = UploadConsumer.as_asgi()
_django: Any = None


async def application(scope: Scope, receive: Receive, send: Send) -> None:
    global _django
    path = scope["path"]
    if path == "/upload/consumer":
        await _consumer(scope, receive, send)
    elif path == "/upload/django/":
        if _django is None:  # built on first use: only worker processes have rel_urls configured
            from django.core.asgi import get_asgi_application

            _django = get_asgi_application()
        await _django(scope, receive, send)
    else:
        await raw(scope, receive, send)
