"""The WebRTC plugin's signaling endpoint: an ASGI app the HTTP plugin runs inside the gateway.

Signaling is the one part of WebRTC that rides on HTTP, so it is served on the HTTP
plugin's port (``Gateway.mount``) rather than on a port of its own: it shares the HTTP
plugin's TLS, proxy and connection limits, and a page can reach it same-origin. It never
goes to a worker: answering an offer creates the ``RTCPeerConnection``, which must live in
the gateway process that holds the peer's UDP sockets.

Everything here is input checking and response writing; the negotiation itself is the
plugin's (:class:`Negotiator`), so this module does not import it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from switchboard.gateway.asgi import BodyTooLarge, ClientGone, Headers, Message, Receive, Send, header, read_body

logger = logging.getLogger("switchboard.protocols.webrtc")

JSON = (b"content-type", b"application/json")
# Answers carry per-peer ICE credentials: no cache may keep or share them.
NO_STORE = (b"cache-control", b"no-store")

# How long to wait for uvicorn to finish a WebSocket handshake we refused.
_DENY_WAIT = 5.0


class SignalingError(Exception):
    """An offer the gateway will not answer: the HTTP status, the reason, the counter."""

    def __init__(self, status: int, reason: str, counter: str | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.counter = counter or f"signaling_{status}"


class Negotiator(Protocol):
    """What the endpoint needs from the plugin."""

    def count(self, counter: str, amount: int = 1) -> None: ...

    async def negotiate(self, request_scope: dict[str, Any], offer_sdp: str) -> str:
        """Answer ``offer_sdp`` for a peer signaled by ``request_scope``; SignalingError if not."""
        ...


@dataclass(frozen=True, slots=True)
class SignalingLimits:
    """The endpoint's own options (a subset of the plugin's)."""

    max_size: int
    allowed_origins: tuple[str, ...]
    websocket: bool
    #: Where the endpoint is mounted, and what the rest of a path must match (None: anything).
    path_prefix: str = ""
    path_pattern: re.Pattern[str] | None = None

    def path_allowed(self, path: str) -> bool:
        """Whether ``path`` (the whole request path) names something this site signals for."""
        if self.path_pattern is None:
            return True
        rest = path[len(self.path_prefix) :] if path.startswith(self.path_prefix) else path
        return self.path_pattern.fullmatch(rest.removeprefix("/")) is not None


def parse_offer(body: bytes | str) -> str:
    """The SDP of a ``{"type": "offer", "sdp": ...}`` JSON document, or SignalingError 400."""
    try:
        document = json.loads(body)
    except ValueError:  # also UnicodeDecodeError: not UTF-8/16/32
        raise SignalingError(400, "the body is not JSON") from None
    if not isinstance(document, dict):
        raise SignalingError(400, 'send a JSON object {"type": "offer", "sdp": "..."}')
    if document.get("type") != "offer":
        raise SignalingError(400, f'"type" must be "offer", got {str(document.get("type"))[:20]!r}')
    sdp = document.get("sdp")
    if not isinstance(sdp, str) or not sdp.strip():
        raise SignalingError(400, '"sdp" must be a non-empty string')
    return sdp


def _same_host(origin: str, host: bytes | None) -> bool:
    """Whether ``origin`` names the host:port the request was sent to (its Host header)."""
    if host is None:
        return False
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        return False
    return bool(netloc) and netloc.lower() == host.decode("latin-1").lower()


def origin_headers(scope: dict[str, Any], allowed: tuple[str, ...]) -> Headers | None:
    """CORS headers for the response, or None when the request's Origin is not allowed.

    No Origin: not a browser, nothing to protect against (a cross-site page cannot send a
    request without one). Same host: the site's own page. Otherwise the origin must be
    listed; listed origins get ``Access-Control-Allow-Origin`` so the browser lets the
    page read the answer.
    """
    raw = header(scope, b"origin")
    if raw is None:
        return []
    origin = raw.decode("latin-1")
    if _same_host(origin, header(scope, b"host")):
        return []
    if "*" in allowed or origin in allowed:
        return [(b"access-control-allow-origin", raw), (b"vary", b"origin")]
    return None


class SignalingApp:
    """The mounted ASGI app: POST an offer, get the answer (or the same over a WebSocket)."""

    def __init__(self, negotiator: Negotiator, limits: SignalingLimits) -> None:
        self.negotiator = negotiator
        self.limits = limits

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket":
            await self._websocket(scope, receive, send)

    # -- HTTP -------------------------------------------------------------------------

    async def _http(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        count = self.negotiator.count
        count("signaling_requests")
        cors = origin_headers(scope, self.limits.allowed_origins)
        try:
            if cors is None:
                raise SignalingError(403, "origin not allowed")
            if scope["method"] == "OPTIONS":
                await self._preflight(send, cors)
                return
            if not self.limits.path_allowed(scope["path"]):
                raise SignalingError(404, "no such path here (path_pattern)")
            if scope["method"] != "POST":
                raise SignalingError(405, "POST the offer as JSON")
            body = await self._read_body(scope, receive)
            if body is None:
                return  # the client went away
            answer = await self.negotiator.negotiate(scope, parse_offer(body))
        except SignalingError as exc:
            count(exc.counter)
            await _send_json(send, exc.status, {"error": exc.reason}, cors or [], _error_headers(exc.status))
            return
        count("signaling_answered")
        await _send_json(send, 200, {"type": "answer", "sdp": answer}, cors or [], [NO_STORE])

    async def _preflight(self, send: Send, cors: Headers) -> None:
        headers = [
            *cors,
            (b"access-control-allow-methods", b"POST, OPTIONS"),
            (b"access-control-allow-headers", b"content-type"),
            (b"access-control-max-age", b"600"),
            (b"content-length", b"0"),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async def _read_body(self, scope: dict[str, Any], receive: Receive) -> bytes | None:
        """The whole body, None if the client left; SignalingError 413 past the limit."""
        try:
            return await read_body(scope, receive, self.limits.max_size)
        except BodyTooLarge:
            raise SignalingError(413, f"the offer is larger than {self.limits.max_size} bytes") from None
        except ClientGone:
            return None

    # -- WebSocket --------------------------------------------------------------------

    async def _websocket(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        """Offers and answers as JSON text messages; each offer makes a new peer."""
        if (await receive())["type"] != "websocket.connect":
            return
        count = self.negotiator.count
        count("signaling_requests")
        if not self.limits.websocket:
            count("signaling_405")
            await self._deny(scope, send, receive, 405, "WebSocket signaling is off: POST the offer")
            return
        if origin_headers(scope, self.limits.allowed_origins) is None:
            count("signaling_403")
            await self._deny(scope, send, receive, 403, "origin not allowed")
            return
        if not self.limits.path_allowed(scope["path"]):
            count("signaling_404")
            await self._deny(scope, send, receive, 404, "no such path here (path_pattern)")
            return
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] != "websocket.receive":
                return  # websocket.disconnect
            if not await self._ws_offer(scope, message, send):
                return

    async def _ws_offer(self, scope: dict[str, Any], message: Message, send: Send) -> bool:
        """Answer one offer message; False when the socket was closed for it."""
        count = self.negotiator.count
        data = message.get("text")
        if data is None:
            data = message.get("bytes") or b""
        size = len(data.encode()) if isinstance(data, str) else len(data)
        if size > self.limits.max_size:
            count("signaling_413")
            reply = {"type": "error", "status": 413, "error": f"the offer is larger than {self.limits.max_size} bytes"}
            await send({"type": "websocket.send", "text": json.dumps(reply)})
            await send({"type": "websocket.close", "code": 1009})
            return False
        try:
            answer = await self.negotiator.negotiate(scope, parse_offer(data))
        except SignalingError as exc:
            count(exc.counter)
            reply = {"type": "error", "status": exc.status, "error": exc.reason}
        else:
            count("signaling_answered")
            reply = {"type": "answer", "sdp": answer}
        await send({"type": "websocket.send", "text": json.dumps(reply)})
        return True

    async def _deny(self, scope: dict[str, Any], send: Send, receive: Receive, status: int, reason: str) -> None:
        """Refuse the handshake with an HTTP status where uvicorn can send one (else 403)."""
        if "websocket.http.response" in scope.get("extensions", {}):
            body = json.dumps({"error": reason}).encode()
            await send({"type": "websocket.http.response.start", "status": status, "headers": [JSON]})
            await send({"type": "websocket.http.response.body", "body": body})
        else:
            await send({"type": "websocket.close"})
        # Let uvicorn finish the refused handshake before returning (it logs otherwise).
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_DENY_WAIT):
                while (await receive())["type"] != "websocket.disconnect":
                    pass


def _error_headers(status: int) -> list[tuple[bytes, bytes]]:
    if status in (503, 429):
        return [(b"retry-after", b"1")]
    if status == 405:
        return [(b"allow", b"POST, OPTIONS")]
    if status == 413:
        # Stop reading (and the client sending) a body we already refused.
        return [(b"connection", b"close")]
    return []


async def _send_json(send: Send, status: int, document: dict[str, Any], *header_lists: Headers) -> None:
    body = json.dumps(document).encode()
    headers = [JSON, (b"content-length", str(len(body)).encode())]
    for extra in header_lists:
        headers.extend(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
