"""The HTTP plugin's access log: one line per request and per WebSocket handshake.

uvicorn's format, which these users know, plus how long the exchange took::

    127.0.0.1:50312 - "GET /chat/lobby/ HTTP/1.1" 200 OK 12.4ms
    127.0.0.1:50318 - "WebSocket /ws/chat/lobby/" 101 accepted 35.0ms
    127.0.0.1:50320 - "WebSocket /ws/chat/no%20such/" 403 Forbidden 8.1ms

uvicorn's own access log cannot give the duration (it logs when the response starts) and
misses what the gateway answers itself, so the line is written here, at the edge: the
ASGI ``send`` the plugin's bridge writes to is wrapped, and the line is logged when the
request ends (HTTP: the time to the last byte; a streamed response logs when it ends) or
when the handshake is answered (WebSocket). Logger ``switchboard.access``, level INFO.
"""

from __future__ import annotations

import http
import logging
import time
from typing import Any
from urllib.parse import quote

from ._http_common import Send

access_logger = logging.getLogger("switchboard.access")

Message = dict[str, Any]


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


class AccessEntry:
    """The access line of one request or WebSocket handshake, logged once."""

    __slots__ = ("_logged", "_scope", "_started", "_status")

    def __init__(self, scope: dict[str, Any]) -> None:
        self._scope = scope
        self._started = time.perf_counter()
        self._status: int | None = None
        self._logged = False

    def wrap(self, send: Send) -> Send:
        """``send``, noting the status as it goes out (and logging a handshake's answer)."""
        websocket = self._scope["type"] == "websocket"

        async def send_noting_status(message: Message) -> None:
            kind = message["type"]
            if self._status is None:
                if kind in ("http.response.start", "websocket.http.response.start"):
                    self._status = int(message["status"])
                elif kind == "websocket.accept":
                    self._status = 101
                elif kind == "websocket.close":
                    self._status = 403  # closed before accepting: uvicorn answers 403
            try:
                await send(message)
            finally:
                if websocket and self._status is not None:
                    self.log()

        return send_noting_status

    def log(self) -> None:
        """Write the line (at the end of the exchange; later calls do nothing)."""
        if self._logged:
            return
        self._logged = True
        scope = self._scope
        client = scope.get("client")
        who = f"{client[0]}:{client[1]}" if client else "-"
        path = quote(scope.get("root_path", "") + scope.get("path", ""))
        query = scope.get("query_string", b"")
        if query:
            path += "?" + query.decode("latin-1")
        if scope["type"] == "websocket":
            request = f"WebSocket {path}"
        else:
            request = f"{scope.get('method', '-')} {path} HTTP/{scope.get('http_version', '1.1')}"
        status = self._status
        if status is None:
            outcome = "- (no response: the client went away)"
        elif status == 101 and scope["type"] == "websocket":
            outcome = "101 accepted"
        else:
            outcome = f"{status} {_phrase(status)}".rstrip()
        took = (time.perf_counter() - self._started) * 1000
        access_logger.info('%s - "%s" %s %.1fms', who, request, outcome, took)
