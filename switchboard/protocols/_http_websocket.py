"""One WebSocket connection through the gateway: uvicorn's ASGI cycle <-> one layer connection.

Two directions run at once: a small task pumps client events (``websocket.receive``,
``websocket.disconnect``) to the worker pool, and the session's own coroutine writes
worker replies to the client. Both meet in one queue: the gateway's ``deliver`` puts
replies there and the pump puts :class:`_Signal` items, so the reply side has a single
await point and every timeout (handshake, idle, closing) is one ``timeout_at``.

Whatever ends the connection, the worker pool gets exactly one ``websocket.disconnect``:
that is what lets the worker finish the consumer instance instead of leaking it.

Two limits protect the gateway from one client: the reply queue is bounded
(``max_pending_replies`` / ``max_pending_reply_bytes``), and a client that cannot keep up
with its consumer is closed with 1013 rather than buffered for; and, optionally, a token
bucket bounds how fast a client may send (``websocket_max_messages_per_second``, 1008).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from typing import TYPE_CHECKING, Any

from switchboard.gateway.asgi import TEXT_PLAIN
from switchboard.gateway.plugins import EventOutcome
from switchboard.gateway.ratelimit import TokenBucket

from ._http_common import (
    BridgeContext,
    Mailbox,
    Receive,
    Send,
    check_websocket_reply,
    client_link,
    logger,
    send_event,
    wire_scope,
)

if TYPE_CHECKING:
    from switchboard.gateway.layers import Message
    from switchboard.gateway.server import Connection


class _Signal(enum.Enum):
    """Items the client-side pump puts on the reply queue next to worker replies."""

    ENDED = "the client side is finished; websocket.disconnect was forwarded"
    FULL = "the worker pool refused a client event"
    RATE = "the client sent faster than websocket_max_messages_per_second allows"
    SLOW = "the client does not read its replies fast enough; the reply queue is full"


# Handshake/lifecycle states; they also select which replies are valid (see _http_common).
CONNECTING, OPEN, DENYING, CLOSING = "connecting", "open", "denying", "closing"


class WebSocketSession:
    """State of one WebSocket connection; ``__slots__`` because 10k idle ones must stay cheap."""

    __slots__ = (
        "bucket",
        "connection",
        "ctx",
        "deadline",
        "disconnect_sent",
        "last_activity",
        "loop",
        "queue",
        "receive",
        "scope",
        "send",
        "state",
        "write_now",
    )

    def __init__(self, ctx: BridgeContext, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        self.ctx = ctx
        self.scope = scope
        self.receive = receive
        self.send = send
        self.loop = asyncio.get_running_loop()
        self.queue: Mailbox[Message | _Signal] = Mailbox(self.loop, ctx.reply_bound)
        self.connection: Connection | None = None
        self.state = CONNECTING
        self.deadline: float | None = self.loop.time() + ctx.response_timeout
        self.last_activity = self.loop.time()
        self.disconnect_sent = False
        # websocket_max_messages_per_second, on the loop's clock; None (no object) when off.
        rate = ctx.message_rate
        self.bucket = None if rate is None else TokenBucket(rate, ctx.message_burst, self.last_activity)
        # The protocol's synchronous write of a websocket.send (see _deliver); None when
        # the WebSocket implementation has none (uvicorn's own classes).
        self.write_now = getattr(client_link(scope), "write_now", None)

    # -- lifecycle --------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection from ``websocket.connect`` to the end."""
        if (await self.receive())["type"] != "websocket.connect":
            return
        self.ctx.count("websocket.connections_opened")
        if self.ctx.over_limit():
            self.ctx.count("websocket.503_limit")
            await self._deny(503, "too many connections")
            await self._wait_denied()
            return
        # Sticky: the worker that takes the connect claims the connection, so one consumer
        # instance sees every event of this socket, in order, however many workers run.
        self.connection = self.ctx.gateway.open_connection(wire_scope(self.scope), self._deliver, sticky=True)
        try:
            if not await self._forward({"type": "websocket.connect"}):
                self.ctx.count("websocket.503_full")
                await self._deny(503, "server busy, try again later")
                await self._wait_denied()
                return
            await self._run_open()
        finally:
            self.ctx.gateway.close_connection(self.connection)

    async def _run_open(self) -> None:
        pump = self.loop.create_task(self._pump_client())
        try:
            await self._pump_replies()
        finally:
            if not pump.done():
                pump.cancel()
            await asyncio.wait([pump])
            if not pump.cancelled() and pump.exception() is not None:
                logger.error("websocket client pump failed", exc_info=pump.exception())
            if not self.disconnect_sent:
                self.disconnect_sent = True
                await self._forward({"type": "websocket.disconnect", "code": 1006})

    async def refuse(self, status: int, text: str) -> None:
        """Deny the handshake without asking a worker (the plugin's own limits)."""
        if (await self.receive())["type"] != "websocket.connect":
            return
        await self._deny(status, text)
        await self._wait_denied()

    async def _wait_denied(self) -> None:
        """After refusing the handshake ourselves, let uvicorn finish before returning.

        uvicorn's websockets-sansio implementation marks a denied handshake complete only
        in ``connection_lost`` (scheduled with ``call_soon``); an app returning before that
        makes it log "ASGI callable returned without completing handshake". The disconnect
        is already queued, so this is one loop pass, not a wait on the client.
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.ctx.close_timeout):
                while (await self.receive())["type"] != "websocket.disconnect":
                    pass
        await asyncio.sleep(0)

    async def _forward(self, event: Message) -> bool:
        assert self.connection is not None
        return await send_event(self.ctx, self.connection, event)

    async def _forward_message(self, event: Message) -> bool:
        """A client's message to the worker pool, retried for ``layer_retry`` seconds while
        the layer fails (not when it is full: that is back-pressure, answered with 1013).

        A Redis primary failing over fails every send to its slots for a few seconds;
        retrying holds this client (its next messages are not read meanwhile, so order is
        kept) instead of closing it, which would send every client of the gateway back
        through a reconnect at once. Counted once, for the final outcome; each retry is
        ``websocket.events_retried``.
        """
        assert self.connection is not None
        retry = self.ctx.layer_retry
        if retry <= 0:
            return await self._forward(event)
        give_up = self.loop.time() + retry
        delay = 0.05
        failed = 0
        while True:
            outcome = await self.ctx.send_event(self.connection, event, count=False)
            if outcome is not EventOutcome.FAILED or self.loop.time() >= give_up:
                break
            failed += 1
            self.ctx.count("websocket.events_retried")
            await asyncio.sleep(min(delay, max(0.0, give_up - self.loop.time())))
            delay = min(delay * 2, 1.0)
        if outcome is not EventOutcome.SENT:
            self.ctx.count_outcome(self.connection, outcome)
        if failed:
            # The attempts that were retried lost nothing (a final failure is the one loss).
            self.ctx.gateway.event_retried(failed)
        return outcome is EventOutcome.SENT

    # -- client -> worker pool ----------------------------------------------------------

    async def _pump_client(self) -> None:
        """Forward client messages until uvicorn reports the disconnect (forwarded too)."""
        try:
            while True:
                message = await self.receive()
                kind = message["type"]
                if kind == "websocket.receive":
                    self.last_activity = self.loop.time()
                    self.ctx.count("websocket.messages_in")
                    if self.bucket is not None and not self.bucket.take(self.last_activity):
                        self.ctx.count("websocket.messages_dropped_rate")
                        self.queue.put_nowait(_Signal.RATE)
                        continue
                    event = {"type": kind, "bytes": message.get("bytes"), "text": message.get("text")}
                    if not await self._forward_message({k: v for k, v in event.items() if v is not None}):
                        self.queue.put_nowait(_Signal.FULL)
                elif kind == "websocket.disconnect":
                    await self._forward_disconnect(message)
                    return
        finally:
            self.queue.put_nowait(_Signal.ENDED)

    async def _forward_disconnect(self, message: Message) -> None:
        code = message.get("code", 1005)
        self.ctx.count(f"websocket.disconnects.{code}")
        event: Message = {"type": "websocket.disconnect", "code": code}
        if isinstance(message.get("reason"), str):
            event["reason"] = message["reason"]
        self.disconnect_sent = True
        await self._forward(event)

    # -- worker pool -> client ----------------------------------------------------------

    async def _pump_replies(self) -> None:
        """Write worker replies to the client until the client side has ended."""
        while True:
            try:
                if self.deadline is None:  # open, no idle timeout: no timer to arm per frame
                    item = await self.queue.get()
                else:
                    async with asyncio.timeout_at(self.deadline):
                        item = await self.queue.get()
            except TimeoutError:
                if not await self._on_timeout():
                    return
                continue
            if item is _Signal.ENDED:
                return
            if item is _Signal.FULL:
                await self._on_full()
            elif item is _Signal.RATE:
                await self._on_rate()
            elif item is _Signal.SLOW:
                await self._on_slow()
            else:
                await self._on_reply(item)

    async def _on_timeout(self) -> bool:
        """Handle an expired deadline; False means stop waiting for the client side."""
        if self.state == CONNECTING:
            self.ctx.count("websocket.503_timeout")
            logger.warning("no worker answered websocket %s within %.1fs", self.scope["path"], self.ctx.response_timeout)
            await self._deny(503, "no worker answered in time")
        elif self.state == DENYING:
            self.ctx.count("websocket.replies_invalid")
            logger.error("worker left the denial response for %s unfinished", self.scope["path"])
            await self._to_client({"type": "websocket.http.response.body", "body": b"", "more_body": False})
            self._closing()
        elif self.state == OPEN:
            idle = self.ctx.idle_timeout
            if idle is not None and self.loop.time() - self.last_activity >= idle:
                self.ctx.count("websocket.idle_timeouts")
                await self._close(1001, "idle timeout")
            else:
                self._arm_idle()
        else:
            return False  # closing took too long: give up on the client
        return True

    async def _on_full(self) -> None:
        """The pool refused a client event: the client should retry later (1013 / 503)."""
        if self.state == OPEN:
            await self._close(1013, "try again later")
        elif self.state == CONNECTING:
            self.ctx.count("websocket.503_full")
            await self._deny(503, "server busy, try again later")

    async def _on_rate(self) -> None:
        """The client sends faster than allowed: close 1008 (the messages were dropped, counted)."""
        if self.state == OPEN:
            self.ctx.count("websocket.rate_limited")
            await self._close(1008, "message rate exceeded")

    def _deliver(self, message: Message) -> None:
        """The gateway's ``deliver``: queue a reply, or give up on a client that reads too slowly.

        Runs in the gateway's reply loop, so it must not wait. Past the bound the queued
        replies are dropped (counted) and the client is closed with 1013: a gap in the
        middle of a stream would corrupt it, a close is what the client can act on.

        A ``websocket.send`` to an open connection with nothing queued ahead of it is
        written at once when the socket takes data (``write_now``): the writer task would
        only write it a loop pass later, and that task switch per message was 5-6% of the
        loop's samples in a fan-out, besides the write itself. Anything else, or a socket
        paused for writing, goes through the queue, so order and the slow-reader bound
        hold as before.
        """
        if (
            self.state == OPEN
            and self.queue.empty()
            and message.get("type") == "websocket.send"
            and self.write_now is not None
            and check_websocket_reply(message, OPEN) is None
            and self.write_now(message)
        ):
            self.ctx.count("websocket.messages_out")
            self.last_activity = self.loop.time()
            return
        already = self.queue.overflowed
        link = client_link(self.scope) if self.queue.qsize() else None  # only needed past the bound
        if self.queue.offer(message, link.keeps_up if link is not None else None):
            return
        dropped = 1 + self.queue.discard(lambda item: isinstance(item, _Signal))
        self.ctx.count("websocket.replies_dropped_slow_reader", dropped)
        if already or self.state == CLOSING:
            return
        self.ctx.count("websocket.slow_readers")
        if link is not None and self.state == OPEN:
            # The reply side is most likely blocked in uvicorn's send on this client's full
            # buffer; the protocol can still queue the close frame, and it aborts the socket
            # if the client does not complete the close in time.
            self.ctx.count("websocket.closes.1013")
            self._closing()
            link.drop_slow_client(1013, "client too slow")
        else:
            self.queue.put_nowait(_Signal.SLOW)

    async def _on_slow(self) -> None:
        """The fallback of :meth:`_deliver` (no link to the protocol): close once the reply side is free."""
        if self.state == OPEN:
            await self._close(1013, "client too slow")
        elif self.state != CLOSING:
            await self._bad_reply(f"more replies than the reply bound before the handshake ended ({self.state})")

    async def _on_reply(self, message: Message) -> None:
        problem = check_websocket_reply(message, self.state)
        if problem is not None:
            await self._bad_reply(problem)
            return
        kind = message["type"]
        if kind == "websocket.accept":
            await self._accept(message)
        elif kind == "websocket.send":
            await self._send_data(message)
        elif kind == "websocket.close":
            await self._worker_close(message)
        elif kind == "websocket.http.response.start":
            self.ctx.count("websocket.rejected")
            self.state = DENYING
            headers = [tuple(pair) for pair in message.get("headers", [])]
            await self._to_client({"type": kind, "status": message["status"], "headers": headers})
        else:  # websocket.http.response.body
            more = message.get("more_body", False)
            await self._to_client({"type": kind, "body": message.get("body", b""), "more_body": more})
            if not more:
                self._closing()

    async def _accept(self, message: Message) -> None:
        self.ctx.count("websocket.accepted")
        self.state = OPEN
        reply: Message = {"type": "websocket.accept", "subprotocol": message.get("subprotocol")}
        if message.get("headers"):
            reply["headers"] = [tuple(pair) for pair in message["headers"]]
        self.last_activity = self.loop.time()
        self._arm_idle()
        await self._to_client(reply)

    async def _send_data(self, message: Message) -> None:
        self.ctx.count("websocket.messages_out")
        self.last_activity = self.loop.time()
        if message.get("bytes") is not None:
            await self._to_client({"type": "websocket.send", "bytes": message["bytes"]})
        else:
            await self._to_client({"type": "websocket.send", "text": message["text"]})

    async def _worker_close(self, message: Message) -> None:
        if self.state == CONNECTING:
            # Close before accept is a rejection: uvicorn answers the handshake with 403.
            self.ctx.count("websocket.rejected")
            self._closing()
            await self._to_client({"type": "websocket.close"})
        else:
            await self._close(message.get("code", 1000), message.get("reason") or "")

    async def _bad_reply(self, problem: str) -> None:
        """A worker broke the protocol: fail this connection in a defined way, log, count."""
        if self.state == CLOSING:
            self.ctx.count("websocket.replies_after_close")
            return
        self.ctx.count("websocket.replies_invalid")
        logger.error("bad reply from worker for websocket %s: %s", self.scope["path"], problem)
        if self.state == CONNECTING:
            await self._deny(500, "Internal Server Error")
        elif self.state == OPEN:
            await self._close(1011, "internal error")
        else:
            await self._to_client({"type": "websocket.http.response.body", "body": b"", "more_body": False})
            self._closing()

    # -- helpers ----------------------------------------------------------------------

    async def _deny(self, status: int, text: str) -> None:
        """Refuse the handshake: an HTTP denial response where uvicorn supports one, else 403."""
        self._closing()
        if "websocket.http.response" in self.scope.get("extensions", {}):
            await self._to_client({"type": "websocket.http.response.start", "status": status, "headers": [TEXT_PLAIN]})
            await self._to_client({"type": "websocket.http.response.body", "body": f"{text}\n".encode()})
        else:
            await self._to_client({"type": "websocket.close"})

    async def _close(self, code: int, reason: str) -> None:
        self.ctx.count(f"websocket.closes.{code}")
        self._closing()
        await self._to_client({"type": "websocket.close", "code": code, "reason": reason})

    def _closing(self) -> None:
        """From now on only wait (a bounded time) for uvicorn to report the disconnect."""
        self.state = CLOSING
        self.deadline = self.loop.time() + self.ctx.close_timeout

    def _arm_idle(self) -> None:
        idle = self.ctx.idle_timeout
        self.deadline = None if idle is None else self.last_activity + idle

    async def _to_client(self, message: Message) -> None:
        """uvicorn's send; a client that is already gone just moves us to closing."""
        try:
            await self.send(message)
        except OSError:  # uvicorn's ClientDisconnected
            self._closing()
        except Exception as exc:
            self.ctx.count("websocket.replies_invalid")
            logger.error("uvicorn refused %s for websocket %s: %s", message["type"], self.scope["path"], exc)
            self._closing()
