"""Small ASGI parts for the HTTP endpoints a gateway serves itself, and the ASGI type names.

Plugins whose protocol arrives over HTTP mount an ASGI app on the HTTP plugin's port
(``Gateway.mount``): the SMS webhooks, WebRTC signaling, the console. Each reads a bounded
body, looks up a header and answers with a small response; this module is that, once, in
the manner of Starlette's small parts (``Request.body()``, ``Response``), without pulling a
framework into the gateway. The HTTP plugin's own request path reads its headers here too.

The type names are the one definition the package uses for ASGI callables
(``switchboard.consumers.asgi`` re-exports them). They are plain ``dict`` types rather than
``asgiref.typing``'s TypedDicts on purpose: what a worker sends back arrives from the layer
as an untyped dict and is checked field by field before it reaches the server
(``_http_common``), and asgiref's response TypedDicts are not assignable to the ``send``
uvicorn hands an application. Messages of our own specs are typed with
:mod:`switchboard.messages` where a plugin builds or reads them.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final

__all__ = [
    "ASGIApp",
    "BodyTooLarge",
    "ClientGone",
    "Headers",
    "Message",
    "Receive",
    "Scope",
    "Send",
    "content_length",
    "header",
    "header_text",
    "read_body",
    "refuse_websocket",
    "respond",
    "send_json",
    "send_text",
]

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

TEXT_PLAIN: Final = (b"content-type", b"text/plain; charset=utf-8")
APPLICATION_JSON: Final = (b"content-type", b"application/json")


class BodyTooLarge(Exception):
    """The request body is (or declares itself) over the endpoint's limit: answer 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than {limit} bytes")
        self.limit = limit


class ClientGone(Exception):
    """The client disconnected before the body was read: nobody to answer."""


def header(scope: Mapping[str, Any], name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower case, as ASGI servers give names), if present."""
    for key, value in scope.get("headers") or ():
        if key == name:
            return bytes(value)
    return None


def header_text(scope: Mapping[str, Any], name: bytes) -> str | None:
    """:func:`header` decoded as latin-1 (what HTTP/1.1 header bytes map to one to one)."""
    value = header(scope, name)
    return None if value is None else value.decode("latin-1")


def content_length(headers: Iterable[tuple[bytes, bytes]]) -> int | None:
    """The declared ``Content-Length``, if there is one and it is a number (any header case)."""
    for name, value in headers:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def read_body(scope: Mapping[str, Any], receive: Receive, limit: int) -> bytes:
    """The whole request body, at most ``limit`` bytes.

    :class:`BodyTooLarge` as soon as the declared length or the bytes read pass ``limit``
    (nothing more is read: the caller answers 413 with ``connection: close``);
    :class:`ClientGone` if the client left first.
    """
    declared = content_length(scope.get("headers") or ())
    if declared is not None and declared > limit:
        raise BodyTooLarge(limit)
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = bytes(message.get("body", b""))
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def respond(send: Send, status: int, body: bytes, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """A complete response: ``status``, ``headers`` plus ``content-length``, then ``body``."""
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def send_text(send: Send, status: int, text: str, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """A ``text/plain`` response (refusals: one line saying why)."""
    await respond(send, status, text.encode(), [TEXT_PLAIN, *headers])


async def send_json(send: Send, status: int, document: Any, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    """An ``application/json`` response."""
    await respond(send, status, json.dumps(document).encode(), [APPLICATION_JSON, *headers])


async def refuse_websocket(receive: Receive, send: Send, code: int = 1008) -> None:
    """Refuse a WebSocket handshake at an endpoint that only speaks HTTP (the client sees 403)."""
    if (await receive()).get("type") == "websocket.connect":
        await send({"type": "websocket.close", "code": code})
