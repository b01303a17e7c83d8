"""``HttpCommunicator``: one HTTP request to an application, one response back."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import unquote, urlparse

from .application import ApplicationCommunicator


class HttpCommunicator(ApplicationCommunicator):
    """Sends one request (``method``, ``path`` with its query string, ``body``, ``headers``).

    ``await get_response(timeout=1)`` returns ``{"status", "headers", "body"}`` once the
    application has sent its whole body. For a streamed response, read the messages
    yourself with ``receive_output``.
    """

    def __init__(
        self,
        application: Any,
        method: str,
        path: str,
        body: bytes = b"",
        headers: Iterable[Sequence[bytes]] | None = None,
    ) -> None:
        if not isinstance(body, bytes):
            raise TypeError(f"body must be bytes, not {type(body).__name__}")
        parsed = urlparse(path)
        self.scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method.upper(),
            "scheme": "http",
            "path": unquote(parsed.path),
            "raw_path": parsed.path.encode("latin-1", "replace"),
            "query_string": parsed.query.encode("utf-8"),
            "root_path": "",
            "headers": list(headers or []),
        }
        self.body = body
        self.sent_request = False
        super().__init__(application, self.scope)

    async def get_response(self, timeout: float = 1) -> dict[str, Any]:
        if not self.sent_request:
            self.sent_request = True
            await self.send_input({"type": "http.request", "body": self.body})
        start = await self.receive_output(timeout)
        assert start["type"] == "http.response.start", f"Expected 'http.response.start', got {start['type']!r}"
        response: dict[str, Any] = {key: value for key, value in start.items() if key != "type"}
        response.setdefault("headers", [])
        body = b""
        while True:
            chunk = await self.receive_output(timeout)
            assert chunk["type"] == "http.response.body", f"Expected 'http.response.body', got {chunk['type']!r}"
            assert isinstance(chunk.get("body", b""), bytes), "the response body must be bytes"
            body += chunk.get("body", b"")
            if not chunk.get("more_body", False):
                break
        response["body"] = body
        return response
