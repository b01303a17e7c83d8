"""A lean WebSocket client for load generators: websockets' sans-I/O protocol on a bare socket.

Why not ``websockets.asyncio.client``: its reader hands every frame to a task through a
queue, so a message's arrival is noted only when that task runs, a loop pass or a hundred
later. In a 100-member room all hundred deliveries of a post arrive in the same few
milliseconds; with one task wake-up per member per frame the hundredth member's time
included the client's own work on the other 99 (about 20 us each on the 2-core hosts of
``docs/benchmarks.md``), and that CPU came out of the two cores the servers under test
share with the client. Here the frame is parsed by the same library (``ClientProtocol``:
handshake, framing, masking, ping/pong, close) inside ``data_received``, and the arrival
time is taken there, before any parsing: what the latency then measures is the server and
the network, not the client's scheduling.

The glue is what uvicorn's and websockets' own asyncio layers do around the same
protocol object: write what it has to send, half-close on its end-of-stream marker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import cast

from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

#: ``on_text(text, arrived_ns)``: one whole text message and the moment its bytes arrived.
TextHandler = Callable[[str, int], None]
#: ``handler(number, text, arrived_ns)``: the same, for socket ``number`` of a group.
NumberedHandler = Callable[[int, str, int], None]


class FrameSocket(asyncio.Protocol):
    """One client WebSocket: text messages go to a callback with their arrival time.

    It offers no extension: no permessage-deflate, which would measure zlib, and servers
    differ in it.
    """

    def __init__(self, url: str, on_text: TextHandler) -> None:
        self.protocol = ClientProtocol(parse_uri(url), max_size=None)
        self.on_text = on_text
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self._fragments: list[bytes] = []  # a fragmented message's parts, until its last frame

    # -- asyncio.Protocol ------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is one, not by subclass
        self.protocol.send_request(self.protocol.connect())
        self._flush()

    def data_received(self, data: bytes) -> None:
        arrived = time.perf_counter_ns()
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Response):
                self._handshake_done()
            elif isinstance(event, Frame):
                self._frame(event, arrived)
        self._flush()

    def eof_received(self) -> bool | None:
        self.protocol.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("connection closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)

    # -- use -------------------------------------------------------------------------

    def send(self, text: str) -> None:
        """Queue one text message on the socket (raises once the connection is closing)."""
        if self.transport is None or self.transport.is_closing():
            raise ConnectionError("the WebSocket is closed")
        self.protocol.send_text(text.encode())
        self._flush()

    async def close(self, timeout: float = 5.0) -> None:
        """Close handshake, then wait for the server to drop the TCP connection."""
        if self.transport is not None and not self.transport.is_closing():
            try:
                self.protocol.send_close(1000)
            except Exception:  # already closing on the protocol's side
                pass
            self._flush()
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), timeout)
        except TimeoutError:
            if self.transport is not None:
                self.transport.abort()

    # -- inside ----------------------------------------------------------------------

    def _handshake_done(self) -> None:
        if self.opened.done():
            return
        failure = self.protocol.handshake_exc
        if failure is None:
            self.opened.set_result(None)
        else:
            self.opened.set_exception(failure)

    def _frame(self, frame: Frame, arrived: int) -> None:
        if frame.opcode is Opcode.TEXT or (frame.opcode is Opcode.CONT and self._fragments):
            self._fragments.append(bytes(frame.data))
            if frame.fin:
                data, self._fragments = b"".join(self._fragments), []
                self.on_text(data.decode(), arrived)

    def _flush(self) -> None:
        if self.transport is None:
            return
        for chunk in self.protocol.data_to_send():
            if chunk:
                self.transport.write(chunk)
            elif self.transport.can_write_eof():
                self.transport.write_eof()


async def open_frame_socket(url: str, on_text: TextHandler, timeout: float) -> FrameSocket:
    """Connect and finish the opening handshake, or raise (refused, timed out, rejected)."""
    uri = parse_uri(url)
    loop = asyncio.get_running_loop()
    socket = FrameSocket(url, on_text)

    async def connect() -> None:
        await loop.create_connection(lambda: socket, uri.host, uri.port)
        await socket.opened

    try:
        await asyncio.wait_for(connect(), timeout)
    except BaseException:
        if socket.transport is not None:
            socket.transport.abort()  # connected, but no handshake: leave no socket behind
        raise
    return socket


async def open_frame_sockets(
    url: str | Callable[[int], str], count: int, handler: NumberedHandler, timeout: float
) -> list[FrameSocket]:
    """``count`` sockets (to ``url(n)`` when it is a function), opened in waves of 20.

    Waves: channels-redis's default pool (its connect handler's ``group_add``) refuses 100
    concurrent ``group_add`` calls in one process with ``MaxConnectionsError`` (HTTP 500).
    """

    async def one(n: int) -> FrameSocket:
        def on_text(text: str, arrived: int) -> None:
            handler(n, text, arrived)

        return await open_frame_socket(url(n) if callable(url) else url, on_text, timeout)

    sockets: list[FrameSocket] = []
    for start in range(0, count, 20):
        sockets.extend(await asyncio.gather(*(one(n) for n in range(start, min(count, start + 20)))))
    return sockets


async def close_frame_sockets(sockets: list[FrameSocket]) -> None:
    """Close them all at once (a socket's failure to close is not the others')."""
    await asyncio.gather(*(socket.close() for socket in sockets), return_exceptions=True)
