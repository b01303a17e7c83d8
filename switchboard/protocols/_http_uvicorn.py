"""uvicorn's websockets-sansio protocol, leaner per idle connection.

uvicorn keeps, for the whole life of every WebSocket, an ``asyncio.Queue`` for the ASGI
``receive`` (four deques up front, ~2.3 KiB), an ``asyncio.Event`` for write flow
control (~0.4 KiB with its deque), and the handshake request and response objects
(their header structures, ~2 KiB), which nothing reads once the handshake is done. With
10,000 idle WebSockets that is ~45 MB of the gateway. This subclass swaps the queue and
the event for single-consumer equivalents that allocate only while something waits, and
drops the handshake objects once the handshake completed. Framing, limits and the
protocol itself stay uvicorn's and websockets'.

Both replacements bind the loop once: ``asyncio.Queue`` and ``asyncio.Event`` ask for the
running loop on every wait, which is a ``getpid()`` system call each (``_LoopBoundMixin``),
per frame received and per frame sent.

The same subclasses carry the plugin's policy where only the protocol object can apply
it: header limits before a header block is buffered (httptools has none), UTF-8 checks in
frame order (so a close frame in the same read cannot turn a 1007 into an InvalidState
crash), closing a client that reads nothing (``drop_slow_client``) without waiting
for it to read, refusing a WebSocket upgrade over HTTP/1.0 (400), and reporting each
socket's progress to the :class:`~._http_guard.ConnectionGuard` (:class:`GuardedHttp`).
Those reports are hooks at the edges of uvicorn's protocols (``connection_made``,
``data_received``, the end of the header block, ``on_response_complete``,
``handle_websocket_upgrade``, ``connection_lost``): none of uvicorn's own logic is copied
for them. Classes get their settings from :func:`http_protocol` and
:func:`websocket_protocol`, since uvicorn builds protocol objects itself.
"""

from __future__ import annotations

import asyncio
import codecs
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from uvicorn.config import WS_PROTOCOLS
from uvicorn.importer import import_from_string
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.server import ServerProtocol

from ._http_common import LINK_KEY, Mailbox
from ._http_guard import IDLE, LINGER_SECONDS, ConnectionGuard, Entry, answer_bytes

logger = logging.getLogger("switchboard.protocols.http")

Count = Callable[[str], None]


class _Flag:
    """``asyncio.Event``'s set/clear/wait, with waiters allocated only while someone waits."""

    __slots__ = ("_loop", "_set", "_waiters")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter = self._loop.create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
            return True
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)


class _Utf8CheckingServerProtocol(ServerProtocol):
    """websockets' server protocol that checks text messages are UTF-8 as frames arrive.

    websockets' sans-I/O core leaves decoding to its caller; uvicorn decodes only once it
    handles the parsed events, by which time a close frame from the same read has moved
    the connection to CLOSING, and its ``send_close(1007)`` raises ``InvalidState``. Here
    a bad byte raises ``UnicodeDecodeError`` inside the parser, which websockets answers
    itself, in order: close 1007 (RFC 6455 8.1) and everything after it discarded.
    """

    #: Decoder of the fragmented text message being received; None between messages.
    _text: codecs.IncrementalDecoder | None = None

    def recv_frame(self, frame: Frame) -> None:
        super().recv_frame(frame)
        if frame.opcode is Opcode.TEXT:
            if frame.fin:
                codecs.utf_8_decode(frame.data, "strict", True)
            else:
                self._text = codecs.getincrementaldecoder("utf-8")()
                self._text.decode(frame.data)
        elif frame.opcode is Opcode.CONT and self._text is not None:
            decoder = self._text
            if frame.fin:
                self._text = None
            decoder.decode(frame.data, final=frame.fin)


class LeanWebSocketsSansIOProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` WebSocket protocol with smaller per-connection state.

    Also: UTF-8 checked in frame order (:class:`_Utf8CheckingServerProtocol`), a close
    that does not wait for the client to read what is buffered before it, and
    :meth:`drop_slow_client` for the bridge.
    """

    #: The plugin's limits and counters (set by :func:`websocket_protocol`).
    settings: ClassVar[ProtocolSettings]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn = _Utf8CheckingServerProtocol(
            extensions=self.conn.available_extensions, max_size=self.config.ws_max_size, logger=self.conn.logger
        )
        self.queue = Mailbox(self.loop)  # type: ignore[assignment]
        writable = _Flag(self.loop)
        if self.writable.is_set():
            writable.set()
        self.writable = writable  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        failed_before = self.conn.parser_exc is not None
        try:
            super().data_received(data)
        except InvalidState:
            # uvicorn answered an event after the connection stopped being OPEN; asyncio
            # would log "Fatal error" with a traceback and drop the socket. Do the same
            # quietly: the client's close handshake is already under way.
            self.settings.count("websocket.invalid_state")
            logger.debug("websocket event after the connection left OPEN; closing", exc_info=True)
            self.transport.close()
            return
        if not failed_before and isinstance(self.conn.parser_exc, UnicodeDecodeError):
            # A client's mistake, answered with 1007: counted, not logged as an error.
            self.settings.count("websocket.invalid_utf8")
            logger.debug("websocket text message is not UTF-8 (%s); closed with 1007", self.conn.parser_exc.reason)

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            self.settings.guard.closed(self.transport)

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["state"][LINK_KEY] = self

    async def send(self, message: Any) -> None:
        kind = message["type"]
        if self.handshake_complete and self.initial_response is None and kind in ("websocket.send", "websocket.close"):
            if kind == "websocket.close" and not self.close_sent:
                # A close frame is tiny: queue it behind whatever the client has not
                # read yet instead of waiting for the client to read that first.
                self._send_close(message.get("code", 1000), message.get("reason", "") or "")
                return
            await self.writable.wait()
            if self.close_sent and not self.disconnected:
                # The connection was closed under the application (drop_slow_client, a
                # client's protocol error): what it still sends has nowhere to go.
                return
        await super().send(message)
        if self.handshake_complete and getattr(self, "response", None) is not None:
            # Only the handshake (and a 500 before it) reads these; free them.
            self.request = None  # type: ignore[assignment]
            self.response = None  # type: ignore[assignment]

    def _send_close(self, code: int, reason: str) -> None:
        if self.disconnected:
            raise ClientDisconnected()
        if self.transport.is_closing():
            return
        if self.conn.state is not State.OPEN:
            raise ClientDisconnected()  # the client's close or a protocol error came first
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        if self.close_timer is not None:
            self.close_timer.cancel()
        self.close_timer = self.loop.call_later(self.close_timeout, self._close_timed_out)

    def _close_timed_out(self) -> None:
        """No close handshake within the close timeout: drop the socket, unread data too.

        ``transport.close()`` would wait to write what the client never reads, keeping
        the socket (and that buffer) as long as the client keeps its window shut.
        """
        self.close_timer = None
        if self.transport.get_write_buffer_size():
            self.transport.abort()
        else:
            self.transport.close()

    def keeps_up(self) -> bool:
        """See :class:`~._http_common.ClientLink`."""
        return self.writable.is_set()

    def write_now(self, message: Any) -> bool:
        """Write a checked ``websocket.send`` as :meth:`send` would, if nothing needs waiting for.

        False (nothing written) unless the handshake is done, no close was sent or
        received, and the transport is not paused for writing: then the caller queues the
        message for the bridge's writer as before. So one reply to a client that keeps up
        costs no task switch; see ``WebSocketSession._deliver``.
        """
        if not (
            self.handshake_complete
            and self.initial_response is None
            and not self.close_sent
            and not self.disconnected
            and self.writable.is_set()
            and self.conn.state is State.OPEN
        ):
            return False
        data = message.get("bytes")
        if data is not None:
            self.conn.send_binary(data)
        else:
            self.conn.send_text(message["text"].encode())
        self.transport.write(b"".join(self.conn.data_to_send()))
        return True

    def drop_slow_client(self, code: int, reason: str) -> None:
        """Close now with ``code`` although the client reads nothing; abort after the close timeout.

        The close frame goes behind what is already buffered: a client that is only slow
        still learns why. The application gets its ``websocket.disconnect`` at once.
        """
        if self.disconnected or self.transport.is_closing():
            return
        if self.handshake_complete and self.initial_response is None and not self.close_sent:
            try:
                self._send_close(code, reason)
                return
            except ClientDisconnected:
                pass
        self.transport.abort()


class GuardedHttp(asyncio.Protocol):
    """Mixin for uvicorn's HTTP protocols: reports the socket's progress to the guard.

    Accepted (``connection_made``: the guard may refuse it at once), bytes arriving while
    no request is in progress (a header block begins: its deadline starts), the header
    block complete (each protocol below says when), the response done, the socket gone.
    :meth:`answer` is how the guard and the protocols refuse a client themselves.
    """

    settings: ClassVar[ProtocolSettings]
    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    server_state: Any
    cycle: Any
    #: The guard's record of this socket; None if it was refused when accepted.
    guard_entry: Entry | None = None
    #: Answered by the plugin itself and closing: whatever the client still sends is discarded.
    refused = False
    _linger: asyncio.TimerHandle | None = None
    _unasked: bytes | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.guard_entry = self.settings.guard.admit(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self.settings.guard.closed(self.transport)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            self.discard()
            return
        self.guard_read()
        super().data_received(data)

    def guard_read(self) -> None:
        """Bytes arrived: if no request was in progress, one has begun (header deadline)."""
        entry = self.guard_entry
        if entry is not None and entry.state <= IDLE:
            self.settings.guard.reading(entry)

    def guard_head_complete(self) -> None:
        entry = self.guard_entry
        if entry is not None:
            self.settings.guard.head_complete(entry)

    def guard_upgraded(self) -> None:
        entry = self.guard_entry
        if entry is not None:
            self.settings.guard.upgraded(entry)
            self.guard_entry = None

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        entry = self.guard_entry
        if entry is not None and not self.request_pending():
            self.settings.guard.response_done(entry)

    def body_arrived(self) -> bool:
        """See :class:`~._http_common.ClientLink`: uvicorn's request cycle has the whole body.

        Only ever True too early if a pipelined request's head was parsed after it: then
        the earlier body is complete as well.
        """
        cycle = self.cycle
        return cycle is not None and not cycle.more_body

    def request_pending(self) -> bool:
        """Whether a request (a pipelined one started just now) is in progress."""
        cycle = self.cycle
        return cycle is not None and not cycle.response_complete

    def answer(self, status: int, text: str, *, linger: float | None, when_asked: bool = False) -> None:
        """Answer ``status`` ourselves, with ``connection: close``, and end the connection.

        With ``linger``, read and discard what the client still sends until it closes or
        ``linger`` seconds pass: closing with unread input would make the kernel send a
        reset, which can destroy the answer before the client reads it. A lingering
        connection is the first the guard closes when descriptors run short.
        ``when_asked`` (a socket refused as it is accepted): hold the answer until the
        client's request arrives, as clients expect (some fail on an answer that comes
        before they have sent their request); a client that sends nothing gets nothing.
        """
        transport = self.transport
        self.refused = True
        if transport.is_closing():
            return
        response = answer_bytes(status, text, self.server_state.default_headers)
        if linger is None:
            transport.write(response)
            transport.close()
            return
        if when_asked:
            self._unasked = response
        else:
            self._write_final(response)
        self._linger = self.loop.call_later(linger, transport.abort)
        self.settings.guard.lingering(self)

    def discard(self) -> None:
        """Input after the plugin answered: dropped; the first of it gets the held answer."""
        response, self._unasked = self._unasked, None
        if response is not None:
            self._write_final(response)

    def _write_final(self, response: bytes) -> None:
        transport = self.transport
        transport.write(response)
        if transport.can_write_eof():
            transport.write_eof()

    def refuse_old_upgrade(self) -> None:
        """RFC 6455 4.1: the opening handshake is an HTTP/1.1 request; an HTTP/1.0 one gets 400."""
        self.settings.count("websocket.400_http_1_0")
        logger.debug("refused a WebSocket upgrade over HTTP/1.0")
        self.answer(400, "WebSocket upgrade needs HTTP/1.1", linger=LINGER_SECONDS)


class HeaderLimitedHttpToolsProtocol(GuardedHttp, HttpToolsProtocol):
    """uvicorn's httptools protocol that refuses oversized header blocks with 431.

    httptools (llhttp) has no header limit, and its Python wrapper accumulates a header
    value across reads until it is complete, so a client could make the gateway buffer
    any amount. Counted here: the request line and headers as the parser reports them,
    and the raw bytes of reads that fall wholly inside an unfinished header block.
    Past ``max_header_size`` bytes or ``max_headers`` headers the client gets ``431``
    with ``connection: close`` and nothing of the request reaches the application.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._head_count = 0
        self._in_head = False

    def data_received(self, data: bytes) -> None:
        if self.refused:
            self.discard()  # answered by the plugin: read and discard until the client closes
            return
        self.guard_read()
        continuing = self._in_head
        HttpToolsProtocol.data_received(self, data)  # uvicorn's own; the callbacks below count
        if self.refused:
            return  # a callback refused the request (431): the parser is fed nothing more
        if continuing and self._in_head:
            # The whole read was header bytes the parser holds (a value not complete yet).
            self._head_bytes += len(data)
            if self._head_bytes > self.settings.max_header_size:
                self._refuse(f"header block over {self.settings.max_header_size} bytes")

    # Once refused, the rest of the read is still parsed (httptools cannot be stopped from
    # a callback without uvicorn answering 400 and logging a warning): every callback
    # then does nothing, so no request cycle starts and nothing reaches the application.

    def on_message_begin(self) -> None:
        if self.refused:
            return
        super().on_message_begin()
        self._head_bytes = 0
        self._head_count = 0
        self._in_head = True

    def on_url(self, url: bytes) -> None:
        if not self.refused and self._add_head(len(url), 0):
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.refused and self._add_head(len(name) + len(value) + 4, 1):
            super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self.refused:
            return
        self._in_head = False
        self.guard_head_complete()
        self.scope["state"][LINK_KEY] = self
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self.refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self.refused:
            super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        if self.refused:
            return
        if self.scope["http_version"] == "1.0":
            self.refuse_old_upgrade()
            return
        self.guard_upgraded()
        super().handle_websocket_upgrade()

    def request_pending(self) -> bool:
        return self._in_head or super().request_pending()

    def _add_head(self, size: int, headers: int) -> bool:
        """Count a piece of the header block; False (and refused with 431) past a limit."""
        self._head_bytes += size
        self._head_count += headers
        if self._head_count > self.settings.max_headers:
            self._refuse(f"more than {self.settings.max_headers} headers")
        elif self._head_bytes > self.settings.max_header_size:
            self._refuse(f"header block over {self.settings.max_header_size} bytes")
        else:
            return True
        return False

    def _refuse(self, why: str) -> None:
        """Answer 431, stop parsing, and linger (bounded by the keep-alive timeout)."""
        self._in_head = False
        self.settings.count("http.431")
        logger.debug("refused a request from %s: %s", self.client, why)
        self.answer(431, "Request header fields too large", linger=self.timeout_keep_alive)

    def keeps_up(self) -> bool:
        """See :class:`~._http_common.ClientLink`."""
        return not self.flow.write_paused

    def drop_slow_client(self, code: int, reason: str) -> None:
        """A response nobody reads: there is no way to say so in HTTP; drop the connection."""
        self.transport.abort()


class LinkedH11Protocol(GuardedHttp, H11Protocol):
    """uvicorn's h11 protocol, giving the bridge a way to drop a slow reader.

    h11 limits the header block itself (``h11_max_incomplete_event_size``, answered 400).
    """

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:
            self.guard_head_complete()  # h11 produced a Request: its header block is complete
        scope = getattr(self, "scope", None)
        if scope is not None and scope.get("type") == "http":
            # The request's task was created but has not run yet: it sees this.
            scope["state"].setdefault(LINK_KEY, self)

    def handle_websocket_upgrade(self, event: Any) -> None:
        self.guard_head_complete()
        if event.http_version == b"1.0":
            self.refuse_old_upgrade()
            return
        self.guard_upgraded()
        super().handle_websocket_upgrade(event)

    def keeps_up(self) -> bool:
        """See :class:`~._http_common.ClientLink`."""
        return not self.flow.write_paused

    def drop_slow_client(self, code: int, reason: str) -> None:
        """See :meth:`HeaderLimitedHttpToolsProtocol.drop_slow_client`."""
        self.transport.abort()


class GuardReleasingWebSocket(asyncio.Protocol):
    """Mixin for uvicorn's other WebSocket protocols: the socket's guard record ends with it."""

    settings: ClassVar[ProtocolSettings]

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            super().connection_lost(exc)
        finally:
            transport = getattr(self, "transport", None)
            if transport is not None:
                self.settings.guard.closed(transport)


@dataclass(frozen=True, slots=True)
class ProtocolSettings:
    """What the plugin's uvicorn protocols need from its options, and its counters."""

    max_header_size: int
    max_headers: int
    count: Count
    guard: ConnectionGuard


def http_protocol(implementation: str, settings: ProtocolSettings) -> type[asyncio.Protocol]:
    """uvicorn's ``http`` setting: our subclass of the chosen implementation, configured."""
    if implementation == "h11":
        return type("ConfiguredH11Protocol", (LinkedH11Protocol,), {"settings": settings})
    return type("ConfiguredHttpToolsProtocol", (HeaderLimitedHttpToolsProtocol,), {"settings": settings})


def websocket_protocol(settings: ProtocolSettings, uvicorn_name: str = "websockets-sansio") -> type[asyncio.Protocol]:
    """uvicorn's ``ws`` setting: the lean subclass for websockets-sansio, else uvicorn's
    class for ``uvicorn_name`` with :class:`GuardReleasingWebSocket`; counting into the plugin."""
    if uvicorn_name == "websockets-sansio":
        return type("ConfiguredWebSocketsProtocol", (LeanWebSocketsSansIOProtocol,), {"settings": settings})
    path = WS_PROTOCOLS.get(uvicorn_name)
    if path is None:
        raise ValueError(f"uvicorn has no WebSocket implementation {uvicorn_name!r}")
    base = import_from_string(path)
    return type(f"Guarded{base.__name__}", (GuardReleasingWebSocket, base), {"settings": settings})


# -- what the plugin needs of uvicorn ---------------------------------------------------------

#: Everything the subclasses above and the plugin use of uvicorn beyond the ASGI interface:
#: the methods they extend (each calls uvicorn's own: no method body is copied) and the
#: attributes they read, per class. :func:`check_uvicorn` checks an installed uvicorn
#: against it at start-up, so a release that renamed one fails with one clear line
#: instead of an AttributeError under load. A new uvicorn that passes is allowed
#: (setup.py has no upper bound); CI runs the HTTP tests against the newest one too.
REQUIRED_METHODS: Final[dict[str, tuple[str, ...]]] = {
    "HttpToolsProtocol": (
        "connection_made",
        "connection_lost",
        "data_received",
        "on_message_begin",
        "on_url",
        "on_header",
        "on_headers_complete",
        "on_body",
        "on_message_complete",
        "on_response_complete",
        "handle_websocket_upgrade",
    ),
    "H11Protocol": (
        "connection_made",
        "connection_lost",
        "data_received",
        "handle_events",
        "handle_websocket_upgrade",
        "on_response_complete",
    ),
    "WebSocketsSansIOProtocol": ("data_received", "connection_lost", "handle_connect", "send"),
    "Server": ("startup", "main_loop", "shutdown"),
}
REQUIRED_ATTRIBUTES: Final[dict[str, tuple[str, ...]]] = {
    "HttpToolsProtocol": (
        "parser",
        "cycle",
        "flow",
        "server_state",
        "scope",
        "transport",
        "loop",
        "timeout_keep_alive",
        "client",
    ),
    "H11Protocol": ("cycle", "flow", "server_state", "transport", "loop"),
    "WebSocketsSansIOProtocol": (
        "conn",
        "queue",
        "writable",
        "handshake_complete",
        "initial_response",
        "close_sent",
        "disconnected",
        "read_paused",
        "close_timer",
        "close_timeout",
        "transport",
        "loop",
        "config",
    ),
}


class UvicornMismatch(RuntimeError):
    """The installed uvicorn lacks something the HTTP plugin builds on."""


@functools.cache
def check_uvicorn() -> None:
    """Raise :class:`UvicornMismatch` naming what the installed uvicorn lacks, if anything.

    Methods are checked on the classes, attributes on throw-away protocol objects (built
    as uvicorn builds them, with no socket): both without serving anything. Once per
    process (a failure is not cached: it raises again).
    """
    import uvicorn
    from uvicorn.server import ServerState

    classes: dict[str, type[Any]] = {
        "HttpToolsProtocol": HttpToolsProtocol,
        "H11Protocol": H11Protocol,
        "WebSocketsSansIOProtocol": WebSocketsSansIOProtocol,
        "Server": uvicorn.Server,
    }
    missing = [
        f"{name}.{method}()"
        for name, methods in REQUIRED_METHODS.items()
        for method in methods
        if not callable(getattr(classes[name], method, None))
    ]
    if "websockets-sansio" not in WS_PROTOCOLS:
        missing.append("the websockets-sansio implementation (uvicorn.config.WS_PROTOCOLS)")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        return None

    loop = asyncio.new_event_loop()
    try:
        config = uvicorn.Config(app=app, log_config=None, lifespan="off")
        config.load()
        for name, attributes in REQUIRED_ATTRIBUTES.items():
            try:
                instance = classes[name](config, ServerState(), {}, loop)
            except Exception as exc:  # a changed constructor is a mismatch too
                missing.append(f"{name}(config, server_state, app_state, loop): {exc!r}")
                continue
            missing.extend(f"{name}.{attribute}" for attribute in attributes if not hasattr(instance, attribute))
    finally:
        loop.close()
    if missing:
        raise UvicornMismatch(
            f"uvicorn {uvicorn.__version__} lacks what the http plugin needs: {', '.join(missing)}; "
            "install a release that has it (pip install 'switchboard[http]' picks one)"
        )
