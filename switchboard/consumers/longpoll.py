"""HTTP long-poll consumers: a request held open until a message for it arrives, or a timeout.

A long-poll client asks "anything new?" and the server answers only when there is
something, or after ``timeout`` seconds with nothing; the client then asks again at once.
It works through every proxy and on every client that can make an HTTP request, which is
why it is still the fallback when WebSockets and server-sent events are not available.

Under Switchboard an HTTP request is a *sticky* gateway connection: the worker that took
the request holds the consumer instance, and group messages sent to the request's
channel are forwarded by the gateway to that very instance. So a held request costs the
worker nothing but an idle instance blocked in ``receive()`` and the gateway one open
socket; no thread, no polling of the layer. ``docs/longpoll.md`` has the whole story.

``AsyncLongPollConsumer`` on a GET:

1. joins the groups from :meth:`~AsyncLongPollConsumer.get_groups` (``groups`` by default);
2. with ``history`` on, answers at once with what the client missed since its ``cursor``
   (kept by :func:`publish` in a per-group ring buffer in Django's cache);
3. otherwise holds the request. A group message runs its handler (``chat_message``),
   which calls :meth:`~AsyncLongPollConsumer.reply` with a JSON-able payload: the request
   is answered ``{"messages": [payload], "cursor": ..., "gap": false}``. After
   ``timeout`` seconds it is answered with an empty ``messages`` list instead.

The gateway answers 503 when no ``http.response.start`` arrives within its
``response_timeout`` (60 s by default), and nothing is sent before the answer here: keep
``timeout`` well below the gateway's ``response_timeout`` (the default 25 s is).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

from django.core.cache import caches
from django.core.exceptions import ImproperlyConfigured

from switchboard.gateway.layers import ChannelLayer, get_channel_layer

from .asgi import Message, Receive, Scope, Send
from .base import AsyncConsumer
from .exceptions import StopConsumer
from .http import AsyncHttpConsumer

logger = logging.getLogger("switchboard.consumers.longpoll")

#: The event a held request's own timer dispatches when ``timeout`` passes.
TIMEOUT_TYPE = "longpoll.timeout"

#: Keys :func:`publish` adds to a message: which group's buffer numbered it, and how.
GROUP_KEY = "longpoll_group"
SEQ_KEY = "longpoll_seq"

#: Messages kept per group by :func:`publish` unless told otherwise.
DEFAULT_HISTORY = 100
#: Seconds a buffered message stays in the cache (a client away longer sees ``gap``).
DEFAULT_HISTORY_TTL = 300.0

_KEY_PREFIX = "switchboard.longpoll:"
# Seconds the clean-up on the way out (leaving groups, a last answer) may take: a worker
# that is stopping must not hang on a layer that has gone away.
_CLEANUP_TIMEOUT = 2.0


def _seq_key(group: str) -> str:
    return f"{_KEY_PREFIX}{group}:seq"


def _slot_key(group: str, seq: int, history: int) -> str:
    return f"{_KEY_PREFIX}{group}:slot:{seq % history}"


async def publish(
    group: str,
    message: Message,
    *,
    history: int = DEFAULT_HISTORY,
    ttl: float = DEFAULT_HISTORY_TTL,
    cache_alias: str = "default",
    layer: ChannelLayer | None = None,
) -> int:
    """``group_send`` ``message`` to ``group``, numbered and kept in the group's ring buffer.

    Why: between two polls of a client (the instant after one answer, before the next
    request joins the group) a plain ``group_send`` reaches nobody for that client. A
    message sent through here gets the next sequence number of its group and stays in the
    last ``history`` slots of a ring buffer in Django's cache (``caches[cache_alias]``)
    for ``ttl`` seconds, so a consumer with ``history`` on can hand the client what it
    missed. The cache must be shared by every worker process (Redis, Memcached): a
    ``LocMemCache`` only works with one worker process (``switchboard run``).

    Returns the sequence number. The message goes to the group with two extra keys,
    ``longpoll_group`` and ``longpoll_seq``; other consumers of the group (a WebSocket
    ``chat_message``) can ignore them.
    """
    if history < 1:
        raise ValueError(f"history must be at least 1, got {history!r}")
    cache = caches[cache_alias]
    key = _seq_key(group)
    seq: int | None = None
    for _ in range(3):  # the counter may be evicted between add and incr: start it again
        await cache.aadd(key, 0, timeout=None)
        try:
            seq = int(await cache.aincr(key))
            break
        except ValueError:
            continue
    if seq is None:
        raise RuntimeError(f"cache {cache_alias!r} keeps losing the sequence counter of group {group!r}")
    numbered = {**message, GROUP_KEY: group, SEQ_KEY: seq}
    await cache.aset(_slot_key(group, seq, history), {"seq": seq, "message": numbered}, timeout=ttl)
    await (layer or get_channel_layer()).group_send(group, numbered)
    return seq


def parse_cursor(text: str) -> dict[str, int]:
    """``"chat.lobby:12,news:3"`` -> ``{"chat.lobby": 12, "news": 3}``; bad parts are skipped.

    Group names never contain ``:`` or ``,`` (specs/layer.md), so the format needs no
    escaping; the client treats it as opaque and sends back what it was given.
    """
    cursor: dict[str, int] = {}
    for part in text.split(","):
        group, sep, number = part.rpartition(":")
        if sep and group and number.isdigit():
            cursor[group] = int(number)
    return cursor


def format_cursor(cursor: dict[str, int]) -> str:
    return ",".join(f"{group}:{seq}" for group, seq in sorted(cursor.items()))


class AsyncLongPollConsumer(AsyncHttpConsumer):
    """Hold a GET until a group message is answered with :meth:`reply`, or ``timeout`` passes.

    Override :meth:`get_groups` (or set ``groups``) and one handler per message type,
    calling :meth:`reply` with what the client should get::

        class ChatPoll(AsyncLongPollConsumer):
            timeout = 25

            async def get_groups(self) -> list[str]:
                return [f"chat.{self.scope['url_route']['kwargs']['room']}"]

            async def chat_message(self, event):
                await self.reply({"message": event["message"]})

    A handler that does not call ``reply`` leaves the request held. Other methods than
    GET get 405; override :meth:`handle` to serve them (and call ``super().handle(body)``
    for GET).

    The answer is always ``200`` JSON ``{"messages": [...], "cursor": ..., "gap": bool}``:
    one message when a live group message arrived, none after the timeout, and with
    ``history`` on, everything the client missed since the ``cursor`` query parameter it
    sent (``gap`` true when some of that is no longer in the buffer).
    """

    #: Seconds a request is held before it is answered with no messages. Keep it well below
    #: the gateway's ``response_timeout`` (default 60 s), which answers 503 otherwise.
    timeout: float = 25.0
    #: Ring-buffer slots per group to read on a poll; 0 (default) keeps no history: messages
    #: sent while a client is between two polls are not seen by it (at-most-once). Set it
    #: to the ``history`` given to :func:`publish` (default 100), which fills the buffer.
    history: int = 0
    #: Django cache holding the ring buffers (see :func:`publish`).
    cache_alias: str = "default"
    #: Query parameter carrying the cursor of the previous answer.
    cursor_param: str = "cursor"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._deadline: float | None = None  # loop time at which a held request times out
        self._holding = False  # handle() ran poll() and the request is not answered yet
        self._request_seen = False
        self._answered = False
        self._joined: list[str] = []
        self._cursor: dict[str, int] = {}
        self._gap = False
        self._missing: set[tuple[str, int]] = set()  # numbered, not found in the buffer
        self._batch: list[Any] | None = None  # payloads collected for the coming answer

    @property
    def held(self) -> bool:
        """True while a polled request is held: joined, waiting for a message or the timeout."""
        return self._holding and not self._answered

    # -- the ASGI entry point: a receive with a deadline ----------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the instance with a ``receive`` that turns the hold deadline into an event.

        Why a local timer and not a message through the layer: the timeout then costs no
        layer round trip and is dispatched like any other message, one at a time with the
        handlers, so a timeout and a group message can never both answer the request.
        """

        async def receive_until_deadline() -> Message:
            deadline = self._deadline
            if deadline is None:
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    return await receive()
            except TimeoutError:
                # Cancelling the read loses nothing: the message stays queued for the next.
                self._deadline = None
                return {"type": TIMEOUT_TYPE}

        try:
            await super().__call__(scope, receive_until_deadline, send)
        except asyncio.CancelledError:
            # The worker is stopping and gave up waiting for us: answer with nothing, so the
            # client polls again (reaching another worker) instead of waiting for a 503.
            if self._holding and not self._answered:
                await self._best_effort(self._answer([]))
            raise
        finally:
            if self._joined:
                await self._best_effort(self._leave_groups())

    @staticmethod
    async def _best_effort(operation: Awaitable[None]) -> None:
        try:
            async with asyncio.timeout(_CLEANUP_TIMEOUT):
                await operation
        except Exception as exc:  # the layer or the gateway may be gone already
            logger.debug("long-poll clean-up failed: %r", exc)

    # -- the request ---------------------------------------------------------------------

    async def handle(self, body: bytes) -> None:
        """GET polls; anything else gets 405 (override to serve POST, say)."""
        if self.scope.get("method") != "GET":
            await self.send_response(
                405, b"GET only\n", headers=[[b"allow", b"GET"], [b"content-type", b"text/plain; charset=utf-8"]]
            )
            return
        await self.poll()

    async def get_groups(self) -> list[str]:
        """The groups whose messages answer this request; ``groups`` by default."""
        return list(self.groups)

    async def poll(self) -> None:
        """Join the groups, answer at once with what the client missed, else hold the request."""
        if not self.timeout > 0:
            raise ImproperlyConfigured(f"{type(self).__name__}.timeout must be a positive number of seconds")
        groups = await self.get_groups()
        layer = self.channel_layer
        if groups and layer is None:
            raise ImproperlyConfigured(f"{type(self).__name__} has groups {groups!r} but no channel layer")
        # Join first, then read the buffer: a message published after the read is then
        # sure to arrive live, one published before it is in the buffer.
        for group in groups:
            await layer.group_add(group, self.channel_name)
            self._joined.append(group)
        self._holding = True
        if self.history > 0 and groups:
            missed = await self._catch_up(groups)
            if missed:
                self._batch = []
                for message in missed:
                    await AsyncConsumer.find_handler(self, message)(message)
                batch, self._batch = self._batch, None
                if batch:
                    await self._answer(batch)
                    return
        self._deadline = asyncio.get_running_loop().time() + self.timeout

    async def reply(self, payload: Any) -> None:
        """Answer the held request with ``payload`` (anything ``json.dumps`` takes).

        Called from a message handler; several calls in one handler (or while catching up)
        go out together in one answer.
        """
        if self._batch is not None:
            self._batch.append(payload)
        else:
            await self._answer([payload])

    async def longpoll_timeout(self, message: Message) -> None:
        """Nothing came within ``timeout``: answer with no messages (the client polls again)."""
        await self._answer([])

    async def _answer(self, messages: list[Any]) -> None:
        if self._answered:
            logger.debug("%s: request already answered; %d message(s) not sent", type(self).__name__, len(messages))
            return
        self._answered = True
        self._holding = False
        self._deadline = None
        document = {
            "messages": messages,
            "cursor": format_cursor(self._cursor) if self.history > 0 else None,
            "gap": self._gap or bool(self._missing),
        }
        await self.send_response(
            200,
            self.encode_json(document).encode(),
            headers=[[b"content-type", b"application/json"], [b"cache-control", b"no-store"]],
        )
        # Leave at once: group messages to a finished request would only be orphaned.
        await self._leave_groups()

    @classmethod
    def encode_json(cls, content: Any) -> str:
        return json.dumps(content)

    # -- routing messages to handlers ----------------------------------------------------

    async def dispatch(self, message: Message) -> None:
        """Route a message; one that arrives before any request is answered from here.

        An HTTP request cannot move between workers, but its group messages can: when the
        worker holding a request stops (it drains, then waits for its held requests) or
        dies, the gateway sends the request's next group message to the pool, and some
        other worker starts an instance with that message and no ``http.request``. That
        instance has the request's whole scope, so it answers the request with the
        message (see :meth:`answer_for_lost_instance`) and ends; the client polls again.
        """
        kind = message.get("type")
        if not self._request_seen:
            if kind == "http.request":
                self._request_seen = True
            elif kind != "http.disconnect":
                await self.answer_for_lost_instance(message)
                raise StopConsumer()
        await super().dispatch(message)

    async def answer_for_lost_instance(self, message: Message) -> None:
        """Answer a request held by an instance on another worker with ``message``.

        Why: that instance is gone (its worker was killed: the client would wait for the
        gateway's 503) or going (its worker is stopping: it would answer with nothing once
        its drain time is up). Answering here gives the client the message now. The
        handler runs as for a live message; if it does not reply, the answer is empty.
        Should the old instance still answer later, the gateway has closed the request
        by then and drops that answer.
        """
        if self.history > 0:
            query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
            self._cursor = parse_cursor(query.get(self.cursor_param, [""])[-1])
            group, seq = message.get(GROUP_KEY), message.get(SEQ_KEY)
            if isinstance(group, str) and isinstance(seq, int):
                self._cursor.setdefault(group, seq - 1)
        self._holding = True
        logger.debug("%r for a request whose instance is on another worker: answered from here", message.get("type"))
        await self.find_handler(message)(message)
        if not self._answered:
            await self._answer([])

    def find_handler(self, message: Message) -> Callable[[Message], Any]:
        """The handler, wrapped so that live group messages answer the held request.

        Messages already seen through the buffer are skipped, and the payloads the
        handler passes to :meth:`reply` go out as one answer after it returns — inside
        ``dispatch``, so the request and the instance end together.
        """
        handler = super().find_handler(message)
        kind = message.get("type")
        if not isinstance(kind, str) or kind.startswith("http.") or kind == TIMEOUT_TYPE or not self._holding:
            return handler

        async def live(event: Message) -> None:
            if not self._advance_cursor(event):
                return  # the client had it already (caught up from the buffer)
            self._batch = []
            try:
                await handler(event)
                batch = self._batch
            finally:
                self._batch = None
            if batch:
                await self._answer(batch)

        return live

    # -- the ring buffer -----------------------------------------------------------------

    def _advance_cursor(self, message: Message) -> bool:
        """Move the cursor past a numbered message; False if the client already has it."""
        group = message.get(GROUP_KEY)
        seq = message.get(SEQ_KEY)
        if self.history <= 0 or not isinstance(group, str) or not isinstance(seq, int) or group not in self._cursor:
            return True
        if (group, seq) in self._missing:
            self._missing.discard((group, seq))
            return True
        if seq <= self._cursor[group]:
            return False
        self._cursor[group] = seq
        return True

    async def _catch_up(self, groups: list[str]) -> list[Message]:
        """Buffered messages numbered after the client's cursor, oldest first.

        A group the cursor does not name starts at its current number (a first poll gets
        only what comes next). Slots overwritten or expired since set ``gap``, and so does
        a cursor from the future (the counter was lost, e.g. a cache flush).
        """
        cache = caches[self.cache_alias]
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        sent = parse_cursor(query.get(self.cursor_param, [""])[-1])
        current = await cache.aget_many([_seq_key(group) for group in groups])
        wanted: dict[str, tuple[str, int]] = {}
        for group in groups:
            now = int(current.get(_seq_key(group), 0))
            since = sent.get(group)
            if since is None or since > now:
                self._gap = self._gap or since is not None
                self._cursor[group] = now
                continue
            if now - since > self.history:
                self._gap = True
                since = now - self.history
            self._cursor[group] = now
            for seq in range(since + 1, now + 1):
                wanted[_slot_key(group, seq, self.history)] = (group, seq)
        if not wanted:
            return []
        slots = await cache.aget_many(list(wanted))
        missed: list[tuple[int, Message]] = []
        for key, (group, seq) in wanted.items():
            slot = slots.get(key)
            if isinstance(slot, dict) and slot.get("seq") == seq:
                missed.append((seq, slot["message"]))
            elif slot is None:
                # Evicted or expired; or published this very instant (numbered, not stored
                # yet), and then it arrives live: a gap only if it has not by the answer.
                self._missing.add((group, seq))
            else:
                self._gap = True  # overwritten by a newer message: the buffer is too small
        # One group's messages in order; groups one after another.
        return [message for _seq, message in missed]

    async def _leave_groups(self) -> None:
        joined, self._joined = self._joined, []
        for group in joined:
            await self.channel_layer.group_discard(group, self.channel_name)


#: ``LongPollConsumer`` is the async consumer: a held request must not hold a thread.
LongPollConsumer = AsyncLongPollConsumer

__all__ = [
    "DEFAULT_HISTORY",
    "AsyncLongPollConsumer",
    "LongPollConsumer",
    "format_cursor",
    "parse_cursor",
    "publish",
]
