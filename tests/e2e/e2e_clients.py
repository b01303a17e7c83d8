"""Clients the e2e tests talk to a deployment with: HTTP, WebSocket and server-sent events.

Real clients only: urllib for HTTP, the ``websockets`` client for WebSockets, a raw
asyncio socket that decodes the chunked stream for server-sent events.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

from support.waiting import deadline
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Origin

from .conftest import Deployment

WAIT = deadline(10)  # a safety net (scaled) so a missing message fails the test instead of hanging it


def http(
    deployment: Deployment, path: str, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    request = urllib.request.Request(deployment.base_url + path, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=deadline(15)) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def ws(deployment: Deployment, path: str, session: str | None = None, *, origin: str | None = "", **kwargs: Any) -> Any:
    """A WebSocket client as the site's own page opens it: its Origin and session cookie.

    ``origin=None`` sends no Origin (the ``websockets`` client's default); any other
    string is sent instead of the site's.
    """
    headers = {"Cookie": f"sessionid={session}"} if session else None
    sent_origin = None if origin is None else Origin(origin or deployment.origin)
    return connect(deployment.ws_url + path, origin=sent_origin, additional_headers=headers, **kwargs)


async def recv_json(socket: ClientConnection) -> Any:
    return json.loads(await asyncio.wait_for(socket.recv(), WAIT))


class EventStream:
    """A ``text/event-stream`` response read as ``EventSource`` would, over a raw socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, status: int, headers: dict[str, str]):
        self.reader = reader
        self.writer = writer
        self.status = status
        self.headers = headers
        self.buffer = b""

    @classmethod
    async def open(cls, deployment: Deployment, path: str) -> EventStream:
        reader, writer = await asyncio.open_connection("127.0.0.1", deployment.port)
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{deployment.port}\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        await writer.drain()
        status_line = await asyncio.wait_for(reader.readline(), WAIT)
        headers = {}
        while (line := await asyncio.wait_for(reader.readline(), WAIT)) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        return cls(reader, writer, int(status_line.split()[1]), headers)

    async def _chunk(self) -> bytes:
        """One chunk of the chunked body; b"" at its end."""
        size_line = await asyncio.wait_for(self.reader.readline(), WAIT)
        size = int(size_line.split(b";")[0], 16)
        data = await asyncio.wait_for(self.reader.readexactly(size + 2), WAIT)
        return data[:-2]

    async def next_block(self) -> str:
        """The next event block (lines up to a blank line), comments included."""
        while b"\n\n" not in self.buffer:
            chunk = await self._chunk()
            if not chunk:
                raise EOFError("the event stream ended")
            self.buffer += chunk
        block, _, self.buffer = self.buffer.partition(b"\n\n")
        return block.decode()

    async def next_data(self) -> Any:
        """The JSON of the next event's ``data:`` line, skipping comment blocks."""
        while True:
            block = await self.next_block()
            data = [line[5:].strip() for line in block.splitlines() if line.startswith("data:")]
            if data:
                assert len(data) == 1, f"one data: line per message expected, got {block!r}"
                return json.loads(data[0])

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass
