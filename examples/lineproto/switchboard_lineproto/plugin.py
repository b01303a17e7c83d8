"""The ``lineproto`` plugin: newline-terminated text lines over TCP, one connection per client.

A third-party plugin in the shape every Switchboard plugin has (docs/writing-a-plugin.md):
an options dataclass, ``start``/``stop``, translation between the native protocol and the
messages of its own spec (``lineproto.md``, beside this module), and its limits. Framing
is asyncio's stream reader (``readuntil``); everything the base class offers is used
rather than redone: ``send_event`` (backpressure, outcomes counted under the standard
names), ``reply_is_valid``/``drop_reply`` (replies checked against the spec, bad ones
counted and logged at most once a second per reason), ``report_stats``.

Each TCP connection is one sticky gateway connection, so a single consumer instance sees a
client's lines in order. The limits: ``max_connections`` (more are turned away with an
error line), ``max_line_length`` (a longer line closes the connection with an error line),
``idle_timeout``, ``max_pending_bytes`` (a client that does not read its replies is cut
off). Whatever the client sends, the worst it can do is end its own connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, ClassVar

from switchboard.gateway.config import parse_bind
from switchboard.gateway.layers import Message
from switchboard.gateway.plugins import CONNECTIONS_OPENED, MESSAGES_IN, MESSAGES_OUT, ProtocolPlugin

from .messages import LineCloseEvent, LineConnectEvent, LineDisconnectEvent, LineReceivedEvent, LineSendEvent

if TYPE_CHECKING:
    from switchboard.gateway.server import Connection, Gateway

logger = logging.getLogger("switchboard.protocols.lineproto")

#: The version of lineproto.md this module implements (``scope["asgi"]["spec_version"]``).
SPEC_VERSION = "1.0"
#: The largest ``max_line_length`` accepted (the spec's ``max_length`` of ``line.send``).
MAX_LINE_LENGTH = 1024 * 1024

#: The plugin's own counters, besides the standard ones (all at 0 from the start).
COUNTERS = (
    "connections_refused",
    "lines_refused_too_long",
    "lines_dropped_not_utf8",
    "partial_lines_dropped",
    "idle_timeouts",
    "slow_readers",
    "shutdown_closes",
    "replies_dropped_closed",
    "session_errors",
)


@dataclass
class LineOptions:
    """Options of ``SWITCHBOARD["PROTOCOLS"]["lineproto"]``; checked before any socket opens."""

    #: Addresses to listen on, ``"host:port"``; port 0 picks a free one (``bound_addresses``).
    bind: list[str]
    #: Bytes per line, without the terminator; a longer line closes the connection.
    max_line_length: int = 4096
    #: Seconds without a line from the client before the gateway closes it; None: never.
    idle_timeout: float | None = 300.0
    #: Open client connections per gateway; more are turned away with an error line.
    max_connections: int = 1000
    #: Reply bytes waiting for a client that does not read; past it the socket is aborted.
    max_pending_bytes: int = 1024 * 1024
    #: What ends each line the gateway writes: ``"\n"`` or ``"\r\n"``.
    line_ending: str = "\n"
    #: When the gateway stops: how long (within its drain time) replies to the last lines
    #: may still arrive before the clients are told and closed.
    shutdown_grace: float = 1.0
    #: How long a closing socket may take to flush before it is aborted.
    close_timeout: float = 5.0
    #: When set, the final counters are written there as JSON when the plugin stops.
    stats_file: str | None = None

    def __post_init__(self) -> None:
        if not self.addresses:  # parsed here, so a bad bind fails before start-up
            raise ValueError("bind: give at least one 'host:port' address")
        _check_range("max_line_length", self.max_line_length, 1, MAX_LINE_LENGTH)
        _check_range("max_connections", self.max_connections, 1, 1_000_000)
        _check_range("max_pending_bytes", self.max_pending_bytes, 1, 2**31)
        if self.idle_timeout is not None and not 0 < self.idle_timeout <= 86_400:
            raise ValueError(f"idle_timeout must be above 0 and at most 86400 seconds, or None; got {self.idle_timeout}")
        if self.line_ending not in ("\n", "\r\n"):
            raise ValueError(f"line_ending must be '\\n' or '\\r\\n', got {self.line_ending!r}")
        for name in ("shutdown_grace", "close_timeout"):
            value = getattr(self, name)
            if not 0 <= value <= 3600:
                raise ValueError(f"{name} must be between 0 and 3600 seconds, got {value}")

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """``bind`` parsed into ``(host, port)`` pairs."""
        return [parse_bind(item, where=f"bind[{i}]") for i, item in enumerate(self.bind)]


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")


class _Session:
    """One client connection: reads lines into events, writes replies out as lines."""

    __slots__ = ("close_reason", "connection", "done_writing", "plugin", "reader", "reading", "task", "writer")

    def __init__(self, plugin: LinePlugin, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.plugin = plugin
        self.reader = reader
        self.writer = writer
        self.connection: Connection | None = None
        #: Set by whoever ends the connection from the gateway's side (a worker's
        #: ``line.close``, a slow reader, shutdown): the disconnect reason.
        self.close_reason: str | None = None
        self.reading = False  # awaiting the client's next line (only then may shutdown cancel)
        self.task = asyncio.current_task()
        self.done_writing = False  # the last line is out: later replies are dropped (counted)

    # -- the connection's life -------------------------------------------------------------

    async def run(self, gateway: Gateway) -> None:
        plugin = self.plugin
        server = self.writer.get_extra_info("sockname") or ("", 0)
        client = self.writer.get_extra_info("peername") or ("", 0)
        scope: dict[str, Any] = {
            "type": "line",
            "asgi": {"version": "3.0", "spec_version": SPEC_VERSION},
            "server": [server[0], server[1]],
            "client": [client[0], client[1]],
        }
        connection = self.connection = gateway.open_connection(scope, self.deliver, sticky=True)
        plugin.count(CONNECTIONS_OPENED)
        try:
            connect: LineConnectEvent = {"type": "line.connect"}
            if not (await plugin.send_event(connection, connect)).stored:
                await self._last_words("server_busy")  # no line.connect reached a worker: no disconnect
                await close_gracefully(self.reader, self.writer, plugin.close_timeout)
                return
            reason = await self._read_lines()
            await self._last_words(reason)
            disconnect: LineDisconnectEvent = {"type": "line.disconnect", "reason": reason}
            await plugin.send_event(connection, disconnect)
            await close_gracefully(self.reader, self.writer, plugin.close_timeout)
        finally:
            gateway.close_connection(connection)
            if not self.writer.is_closing():
                self.writer.transport.abort()

    async def _read_lines(self) -> str:
        """Forward the client's lines until something ends the connection; the reason."""
        plugin = self.plugin
        options = plugin.options
        connection = self.connection
        assert connection is not None
        while self.close_reason is None:
            self.reading = True
            try:
                async with asyncio.timeout(options.idle_timeout):
                    raw = await self.reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                if exc.partial and self.close_reason is None:
                    plugin.count("partial_lines_dropped")
                return self.close_reason or "client_closed"
            except asyncio.LimitOverrunError:
                return "line_too_long"
            except TimeoutError:
                return self.close_reason or "idle_timeout"
            except OSError:  # reset by the peer
                return self.close_reason or "client_closed"
            except asyncio.CancelledError:
                # :meth:`interrupt` cancels only while waiting for a line (``reading``);
                # any other cancellation (past the drain time) goes on up.
                task = asyncio.current_task()
                if self.close_reason is not None and task is not None and task.uncancel() == 0:
                    return self.close_reason
                raise
            finally:
                self.reading = False
            if self.close_reason is not None:  # ended from the gateway's side meanwhile
                return self.close_reason
            line = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
            if len(line) > options.max_line_length:  # the reader's limit leaves room for a "\r"
                return "line_too_long"
            plugin.count(MESSAGES_IN)
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError:
                plugin.count("lines_dropped_not_utf8")
                plugin.log.warning("line not UTF-8", "from %s: dropped", self._client())
                self._write("ERROR line is not UTF-8")
                continue
            event: LineReceivedEvent = {"type": "line.received", "text": text}
            # A sticky connection's event waits a moment for room in the pool (backpressure:
            # nothing more is read from this client meanwhile); a refusal is counted by
            # send_event under its standard name.
            if not (await plugin.send_event(connection, event)).stored:
                return "server_busy"
        return self.close_reason

    async def _last_words(self, reason: str) -> None:
        """Tell the client why, when the gateway ends the connection; nothing is written after."""
        plugin = self.plugin
        line: str | None = None
        if reason == "line_too_long":
            plugin.count("lines_refused_too_long")
            plugin.log.warning("line too long", "from %s: over %d bytes", self._client(), plugin.options.max_line_length)
            line = f"ERROR line too long (max {plugin.options.max_line_length} bytes)"
        elif reason == "idle_timeout":
            plugin.count("idle_timeouts")
            line = "ERROR idle timeout"
        elif reason == "server_busy":
            line = "ERROR server busy"
        elif reason == "shutdown":
            # Replies to the lines already forwarded may still arrive meanwhile (deliver).
            await asyncio.sleep(plugin.shutdown_grace)
            plugin.count("shutdown_closes")
            line = "ERROR server shutting down"
        # worker_closed: deliver wrote the consumer's last line; client_closed, slow_reader: no one to tell
        if line is not None and not self.done_writing and not self.writer.is_closing():
            self._write(line)
        self.done_writing = True

    def interrupt(self, reason: str) -> None:
        """End the connection from the gateway's side: read no more lines (then :meth:`_last_words`)."""
        if self.close_reason is None:
            self.close_reason = reason
            if self.reading and self.task is not None:
                self.task.cancel()

    # -- worker -> client ----------------------------------------------------------------

    def deliver(self, message: Message) -> None:
        """The gateway's ``deliver``: one ``line.*`` reply, written out or dropped (counted).

        Runs in the gateway's reply loop: never waits, never raises.
        """
        plugin = self.plugin
        if self.done_writing or self.writer.is_closing():
            plugin.count("replies_dropped_closed")
            return
        # check_reply: checked against lineproto.md and typed, or None (counted
        # replies_invalid, logged with the spec's exact reason).
        kind = message.get("type")
        if kind == "line.send":
            send = plugin.check_reply(message, LineSendEvent)
            if send is not None and self._line_ok(message, send["text"]):
                self._write(send["text"])
                plugin.count(MESSAGES_OUT)
        elif kind == "line.close":
            close = plugin.check_reply(message, LineCloseEvent)
            if close is None:
                return
            text = close.get("text")
            if text is not None and not self._line_ok(message, text):
                return
            if text is not None:
                self._write(text)
                plugin.count(MESSAGES_OUT)
            self.done_writing = True
            self.interrupt("worker_closed")  # a no-op if _write found a slow reader
        else:
            plugin.reply_is_valid(message)  # a line.* type no worker sends: refused with the spec's reason

    def _line_ok(self, message: Message, text: str) -> bool:
        """What the spec cannot say: one line, within ``max_line_length``."""
        if "\n" in text or "\r" in text:
            self.plugin.drop_reply(message, f"{message['type']}: key 'text' holds a line break (one line per message)",
                                   key="text")
            return False
        limit = self.plugin.options.max_line_length
        if len(text) > limit // 4 and len(text.encode("utf-8")) > limit:  # len() first: no encode per line
            self.plugin.drop_reply(message, f"{message['type']}: key 'text' is over max_line_length {limit} bytes",
                                   key="text")
            return False
        return True

    def _write(self, text: str) -> None:
        """Write one line; a client that lets too much pile up is cut off (``slow_reader``)."""
        writer = self.writer
        writer.write((text + self.plugin.options.line_ending).encode("utf-8"))
        if writer.transport.get_write_buffer_size() > self.plugin.options.max_pending_bytes:
            self.plugin.count("slow_readers")
            self.plugin.log.warning("slow reader", "%s does not read its replies: aborted", self._client())
            if self.close_reason is None:
                self.close_reason = "slow_reader"
            writer.transport.abort()

    # -- helpers -----------------------------------------------------------------------

    def _client(self) -> str:
        peer = self.writer.get_extra_info("peername") or ("?", 0)
        return f"{peer[0]}:{peer[1]}"


async def close_gracefully(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, timeout: float) -> None:
    """Close so that what was written arrives: end our side, discard input until the client ends its own.

    Closing a socket with unread input makes the kernel send a reset, and a reset can
    destroy our last line (``ERROR line too long``) before the client reads it; a client
    that sent too much always has unread input. So the write side is shut first (FIN after
    the data), what the client still sends is read and dropped until it closes, for at
    most ``timeout`` seconds, then the socket is closed (aborted if it never flushed).
    """
    if writer.is_closing():
        return
    try:
        if writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
            writer.close()
            await writer.wait_closed()
    except (TimeoutError, OSError):
        pass
    finally:
        if not writer.transport.is_closing() or writer.transport.get_write_buffer_size():
            writer.transport.abort()


class LinePlugin(ProtocolPlugin[LineOptions]):
    """Lines over TCP: ``line.connect``/``line.received``/``line.disconnect`` in, ``line.send``/``line.close`` out."""

    name: ClassVar[str] = "lineproto"
    Options: ClassVar[type[Any]] = LineOptions
    scope_types: ClassVar[tuple[str, ...]] = ("line",)
    spec = resources.files(__package__) / "lineproto.md"

    def __init__(self, options: LineOptions) -> None:
        super().__init__(options)
        for counter in COUNTERS:
            self.counters[counter] = 0
        self.servers: list[asyncio.Server] = []
        self.sessions: set[_Session] = set()
        self.accepting = False
        # The options' times; stop() shortens them to fit its drain time.
        self.shutdown_grace = options.shutdown_grace
        self.close_timeout = options.close_timeout

    @property
    def bound_addresses(self) -> list[tuple[str, int]]:
        """The addresses listened on (port 0 in ``bind`` resolved to the real port)."""
        return [sock.getsockname()[:2] for server in self.servers for sock in server.sockets]

    def endpoints(self, gateway: Gateway) -> list[str]:
        return [f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}" for host, port in self.bound_addresses]

    async def start(self, gateway: Gateway) -> None:
        """Listen on every address; if one fails, close the ones already open and raise."""
        self.gateway = gateway
        self.accepting = True
        # The reader's limit: a line and its "\r" (the "\n" is not counted by readuntil).
        limit = self.options.max_line_length + 1
        try:
            for host, port in self.options.addresses:
                server = await asyncio.start_server(self._accept, host, port, limit=limit)
                self.servers.append(server)
        except OSError:
            await self.stop(0)
            raise  # the gateway reports it as a start-up error, naming the address in use
        logger.info("lineproto listening on %s", ", ".join(self.endpoints(gateway)))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """asyncio's callback for each client (run as its own task)."""
        gateway = self.gateway
        if gateway is None or not self.accepting or len(self.sessions) >= self.options.max_connections:
            what = "too many connections" if self.accepting else "server shutting down"
            self.count("connections_refused")
            self.log.warning("connection refused", "%s: %s", writer.get_extra_info("peername"), what)
            writer.write(f"ERROR {what}{self.options.line_ending}".encode())
            await close_gracefully(reader, writer, self.close_timeout)
            return
        session = _Session(self, reader, writer)
        self.sessions.add(session)
        try:
            await session.run(gateway)
        except Exception:  # a bug in one session ends that session, never the gateway
            self.count("session_errors")
            logger.exception("lineproto session with %s failed", session._client())
            writer.transport.abort()
        finally:
            self.sessions.discard(session)

    async def stop(self, timeout: float) -> None:
        """Stop listening, let open connections drain for up to ``timeout``, close the rest."""
        self.accepting = False
        for server in self.servers:
            server.close()
        # Within the drain time: the grace for late replies, then the goodbye and the close.
        self.shutdown_grace = min(self.options.shutdown_grace, timeout / 4)
        self.close_timeout = min(self.options.close_timeout, timeout / 4)
        tasks = [session.task for session in self.sessions if session.task is not None]
        for session in list(self.sessions):
            session.interrupt("shutdown")
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:  # past the drain time: cut them off
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        for server in self.servers:
            with contextlib.suppress(OSError):
                await server.wait_closed()
        self.servers.clear()
        self.gateway = None
        self.report_stats()

    def stats(self) -> dict[str, int]:
        """Counters plus the gauge ``open_connections``."""
        stats = dict(self.counters)
        stats["open_connections"] = len(self.sessions)
        return stats
