"""Replies to incoming SMS that come after Twilio's webhook was answered (durable pool).

On the durable ``switchboard.sms`` pool (the default, docs/delivery.md) an incoming
message is stored before Twilio gets its ``200``, and it may be handled later than the
webhook's ``reply_deadline``: a slow handler, or a redelivery after a worker died. The
webhook cannot carry that reply any more (Twilio was answered with an empty
``<Response/>``), so the gateway keeps the webhook's connection for ``late_reply_window``
seconds after answering, and a consumer's ``sms.reply`` arriving in that time is sent
through Twilio's REST API instead: as an ``sms.send`` to the sender, from the number it
wrote to, on ``switchboard.sms.outbound`` (any gateway with an ``account_sid`` sends it).

One reply per incoming message still holds: if the webhook was answered with a reply (or
a late reply was already sent), a later one, such as a redelivered event's, is dropped
and counted. A reply to a webhook whose gateway has gone is lost with the reply channel;
the event itself is not (docs/sms.md).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._sms_outbound import OUTBOUND_CHANNEL, SEND_TYPE

if TYPE_CHECKING:
    from switchboard.gateway.layers import Message
    from switchboard.gateway.server import Connection, Gateway

logger = logging.getLogger("switchboard.protocols.sms")

#: Counters of :class:`LateReplies` (present from the start at 0).
LATE_COUNTERS = (
    "late_replies_sent",
    "late_replies_empty",
    "late_replies_duplicate",
    "late_replies_invalid",
    "late_replies_failed",
)


@dataclass
class WebhookReplies:
    """Where one webhook's ``sms.reply`` goes: the waiting webhook, or (answered) REST."""

    queue: asyncio.Queue[Message] = field(default_factory=asyncio.Queue)
    #: The consumer answered (with a reply or "no reply") before the webhook was: it has
    #: handled the message, so its connection need not wait for a late reply.
    answered: bool = False
    #: Set once the webhook is answered and kept for late replies: (from, to) of the SMS.
    late: tuple[str, str] | None = None
    #: The webhook's answer carried a reply, or a late one was handled: later ones are extra.
    replied: bool = False


class LateReplies:
    """The answered webhooks kept open for late replies, at most ``limit``, each ``window`` s."""

    def __init__(
        self, gateway: Gateway, window: float, limit: int, count: Callable[..., None], check: Callable[[Message], str | None]
    ) -> None:
        self.gateway = gateway
        self.window = window
        self.limit = limit
        self.count = count
        self.check = check
        self._kept: collections.OrderedDict[str, tuple[Connection, asyncio.TimerHandle]] = collections.OrderedDict()
        self._tasks: set[asyncio.Task[Any]] = set()

    def keep(self, connection: Connection, replies: WebhookReplies, sender: str, receiver: str) -> None:
        """The webhook was answered: keep its connection for a reply still to come."""
        replies.late = (sender, receiver)
        while len(self._kept) >= self.limit:
            self._close(next(iter(self._kept)))
        handle = asyncio.get_running_loop().call_later(self.window, self._close, connection.channel)
        self._kept[connection.channel] = (connection, handle)

    def _close(self, channel: str) -> None:
        kept = self._kept.pop(channel, None)
        if kept is not None:
            connection, handle = kept
            handle.cancel()
            self.gateway.close_connection(connection)

    def on_reply(self, message: Message, replies: WebhookReplies) -> None:
        """An ``sms.reply`` after the answer: to REST once, dropped after that."""
        assert replies.late is not None
        problem = self.check(message)
        if problem is not None:
            self.count("late_replies_invalid")
            logger.warning("sms: bad late reply from the consumer, dropped: %s", problem)
            return
        if replies.replied:
            self.count("late_replies_duplicate")
            return
        replies.replied = True
        body, media = message.get("body"), message.get("media") or []
        if not body and not media:
            self.count("late_replies_empty")  # "no reply": nothing to send
            return
        sender, receiver = replies.late
        send: Message = {"type": SEND_TYPE, "to": sender, "from": receiver}
        if body:
            send["body"] = body
        if media:
            send["media"] = list(media)
        task = asyncio.get_running_loop().create_task(self._send(send))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, message: Message) -> None:
        try:
            await self.gateway.layer.send(OUTBOUND_CHANNEL, message)
        except Exception as exc:
            self.count("late_replies_failed")
            logger.warning("sms: a late reply to %s could not be queued for the REST API: %r", message["to"], exc)
            return
        self.count("late_replies_sent")

    async def close(self) -> None:
        """Stop keeping connections; let late replies already queued finish."""
        for channel in list(self._kept):
            self._close(channel)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
