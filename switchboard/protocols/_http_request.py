"""One HTTP request through the gateway: uvicorn's ASGI cycle <-> one layer connection.

The body goes to the worker pool as ``http.request`` events (specs/http.md). A body that
is complete within ``body_chunk_size`` bytes, which is nearly every request, is one event;
a larger one, or one still arriving, is streamed in chunks of about that size
(``more_body: true`` on all but the last), read from the client only as fast as they can
be sent on (:mod:`._http_body`): the gateway never holds a whole large body, and a client
withholding the end of one holds at most one chunk. Only the first event goes to the pool;
the rest wait for the worker that took it to claim the connection and go to that worker
alone, so one consumer instance sees the whole body, in order.

Replies stream back as they come (server-sent events work); a client that reads a stream
slower than its consumer writes it is cut off once the reply bound is passed
(``max_pending_replies`` / ``max_pending_reply_bytes``), never buffered for.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from switchboard.gateway.asgi import content_length
from switchboard.gateway.plugins import CONNECTIONS_OPENED, MESSAGES_IN, MESSAGES_OUT, RateLimitedLog

from ._http_body import BodyProblem, BodyReader
from ._http_common import (
    BridgeContext,
    Mailbox,
    Receive,
    Send,
    check_http_reply,
    client_link,
    logger,
    send_event,
    send_plain,
    wire_scope,
)
from ._http_guard import LINGER_SECONDS

if TYPE_CHECKING:
    from switchboard.gateway.layers import Message
    from switchboard.gateway.server import Connection

_limits_log = RateLimitedLog(logger, "http")

#: Most body bytes read and dropped before answering a body the gateway will not take.
_DRAIN_BYTES = 4 * 1024 * 1024


class _End(enum.Enum):
    """Items the bridge itself puts on the reply queue next to worker replies."""

    GONE = "the client went away (or the response is done)"
    SLOW = "the client reads slower than its consumer writes; the reply queue is full"


class _Stop(enum.Enum):
    """Why the gateway stopped sending a streamed body to the worker before its end."""

    FULL = "the layer refused a chunk"
    NO_CLAIM = "no worker claimed the request within response_timeout"
    WORKER_LOST = "the worker that has the start of the body let go of the request"


async def serve_http(ctx: BridgeContext, scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """Serve one request: stream the body to the worker pool, relay the reply."""
    ctx.count(f"http.{CONNECTIONS_OPENED}")
    ctx.count(f"http.{MESSAGES_IN}")
    headers = scope["headers"]
    length = content_length(headers)
    if length is not None and length > ctx.max_body_size:
        await _answer_body_problem(ctx, scope, send, BodyProblem.TOO_LARGE)
        return
    reader = BodyReader(
        receive,
        budget=ctx.body_budget,
        chunk_size=ctx.body_chunk_size,
        max_size=ctx.max_body_size,
        # A request without Content-Length or Transfer-Encoding has no body to wait for.
        timeout=ctx.body_timeout if length or _chunked(headers) else None,
        arrived=link.body_arrived if (link := client_link(scope)) is not None else None,
    )
    first = await reader.next_chunk()
    if isinstance(first, BodyProblem):
        await _answer_body_problem(ctx, scope, send, first, reader)
        return
    queue: Mailbox[Message | _End] = Mailbox(None, ctx.reply_bound)
    # Sticky: a held response (long-poll, server-sent events) gets its group messages and
    # its http.disconnect in the same consumer instance that took the request.
    connection = ctx.gateway.open_connection(wire_scope(scope), _deliverer(ctx, scope, queue), sticky=True)
    started = finished = False
    try:
        event = {"type": "http.request", "body": first, "more_body": not reader.done}
        del first  # the event holds the chunk now: let it go with the event, not with this frame
        sent = await send_event(ctx, connection, event)
        del event
        reader.release()
        if not sent:
            ctx.count("http.503_full")
            await send_plain(send, 503, "Service Unavailable: server busy, try again later\n", retry_after=1)
            return
        started = True
        if not reader.done:
            ctx.count("http.bodies_streamed")
            stopped = await _stream_body(ctx, connection, reader, queue)
            if stopped is not None:
                await _answer_stop(ctx, scope, send, stopped, reader)
                return
        finished = await _relay(ctx, scope, receive, send, queue)
    finally:
        reader.release()
        if started and not finished:
            # Client gone, timeout, bad reply, body cut short or cancelled at shutdown: tell
            # the worker's application, so it stops waiting or producing output nobody reads.
            await send_event(ctx, connection, {"type": "http.disconnect"})
        ctx.gateway.close_connection(connection)


def _chunked(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(name.lower() == b"transfer-encoding" for name, _value in headers)


async def _stream_body(
    ctx: BridgeContext, connection: Connection, reader: BodyReader, queue: Mailbox[Message | _End]
) -> BodyProblem | _Stop | None:
    """Send the rest of the body, chunk by chunk, to the worker that took its first chunk.

    Returns why it stopped early, or None once the body is sent (or the consumer answered
    before reading all of it: the rest is not worth sending, nor reading).
    """
    worker = await ctx.gateway.wait_claimed(connection, ctx.response_timeout)
    if worker is None:
        return _Stop.NO_CLAIM
    while not reader.done:
        if not queue.empty():
            return None
        chunk = await reader.next_chunk()
        if isinstance(chunk, BodyProblem):
            return chunk
        if connection.worker != worker:
            return _Stop.WORKER_LOST
        event = {"type": "http.request", "body": chunk, "more_body": not reader.done}
        del chunk  # nothing here may keep a sent chunk alive while the next one is read
        sent = await send_event(ctx, connection, event)
        del event
        reader.release()
        if not sent:
            return _Stop.FULL
    return None


async def _answer_body_problem(
    ctx: BridgeContext, scope: dict[str, Any], send: Send, problem: BodyProblem, reader: BodyReader | None = None
) -> None:
    """The client's answer when its body could not be read to the end, with ``connection: close``.

    A client that is still sending (a body too large, or refused while the gateway is
    full) has what it already sent read and dropped first, briefly (:meth:`BodyReader.drain`),
    so the answer is not lost to a reset; one that asked ``expect: 100-continue`` is
    answered at once (it sends nothing until told to).
    """
    if reader is not None and problem in (BodyProblem.TOO_LARGE, BodyProblem.BUSY) and not _expects_continue(scope):
        await reader.drain(LINGER_SECONDS, _DRAIN_BYTES)
    if problem is BodyProblem.GONE:
        ctx.count("http.client_disconnects")
    elif problem is BodyProblem.TOO_LARGE:
        ctx.count("http.413")
        await send_plain(send, 413, "Request body too large\n", close=True)
    elif problem is BodyProblem.TIMEOUT:
        ctx.count("http.body_timeouts")
        _limits_log.warning(
            "body timeout",
            "%s %s from %s: no body data for %.1fs; answered 408",
            scope["method"],
            scope["path"],
            _client(scope),
            ctx.body_timeout or 0.0,
        )
        await send_plain(send, 408, "Request body timeout\n", close=True)
    else:
        ctx.count("http.503_body_buffer")
        _limits_log.warning(
            "body buffer",
            "request bodies in progress hold max_buffered_body_bytes; %s %s from %s answered 503",
            scope["method"],
            scope["path"],
            _client(scope),
        )
        await send_plain(send, 503, "Service Unavailable: server busy, try again later\n", close=True, retry_after=1)


async def _answer_stop(
    ctx: BridgeContext, scope: dict[str, Any], send: Send, stopped: BodyProblem | _Stop, reader: BodyReader
) -> None:
    if isinstance(stopped, BodyProblem):
        await _answer_body_problem(ctx, scope, send, stopped, reader)
        return
    await reader.drain(LINGER_SECONDS, _DRAIN_BYTES)
    if stopped is _Stop.NO_CLAIM:
        ctx.count("http.503_timeout")
        logger.warning("no worker took %s %s within %.1fs", scope["method"], scope["path"], ctx.response_timeout)
        text = "no worker answered in time"
    elif stopped is _Stop.WORKER_LOST:
        ctx.count("http.503_worker_lost")
        text = "the worker went away, try again"
    else:
        ctx.count("http.503_full")
        text = "server busy, try again later"
    await send_plain(send, 503, f"Service Unavailable: {text}\n", close=True, retry_after=1)


def _expects_continue(scope: dict[str, Any]) -> bool:
    return any(name == b"expect" and value.lower() == b"100-continue" for name, value in scope["headers"])


def _client(scope: dict[str, Any]) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "?"


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


async def _wait_disconnect(receive: Receive) -> None:
    """Return once uvicorn reports ``http.disconnect`` (client gone or response done)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _relay(ctx: BridgeContext, scope: dict[str, Any], receive: Receive, send: Send, queue: Mailbox[Message | _End]) -> bool:
    """Relay replies to the client while a watcher task turns a disconnect into a queue item.

    The watcher is the only extra task per request; funnelling both sources into the one
    queue leaves a single await point, so the response timeout is one ``timeout_at``.
    True once the response is complete.
    """
    watcher = asyncio.get_running_loop().create_task(_wait_disconnect(receive))
    watcher.add_done_callback(lambda _task: queue.put_nowait(_End.GONE))
    try:
        return await _relay_replies(ctx, scope, send, queue)
    finally:
        watcher.cancel()


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
            ctx.count(f"http.{MESSAGES_OUT}")
        try:
            await send(message)
        except Exception as exc:  # uvicorn refused it: body longer than content-length...
            await _bad_reply(ctx, scope, send, True, f"{type(exc).__name__}: {exc}")
            return False
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            return True


async def _bad_reply(ctx: BridgeContext, scope: dict[str, Any], send: Send, started: bool, problem: str) -> None:
    """A worker broke the protocol: 500 if nothing went out yet, else uvicorn drops the connection."""
    ctx.count("http.replies_invalid")
    logger.error("bad reply from worker for %s %s: %s", scope["method"], scope["path"], problem)
    if not started:
        await send_plain(send, 500, "Internal Server Error\n", close=True)
