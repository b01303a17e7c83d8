"""One HTTP request through the gateway: uvicorn's ASGI cycle <-> one layer connection.

The body is read whole at the gateway and sent as a single ``http.request`` event: the
worker that picks the event up may be in another process, and one bounded message is
both cheaper on the layer and the only way to enforce ``max_body_size`` before a worker
is bothered. Replies stream back as they come (server-sent events work); a client that
reads a stream slower than its consumer writes it is cut off once the reply bound is
passed (``max_pending_replies`` / ``max_pending_reply_bytes``), never buffered for.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._http_common import (
    BridgeContext,
    Mailbox,
    Receive,
    Send,
    check_http_reply,
    client_link,
    declared_length,
    logger,
    send_event,
    send_plain,
    wire_scope,
)

if TYPE_CHECKING:
    from switchboard.gateway.layers import Message
    from switchboard.gateway.server import Connection


class _Body(enum.Enum):
    """Why no request body came out of :func:`_read_body`."""

    TOO_LARGE = "too large"
    GONE = "client disconnected"


class _End(enum.Enum):
    """Items the bridge itself puts on the reply queue next to worker replies."""

    GONE = "the client went away (or the response is done)"
    SLOW = "the client reads slower than its consumer writes; the reply queue is full"


async def serve_http(ctx: BridgeContext, scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """Serve one request: read the body, hand it to the worker pool, relay the reply."""
    ctx.count("http.requests")
    length = declared_length(scope["headers"])
    if length is not None and length > ctx.max_body_size:
        await _reject_too_large(ctx, send)
        return
    body = await _read_body(receive, ctx.max_body_size)
    if body is _Body.TOO_LARGE:
        await _reject_too_large(ctx, send)
        return
    if body is _Body.GONE:
        ctx.count("http.client_disconnects")
        return
    assert isinstance(body, bytes)
    queue: Mailbox[Message | _End] = Mailbox(None, ctx.reply_bound)
    # Sticky: a held response (long-poll, server-sent events) gets its group messages and
    # its http.disconnect in the same consumer instance that took the request.
    connection = ctx.gateway.open_connection(wire_scope(scope), _deliverer(ctx, scope, queue), sticky=True)
    try:
        if not await send_event(ctx, connection, {"type": "http.request", "body": body, "more_body": False}, what="http"):
            ctx.count("http.503_full")
            await send_plain(send, 503, "Service Unavailable: server busy, try again later\n", retry_after=1)
            return
        await _relay(ctx, connection, scope, receive, send, queue)
    finally:
        ctx.gateway.close_connection(connection)


def _deliverer(ctx: BridgeContext, scope: dict[str, Any], queue: Mailbox[Message | _End]) -> Callable[[Message], None]:
    """The gateway's ``deliver`` for one request: queue replies up to the bound, then cut off.

    It must not wait (it runs in the gateway's reply loop). Past the bound the response
    cannot be finished honestly (HTTP has no "too slow" after the headers), so the
    connection is dropped: uvicorn's ``send``, probably blocked on the full socket,
    returns, and the relay sees :attr:`_End.SLOW`. Replies dropped meanwhile are counted.
    """

    link = client_link(scope)
    keeps_up = link.keeps_up if link is not None else None

    def deliver(message: Message) -> None:
        already = queue.overflowed
        if queue.offer(message, keeps_up):
            return
        dropped = 1 + queue.discard(lambda item: isinstance(item, _End))
        ctx.count("http.replies_dropped_slow_reader", dropped)
        if already:
            return
        ctx.count("http.slow_readers")
        queue.put_nowait(_End.SLOW)
        if link is not None:
            link.drop_slow_client(1013, "client too slow")

    return deliver


async def _reject_too_large(ctx: BridgeContext, send: Send) -> None:
    # Closing the connection stops us reading (and the client sending) the rest of a body
    # we already refused; keep-alive would have to drain it first.
    ctx.count("http.413")
    await send_plain(send, 413, "Request body too large\n", close=True)


async def _read_body(receive: Receive, limit: int) -> bytes | _Body:
    """The whole request body, or why not; stops reading as soon as it passes ``limit``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return _Body.GONE
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return _Body.TOO_LARGE
        if chunk:
            chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _wait_disconnect(receive: Receive) -> None:
    """Return once uvicorn reports ``http.disconnect`` (client gone or response done)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _relay(
    ctx: BridgeContext,
    connection: Connection,
    scope: dict[str, Any],
    receive: Receive,
    send: Send,
    queue: Mailbox[Message | _End],
) -> None:
    """Relay replies to the client while a watcher task turns a disconnect into a queue item.

    The watcher is the only extra task per request; funnelling both sources into the one
    queue leaves a single await point, so the response timeout is one ``timeout_at``.
    """
    watcher = asyncio.get_running_loop().create_task(_wait_disconnect(receive))
    watcher.add_done_callback(lambda _task: queue.put_nowait(_End.GONE))
    finished = False
    try:
        finished = await _relay_replies(ctx, scope, send, queue)
    finally:
        watcher.cancel()
        if not finished:
            # Client gone, timeout, bad reply or cancelled at shutdown: tell the worker's
            # application, so it stops producing output nobody will read.
            await send_event(ctx, connection, {"type": "http.disconnect"}, what="http")


async def _relay_replies(ctx: BridgeContext, scope: dict[str, Any], send: Send, queue: Mailbox[Message | _End]) -> bool:
    """Write replies until the final body; False if the exchange ended any other way."""
    started = False
    deadline = asyncio.get_running_loop().time() + ctx.response_timeout
    while True:
        try:
            async with asyncio.timeout_at(None if started else deadline):
                message = await queue.get()
        except TimeoutError:
            ctx.count("http.503_timeout")
            logger.warning("no worker answered %s %s within %.1fs", scope["method"], scope["path"], ctx.response_timeout)
            await send_plain(send, 503, "Service Unavailable: no worker answered in time\n", retry_after=1)
            return False
        if message is _End.SLOW:
            return False  # counted by the deliverer; the connection is already dropped
        if message is _End.GONE:
            ctx.count("http.client_disconnects")
            return False
        problem = check_http_reply(message, started)
        if problem is not None:
            await _bad_reply(ctx, scope, send, started, problem)
            return False
        if not started:
            started = True
            ctx.count(f"http.responses.{message['status'] // 100}xx")
        try:
            await send(message)
        except Exception as exc:  # uvicorn refused it: body longer than content-length...
            await _bad_reply(ctx, scope, send, True, f"{type(exc).__name__}: {exc}")
            return False
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            return True


async def _bad_reply(ctx: BridgeContext, scope: dict[str, Any], send: Send, started: bool, problem: str) -> None:
    """A worker broke the protocol: 500 if nothing went out yet, else uvicorn drops the connection."""
    ctx.count("http.bad_replies")
    logger.error("bad reply from worker for %s %s: %s", scope["method"], scope["path"], problem)
    if not started:
        await send_plain(send, 500, "Internal Server Error\n", close=True)
