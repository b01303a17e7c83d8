"""The UDP plugin: raw datagrams in and out, one gateway connection per bound socket.

UDP has no connections, so the plugin follows the connectionless shape of the design: each
bound socket is one gateway :class:`~switchboard.gateway.server.Connection` (scope
``{"type": "udp", "server": [host, port]}``), every datagram becomes one ``udp.datagram``
event on it, and consumers answer with ``udp.send`` messages naming the peer address.

Framing belongs to the operating system (one ``recvfrom`` is one datagram) and the
plumbing to asyncio's ``DatagramProtocol``; this module is only policy:

* ``datagram_received`` is synchronous and cannot await the layer, so each socket has a
  *bounded* queue drained by a few sender tasks. A full queue drops the datagram (counted)
  rather than buffering without limit — under overload UDP's answer is loss, not latency.
* Every inbound datagram ends in exactly one counter, so at any moment
  ``messages_in == delivered + dropped_* + events_* + queued`` (see :meth:`UdpPlugin.stats`).
* An optional token bucket per peer address (``max_datagrams_per_second_per_peer``) keeps
  one sender from taking the whole queue; its buckets are capped (``max_tracked_peers``) so
  the limiter is bounded in memory too (see :class:`PeerRateLimiter`).
* Every outbound ``udp.send`` is checked (payload type and size, address shape, IP literal
  of the socket's family) before ``transport.sendto``; a bad one is logged with its reason
  (never its payload), counted and dropped. Host names are refused because resolving them
  in ``sendto`` would block the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import math
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from switchboard.gateway.config import ConfigError, parse_bind
from switchboard.gateway.layers import Message
from switchboard.gateway.plugins import EventOutcome, ProtocolPlugin
from switchboard.gateway.ratelimit import PeerRateLimiter
from switchboard.messages import UdpDatagramEvent, UdpSendEvent

if TYPE_CHECKING:
    from switchboard.gateway.server import Connection, Gateway

logger = logging.getLogger("switchboard.protocols.udp")

# The largest UDP payload IPv4 can carry (65535 - 20 byte IP header - 8 byte UDP header).
# IPv6 allows 65527 without jumbograms; the IPv4 figure is the default so one setting
# means the same thing on every socket.
MAX_IPV4_PAYLOAD = 65507
MAX_UDP_PAYLOAD = 65527

# The version of specs/udp.md this module implements (scope["asgi"]["spec_version"]).
SPEC_VERSION = "1.0"

# Inbound counters: each received datagram (``messages_in``) lands in exactly one of these
# (or is queued). ``events_*`` are the standard names of what the layer answered.
INBOUND_OUTCOMES = (
    "delivered",
    "dropped_oversize",
    "dropped_rate_limited",
    "dropped_queue_full",
    "events_full",
    "events_failed",
    "events_too_large",
    "dropped_shutdown",
    "dropped_no_address",
)

# Outbound counters: each udp.send the gateway hands to the plugin lands in one of these.
OUTBOUND_OUTCOMES = (
    "messages_out",
    "replies_invalid",
    "send_dropped_oversize",
    "send_dropped_backpressure",
    "send_dropped_closed",
    "send_errors",
)


@dataclass
class UdpOptions:
    """Options of ``SWITCHBOARD["PROTOCOLS"]["udp"]``; checked before any socket opens."""

    #: Addresses to bind, ``"host:port"`` or ``"[v6]:port"``; one socket (and one gateway
    #: connection) each. Port 0 picks a free port (see ``UdpPlugin.bound_addresses``).
    bind: list[str]
    #: Larger datagrams are dropped (inbound) or refused (outbound ``udp.send``), counted.
    max_datagram_size: int = MAX_IPV4_PAYLOAD
    #: Datagrams per socket waiting for the layer; beyond it they are dropped and counted.
    #: Sized to absorb a burst of 10,000 small datagrams while the layer catches up.
    queue_size: int = 10_000
    #: Payload bytes per socket waiting for the layer; beyond it datagrams are dropped and
    #: counted, so big datagrams cannot make the queue's memory ``queue_size * 64 KiB``.
    queue_bytes: int = 16 * 1024 * 1024
    #: Concurrent ``send_event`` calls per socket: one layer round trip each, so a few in
    #: parallel keep up with bursts over Redis. Ordering is not kept (UDP never promised it).
    layer_senders: int = 4
    #: SO_RCVBUF in bytes (the kernel doubles it and caps it at net.core.rmem_max); a
    #: bigger kernel buffer absorbs bursts before the gateway even sees them.
    receive_buffer_size: int | None = None
    #: Outbound bytes the transport may hold when the socket would block; beyond it
    #: ``udp.send`` messages are dropped and counted instead of buffered without limit.
    send_buffer_limit: int = 1024 * 1024
    #: SO_REUSEPORT, so several gateway processes can share one port (the kernel spreads
    #: datagrams over them by peer address).
    reuse_port: bool = False
    #: When set, the final counters are written there as JSON when the plugin stops (they
    #: are also logged at INFO).
    stats_file: str | None = None
    #: Datagrams per second one peer address (its IP, whatever the source port) may send;
    #: beyond it they are dropped and counted (``dropped_rate_limited``). Off by default:
    #: UDP source addresses are not authenticated, so a per-address limit cannot stop a
    #: deliberate (spoofed) flood and a forged source can get a real peer throttled; and
    #: honest traffic from one address ranges from one reading a minute to a relay sending
    #: tens of thousands a second, so no default fits everyone. What it does well is keep
    #: one runaway sender from filling the queue that every other peer shares: set it to a
    #: few times your busiest honest peer's rate.
    max_datagrams_per_second_per_peer: float | None = None
    #: Datagrams a peer may send at once before the rate applies (the bucket's size).
    #: Default: one second's worth, at least 1.
    max_datagram_burst_per_peer: int | None = None
    #: Peers whose buckets are kept (about 300 bytes each: 10,000 is ~3 MB). Past it the
    #: least recently seen is forgotten (``rate_limit_evictions``): bounded memory even
    #: when sources are spoofed at random, and it fails open (a forgotten peer starts
    #: again with a full bucket, it is never throttled by someone else's flood).
    max_tracked_peers: int = 10_000

    def __post_init__(self) -> None:
        if not self.addresses:  # parsed here so a bad bind fails before start-up
            raise ValueError("bind: give at least one 'host:port' address")
        _check_range("max_datagram_size", self.max_datagram_size, 1, MAX_UDP_PAYLOAD)
        _check_range("queue_size", self.queue_size, 1, 10_000_000)
        _check_range("queue_bytes", self.queue_bytes, self.max_datagram_size, 2**40)
        _check_range("layer_senders", self.layer_senders, 1, 256)
        _check_range("send_buffer_limit", self.send_buffer_limit, 1, 2**31)
        if self.receive_buffer_size is not None:
            _check_range("receive_buffer_size", self.receive_buffer_size, 1, 2**31)
        self._check_rate_limit()

    def _check_rate_limit(self) -> None:
        rate = self.max_datagrams_per_second_per_peer
        if rate is None:
            if self.max_datagram_burst_per_peer is not None:
                raise ValueError("max_datagram_burst_per_peer needs max_datagrams_per_second_per_peer")
        elif not 0 < rate <= 10_000_000:
            raise ValueError(f"max_datagrams_per_second_per_peer must be above 0 and at most 10000000, got {rate}")
        if self.max_datagram_burst_per_peer is not None:
            _check_range("max_datagram_burst_per_peer", self.max_datagram_burst_per_peer, 1, 10_000_000)
        _check_range("max_tracked_peers", self.max_tracked_peers, 1, 10_000_000)

    @property
    def peer_burst(self) -> int:
        """The bucket size in effect: the option, or one second's worth (at least 1)."""
        if self.max_datagram_burst_per_peer is not None:
            return self.max_datagram_burst_per_peer
        return max(1, math.ceil(self.max_datagrams_per_second_per_peer or 1))

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """``bind`` parsed into ``(host, port)`` pairs."""
        return [parse_bind(item, where=f"bind[{i}]") for i, item in enumerate(self.bind)]


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")


class _Protocol(asyncio.DatagramProtocol):
    """asyncio's per-socket callbacks, forwarded to the owning :class:`_Listener`."""

    def __init__(self, listener: _Listener) -> None:
        self.listener = listener

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.listener.on_datagram(data, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors and failed sends: the socket stays usable, so count and go on.
        self.listener.plugin.count("socket_errors")
        self.listener.plugin.log.warning("socket error", f"{self.listener.label}: {exc!r}")

    def pause_writing(self) -> None:
        self.listener.writing_paused = True

    def resume_writing(self) -> None:
        self.listener.writing_paused = False


class _Listener:
    """One bound socket: its transport, gateway connection, bounded queue and senders."""

    def __init__(self, plugin: UdpPlugin, gateway: Gateway, sock: socket.socket) -> None:
        self.plugin = plugin
        self.gateway = gateway
        self.family = sock.family
        host, port = sock.getsockname()[:2]
        self.address: tuple[str, int] = (host, port)
        self.label = f"[{host}]:{port}" if sock.family == socket.AF_INET6 else f"{host}:{port}"
        self.queue: asyncio.Queue[tuple[bytes, list[Any]]] = asyncio.Queue(plugin.options.queue_size)
        self.in_flight = 0
        self.queued_bytes = 0  # payload bytes in the queue (not those in flight)
        self.accepting = True
        self.writing_paused = False
        self.transport: asyncio.DatagramTransport | None = None
        self.connection: Connection = gateway.open_connection(
            {"type": "udp", "asgi": {"version": "3.0", "spec_version": SPEC_VERSION}, "server": [host, port]},
            self.deliver,
        )
        self.senders: list[asyncio.Task[None]] = []

    async def start(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), sock=sock)
        transport.set_write_buffer_limits(high=self.plugin.options.send_buffer_limit)  # type: ignore[attr-defined]
        self.transport = transport
        self.senders = [
            loop.create_task(self._send_loop(), name=f"udp-sender:{self.label}:{i}")
            for i in range(self.plugin.options.layer_senders)
        ]

    # -- inbound --------------------------------------------------------------------

    def on_datagram(self, data: bytes, addr: Any) -> None:
        """Queue one datagram for the layer, or count why not. Never blocks, never raises."""
        plugin = self.plugin
        plugin.count("messages_in")
        try:
            client = [addr[0], addr[1]]
        except (TypeError, IndexError):
            # uvloop reports some datagrams without a sender (AF_UNSPEC): nobody to answer.
            plugin.count("dropped_no_address")
            plugin.log.warning("datagram without sender address", f"on {self.label}")
            return
        if not self.accepting:
            plugin.count("dropped_shutdown")
        elif len(data) > plugin.options.max_datagram_size:
            plugin.count("dropped_oversize")
            plugin.log.warning("oversize datagram", f"{len(data)} bytes from {client[0]} on {self.label}")
        elif plugin.limiter is not None and not plugin.limiter.allow(str(client[0])):
            plugin.count("dropped_rate_limited")
            # Formatted only when logged: this branch is the one a flood takes.
            plugin.log.warning(
                "peer over its rate", "%s on %s sends more than %g datagrams/s", client[0], self.label, plugin.limiter.rate
            )
        elif self.queue.full() or self.queued_bytes + len(data) > plugin.options.queue_bytes:
            plugin.count("dropped_queue_full")
            plugin.log.warning(
                "queue full", f"{self.label} has {self.queue.qsize()} datagrams ({self.queued_bytes} bytes) waiting"
            )
        else:
            self.queue.put_nowait((data, client))
            self.queued_bytes += len(data)

    async def _send_loop(self) -> None:
        while True:
            data, client = await self.queue.get()
            self.queued_bytes -= len(data)
            self.in_flight += 1
            outcome = "dropped_shutdown"  # what a cancellation mid-send amounts to
            try:
                event: UdpDatagramEvent = {"type": "udp.datagram", "data": data, "client": client}
                # Refused or failed: counted (events_*) and logged by send_event; UDP's answer is loss.
                sent = await self.plugin.send_event(self.connection, event)
                outcome = "delivered" if sent is EventOutcome.SENT else ""
            finally:
                self.in_flight -= 1
                if outcome:
                    self.plugin.count(outcome)
                self.queue.task_done()

    def queued(self) -> int:
        return self.queue.qsize() + self.in_flight

    # -- outbound -------------------------------------------------------------------

    def deliver(self, message: Message) -> None:
        """Write one ``udp.send`` from a consumer out, or count why not. Never raises."""
        plugin = self.plugin
        send = self._check_send(message)
        if send is None:
            return
        transport = self.transport
        if transport is None or transport.is_closing():
            plugin.count("send_dropped_closed")
            return
        if self.writing_paused:
            plugin.count("send_dropped_backpressure")
            plugin.log.warning("udp.send dropped (back-pressure)", f"send buffer of {self.label} is full")
            return
        host, port = send["address"]
        try:
            transport.sendto(send["data"], (host, port))
        except (OSError, ValueError, TypeError) as exc:
            plugin.count("send_errors")
            plugin.log.warning("udp.send failed", f"to {host} port {port} on {self.label}: {exc!r}")
            return
        plugin.count("messages_out")

    def _check_send(self, message: Message) -> UdpSendEvent | None:
        """``message`` if it may go out; else None, counted and logged (key and reason,
        never the payload)."""
        plugin = self.plugin
        data = message.get("data")
        if message.get("type") == "udp.send" and data is not None and not isinstance(data, bytes):
            # The spec's own reason would quote the start of it: a payload is never logged.
            plugin.drop_reply(message, f"udp.send: key 'data' must be bytes, got {type(data).__name__}", key="data")
            return None
        send = plugin.check_reply(message, UdpSendEvent)
        if send is None:
            return None
        data = send["data"]
        if not data:
            # asyncio and uvloop transports silently skip empty sends; say so instead.
            plugin.drop_reply(message, f"udp.send: key 'data' is empty (cannot be sent; on {self.label})", key="data")
            return None
        limit = plugin.options.max_datagram_size
        if len(data) > limit:
            plugin.drop_reply(
                message,
                f"udp.send: {len(data)} bytes > max_datagram_size {limit} (on {self.label})",
                key="size",
                counter="send_dropped_oversize",
            )
            return None
        address_problem = check_address(send["address"], self.family)
        if address_problem is not None:
            plugin.drop_reply(message, f"udp.send: {address_problem} (on {self.label})", key="address")
            return None
        return send

    # -- stop -----------------------------------------------------------------------

    async def stop(self, timeout: float) -> None:
        """Stop taking datagrams, give queued ones ``timeout`` to reach the layer, close."""
        self.accepting = False
        if self.queued():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.queue.join(), timeout)
        for task in self.senders:
            task.cancel()
        await asyncio.gather(*self.senders, return_exceptions=True)
        while not self.queue.empty():
            data, _ = self.queue.get_nowait()
            self.queued_bytes -= len(data)
            self.plugin.count("dropped_shutdown")
        if self.transport is not None:
            self.transport.close()
        self.gateway.close_connection(self.connection)


def check_address(address: Any, family: int) -> str | None:
    """Why ``address`` cannot be a ``sendto`` target on a socket of ``family``, or None.

    The spec has already checked its shape (``[str, int]``); this adds what the spec
    language cannot say. Only IP literals are accepted: a host name would make ``sendto``
    resolve it synchronously and stall every connection of the gateway.
    """
    if not isinstance(address, (list, tuple)) or len(address) != 2:
        return f"key 'address' must be [host, port], got {type(address).__name__}"
    host, port = address
    if not isinstance(host, str) or isinstance(port, bool) or not isinstance(port, int):
        return "key 'address' must be [str, int]"
    if not 1 <= port <= 65535:
        return f"address port must be 1-65535, got {port}"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return f"address host {host[:64]!r} is not an IP address (host names are not resolved)"
    wanted = 4 if family == socket.AF_INET else 6
    if ip.version != wanted:
        return f"address {host} is IPv{ip.version} but the socket is IPv{wanted}"
    return None


async def open_socket(host: str, port: int, options: UdpOptions) -> socket.socket:
    """Create and bind one non-blocking UDP socket with the configured socket options.

    Built by hand rather than by ``create_datagram_endpoint(local_addr=...)`` because that
    cannot set SO_RCVBUF. IPv6 sockets are IPv6-only (as asyncio's ``create_server`` does),
    so ``[::]:p`` and ``0.0.0.0:p`` can both be bound.
    """
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM, flags=socket.AI_PASSIVE)
    if not infos:
        raise OSError(f"cannot resolve bind address {host!r}")
    family, kind, proto, _, sockaddr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if options.reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if options.receive_buffer_size is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, options.receive_buffer_size)
        sock.bind(sockaddr)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class UdpPlugin(ProtocolPlugin[UdpOptions]):
    """Raw UDP: ``udp.datagram`` events in, ``udp.send`` messages out."""

    name: ClassVar[str] = "udp"
    Options: ClassVar[type[Any]] = UdpOptions
    scope_types: ClassVar[tuple[str, ...]] = ("udp",)

    def __init__(self, options: UdpOptions) -> None:
        super().__init__(options)
        self.listeners: list[_Listener] = []
        for counter in (*INBOUND_OUTCOMES, *OUTBOUND_OUTCOMES, "socket_errors", "rate_limit_evictions"):
            self.counters[counter] = 0
        #: One limiter for every socket of the plugin: a peer's rate is its rate to us.
        self.limiter: PeerRateLimiter | None = None
        if options.max_datagrams_per_second_per_peer is not None:
            self.limiter = PeerRateLimiter(
                options.max_datagrams_per_second_per_peer,
                options.peer_burst,
                options.max_tracked_peers,
                on_evict=lambda: self.count("rate_limit_evictions"),
            )

    @property
    def bound_addresses(self) -> list[tuple[str, int]]:
        """The addresses actually bound (port 0 in ``bind`` resolved to the real port)."""
        return [listener.address for listener in self.listeners]

    def endpoints(self, gateway: Gateway) -> list[str]:
        return [f"udp://[{host}]:{port}" if ":" in host else f"udp://{host}:{port}" for host, port in self.bound_addresses]

    async def start(self, gateway: Gateway) -> None:
        """Bind every address; if one fails, close the ones already open and raise."""
        self.gateway = gateway
        try:
            for host, port in self.options.addresses:
                sock = await open_socket(host, port, self.options)
                listener = _Listener(self, gateway, sock)
                self.listeners.append(listener)
                try:
                    await listener.start(sock)
                except BaseException:
                    sock.close()
                    raise
                logger.info(
                    "udp listening on %s (SO_RCVBUF %d)", listener.label, sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
                )
        except OSError as exc:
            await self.stop(0)
            raise ConfigError(f"PROTOCOLS.udp: cannot bind {self.options.bind}: {exc}") from exc

    async def stop(self, timeout: float) -> None:
        """Stop every socket (draining queued datagrams), then report the final counters."""
        await asyncio.gather(*(listener.stop(timeout) for listener in self.listeners))
        self.gateway = None
        self.report_stats()

    def stats(self) -> dict[str, int]:
        """Counters plus the gauges ``queued`` (accepted, not yet handed to the layer) and
        ``rate_limit_peers`` (buckets the per-peer limiter holds).

        Invariant: ``messages_in == queued + sum(counters[o] for o in INBOUND_OUTCOMES)``.
        """
        stats = dict(self.counters)
        stats["queued"] = sum(listener.queued() for listener in self.listeners)
        stats["rate_limit_peers"] = len(self.limiter) if self.limiter is not None else 0
        return stats
