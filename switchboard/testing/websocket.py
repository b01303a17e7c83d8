"""``WebsocketCommunicator``: a WebSocket client for unit tests, with Channels' methods."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import unquote, urlparse

from .application import ApplicationCommunicator


class WebsocketCommunicator(ApplicationCommunicator):
    """Connects to ``application`` at ``path`` and exchanges frames with it.

    ``connect()`` returns ``(True, subprotocol)`` when accepted, ``(False, close_code)`` when
    refused; ``send_to`` / ``send_json_to`` send frames; ``receive_from`` /
    ``receive_json_from`` read the next one (failing if the socket closes instead);
    ``receive_nothing`` checks that nothing came; ``disconnect`` closes and waits for the
    application to finish.
    """

    def __init__(
        self,
        application: Any,
        path: str,
        headers: Iterable[Sequence[bytes]] | None = None,
        subprotocols: Iterable[str] | None = None,
        spec_version: str | None = None,
    ) -> None:
        if not isinstance(path, str):
            raise TypeError(f"Expected str, got {type(path)}")
        parsed = urlparse(path)
        self.scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "scheme": "ws",
            "path": unquote(parsed.path),
            "raw_path": parsed.path.encode("latin-1", "replace"),
            "query_string": parsed.query.encode("utf-8"),
            "root_path": "",
            "headers": list(headers or []),
            "subprotocols": list(subprotocols or []),
        }
        if spec_version:
            self.scope["spec_version"] = spec_version
        super().__init__(application, self.scope)
        self.response_headers: list[Any] | None = None

    async def connect(self, timeout: float = 1) -> tuple[bool, Any]:
        await self.send_input({"type": "websocket.connect"})
        response = await self.receive_output(timeout)
        if response["type"] == "websocket.close":
            return False, response.get("code", 1000)
        if response["type"] == "websocket.http.response.start":
            return False, response.get("status")  # a denial response instead of the handshake
        assert response["type"] == "websocket.accept", f"Expected 'websocket.accept', got {response['type']!r}"
        self.response_headers = response.get("headers", [])
        return True, response.get("subprotocol")

    async def send_to(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        assert (text_data is None) != (bytes_data is None), "You must supply exactly one of text_data or bytes_data"
        if text_data is not None:
            assert isinstance(text_data, str), "The text_data argument must be a str"
            await self.send_input({"type": "websocket.receive", "text": text_data})
        else:
            assert isinstance(bytes_data, bytes), "The bytes_data argument must be bytes"
            await self.send_input({"type": "websocket.receive", "bytes": bytes_data})

    async def send_json_to(self, data: Any) -> None:
        await self.send_to(text_data=json.dumps(data))

    async def receive_from(self, timeout: float = 1) -> str | bytes:
        response = await self.receive_output(timeout)
        assert response["type"] == "websocket.send", f"Expected type 'websocket.send', but was '{response['type']}'"
        text, data = response.get("text"), response.get("bytes")
        assert (text is None) != (data is None), "The response needs exactly one of 'text' or 'bytes'"
        if text is not None:
            assert isinstance(text, str), f"Text frame payload is not str, it is {type(text)}"
            return text
        assert isinstance(data, bytes), f"Binary frame payload is not bytes, it is {type(data)}"
        return data

    async def receive_json_from(self, timeout: float = 1) -> Any:
        payload = await self.receive_from(timeout)
        assert isinstance(payload, str), f"JSON data is not a text frame, it is {type(payload)}"
        return json.loads(payload)

    async def disconnect(self, code: int = 1000, timeout: float = 1) -> None:
        await self.send_input({"type": "websocket.disconnect", "code": code})
        await self.wait(timeout)
