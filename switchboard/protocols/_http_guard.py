"""What a socket may cost the gateway before it has sent a request: the HTTP plugin's guard.

uvicorn looks after a connection once a request's header block is parsed, and its
keep-alive timer only runs after a response. Before that, a client that connects and
sends nothing, or drips its header block a byte at a time (slowloris), holds a file
descriptor and a protocol object for as long as it likes: 20,000 silent connections from
one address filled the gateway's file limit in 5 s, and every other client was refused
until they went. :class:`ConnectionGuard` is the policy uvicorn lacks, driven from the
edges of the plugin's protocol subclasses (``connection_made``, ``data_received``, the
end of the header block, the end of a response, ``connection_lost``):

- **per address**: at most ``max_connections_per_ip`` open sockets per peer address,
  counted when the socket is accepted, before a byte is read (loopback and trusted proxies
  are exempt: their clients are counted per request by the forwarded address, see the plugin);
- **idle**: a new connection must send its first byte within ``idle_timeout`` (closed
  without an answer: nothing was asked);
- **header**: a request's header block must be complete within ``header_timeout`` of its
  first byte (``408``), however slowly it drips;
- **file descriptors**: when an accepted socket's descriptor number shows that fewer than
  a reserve are left below ``RLIMIT_NOFILE``, the oldest connection that is not in the
  middle of a request is closed to make room (connections refused earlier and still
  lingering first), or, if there is none, the new one is refused with ``503``. Accepting
  never stops, so there is no outage while the listen queue fills, and the process never
  reaches ``EMFILE`` (which asyncio answers by not accepting for a second, and which other
  parts of the gateway, aiortc or a Redis reconnect, would hit too).

How many descriptors are in use is known without a system call most of the time: the
guard counts the sockets it holds, and the rest of the process (layer connections, log
files, aiortc's sockets) is counted from ``/proc/self/fd`` when the total nears the limit,
at most once a second. A socket's own number is a second, free lower bound: POSIX gives
a new descriptor the lowest free number, so a socket numbered ``n`` means every number
below ``n`` is taken.

Deadlines need no timer per connection: connections waiting for their first byte, and
those inside an unfinished header block, each wait in an insertion-ordered dict with one
timeout for all, so the oldest is always first; one loop timer is armed for the earliest
deadline. The same dicts say which connections are the oldest without a request.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
from collections.abc import Callable, Iterable
from typing import Protocol

from switchboard.gateway.plugins import RateLimitedLog

logger = logging.getLogger("switchboard.protocols.http")

Count = Callable[[str], None]

# Where a connection stands, as far as the guard cares. Ordered: up to IDLE the next byte
# that arrives starts a request's header block.
NEW, IDLE, HEAD, ACTIVE, LINGER, GONE = range(6)

#: After answering a client the guard refused (503, 408...), read and discard what it still
#: sends for this long, so the answer is not destroyed by a reset; then drop the socket.
LINGER_SECONDS = 1.0

#: Deadlines this close together are handled in one timer callback (a burst of silent
#: connections opened in the same second expires in a handful of callbacks, not thousands).
_SLACK = 0.05

_PHRASES = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large", 503: b"Service Unavailable"}


class GuardedLink(Protocol):
    """What the guard needs of the uvicorn protocol serving a socket."""

    @property
    def transport(self) -> asyncio.Transport: ...

    def answer(self, status: int, text: str, *, linger: float | None, when_asked: bool = False) -> None:
        """Write a complete ``status`` response with ``connection: close`` and close
        (see ``GuardedHttp.answer`` in _http_uvicorn.py)."""


class Entry:
    """The guard's record of one open socket."""

    __slots__ = ("link", "peer", "since", "state", "transport")

    def __init__(self, link: GuardedLink, peer: str | None, state: int, since: float) -> None:
        #: The HTTP protocol serving the socket; None once it became a WebSocket (the guard
        #: then only needs to know when it closes, and must not keep the HTTP protocol alive).
        self.link: GuardedLink | None = link
        self.transport = link.transport
        #: The address counted against ``max_connections_per_ip`` (None: not counted).
        self.peer = peer
        self.state = state
        #: Loop time the connection entered ``state``.
        self.since = since


class TrustedPeers:
    """Peers whose sockets are not capped per address: every client behind a proxy shares
    its address. ``max_connections_per_ip_exempt`` (loopback by default), and with
    ``proxy_headers`` the proxies it believes (``forwarded_allow_ips``)."""

    def __init__(self, spec: Iterable[str] | str | None) -> None:
        items = spec.split(",") if isinstance(spec, str) else list(spec or ())
        self.everyone = False
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for item in (entry.strip() for entry in items):
            if item == "*":
                self.everyone = True
            elif item:
                try:
                    self.networks.append(ipaddress.ip_network(item, strict=False))
                except ValueError:
                    continue  # a unix socket name or a typo uvicorn will not match either

    def __contains__(self, host: str) -> bool:
        if self.everyone:
            return True
        if not self.networks:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)


class ConnectionGuard:
    """Per-address cap, idle and header timeouts and file-descriptor headroom for one plugin."""

    def __init__(
        self,
        *,
        count: Count,
        max_per_ip: int | None,
        trusted: TrustedPeers,
        idle_timeout: float,
        header_timeout: float,
        fd_limit: int | None,
        fd_reserve: int,
    ) -> None:
        self.count = count
        self.max_per_ip = max_per_ip
        self.trusted = trusted
        self.idle_timeout = idle_timeout
        self.header_timeout = header_timeout
        #: Descriptors in use at which fewer than ``fd_reserve`` are left; None: the limit
        #: is unknown or unlimited, never shed for it.
        self.fd_high_water = None if fd_limit is None else max(fd_limit - fd_reserve, 1)
        self.fd_limit = fd_limit
        #: Descriptors of the process that are not the guard's sockets, as last counted.
        self._others = _count_descriptors() or 0
        self._others_counted_at = 0.0
        self.per_ip: dict[str, int] = {}
        self._entries: dict[asyncio.BaseTransport, Entry] = {}
        # One dict per state that has a deadline or can be shed, oldest first.
        self._new: dict[asyncio.BaseTransport, Entry] = {}
        self._heads: dict[asyncio.BaseTransport, Entry] = {}
        self._idle: dict[asyncio.BaseTransport, Entry] = {}
        self._lingering: dict[asyncio.BaseTransport, Entry] = {}
        self._loop: asyncio.AbstractEventLoop | None = None  # the serving loop, bound on first use
        self._timer: asyncio.TimerHandle | None = None
        self._log = RateLimitedLog(logger, "http")

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    # -- what the protocols report ------------------------------------------------------

    def admit(self, link: GuardedLink) -> Entry | None:
        """A socket was accepted: register it, or refuse it (answered; None returned)."""
        transport = link.transport
        high_water = self.fd_high_water
        if high_water is not None:
            in_use = self._descriptors_in_use(_fileno(transport))
            if in_use >= high_water and not self._shed_one(in_use):
                self.count("http.503_file_limit")
                self._log.warning(
                    "file limit",
                    "%d of %d descriptors in use and no idle connection to close: refused a new connection with 503",
                    in_use,
                    self.fd_limit or 0,
                )
                link.answer(503, "server busy, try again later", linger=None)
                return None
        peer = _peer_host(transport)
        counted = None
        if peer is not None and self.max_per_ip is not None and peer not in self.trusted:
            open_now = self.per_ip.get(peer, 0)
            if open_now >= self.max_per_ip:
                self.count("http.503_per_ip")
                self._log.warning(
                    "connections per address",
                    "%s already has %d connections open (max_connections_per_ip): refused with 503",
                    peer,
                    open_now,
                )
                link.answer(503, "too many connections from your address", linger=LINGER_SECONDS, when_asked=True)
                return None
            self.per_ip[peer] = open_now + 1
            counted = peer
        entry = Entry(link, counted, NEW, self.loop.time())
        self._entries[transport] = entry
        self._new[transport] = entry
        self._arm(entry.since + self.idle_timeout)
        return entry

    def reading(self, entry: Entry) -> None:
        """Bytes arrived while no request was in progress: a header block has begun."""
        if entry.state > IDLE:
            return
        self._leave(entry)
        entry.state = HEAD
        entry.since = self.loop.time()
        self._heads[entry.transport] = entry
        self._arm(entry.since + self.header_timeout)

    def head_complete(self, entry: Entry) -> None:
        """The header block is complete: a request (or WebSocket handshake) is in progress."""
        if entry.state < ACTIVE:
            self._leave(entry)
            entry.state = ACTIVE

    def upgraded(self, entry: Entry) -> None:
        """The connection is a WebSocket now: never shed, nothing more to time out."""
        self.head_complete(entry)
        entry.link = None

    def response_done(self, entry: Entry) -> None:
        """The response ended and no other request is in progress: idle until the next one."""
        if entry.state == ACTIVE:
            entry.state = IDLE
            entry.since = self.loop.time()
            self._idle[entry.transport] = entry

    def lingering(self, link: GuardedLink) -> None:
        """The connection was answered and is only being drained: the first to shed."""
        transport = link.transport
        entry = self._entries.get(transport)
        if entry is None:  # refused at accept: registered only to be shed or forgotten
            entry = self._entries[transport] = Entry(link, None, LINGER, self.loop.time())
        else:
            self._leave(entry)
            entry.state = LINGER
            entry.since = self.loop.time()
        self._lingering[transport] = entry

    def closed(self, transport: asyncio.BaseTransport) -> None:
        """The socket is gone (from whichever protocol held it last: HTTP or WebSocket)."""
        entry = self._entries.pop(transport, None)
        if entry is None:
            return
        self._leave(entry)
        entry.state = GONE
        peer = entry.peer
        if peer is not None:
            left = self.per_ip[peer] - 1
            if left:
                self.per_ip[peer] = left
            else:
                del self.per_ip[peer]

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    @property
    def open_sockets(self) -> int:
        return len(self._entries)

    # -- internals ------------------------------------------------------------------------

    def _leave(self, entry: Entry) -> None:
        """Take ``entry`` out of the dict of its current state."""
        state = entry.state
        table = {NEW: self._new, HEAD: self._heads, IDLE: self._idle, LINGER: self._lingering}.get(state)
        if table is not None:
            table.pop(entry.transport, None)

    def _arm(self, deadline: float) -> None:
        timer = self._timer
        if timer is not None:
            if timer.when() <= deadline:
                return
            timer.cancel()
        self._timer = self.loop.call_at(deadline, self._expire)

    def _expire(self) -> None:
        self._timer = None
        limit = self.loop.time() + _SLACK
        idle, header = self.idle_timeout, self.header_timeout
        while self._new:
            entry = next(iter(self._new.values()))
            if entry.since + idle > limit:
                break
            self._leave(entry)
            entry.state = GONE
            self.count("http.idle_timeouts")
            self._log.warning(
                "idle timeout",
                "a connection from %s sent nothing in %.1fs: closed",
                entry.peer or _peer_host(entry.transport),
                idle,
            )
            entry.transport.close()
        while self._heads:
            entry = next(iter(self._heads.values()))
            if entry.since + header > limit:
                break
            self._leave(entry)  # answer() moves it to the lingering ones
            self.count("http.header_timeouts")
            self._log.warning(
                "header timeout",
                "a request header block from %s was not complete in %.1fs: 408",
                entry.peer or _peer_host(entry.transport),
                header,
            )
            if entry.link is not None:
                entry.link.answer(408, "request header timeout", linger=LINGER_SECONDS)
        fronts = []
        if self._new:
            fronts.append(next(iter(self._new.values())).since + idle)
        if self._heads:
            fronts.append(next(iter(self._heads.values())).since + header)
        if fronts:
            self._arm(min(fronts))

    def _descriptors_in_use(self, fd: int | None) -> int:
        """The process's open descriptors, counting the socket just accepted (see the module doc)."""
        estimate = len(self._entries) + 1 + self._others
        high_water = self.fd_high_water
        now = self.loop.time()
        if high_water is not None and estimate >= high_water and now - self._others_counted_at >= 1.0:
            self._others_counted_at = now
            counted = _count_descriptors()
            if counted is not None:
                self._others = max(counted - len(self._entries) - 1, 0)
                estimate = len(self._entries) + 1 + self._others
        return max(estimate, 0 if fd is None else fd + 1)

    def _shed_one(self, in_use: int) -> bool:
        """Close the connection that costs least to lose to free a descriptor; False if none.

        A refused connection still being drained first; then the oldest of those without
        a request in progress (silent, idle between requests, or inside a header block).
        """
        victim: Entry | None = next(iter(self._lingering.values()), None)
        if victim is None:
            fronts = [next(iter(table.values())) for table in (self._new, self._idle, self._heads) if table]
            victim = min(fronts, key=lambda entry: entry.since, default=None)
        if victim is None:
            return False
        lingering = victim.state == LINGER
        self._leave(victim)
        victim.state = GONE
        self.count("http.connections_shed")
        self._log.warning(
            "file limit",
            "%d of %d descriptors in use: closed the oldest connection without a request to keep room for new ones",
            in_use,
            self.fd_limit or 0,
        )
        if lingering:
            victim.transport.abort()
        else:
            victim.transport.close()
        return True


def answer_bytes(status: int, text: str, default_headers: Iterable[tuple[bytes, bytes]] = ()) -> bytes:
    """A complete small ``text/plain`` response with ``connection: close``.

    ``default_headers``: uvicorn's (``date``, and ``server`` when enabled).
    """
    body = f"{text}\n".encode()
    head = [b"HTTP/1.1 %d %s\r\n" % (status, _PHRASES.get(status, b""))]
    head += [name + b": " + value + b"\r\n" for name, value in default_headers]
    head += [b"content-type: text/plain; charset=utf-8\r\n", b"content-length: %d\r\n" % len(body)]
    if status == 503:
        head.append(b"retry-after: 1\r\n")
    head.append(b"connection: close\r\n\r\n")
    return b"".join(head) + body


def _count_descriptors() -> int | None:
    """Open descriptors of this process (Linux ``/proc``, BSD and macOS ``/dev/fd``); None if unknown."""
    for directory in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(directory)) - 1  # listdir's own descriptor
        except OSError:
            continue
    return None


def _fileno(transport: asyncio.BaseTransport) -> int | None:
    sock = transport.get_extra_info("socket")
    try:
        return int(sock.fileno()) if sock is not None else None
    except (OSError, ValueError):
        return None


def _peer_host(transport: asyncio.BaseTransport) -> str | None:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, (tuple, list)) and peer:
        return str(peer[0])
    return None  # a unix socket: nothing to count by
