"""The WebRTC plugin: data channels of WebRTC peers, one sticky gateway connection per peer.

aiortc does ICE, DTLS, SCTP and the data channel protocol; this module is translation and
policy (``specs/webrtc.md``):

* **Signaling** is an HTTP (or WebSocket) endpoint mounted inside the gateway on the HTTP
  plugin's port (``_webrtc_signaling.py``). A peer posts its complete offer and gets the
  complete answer; the ``RTCPeerConnection`` then lives in this gateway process, which
  owns the peer's UDP sockets, for as long as the peer does.
* **Each peer is one sticky connection** (``gateway.open_connection(..., sticky=True)``):
  its events — ``webrtc.connect``, ``webrtc.datachannel.open/message/close``,
  ``webrtc.disconnect`` — go to the worker pool in order through one small pump task per
  peer, and after the first one the pump waits (briefly) for the worker's claim, so every
  event reaches the consumer instance that saw ``webrtc.connect``.
* **Outbound** ``webrtc.datachannel.send`` / ``webrtc.close`` come back through
  ``Connection.deliver``; each is checked against the spec and the plugin's limits before
  aiortc sees it. A bad one is logged (rate-limited), counted and dropped.
* **Limits**: peers, channels per peer, message size (advertised to the peer in the
  answer's ``a=max-message-size``), queued events per peer, unread outbound bytes per
  channel, connect and idle timeouts. Every drop is counted (``WebrtcPlugin.stats``).
* **Who may take a peer slot**: answering an offer costs sockets, a DTLS certificate and
  ICE checks, and the peer holds a slot of ``max_peers`` until it connects or
  ``connect_timeout`` passes. So before any of that, an offer must pass a per-address rate
  (``max_offers_per_second_per_ip``), the site's login where the site has logins
  (``require_login``: Django's session cookie, looked up as ``AuthMiddleware`` does), a
  cap on ICE candidates (each one is an address the gateway would send STUN checks to)
  and a per-address peer cap (``max_peers_per_ip``). aioice's per-connection INFO lines
  are rate-limited too (an offer's candidates would otherwise each log several).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, cast

import aioice.ice
from aiortc import RTCConfiguration, RTCDataChannel, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc import sdp as aiortc_sdp
from aiortc.rtcicetransport import parse_stun_turn_uri
from aiortc.rtcsctptransport import RTCSctpCapabilities

from switchboard.gateway.config import ConfigError
from switchboard.gateway.layers import Message
from switchboard.gateway.plugins import CONNECTIONS_OPENED, MESSAGES_IN, MESSAGES_OUT, EventOutcome, ProtocolPlugin, http_urls
from switchboard.gateway.ratelimit import PeerRateLimiter
from switchboard.messages import WebrtcDatachannelSendEvent, WebrtcToGateway

from ._webrtc_signaling import SignalingApp, SignalingError, SignalingLimits

if TYPE_CHECKING:
    from switchboard.gateway.server import Connection, Gateway

logger = logging.getLogger("switchboard.protocols.webrtc")

# The version of specs/webrtc.md this module implements (scope["asgi"]["spec_version"]).
SPEC_VERSION = "1.0"

CONNECT = "webrtc.connect"
OPEN = "webrtc.datachannel.open"
MESSAGE = "webrtc.datachannel.message"
CHANNEL_CLOSE = "webrtc.datachannel.close"
DISCONNECT = "webrtc.disconnect"
SEND = "webrtc.datachannel.send"
CLOSE = "webrtc.close"

# After the first event of a peer, how long its pump waits for the worker's claim before
# sending the next one anyway (to the pool): bounded, so a worker pool that does not route
# webrtc delays a peer by this much once, not forever.
CLAIM_WAIT = 2.0

_ICE_SERVER_KEYS = frozenset({"urls", "username", "credential"})


@dataclass
class WebrtcOptions:
    """Options of ``SWITCHBOARD["PROTOCOLS"]["webrtc"]``; checked before any socket opens."""

    #: Where the signaling endpoint is mounted on the HTTP plugin's port; it also serves
    #: every path below it, and the peer's ``scope["path"]`` is the path actually used.
    path: str = "/webrtc/offer"
    #: STUN/TURN servers, as in the browser: ``[{"urls": "stun:stun.example.com:3478"},
    #: {"urls": ["turn:turn.example.com"], "username": "u", "credential": "p"}]``.
    #: Empty: host candidates only (enough on one host or LAN). aioice uses the first STUN
    #: and the first TURN server only.
    ice_servers: list[dict[str, Any]] = field(default_factory=list)
    #: The local addresses to offer as ICE host candidates. None: every interface address
    #: but loopback (aioice's choice). ``["127.0.0.1"]`` keeps peers on loopback (tests,
    #: development). Process-wide in aioice: it applies to every peer of this gateway.
    ice_host_addresses: list[str] | None = None
    #: Open peers (plus offers being answered); beyond it offers get 503.
    max_peers: int = 100
    #: Open peers (plus offers being answered) of one client address; beyond it offers get
    #: 429, so one address cannot take every slot. None: no per-address cap (behind a
    #: proxy that hides client addresses every peer seems to come from the proxy).
    max_peers_per_ip: int | None = 10
    #: Offers per second one client address may send (a token bucket of ``offer_burst``);
    #: beyond it 429, before any work is done. None: no rate.
    max_offers_per_second_per_ip: float | None = 2.0
    offer_burst: int = 20
    #: Only signaling requests whose session cookie names a logged-in user of the site may
    #: make a peer (else 403). None: on when the site has logins (``django.contrib.auth``
    #: and ``django.contrib.sessions`` installed). False for deliberately public WebRTC.
    require_login: bool | None = None
    #: ICE candidates (``a=candidate`` lines) one offer may carry; more gets 400. Each is
    #: an address the gateway would send STUN checks to; browsers offer a handful.
    max_offer_candidates: int = 20
    #: Open data channels per peer; more are closed at once (counted).
    max_channels: int = 16
    #: Largest data channel message (bytes, UTF-8 for text) either way; advertised to the
    #: peer in the answer. Larger ones are dropped and counted.
    max_message_size: int = 65536
    #: Largest signaling body (the offer); larger gets 413.
    max_signaling_size: int = 64 * 1024
    #: Messages of one peer waiting for the layer; beyond it new ones are dropped (counted).
    queue_size: int = 1000
    #: Outbound bytes a channel may hold that the peer has not taken yet; beyond it
    #: ``webrtc.datachannel.send`` is dropped (counted) instead of buffered without bound.
    send_buffer_limit: int = 1024 * 1024
    #: A peer that is not connected this many seconds after the answer is closed.
    connect_timeout: float = 30.0
    #: Close a peer after this many seconds without data channel messages either way
    #: (None: never; dead peers still end within ~30 s through ICE consent checks).
    peer_idle_timeout: float | None = None
    #: Seconds to answer one offer (mostly ICE gathering: STUN/TURN round trips); then 503.
    signaling_timeout: float = 10.0
    #: Browser origins allowed to signal besides the gateway's own host, exactly as sent
    #: (``"https://app.example.com"``); ``"*"`` allows any.
    allowed_origins: list[str] = field(default_factory=list)
    #: Also accept offers over a WebSocket at ``path``.
    websocket_signaling: bool = True
    #: A regular expression the rest of a signaling path (after ``path/``) must match in
    #: full, e.g. ``"[A-Za-z0-9_-]{1,90}/"`` for room names: other paths get 404 before a
    #: peer is made, as a WebSocket route refuses a bad URL before accepting. None: any
    #: path (the application's routing decides, once the peer is connected).
    path_pattern: str | None = None

    def __post_init__(self) -> None:
        if not self.path.startswith("/") or (self.path != "/" and self.path.endswith("/")):
            raise ValueError(f"path must start with '/' and not end with '/', got {self.path!r}")
        for index, server in enumerate(self.ice_servers):
            _check_ice_server(server, f"ice_servers[{index}]")
        for address in self.ice_host_addresses or []:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ValueError(f"ice_host_addresses: {address!r} is not an IP address literal") from None
        if self.path_pattern is not None:
            try:
                re.compile(self.path_pattern)
            except re.error as exc:
                raise ValueError(f"path_pattern: {exc}") from None
        if self.ice_host_addresses is not None and not self.ice_host_addresses:
            raise ValueError("ice_host_addresses: give at least one address, or leave it out (None)")
        for name in (
            "max_peers",
            "max_channels",
            "max_message_size",
            "max_signaling_size",
            "queue_size",
            "send_buffer_limit",
            "offer_burst",
            "max_offer_candidates",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_peers_per_ip is not None and self.max_peers_per_ip < 1:
            raise ValueError(f"max_peers_per_ip must be at least 1 (or null), got {self.max_peers_per_ip}")
        rate = self.max_offers_per_second_per_ip
        if rate is not None and not 0 < rate < float("inf"):
            raise ValueError(f"max_offers_per_second_per_ip must be a positive number (or null), got {rate!r}")
        for name in ("connect_timeout", "peer_idle_timeout", "signaling_timeout"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")

    def rtc_configuration(self) -> RTCConfiguration:
        """aiortc's configuration. An explicit empty list: aiortc's default is Google's STUN."""
        servers = [RTCIceServer(**server) for server in self.ice_servers]
        return RTCConfiguration(iceServers=servers)


def _check_ice_server(server: dict[str, Any], where: str) -> None:
    unknown = set(server) - _ICE_SERVER_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; known: urls, username, credential")
    urls = server.get("urls")
    if isinstance(urls, str):
        urls = [urls]
    if not isinstance(urls, list) or not urls or not all(isinstance(url, str) for url in urls):
        raise ValueError(f"{where}: urls must be a URL string or a non-empty list of them")
    for url in urls:
        try:
            parsed = parse_stun_turn_uri(url)  # aiortc's own parser: what it accepts, we accept
        except ValueError as exc:
            raise ValueError(f"{where}: {url!r}: {exc}") from None
        if parsed["scheme"] in ("turn", "turns") and not (server.get("username") and server.get("credential")):
            raise ValueError(f"{where}: {url!r} needs a username and a credential")
    for key in ("username", "credential"):
        if key in server and not isinstance(server[key], str):
            raise ValueError(f"{where}: {key} must be a string")


class _HostAddresses:
    """Which local addresses aioice offers as host candidates.

    aioice enumerates every interface itself and always leaves out loopback, with no
    option to change either; a gateway that should keep peers on loopback (tests, a
    development box without a LAN address), or on one interface, replaces aioice's
    enumeration while it runs. The replacement is process-wide, so it is installed once
    and removed when the last plugin using it stops.
    """

    def __init__(self) -> None:
        self._stack: list[list[str]] = []
        self._original: Any = None  # aioice.ice.get_host_addresses, while replaced

    def push(self, addresses: list[str]) -> None:
        if not self._stack:
            self._original = aioice.ice.get_host_addresses
            aioice.ice.get_host_addresses = self._addresses
        self._stack.append(addresses)

    def pop(self, addresses: list[str]) -> None:
        with contextlib.suppress(ValueError):
            self._stack.remove(addresses)
        if not self._stack and self._original is not None:
            aioice.ice.get_host_addresses = self._original
            self._original = None

    def _addresses(self, use_ipv4: bool, use_ipv6: bool) -> list[str]:
        chosen = self._stack[-1] if self._stack else []
        return [a for a in chosen if (use_ipv6 if ":" in a else use_ipv4)]


HOST_ADDRESSES = _HostAddresses()


def _offer_problem(offer_sdp: str, max_candidates: int) -> str | None:
    """Why the offer will not be answered, or None.

    Checked with aiortc's SDP parser before aiortc acts on the offer: an offer with many
    unbundled media sections would make it gather candidates (bind sockets) for each, and
    every ICE candidate it names is an address the gateway would send STUN checks to.
    """
    try:
        description = aiortc_sdp.SessionDescription.parse(offer_sdp)
    except Exception as exc:  # the parser raises ValueError, IndexError... on garbage
        return f"the SDP does not parse: {type(exc).__name__}"
    kinds = [media.kind for media in description.media]
    if kinds != ["application"]:
        return f"the offer must have exactly one data channel section (m=application), got {kinds or 'none'}"
    (media,) = description.media
    # aiortc answers an offer without these, then fails inside a task of its own that
    # nobody awaits (an AssertionError logged as "Task exception was never retrieved"):
    # the client's mistake, so refused here with a 400 like any other.
    if media.dtls is None or not media.dtls.fingerprints:
        return "the offer has no DTLS fingerprint (a=fingerprint with a=setup)"
    if media.ice is None or not media.ice.usernameFragment or not media.ice.password:
        return "the offer has no ICE credentials (a=ice-ufrag and a=ice-pwd)"
    candidates = len(media.ice_candidates)
    if candidates > max_candidates:
        return f"the offer has {candidates} ICE candidates; at most {max_candidates} are accepted"
    return None


def _client_ip(request: dict[str, Any]) -> str:
    """The signaling client's address, as the per-address limits count it."""
    client = request.get("client")
    return str(client[0]) if client else "unknown"


def site_has_logins() -> bool:
    """Whether the Django project has logins: the auth and sessions apps installed."""
    try:
        from django.apps import apps
    except ImportError:
        return False
    return apps.ready and apps.is_installed("django.contrib.auth") and apps.is_installed("django.contrib.sessions")


async def logged_in(request: dict[str, Any]) -> bool:
    """Whether the request's session cookie names a logged-in user of the site.

    The same lookup ``AuthMiddleware`` makes for the consumer later (Django's session
    engine and ``get_user``, off the event loop); no cookie costs no lookup.
    """
    from django.conf import settings

    from switchboard.consumers.auth import get_user
    from switchboard.consumers.sessions import cookies_from_scope, session_store_class

    key = cookies_from_scope(request).get(settings.SESSION_COOKIE_NAME)
    if not key:
        return False
    user = await get_user({"session": session_store_class()(key)})
    return bool(user.is_authenticated)


class _IceLogLimiter(logging.Filter):
    """Rate-limits aioice's per-connection log lines (INFO and below) on ``aioice.ice``.

    aioice logs each candidate pair's every state change at INFO, prefixed with its
    connection: an offer of many candidates, or many peers at once, would write thousands
    of lines. Each connection may log ``burst`` lines and then ``rate`` per second, all of
    them together ``total_rate`` per second; a line let through after a gap says how many
    were held back. Warnings and errors always pass. Installed once per process.
    """

    def __init__(self, burst: int = 20, rate: float = 1.0, total_burst: int = 100, total_rate: float = 20.0) -> None:
        super().__init__()
        self.per_connection = PeerRateLimiter(rate=rate, burst=burst, max_peers=10_000)
        self.total = PeerRateLimiter(rate=total_rate, burst=total_burst, max_peers=1)
        self.suppressed = 0
        self._held_back = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        connection = str(id(args[0])) if args else "-"
        if not (self.per_connection.allow(connection) and self.total.allow("all")):
            self.suppressed += 1
            self._held_back += 1
            return False
        if self._held_back:
            record.msg = f"{record.msg} ({self._held_back} aioice lines held back before this one)"
            self._held_back = 0
        return True


ICE_LOG_LIMITER = _IceLogLimiter()


def _limit_ice_logging() -> None:
    ice_logger = logging.getLogger("aioice.ice")
    if ICE_LOG_LIMITER not in ice_logger.filters:
        ice_logger.addFilter(ICE_LOG_LIMITER)


def _peer_scope(request: dict[str, Any]) -> dict[str, Any]:
    """The peer's scope (specs/webrtc.md), from its signaling request's scope."""
    client = request.get("client")
    return {
        "type": "webrtc",
        "asgi": {"version": "3.0", "spec_version": SPEC_VERSION},
        "path": request["path"],
        "root_path": request.get("root_path", ""),
        "query_string": request.get("query_string", b""),
        "headers": [[bytes(name), bytes(value)] for name, value in request.get("headers", [])],
        "client": [str(client[0]), int(client[1])] if client else None,
    }


def _size(data: str | bytes) -> int:
    return len(data.encode()) if isinstance(data, str) else len(data)


class _Peer:
    """One ``RTCPeerConnection`` and its gateway connection.

    aiortc reports everything through synchronous callbacks; they only append to this
    peer's queue, and one pump task sends the queue to the layer in order. The queue is
    unbounded for the few lifecycle events, and bounded by ``queue_size`` for messages.
    """

    def __init__(self, plugin: WebrtcPlugin, pc: RTCPeerConnection, ip: str) -> None:
        self.plugin = plugin
        self.options = plugin.options
        self.pc = pc
        self.ip = ip  # the signaling client's address: what max_peers_per_ip counts
        self.loop = asyncio.get_running_loop()
        self.connection: Connection | None = None
        self.channels: dict[str, RTCDataChannel] = {}
        self.queue: asyncio.Queue[Message | None] = asyncio.Queue()
        self.queued_messages = 0
        self.connected = False
        self.connect_queued = False
        self.connect_sent = False
        self.closing = False
        self.finished = False  # the final event is queued: nothing more goes to the queue
        self.last_activity = self.loop.time()
        self.timer: asyncio.TimerHandle | None = None
        self.pump: asyncio.Task[None] | None = None
        self.close_task: asyncio.Task[None] | None = None
        pc.on("connectionstatechange", self._on_state)
        pc.on("datachannel", self._on_datachannel)

    def open(self, scope: dict[str, Any]) -> None:
        """Register with the gateway once answered; from now on events flow."""
        self.connection = self.plugin.gateway_or_fail().open_connection(scope, self.deliver, sticky=True)
        self.pump = self.loop.create_task(self._pump(), name="webrtc-peer-pump")
        self.timer = self.loop.call_later(self.options.connect_timeout, self._on_connect_timeout)

    # -- aiortc callbacks (sync) ----------------------------------------------------------

    def _on_state(self) -> None:
        if self.connection is None:
            return  # still negotiating: a failure there is the signaling request's to report
        state = self.pc.connectionState
        if state == "connected":
            self._on_connected()
        elif state in ("failed", "closed"):
            # A vanished peer (ICE consent lost) also ends as "closed": aiortc reports it
            # exactly like a goodbye.
            self.close(state)

    def _on_connected(self) -> None:
        if self.connected or self.closing or self.connection is None:
            return
        self.connected = True
        self.plugin.count("peers_connected")
        self.connect_queued = True
        self._enqueue({"type": CONNECT})
        self._arm_idle()

    def _on_datachannel(self, channel: RTCDataChannel) -> None:
        if self.closing or self.connection is None:
            channel.close()
            return
        self._on_connected()  # a channel cannot open on an unconnected peer: connect first
        if len(self.channels) >= self.options.max_channels:
            self.plugin.count("channels_refused_limit")
            self.plugin.log.warning("channels", "webrtc peer opened more than max_channels data channels: closed one")
            channel.close()
            return
        if channel.label in self.channels:
            self.plugin.count("channels_refused_duplicate")
            self.plugin.log.warning("duplicate", "webrtc peer opened a second channel labelled %r: closed it", channel.label[:40])
            channel.close()
            return
        self.channels[channel.label] = channel
        channel.on("message", lambda data: self._on_message(channel, data))
        channel.on("close", lambda: self._on_channel_close(channel))
        if channel.readyState == "open":
            self._on_channel_open(channel)
        else:
            channel.on("open", lambda: self._on_channel_open(channel))

    def _on_channel_open(self, channel: RTCDataChannel) -> None:
        self.plugin.count("channels_opened")
        self._enqueue({"type": OPEN, "label": channel.label, "id": channel.id, "protocol": channel.protocol or ""})

    def _on_channel_close(self, channel: RTCDataChannel) -> None:
        if self.channels.get(channel.label) is channel:
            del self.channels[channel.label]
            self._enqueue({"type": CHANNEL_CLOSE, "label": channel.label})

    def _on_message(self, channel: RTCDataChannel, data: str | bytes) -> None:
        plugin = self.plugin
        plugin.count(MESSAGES_IN)
        if self.channels.get(channel.label) is not channel or self.finished:
            return
        if _size(data) > self.options.max_message_size:
            plugin.count("messages_dropped_oversize")
            plugin.log.warning("oversize", "webrtc message over max_message_size dropped")
            return
        if self.queued_messages >= self.options.queue_size:
            plugin.count("messages_dropped_queue_full")
            plugin.log.warning("queue", "webrtc peer has %d messages waiting for the layer: dropped one", self.queued_messages)
            return
        self.last_activity = self.loop.time()
        key = "text" if isinstance(data, str) else "bytes"
        self.queued_messages += 1
        self._enqueue({"type": MESSAGE, "label": channel.label, key: data})

    def _enqueue(self, event: Message) -> None:
        if not self.finished:
            self.queue.put_nowait(event)

    # -- timers ---------------------------------------------------------------------------

    def _on_connect_timeout(self) -> None:
        self.timer = None
        if not self.connected:
            self.plugin.count("connect_timeouts")
            self.close("connect_timeout")

    def _arm_idle(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        idle = self.options.peer_idle_timeout
        if idle is not None and not self.closing:
            self.timer = self.loop.call_at(self.last_activity + idle, self._on_idle_check)

    def _on_idle_check(self) -> None:
        self.timer = None
        idle = self.options.peer_idle_timeout
        if idle is not None and self.loop.time() - self.last_activity >= idle:
            self.plugin.count("idle_timeouts")
            self.close("idle_timeout")
        else:
            self._arm_idle()

    # -- to the worker pool ---------------------------------------------------------------

    async def _pump(self) -> None:
        """Send this peer's events in order until the final one (None ends it)."""
        while True:
            event = await self.queue.get()
            if event is None:
                return
            kind = event["type"]
            if kind == MESSAGE:
                self.queued_messages -= 1
            # Refused or failed: counted (events_*) and logged by send_event; the event is dropped.
            assert self.connection is not None
            if kind == CONNECT:
                self.connect_sent = await self.plugin.send_event(self.connection, event) is EventOutcome.SENT
                if not self.connect_sent:
                    self.close("server_busy")
                    continue
                await self._wait_claimed()
            elif self.connect_sent:  # nothing reaches a consumer that never saw connect
                await self.plugin.send_event(self.connection, event)

    async def _wait_claimed(self) -> None:
        """Hold the next events until a worker claimed the peer (see CLAIM_WAIT)."""
        connection = self.connection
        assert connection is not None
        deadline = self.loop.time() + CLAIM_WAIT
        delay = 0.001
        while connection.sticky and connection.worker is None and connection.open and self.loop.time() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.02)

    # -- from consumers -------------------------------------------------------------------

    def deliver(self, message: Message) -> None:
        """A reply for this peer (called by the gateway's reply loop; must not block)."""
        if not self.plugin.reply_is_valid(message):  # counted and logged with the spec's reason
            return
        reply = cast(WebrtcToGateway, message)
        if reply["type"] == "webrtc.close":
            self.close("consumer_closed")
        else:
            self._send_to_peer(reply)

    def _send_to_peer(self, message: WebrtcDatachannelSendEvent) -> None:
        plugin = self.plugin
        label = message["label"]
        text, raw = message.get("text"), message.get("bytes")
        data: str | bytes = text if text is not None else raw or b""
        channel = self.channels.get(label)
        refusal = self._refusal(channel, data)
        if refusal is not None:
            plugin.count(refusal)
            plugin.log.warning(refusal, "webrtc.datachannel.send to %r dropped (%s)", label[:40], refusal)
            return
        assert channel is not None
        try:
            channel.send(data)
        except Exception as exc:  # InvalidStateError, ValueError (over the peer's max-message-size)
            plugin.count("send_dropped_oversize" if isinstance(exc, ValueError) else "send_dropped_closed")
            plugin.log.warning("send", "webrtc.datachannel.send to %r dropped: %s", label[:40], exc)
            return
        plugin.count(MESSAGES_OUT)
        self.last_activity = self.loop.time()

    def _refusal(self, channel: RTCDataChannel | None, data: str | bytes) -> str | None:
        """The counter naming why ``data`` cannot go to ``channel``, or None."""
        if self.closing:
            return "send_dropped_closed"
        if channel is None:
            return "send_dropped_unknown_label"
        if channel.readyState != "open":
            return "send_dropped_closed"
        if _size(data) > self.options.max_message_size:
            return "send_dropped_oversize"
        if channel.bufferedAmount > self.options.send_buffer_limit:
            return "send_dropped_backpressure"
        return None

    # -- the end --------------------------------------------------------------------------

    def close(self, reason: str) -> asyncio.Task[None]:
        """Close the peer (idempotent); the consumer gets ``webrtc.disconnect`` with ``reason``."""
        if self.close_task is None:
            self.closing = True
            self.close_task = self.loop.create_task(self._close(reason), name="webrtc-peer-close")
        return self.close_task

    async def _close(self, reason: str) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        try:
            await self.pc.close()  # aiortc closes every channel: their close events queue first
        except Exception:
            logger.exception("closing a webrtc peer connection failed")
        if self.connect_queued:
            self._enqueue({"type": DISCONNECT, "reason": reason})
        self.finished = True
        self.queue.put_nowait(None)
        try:
            if self.pump is not None:
                await self.pump
        finally:
            if self.connection is not None:
                self.plugin.gateway_or_fail().close_connection(self.connection)
            self.plugin.peer_closed(self)


class WebrtcPlugin(ProtocolPlugin[WebrtcOptions]):
    """WebRTC data channels through aiortc; needs the ``http`` plugin for signaling."""

    name: ClassVar[str] = "webrtc"
    Options: ClassVar[type[Any]] = WebrtcOptions
    scope_types: ClassVar[tuple[str, ...]] = ("webrtc",)

    def __init__(self, options: WebrtcOptions) -> None:
        super().__init__(options)
        self.peers: set[_Peer] = set()
        self.pending = 0  # offers being answered: they count against max_peers too
        #: Peers and offers being answered per client address (max_peers_per_ip); no
        #: entry at zero, so it never holds more addresses than there are peers.
        self.peers_per_ip: dict[str, int] = {}
        rate = options.max_offers_per_second_per_ip
        self.offer_rate = None if rate is None else PeerRateLimiter(rate, options.offer_burst, max_peers=100_000)
        #: Resolved at start: the option, or whether the site has logins.
        self.require_login = False
        self.stopping = False
        self._configuration = options.rtc_configuration()
        self._host_addresses: list[str] | None = None

    def endpoints(self, gateway: Gateway) -> list[str]:
        path = self.options.path.rstrip("/")
        return [f"{url}/...  (signaling: POST an SDP offer)" for url in http_urls(gateway, path)]

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self, gateway: Gateway) -> None:
        """Mount the signaling endpoint; peers come and go with offers."""
        _check_http_plugin(gateway)
        options = self.options
        app = SignalingApp(
            self,
            SignalingLimits(
                options.max_signaling_size,
                tuple(options.allowed_origins),
                options.websocket_signaling,
                path_prefix=options.path.rstrip("/"),
                path_pattern=re.compile(options.path_pattern) if options.path_pattern is not None else None,
            ),
        )
        previous = gateway.mounts.get(options.path)
        if previous is not None and previous[1] == self.name:
            gateway.unmount(options.path)  # left by an earlier start of this plugin (see stop)
        try:
            gateway.mount(options.path, app, owner=self.name)
        except ValueError as exc:
            raise ConfigError(f"PROTOCOLS.webrtc.path: {exc}") from exc
        has_logins = site_has_logins()
        if options.require_login and not has_logins:
            gateway.unmount(options.path)
            raise ConfigError(
                "PROTOCOLS.webrtc.require_login needs django.contrib.auth and django.contrib.sessions "
                "in INSTALLED_APPS (the site's logins)"
            )
        self.require_login = has_logins if options.require_login is None else options.require_login
        self.gateway = gateway
        self.stopping = False
        if options.ice_host_addresses is not None:
            self._host_addresses = list(options.ice_host_addresses)
            HOST_ADDRESSES.push(self._host_addresses)
        _limit_ice_logging()
        logger.info(
            "webrtc signaling at %s (served by the http plugin); offers need %s",
            options.path,
            "a logged-in user" if self.require_login else "no login (require_login off): per-address limits apply",
        )

    async def stop(self, timeout: float) -> None:
        """Refuse new offers, close every peer (reason ``shutdown``).

        The endpoint stays mounted, answering 503: the http plugin usually stops after
        this one and keeps serving while it drains, and an unmounted signaling path would
        reach the workers as an ordinary request.
        """
        gateway = self.gateway
        if gateway is None:
            return
        self.stopping = True
        tasks = [peer.close("shutdown") for peer in list(self.peers)]
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=max(timeout, 0.1))
            for task in pending:
                task.cancel()
            for peer in list(self.peers):
                # Past the drain time: forget the peer even if its pump is stuck on the layer.
                if peer.connection is not None:
                    gateway.close_connection(peer.connection)
                if peer in self.peers:
                    self.peers.discard(peer)
                    self._release_slot(peer.ip)
        if self._host_addresses is not None:
            HOST_ADDRESSES.pop(self._host_addresses)
            self._host_addresses = None
        self.gateway = None
        self.report_stats()

    def stats(self) -> dict[str, int]:
        data = dict(self.counters)
        data["peers"] = len(self.peers)
        data["ice_log_lines_suppressed"] = ICE_LOG_LIMITER.suppressed  # process-wide
        return data

    def peer_closed(self, peer: _Peer) -> None:
        if peer in self.peers:
            self.peers.discard(peer)
            self._release_slot(peer.ip)
            self.count("peers_closed")

    def _release_slot(self, ip: str) -> None:
        left = self.peers_per_ip.get(ip, 0) - 1
        if left > 0:
            self.peers_per_ip[ip] = left
        else:
            self.peers_per_ip.pop(ip, None)

    # -- signaling ------------------------------------------------------------------------

    async def negotiate(self, request_scope: dict[str, Any], offer_sdp: str) -> str:
        """Answer an offer (SignalingError for every refusal); the peer then runs on its own."""
        options = self.options
        if self.stopping or self.gateway is None:
            raise SignalingError(503, "the gateway is stopping", "signaling_503_stopping")
        ip = _client_ip(request_scope)
        # The cheap refusals first, and the rate before anything that costs a lookup.
        if self.offer_rate is not None and not self.offer_rate.allow(ip):
            self.log.warning("offer rate", "webrtc offers from %s over max_offers_per_second_per_ip: 429", ip)
            raise SignalingError(429, "too many offers from your address, try again later", "signaling_429_rate")
        problem = _offer_problem(offer_sdp, options.max_offer_candidates)
        if problem is not None:
            raise SignalingError(400, problem)
        if self.require_login:
            try:
                allowed = await logged_in(request_scope)
            except Exception as exc:  # the session store is down: not the client's fault
                self.log.warning("login check", "could not look up a webrtc client's session: %r", exc)
                raise SignalingError(503, "could not check your login, try again", "signaling_503_login") from None
            if not allowed:
                raise SignalingError(403, "log in to the site first", "signaling_403_login")
        # No await from here until the slot is taken: the counts cannot change in between.
        if options.max_peers_per_ip is not None and self.peers_per_ip.get(ip, 0) >= options.max_peers_per_ip:
            self.log.warning(
                "max_peers_per_ip", "webrtc offer from %s refused: max_peers_per_ip (%d) reached", ip, options.max_peers_per_ip
            )
            raise SignalingError(429, "too many peers from your address, try again later", "signaling_429_per_ip")
        if len(self.peers) + self.pending >= options.max_peers:
            self.log.warning("max_peers", "webrtc offer refused: max_peers (%d) reached", options.max_peers)
            raise SignalingError(503, "too many peers, try again later", "signaling_503_max_peers")
        self.pending += 1
        self.peers_per_ip[ip] = self.peers_per_ip.get(ip, 0) + 1
        pc = RTCPeerConnection(self._configuration)
        peer = _Peer(self, pc, ip)  # handlers in place before aiortc can fire any event
        try:
            async with asyncio.timeout(self.options.signaling_timeout):
                answer = await self._answer(pc, offer_sdp)
            if self.stopping:
                raise SignalingError(503, "the gateway is stopping", "signaling_503_stopping")
        except BaseException as exc:
            self._release_slot(ip)
            await _discard(pc)
            if isinstance(exc, TimeoutError):
                raise SignalingError(503, "answering took too long, try again", "signaling_503_timeout") from None
            raise
        finally:
            self.pending -= 1
        self.peers.add(peer)
        peer.open(_peer_scope(request_scope))
        self.count(CONNECTIONS_OPENED)
        return answer

    async def _answer(self, pc: RTCPeerConnection, offer_sdp: str) -> str:
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except Exception as exc:  # aiortc refusing client input: say why, it is the client's
            raise SignalingError(400, f"offer refused: {exc}"[:300]) from None
        if pc.sctp is None:
            raise SignalingError(400, "the offer has no data channel section (m=application)")
        self._advertise_max_message_size(pc)
        try:
            await pc.setLocalDescription(await pc.createAnswer())  # gathers candidates
        except ValueError as exc:
            # aiortc checks parts of the offer only while answering (a section without a
            # usable a=mid, say): still the client's input, so 400 and no traceback.
            raise SignalingError(400, f"offer refused: {exc}"[:300]) from None
        except Exception:
            logger.exception("could not answer a webrtc offer")
            raise SignalingError(500, "could not create an answer") from None
        return str(pc.localDescription.sdp)

    def _advertise_max_message_size(self, pc: RTCPeerConnection) -> None:
        """Put our limit in the answer's ``a=max-message-size`` (aiortc has no option).

        A conforming peer then refuses to send a longer message itself (its ``send()``
        throws), which is the protocol's own error, instead of our silent counted drop.
        aiortc reads the value through the transport's ``getCapabilities``.
        """
        sctp = pc.sctp
        if sctp is not None:
            limit = self.options.max_message_size
            setattr(sctp, "getCapabilities", lambda: RTCSctpCapabilities(maxMessageSize=limit))  # noqa: B010


def _check_http_plugin(gateway: Gateway) -> None:
    """Signaling rides on the http plugin: without it no peer could ever connect.

    ``run_gateway`` sets ``gateway.plugins`` before any plugin starts, so a missing http
    plugin stops start-up here; a gateway built by hand has None there and is trusted.
    """
    plugins = getattr(gateway, "plugins", None)
    if plugins is not None and not any(getattr(plugin, "name", None) == "http" for plugin in plugins):
        raise ConfigError(
            "PROTOCOLS.webrtc needs the http plugin for signaling: add PROTOCOLS['http'] (its port serves the offer endpoint)"
        )


async def _discard(pc: RTCPeerConnection) -> None:
    with contextlib.suppress(Exception):
        await pc.close()


__all__ = ["SPEC_VERSION", "WebrtcOptions", "WebrtcPlugin"]
