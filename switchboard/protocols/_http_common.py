"""Pieces shared by the HTTP and WebSocket halves of the HTTP plugin.

Everything a worker sends back is untrusted input for the gateway: a consumer bug must
turn into a 500 / close 1011 for that one client, never into an exception inside uvicorn
(which would be logged as a server crash) or a malformed byte stream on the wire. So
replies are checked here, field by field, before they reach uvicorn's ``send``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast

from switchboard.gateway.asgi import Message, Receive, Send, send_text
from switchboard.gateway.plugins import EventOutcome

if TYPE_CHECKING:
    from switchboard.gateway.server import Connection, Gateway

    from ._http_body import BodyBudget

logger = logging.getLogger("switchboard.protocols.http")

__all__ = ["Receive", "Send"]  # the package's one definition (switchboard/gateway/asgi.py), for this plugin's modules

# RFC 9110 token characters for header names; values may not hold control characters
# other than tab (a CR or LF would let a worker inject headers or split the response).
_HEADER_NAME_RE = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_HEADER_VALUE_RE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

# Close codes an endpoint may send (RFC 6455 7.4); 1005/1006/1015 are reserved for
# reporting and would make the websockets library raise mid-send.
_SENDABLE_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015)})
_MAX_CLOSE_REASON_BYTES = 123


T = TypeVar("T")


class Mailbox(Generic[T]):
    """A single-consumer queue for one connection's replies, as small as it can be.

    ``asyncio.Queue`` allocates four deques and an Event (~3 KiB) up front; with 10k idle
    WebSockets that is 30 MB of empty queues. This holds a deque only while items wait
    and a future only while the consumer waits. ``put_nowait`` never blocks, as the
    gateway's ``deliver`` must not. The loop is bound once: ``asyncio.get_running_loop()``
    makes a ``getpid()`` system call, which per reply showed in the gateway's profile.

    With a :class:`ReplyBound`, :meth:`offer` refuses what would pass it: replies come
    off the layer as fast as workers write them, while the client may read slowly or not
    at all, so without a bound one slow reader grows the gateway by everything its
    consumer sends. ``put_nowait`` stays unbounded for the bridge's own signals.
    """

    __slots__ = ("_bound", "_bytes", "_items", "_loop", "_waiter", "overflowed")

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, bound: ReplyBound | None = None) -> None:
        self._items: collections.deque[T] | None = None
        self._loop = loop
        self._waiter: asyncio.Future[None] | None = None
        self._bound = bound
        self._bytes = 0
        #: Set by the first refused :meth:`offer`; from then on every offer is refused.
        self.overflowed = False

    def put_nowait(self, item: T) -> None:
        if self._items is None:
            self._items = collections.deque()
        self._items.append(item)
        if self._bound is not None:
            self._bytes += reply_size(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def offer(self, item: T, keeps_up: Callable[[], bool] | None = None) -> bool:
        """Queue ``item`` unless that would pass the bound; False (and ``overflowed``) if not.

        ``keeps_up()`` is asked only past the bound: True lets the item in anyway, for a
        burst to a client that is reading (the gateway hands over a whole batch of
        replies before the writer runs; that costs at most the layer receiver's buffer).
        Refusing from the first refusal on, rather than taking replies again once there
        is room, keeps a consumer's stream whole: the caller closes the connection
        instead of letting a gap into it.
        """
        if self.overflowed:
            return False
        bound = self._bound
        if (
            bound is not None
            and self._items  # one reply always fits, however large: the bound is on piling up
            and (len(self._items) >= bound.max_items or self._bytes + reply_size(item) > bound.max_bytes)
            and not (keeps_up is not None and keeps_up())
        ):
            self.overflowed = True
            return False
        self.put_nowait(item)
        return True

    def discard(self, keep: Callable[[T], bool]) -> int:
        """Drop every waiting item ``keep`` rejects; how many were dropped."""
        if not self._items:
            return 0
        kept = [item for item in self._items if keep(item)]
        dropped = len(self._items) - len(kept)
        self._items = collections.deque(kept) if kept else None
        self._bytes = sum(reply_size(item) for item in kept) if self._bound is not None else 0
        return dropped

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items) if self._items else 0

    async def get(self) -> T:
        """The oldest item, waiting for one if needed; cancelling the wait loses nothing."""
        while not self._items:
            loop = self._loop
            if loop is None:
                loop = self._loop = asyncio.get_running_loop()
            self._waiter = loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        item = self._items.popleft()
        if not self._items:
            self._items = None
        if self._bound is not None:
            self._bytes -= reply_size(item)
        return item


@dataclass(frozen=True, slots=True)
class ReplyBound:
    """How much one connection may hold of replies its client has not taken yet."""

    max_items: int
    max_bytes: int


def reply_size(item: object) -> int:
    """Payload bytes a reply holds (text counted by characters); 0 for anything else."""
    if isinstance(item, dict):
        for key in ("bytes", "text", "body"):
            value = item.get(key)
            if isinstance(value, (bytes, str)):
                return len(value)
    return 0


class ClientLink(Protocol):
    """What the bridge may ask of the uvicorn protocol object serving its client."""

    def keeps_up(self) -> bool:
        """Whether the client takes what is written (the transport is not paused for writing)."""

    def drop_slow_client(self, code: int, reason: str) -> None:
        """End the connection now, although the client reads nothing (see _http_uvicorn)."""

    def write_now(self, message: Message) -> bool:
        """Write a checked ``websocket.send`` at once if nothing needs waiting for; False if not (WebSocket only)."""

    def body_arrived(self) -> bool:
        """Whether the request's whole body has been read from the socket (HTTP only)."""


#: Where the plugin's uvicorn protocols put themselves in the scope's ``state`` (which
#: is process-local and never crosses the layer: see :func:`wire_scope`).
LINK_KEY = "switchboard.client_link"


def client_link(scope: dict[str, Any]) -> ClientLink | None:
    """The :class:`ClientLink` of this scope, if its uvicorn protocol is one of ours."""
    state = scope.get("state")
    link = state.get(LINK_KEY) if isinstance(state, dict) else None
    return cast(ClientLink, link) if link is not None else None


class Counter(Protocol):
    """The plugin's :meth:`~switchboard.gateway.plugins.ProtocolPlugin.count`."""

    def __call__(self, counter: str, amount: int = 1) -> None: ...


class SendEvent(Protocol):
    """The plugin's :meth:`~switchboard.gateway.plugins.ProtocolPlugin.send_event`."""

    def __call__(self, connection: Connection, event: Message, *, count: bool = True) -> Awaitable[EventOutcome]: ...


@dataclass(slots=True)
class BridgeContext:
    """What a per-connection bridge needs from the plugin, without importing it.

    Built once per plugin start; passing plain values keeps the request and WebSocket
    modules independent of the plugin class (and of each other).
    """

    gateway: Gateway
    count: Counter
    #: The plugin's ``send_event``: counts and logs the layer's refusals under the standard names.
    send_event: SendEvent
    #: Counts an outcome under its standard name, as ``send_event`` does (for retried sends,
    #: counted once for their final outcome).
    count_outcome: Callable[[Connection, EventOutcome], None]
    max_body_size: int
    response_timeout: float
    idle_timeout: float | None
    close_timeout: float
    over_limit: Callable[[], bool]
    #: Per-connection bound on replies waiting for a slow client (``max_pending_replies``...).
    reply_bound: ReplyBound
    #: Request-body bytes all requests together may hold (``max_buffered_body_bytes``).
    body_budget: BodyBudget
    #: WebSocket messages a client may send per second on average (None: no limit)...
    message_rate: float | None = None
    #: ...and in one burst (the token bucket's size).
    message_burst: int = 1
    #: A body arriving in pieces goes to the worker in events of about this many bytes.
    body_chunk_size: int = 64 * 1024
    #: Longest wait for the next piece of a request body (None: no limit).
    body_timeout: float | None = None
    #: Seconds a WebSocket message is retried while the layer fails (0: not retried).
    layer_retry: float = 0.0


async def send_event(ctx: BridgeContext, connection: Connection, event: Message) -> bool:
    """Send one event to the worker pool; False (counted and logged by the plugin) if the layer refused it.

    ``ChannelFull`` is the expected back-pressure signal; any other error means the layer
    itself is unavailable (Redis down...), which the caller answers the same way.
    """
    return await ctx.send_event(connection, event) is EventOutcome.SENT


def wire_scope(scope: dict[str, Any]) -> dict[str, Any]:
    """A copy of uvicorn's scope that can cross the layer and mean the same thing there.

    ``state`` is dropped (process-local objects, meaningless in a worker). The copy is
    shallow: the gateway keeps it as long as the connection lives (10,000 idle WebSockets
    hold 10,000 of them), and it shares uvicorn's header list instead of rebuilding every
    pair as a list (~1.2 KiB per connection). Tuples still arrive as lists: both layer
    backends pack every message with msgpack, which is what turns them into lists, so
    in-memory and Redis deployments see identical scopes.
    """
    return {key: value for key, value in scope.items() if key != "state"}


async def send_plain(send: Send, status: int, text: str, *, close: bool = False, retry_after: int | None = None) -> None:
    """A complete small text/plain response the plugin itself answers with (413, 503...)."""
    headers = []
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    if close:
        headers.append((b"connection", b"close"))
    await send_text(send, status, text, headers)


# -- reply checks: each returns None when fine, else a description for the log ----------


def check_status(status: object) -> str | None:
    if isinstance(status, bool) or not isinstance(status, int) or not 200 <= status <= 599:
        return f"status must be an int from 200 to 599, got {status!r}"
    return None


def check_headers(headers: object) -> str | None:
    if not isinstance(headers, (list, tuple)):
        return f"headers must be a list of [name, value] pairs, got {type(headers).__name__}"
    for item in headers:
        if not isinstance(item, (list, tuple)) or len(item) != 2:
            return f"header {item!r} is not a [name, value] pair"
        name, value = item
        if not isinstance(name, bytes) or not isinstance(value, bytes):
            return f"header {item!r}: name and value must be bytes"
        if not _HEADER_NAME_RE.match(name):
            return f"invalid header name {name!r}"
        if _HEADER_VALUE_RE.search(value):
            return f"invalid value for header {name!r}"
        if name.lower() == b"content-length" and not value.strip().isdigit():
            return f"content-length {value!r} is not a number"
    return None


def check_body(message: Message, *, key: str = "body") -> str | None:
    if not isinstance(message.get(key, b""), bytes):
        return f"{key} must be bytes, got {type(message.get(key)).__name__}"
    if not isinstance(message.get("more_body", False), bool):
        return "more_body must be a bool"
    return None


def check_http_reply(message: Message, started: bool) -> str | None:
    """Check one reply to an HTTP request; ``started`` says whether headers went out."""
    kind = message.get("type")
    if not started:
        if kind != "http.response.start":
            return f"expected http.response.start, got {kind!r}"
        if message.get("trailers"):
            return "response trailers are not supported (the http.response.trailers extension is not offered)"
        return check_status(message.get("status")) or check_headers(message.get("headers", []))
    if kind != "http.response.body":
        return f"expected http.response.body, got {kind!r}"
    return check_body(message)


def check_close(message: Message) -> str | None:
    code = message.get("code", 1000)
    if isinstance(code, bool) or not isinstance(code, int):
        return f"close code must be an int, got {code!r}"
    if code not in _SENDABLE_CLOSE_CODES and not 3000 <= code <= 4999:
        return f"close code {code} may not be sent"
    reason = message.get("reason")
    if reason is not None and not isinstance(reason, str):
        return f"close reason must be a str, got {type(reason).__name__}"
    if reason is not None and len(reason.encode()) > _MAX_CLOSE_REASON_BYTES:
        return f"close reason is over {_MAX_CLOSE_REASON_BYTES} bytes"
    return None


def check_send(message: Message) -> str | None:
    data, text = message.get("bytes"), message.get("text")
    if (data is None) == (text is None):
        return "websocket.send needs exactly one of bytes and text"
    if data is not None and not isinstance(data, bytes):
        return f"websocket.send bytes must be bytes, got {type(data).__name__}"
    if text is not None and not isinstance(text, str):
        return f"websocket.send text must be a str, got {type(text).__name__}"
    return None


def check_accept(message: Message) -> str | None:
    subprotocol = message.get("subprotocol")
    if subprotocol is not None and not isinstance(subprotocol, str):
        return f"subprotocol must be a str, got {type(subprotocol).__name__}"
    return check_headers(message.get("headers", []))


def check_denial_start(message: Message) -> str | None:
    return check_status(message.get("status")) or check_headers(message.get("headers", []))


_WEBSOCKET_CHECKS: dict[str, dict[str, Callable[[Message], str | None]]] = {
    "connecting": {
        "websocket.accept": check_accept,
        "websocket.close": check_close,
        "websocket.http.response.start": check_denial_start,
    },
    "open": {"websocket.send": check_send, "websocket.close": check_close},
    "denying": {"websocket.http.response.body": check_body},
}


def check_websocket_reply(message: Message, state: str) -> str | None:
    """Check one reply to a WebSocket connection in handshake ``state``."""
    allowed = _WEBSOCKET_CHECKS.get(state, {})
    kind = message.get("type")
    check = allowed.get(kind) if isinstance(kind, str) else None
    if check is None:
        expected = " or ".join(sorted(allowed)) or "nothing"
        return f"{kind!r} is not valid while {state} (expected {expected})"
    return check(message)
