"""The HTTP + WebSocket protocol plugin: uvicorn for the wire, the channel layer for the rest.

uvicorn does all HTTP/1.1 and WebSocket framing; this plugin runs it inside the gateway's
event loop (no signal handling of its own: the gateway owns SIGTERM) on sockets it binds
itself, so several addresses, IPv6 and port 0 all work. The ASGI application uvicorn
calls is a bridge: each HTTP request or WebSocket connection becomes one gateway
connection whose events go to the worker pool and whose replies come back through
``Connection.deliver``.

Config (``SWITCHBOARD["PROTOCOLS"]["http"]``) is validated into :class:`HttpOptions`
before any socket opens, so a typo stops start-up instead of surfacing under load.
"""

from __future__ import annotations

import asyncio
import importlib.util
import ipaddress
import logging
import math
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

import uvicorn

from switchboard.gateway.config import parse_bind
from switchboard.gateway.plugins import ProtocolPlugin

from ._http_access import AccessEntry, access_logger
from ._http_body import BodyBudget
from ._http_common import BridgeContext, Receive, ReplyBound, Send, send_plain
from ._http_guard import ConnectionGuard, TrustedPeers
from ._http_request import serve_http
from ._http_uvicorn import ProtocolSettings, UvicornMismatch, check_uvicorn, http_protocol, websocket_protocol
from ._http_websocket import WebSocketSession

if TYPE_CHECKING:
    from switchboard.gateway.server import Gateway

logger = logging.getLogger("switchboard.protocols.http")

HttpImplementation = Literal["auto", "httptools", "h11"]
WsImplementation = Literal["websockets", "websockets-legacy", "wsproto", "auto"]

# Our names -> uvicorn's ws implementations. uvicorn 0.54 calls its deprecated, task-heavy
# implementation on the legacy websockets API "websockets" and says that name will move to
# "websockets-sansio"; we make that move now, so "websockets" means the websockets library
# through its maintained sans-I/O core (no extra tasks per connection: 10k idle sockets).
_WS_IMPLEMENTATIONS: dict[str, tuple[str, str]] = {  # name -> (uvicorn name, module it needs)
    "websockets": ("websockets-sansio", "websockets"),
    "websockets-legacy": ("websockets", "websockets"),
    "wsproto": ("wsproto", "wsproto"),
    "auto": ("auto", "websockets"),
}
# "auto" picks httptools when installed, as uvicorn does (h11 is pure Python and slower).
_HTTP_IMPLEMENTATIONS: dict[str, str] = {
    "auto": "httptools" if importlib.util.find_spec("httptools") is not None else "h11",
    "httptools": "httptools",
    "h11": "h11",
}

# After the plugin closes a WebSocket, how long to wait for uvicorn to finish the closing
# handshake before giving up on the client (uvicorn's own close timeout is the same).
_CLOSE_TIMEOUT = 10.0


@dataclass
class HttpOptions:
    """Options of the ``http`` protocol (``SWITCHBOARD["PROTOCOLS"]["http"]``)."""

    #: ``host:port`` addresses to listen on; ``[::1]:8000`` for IPv6, port 0 for any free port.
    bind: list[str] = field(default_factory=lambda: ["127.0.0.1:8000"])
    #: Largest request body (bytes) accepted; larger ones get 413 and never reach a worker.
    max_body_size: int = 10 * 1024 * 1024
    #: Largest WebSocket message (bytes) accepted; larger ones close the connection with 1009.
    max_frame_size: int = 1024 * 1024
    #: Seconds an idle keep-alive HTTP connection stays open.
    keep_alive_timeout: float = 5.0
    #: Seconds to wait for a worker to start a response (or accept/reject a WebSocket);
    #: then the client gets 503, so requests never hang on a missing or stuck worker pool.
    response_timeout: float = 60.0
    #: Seconds between WebSocket keep-alive pings (None: no pings).
    websocket_ping_interval: float | None = 20.0
    #: Seconds to wait for a pong before dropping the connection (None: wait forever).
    websocket_ping_timeout: float | None = 20.0
    #: Close a WebSocket with 1001 after this many seconds without messages either way.
    websocket_idle_timeout: float | None = None
    #: Seconds a client's WebSocket message is retried while the layer fails (Redis
    #: unreachable, a primary failing over) before the client is closed with 1013. The
    #: client's later messages wait behind it (not read meanwhile), so order is kept and
    #: a failover of a few seconds costs no reconnect storm. 0: close at once.
    websocket_layer_retry: float = 10.0
    #: Negotiate permessage-deflate. Off by default: it costs ~30 KiB of zlib state per
    #: connection, which matters with many idle sockets (Daphne did not offer it either).
    websocket_per_message_deflate: bool = False
    #: Most concurrent connections (HTTP and WebSocket); beyond it new requests get 503.
    max_connections: int | None = None
    #: Most sockets open at once from one peer address, counted when accepted (before a
    #: byte is read); beyond it 503 and close. Peers trusted by ``proxy_headers``
    #: (``forwarded_allow_ips``) are not capped by socket: their requests and WebSockets
    #: are counted by the forwarded client address instead. None: no limit.
    max_connections_per_ip: int | None = 256
    #: Peer addresses or networks never capped per address: by default loopback, which is
    #: a proxy on the same host (every client behind it shares its address) or local tools.
    max_connections_per_ip_exempt: list[str] = field(default_factory=lambda: ["127.0.0.0/8", "::1"])
    #: Seconds a new connection may stay silent before the first byte of its first request
    #: (``keep_alive_timeout`` covers the silence between requests); then it is closed.
    idle_timeout: float = 10.0
    #: Seconds from a request's first byte until its header block is complete, however
    #: slowly it arrives; then 408 and close (slowloris).
    header_timeout: float = 10.0
    #: Longest wait, in seconds, for the next piece of a request body; then 408 and close.
    body_timeout: float = 20.0
    #: A body that is not complete within this many bytes goes to the worker in
    #: ``http.request`` events of about this size (``more_body``), as it arrives.
    body_chunk_size: int = 64 * 1024
    #: Most request-body bytes all requests together may hold in the gateway while they
    #: wait to go to a worker; a request that would pass it gets 503.
    max_buffered_body_bytes: int = 32 * 1024 * 1024
    #: Largest request header block (request line and headers, bytes); larger ones get 431
    #: before they are buffered (400 with ``http: h11``, whose parser enforces it).
    max_header_size: int = 64 * 1024
    #: Most request headers; more get 431.
    max_headers: int = 100
    #: Most replies one connection may hold that its client has not read yet. Past it (or
    #: ``max_pending_reply_bytes``) the client is too slow for its consumer: a WebSocket is
    #: closed with 1013 ``client too slow``, a streaming HTTP response is cut off.
    max_pending_replies: int = 1000
    #: Most payload bytes (bodies, WebSocket data) of replies one connection may hold unread.
    max_pending_reply_bytes: int = 4 * 1024 * 1024
    #: WebSocket messages a client may send per second on average; faster clients are
    #: closed with 1008 (policy violation). None: no limit.
    websocket_max_messages_per_second: float | None = None
    #: Messages a client may send in one burst above that rate (default: one second's worth).
    websocket_message_burst: int | None = None
    #: Listen backlog of each socket.
    backlog: int = 2048
    #: SO_REUSEPORT on every bound socket, so several gateway processes on one host can
    #: listen on the same port and the kernel spreads new connections over them: how HTTP
    #: and WebSocket scale past one gateway process without a load balancer (docs/scaling.md),
    #: and how a new gateway can start listening before the old one stops (docs/deploys.md).
    reuse_port: bool = False
    #: ASGI ``root_path`` (the URL prefix a proxy mounts the site under).
    root_path: str = ""
    #: Trust X-Forwarded-For/-Proto from ``forwarded_allow_ips`` for client address and scheme.
    proxy_headers: bool = False
    #: Proxies trusted for ``proxy_headers`` (None: uvicorn's default, $FORWARDED_ALLOW_IPS or localhost).
    forwarded_allow_ips: list[str] | None = None
    #: Send ``server: uvicorn`` (off: no need to advertise the implementation).
    server_header: bool = False
    #: Log one line per request and WebSocket handshake on the ``switchboard.access`` logger
    #: (uvicorn's format plus the duration; ``switchboard run`` turns it on unless set).
    access_log: bool = False
    #: HTTP/1.1 parser: "httptools" (fast, C), "h11" (pure Python) or "auto".
    http: HttpImplementation = "auto"
    #: WebSocket implementation: "websockets", "websockets-legacy", "wsproto" or "auto".
    ws: WsImplementation = "websockets"

    def __post_init__(self) -> None:
        self._check_binds()
        self._check_numbers()
        self._check_exempt()
        if self.root_path and (not self.root_path.startswith("/") or self.root_path.endswith("/")):
            raise ValueError(f"root_path {self.root_path!r} must start with '/' and not end with '/'")
        self._check_implementations()
        try:
            check_uvicorn()
        except UvicornMismatch as exc:
            raise ValueError(str(exc)) from None

    def _check_exempt(self) -> None:
        for entry in self.max_connections_per_ip_exempt:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"max_connections_per_ip_exempt: {entry!r} is not an address or network") from None

    def _check_binds(self) -> None:
        if not self.bind:
            raise ValueError("bind must list at least one host:port address")
        for index, address in enumerate(self.bind):
            parse_bind(address, where=f"bind[{index}]")

    def _check_numbers(self) -> None:
        minimums: dict[str, tuple[float | None, float]] = {
            "max_body_size": (self.max_body_size, 0),
            "max_frame_size": (self.max_frame_size, 1),
            "backlog": (self.backlog, 1),
            "max_connections": (self.max_connections, 1),
            "max_connections_per_ip": (self.max_connections_per_ip, 1),
            "max_header_size": (self.max_header_size, 256),
            "max_headers": (self.max_headers, 1),
            "max_pending_replies": (self.max_pending_replies, 1),
            "max_pending_reply_bytes": (self.max_pending_reply_bytes, 1),
            "websocket_message_burst": (self.websocket_message_burst, 1),
            "body_chunk_size": (self.body_chunk_size, 1024),
            "max_buffered_body_bytes": (self.max_buffered_body_bytes, 64 * 1024),
        }
        for name, (value, minimum) in minimums.items():
            if value is not None and value < minimum:
                raise ValueError(f"{name} must be at least {minimum:g}, got {value!r}")
        positive = {
            "keep_alive_timeout": self.keep_alive_timeout,
            "response_timeout": self.response_timeout,
            "websocket_ping_interval": self.websocket_ping_interval,
            "websocket_ping_timeout": self.websocket_ping_timeout,
            "websocket_idle_timeout": self.websocket_idle_timeout,
            "idle_timeout": self.idle_timeout,
            "header_timeout": self.header_timeout,
            "body_timeout": self.body_timeout,
        }
        for name, seconds in positive.items():
            if seconds is not None and not seconds > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {seconds!r}")
        retry = self.websocket_layer_retry
        if not (retry >= 0 and math.isfinite(retry)):
            raise ValueError(f"websocket_layer_retry must be 0 or a positive number of seconds, got {retry!r}")
        rate = self.websocket_max_messages_per_second
        if rate is not None and not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"websocket_max_messages_per_second must be a positive number, got {rate!r}")
        if self.websocket_message_burst is not None and rate is None:
            raise ValueError("websocket_message_burst needs websocket_max_messages_per_second")

    @property
    def message_burst(self) -> int:
        """The token bucket's size: ``websocket_message_burst``, else one second of the rate."""
        if self.websocket_message_burst is not None:
            return self.websocket_message_burst
        return max(1, math.ceil(self.websocket_max_messages_per_second or 1))

    def _check_implementations(self) -> None:
        if self.http not in _HTTP_IMPLEMENTATIONS:
            raise ValueError(f"http must be one of {', '.join(_HTTP_IMPLEMENTATIONS)}, got {self.http!r}")
        if self.ws not in _WS_IMPLEMENTATIONS:
            raise ValueError(f"ws must be one of {', '.join(_WS_IMPLEMENTATIONS)}, got {self.ws!r}")
        for module in (_HTTP_IMPLEMENTATIONS[self.http], _WS_IMPLEMENTATIONS[self.ws][1]):
            if importlib.util.find_spec(module) is None:
                raise ValueError(f"the {module} package is not installed: pip install {module}")


def _file_limit() -> int | None:
    """This process's soft ``RLIMIT_NOFILE`` (None where unknown or unlimited)."""
    try:
        import resource
    except ImportError:  # not POSIX
        return None
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else int(soft)


def fd_reserve(limit: int, backlog: int) -> int:
    """Descriptors to keep free below ``limit``: what accepting can take before the guard sees it.

    The event loop accepts up to ``backlog`` sockets per wake-up and calls the protocols
    a loop pass or two later, so a few such batches may land before any is shed; plus
    room for the rest of the process (layer connections, aiortc's UDP sockets, files).
    At most half the limit, so a small limit still leaves most of it to connections.
    """
    return max(1, min(3 * backlog + 64, limit // 2))


class HttpPlugin(ProtocolPlugin[HttpOptions]):
    """Serves HTTP/1.1 and WebSocket clients through uvicorn; scope types http and websocket."""

    name = "http"
    Options = HttpOptions
    scope_types = ("http", "websocket")

    def __init__(self, options: HttpOptions) -> None:
        super().__init__(options)
        #: The addresses actually listened on, in ``bind`` order (port 0 resolved).
        self.bound_addresses: list[tuple[str, int]] = []
        self._server: uvicorn.Server | None = None
        self._sockets: list[socket.socket] = []
        self._main_loop: asyncio.Task[None] | None = None
        self._context: BridgeContext | None = None
        #: Open requests and WebSockets per forwarded client address (``proxy_headers`` only:
        #: sockets are counted per peer by the guard).
        self._per_ip: dict[str, int] = {}
        self._guard: ConnectionGuard | None = None
        self._body_budget = BodyBudget(options.max_buffered_body_bytes)
        #: Write access lines: the option, and someone listening at INFO (checked at start).
        self._access_log = False

    @property
    def guard(self) -> ConnectionGuard:
        """The per-socket limits (docs/http.md); exists once the plugin has started."""
        if self._guard is None:
            raise RuntimeError("the http plugin has not started")
        return self._guard

    # -- lifecycle --------------------------------------------------------------------

    async def start(self, gateway: Gateway) -> None:
        """Bind every address and start serving; on any failure nothing stays open."""
        if self._server is not None:
            raise RuntimeError("the http plugin is already started")
        self.gateway = gateway
        options = self.options
        self._context = BridgeContext(
            gateway=gateway,
            count=self.count,
            send_event=self.send_event,
            count_outcome=lambda connection, outcome: self.count(self.counter_name(outcome.value, connection.protocol)),
            max_body_size=options.max_body_size,
            response_timeout=options.response_timeout,
            idle_timeout=options.websocket_idle_timeout,
            close_timeout=_CLOSE_TIMEOUT,
            over_limit=self._over_limit,
            reply_bound=ReplyBound(options.max_pending_replies, options.max_pending_reply_bytes),
            body_budget=self._body_budget,
            message_rate=options.websocket_max_messages_per_second,
            layer_retry=options.websocket_layer_retry,
            message_burst=options.message_burst,
            body_chunk_size=options.body_chunk_size,
            body_timeout=options.body_timeout,
        )
        self._access_log = options.access_log and access_logger.isEnabledFor(logging.INFO)
        sockets = bind_sockets(options.bind, reuse_port=options.reuse_port)
        try:
            config = self._uvicorn_config()
            config.load()
            server = uvicorn.Server(config)
            # Server.serve() would create this before startup(); we call startup() directly
            # (serve() also installs signal handlers, which belong to the gateway).
            server.lifespan = config.lifespan_class(config)
            await server.startup(sockets=sockets)
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        self._server = server
        self._sockets = sockets
        self.bound_addresses = [_address_of(sock) for sock in sockets]
        # main_loop refreshes the cached Date header every second and returns on should_exit.
        self._main_loop = asyncio.get_running_loop().create_task(server.main_loop(), name="http-main-loop")
        logger.info("http listening on %s", ", ".join(_format_address(a) for a in self.bound_addresses))

    async def stop(self, timeout: float) -> None:
        """Stop accepting, let in-flight requests finish for up to ``timeout`` seconds, close.

        uvicorn's shutdown closes idle keep-alive connections at once, lets running
        requests complete (then closes their connections) and closes WebSockets with 1012;
        whatever still runs after ``timeout`` is cancelled.
        """
        server = self._server
        if server is None:
            return
        self._server = None
        server.should_exit = True
        if self._main_loop is not None:
            await self._main_loop
            self._main_loop = None
        # uvicorn hands this straight to asyncio.wait_for, which takes any number of seconds.
        server.config.timeout_graceful_shutdown = cast(int, max(timeout, 0.0))
        await server.shutdown(sockets=self._sockets)
        self._sockets = []
        if self._guard is not None:
            self._guard.stop()
        self._body_budget.close()
        leftover = list(server.server_state.tasks)
        if leftover:
            # Cancelled after the timeout: let their cleanup (disconnect events) run.
            await asyncio.wait(leftover, timeout=1.0)
        self.gateway = None
        logger.info("http stopped")

    def _new_guard(self) -> ConnectionGuard:
        options = self.options
        limit = _file_limit()
        reserve = 0 if limit is None else fd_reserve(limit, options.backlog)
        if limit is not None and reserve < 3 * options.backlog + 64:
            logger.warning(
                "the file limit (%d) is low for a listen backlog of %d: the gateway starts shedding idle "
                "connections at %d open; raise the limit (ulimit -n) or lower the backlog",
                limit,
                options.backlog,
                limit - reserve,
            )
        proxies = self._trusted_proxies() if options.proxy_headers else []
        if isinstance(proxies, str):
            proxies = proxies.split(",")
        trusted = TrustedPeers([*options.max_connections_per_ip_exempt, *proxies])
        return ConnectionGuard(
            count=self.count,
            max_per_ip=options.max_connections_per_ip,
            trusted=trusted,
            idle_timeout=options.idle_timeout,
            header_timeout=options.header_timeout,
            fd_limit=limit,
            fd_reserve=reserve,
        )

    def _trusted_proxies(self) -> list[str] | str:
        """``forwarded_allow_ips``, or uvicorn's default for it (its Config resolves the same)."""
        if self.options.forwarded_allow_ips is not None:
            return self.options.forwarded_allow_ips
        return uvicorn.Config(app=self._asgi, log_config=None).forwarded_allow_ips

    def base_urls(self) -> list[str]:
        """``http://host:port<root_path>`` of every address listened on (port 0 resolved)."""
        return [f"http://{_format_address(address)}{self.options.root_path}" for address in self.bound_addresses]

    def endpoints(self, gateway: Gateway) -> list[str]:
        return [f"{url}/  (WebSocket ws://{url.removeprefix('http://')}/)" for url in self.base_urls()]

    def _uvicorn_config(self) -> uvicorn.Config:
        options = self.options
        self._guard = guard = self._new_guard()
        settings = ProtocolSettings(options.max_header_size, options.max_headers, self.count, guard)
        implementation = _HTTP_IMPLEMENTATIONS[options.http]
        return uvicorn.Config(
            app=self._asgi,
            interface="asgi3",
            lifespan="off",
            log_config=None,
            access_log=False,  # ours has the duration and sees every answer: _http_access.py
            http=http_protocol(implementation, settings),
            h11_max_incomplete_event_size=options.max_header_size,
            ws=websocket_protocol(settings, _WS_IMPLEMENTATIONS[options.ws][0]),
            ws_max_size=options.max_frame_size,
            ws_ping_interval=options.websocket_ping_interval,
            ws_ping_timeout=options.websocket_ping_timeout,
            ws_per_message_deflate=options.websocket_per_message_deflate,
            # uvicorn refuses once len(connections) >= limit, counting the new one itself.
            limit_concurrency=None if options.max_connections is None else options.max_connections + 1,
            backlog=options.backlog,
            # Typed int in uvicorn but only passed to loop.call_later, which takes floats.
            timeout_keep_alive=cast(int, options.keep_alive_timeout),
            root_path=options.root_path,
            proxy_headers=options.proxy_headers,
            forwarded_allow_ips=options.forwarded_allow_ips,
            server_header=options.server_header,
        )

    # -- the bridge ---------------------------------------------------------------------

    async def _asgi(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        """The ASGI application uvicorn runs for every request and WebSocket: the access log, then :meth:`_serve`."""
        if not self._access_log or scope["type"] not in ("http", "websocket"):
            await self._serve(scope, receive, send)
            return
        entry = AccessEntry(scope)
        try:
            await self._serve(scope, receive, entry.wrap(send))
        finally:
            entry.log()

    async def _serve(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        """Route one request or WebSocket: refusals, mounted endpoints, else the worker pool."""
        context = self._context
        assert context is not None
        # Endpoints other plugins serve inside the gateway (WebRTC signaling, SMS webhooks)
        # share this port and never reach the workers: see Gateway.mount.
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            return
        if self._headers_over_limit(scope["headers"]):
            await self._refuse(kind, scope, receive, send, 431, "Request header fields too large", "431")
            return
        # Sockets are capped per peer when accepted (the guard); behind trusted proxies the
        # cap applies here, per request and WebSocket, to the forwarded client address.
        address = self._client_address(scope) if self.options.proxy_headers else None
        limit = self.options.max_connections_per_ip
        if address is not None and limit is not None and self._per_ip.get(address, 0) >= limit:
            await self._refuse(kind, scope, receive, send, 503, "too many connections from your address", "503_per_ip")
            return
        if address is not None and limit is not None:
            self._per_ip[address] = self._per_ip.get(address, 0) + 1
        try:
            # Endpoints other plugins serve inside the gateway (WebRTC signaling, SMS webhooks)
            # share this port and never reach the workers: see Gateway.mount.
            mounted = context.gateway.find_mount(scope["path"])
            if mounted is not None:
                await mounted(scope, receive, send)
            elif kind == "http":
                await serve_http(context, scope, receive, send)
            else:
                await WebSocketSession(context, scope, receive, send).run()
        finally:
            if address is not None and limit is not None:
                left = self._per_ip[address] - 1
                if left:
                    self._per_ip[address] = left
                else:
                    del self._per_ip[address]

    async def _refuse(
        self, kind: str, scope: dict[str, Any], receive: Receive, send: Send, status: int, text: str, counter: str
    ) -> None:
        """Answer a request or WebSocket handshake ourselves; nothing reaches a worker."""
        context = self._context
        assert context is not None
        self.count(f"{kind}.{counter}")
        if kind == "http":
            await send_plain(send, status, f"{text}\n", close=True, retry_after=1 if status == 503 else None)
        else:
            await WebSocketSession(context, scope, receive, send).refuse(status, text)

    def stats(self) -> dict[str, int]:
        """Counters, plus two gauges: sockets open and request-body bytes held right now."""
        stats = super().stats()
        stats["http.open_sockets"] = self._guard.open_sockets if self._guard is not None else 0
        stats["http.body_bytes_buffered"] = self._body_budget.used
        return stats

    def _headers_over_limit(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """The second line of the header limits, before anything opens on the layer.

        Our httptools protocol refuses big header blocks before buffering them. h11 only
        limits a block that arrives in pieces (``h11_max_incomplete_event_size``) and
        counts no headers, so with h11 a block that came in one read is measured here.
        """
        options = self.options
        if len(headers) > options.max_headers:
            return True
        if _HTTP_IMPLEMENTATIONS[options.http] != "h11":
            return False
        return sum(len(name) + len(value) + 4 for name, value in headers) > options.max_header_size

    @staticmethod
    def _client_address(scope: dict[str, Any]) -> str | None:
        client = scope.get("client")
        return str(client[0]) if client else None

    def _over_limit(self) -> bool:
        """Whether ``max_connections`` is exceeded (uvicorn checks HTTP itself, not upgrades)."""
        limit = self.options.max_connections
        server = self._server
        if limit is None or server is None:
            return False
        state = server.server_state
        return len(state.connections) > limit or len(state.tasks) > limit


def bind_sockets(binds: list[str], *, reuse_port: bool = False) -> list[socket.socket]:
    """One listening-ready socket per ``host:port``; all closed again if any bind fails."""
    sockets: list[socket.socket] = []
    try:
        for index, address in enumerate(binds):
            host, port = parse_bind(address, where=f"bind[{index}]")
            sockets.append(_bind(host, port, reuse_port=reuse_port))
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def _bind(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            # So "[::]:8000" and "0.0.0.0:8000" can both be listed without colliding.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"http cannot listen on {_format_address((host, port))}: {exc.strerror}") from exc
    return sock


def _address_of(sock: socket.socket) -> tuple[str, int]:
    name = sock.getsockname()
    return str(name[0]), int(name[1])


def _format_address(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
