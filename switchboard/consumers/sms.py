"""Consumers for SMS through Twilio (``sms.received``, ``sms.status``; specs/sms.md).

Override ``message_received(sms)`` and answer with ``reply()`` (inline, while Twilio's
webhook waits: no API call) or ``send_sms()`` (deferred, any time, through Twilio's REST
API from a gateway)::

    class Helpdesk(SmsConsumer):
        async def message_received(self, sms):
            if sms.body.strip().lower() == "hours":
                await self.reply("We're open 9-17, Monday to Friday.")
            else:
                ticket = await open_ticket(sms.from_, sms.body)        # may take a while
                await self.send_sms(sms.from_, f"Ticket {ticket} opened.", from_=sms.to)

Each webhook is its own short connection with exactly one event, spread over every
worker, so an SMS consumer keeps no state in instance attributes; the instance ends after
its event. When ``message_received`` returns (or raises) without replying, the consumer
answers "no reply" at once, so Twilio is not kept waiting until the gateway's deadline.

``send_sms`` / :func:`send_sms` put an ``sms.send`` on the named channel
``switchboard.sms.outbound``; any gateway with the ``sms`` plugin and an ``account_sid``
sends it. They work from views and background tasks too (:func:`send_sms_sync` in sync
code). This module does not import twilio: workers don't need it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import async_to_sync

from switchboard.gateway.layers import ChannelFull, ChannelLayer, get_channel_layer
from switchboard.gateway.layers.durable import Delivery, delivery_of

from .asgi import Message
from .base import AsyncConsumer, SyncConsumer
from .exceptions import StopConsumer

logger = logging.getLogger("switchboard.consumers.sms")

#: The named channel deferred sends go to (read by gateways running the sms plugin).
OUTBOUND_CHANNEL = "switchboard.sms.outbound"


@dataclass(frozen=True)
class Media:
    """One medium of an MMS: where Twilio stores it and its MIME type."""

    url: str
    content_type: str


@dataclass(frozen=True)
class IncomingSms:
    """An ``sms.received`` event as an object (``from`` is ``from_``, as in twilio-python)."""

    from_: str
    to: str
    body: str
    message_sid: str
    account_sid: str = ""
    media: list[Media] = field(default_factory=list)
    params: dict[str, str] = field(default_factory=dict)
    #: Event id and delivery count on the durable pool (docs/delivery.md), else None.
    delivery: Delivery | None = None

    @classmethod
    def from_message(cls, message: Message) -> IncomingSms:
        return cls(
            from_=message["from"],
            to=message["to"],
            body=message.get("body", ""),
            message_sid=message["message_sid"],
            account_sid=message.get("account_sid", ""),
            media=[Media(item.get("url", ""), item.get("content_type", "")) for item in message.get("media", [])],
            params=dict(message.get("params", {})),
            delivery=delivery_of(message),
        )


@dataclass(frozen=True)
class SmsStatus:
    """An ``sms.status`` event: a status change of a message sent with a status callback."""

    message_sid: str
    status: str
    error_code: int | None = None
    to: str | None = None
    from_: str | None = None
    params: dict[str, str] = field(default_factory=dict)
    delivery: Delivery | None = None

    @classmethod
    def from_message(cls, message: Message) -> SmsStatus:
        return cls(
            message_sid=message["message_sid"],
            status=message["status"],
            error_code=message.get("error_code"),
            to=message.get("to"),
            from_=message.get("from"),
            params=dict(message.get("params", {})),
            delivery=delivery_of(message),
        )


def _check_media(media: Sequence[str] | None) -> list[str] | None:
    if media is None:
        return None
    if isinstance(media, str) or not all(isinstance(url, str) for url in media):
        raise TypeError(f"media must be a list of URL strings, got {media!r}")
    return list(media)


def reply_message(body: str | None = None, media: Sequence[str] | None = None) -> Message:
    """Build an ``sms.reply``; TypeError for what can never be valid (the gateway checks the rest)."""
    if body is not None and not isinstance(body, str):
        raise TypeError(f"body must be a str, got {type(body).__name__}")
    message: Message = {"type": "sms.reply", "body": body}
    checked = _check_media(media)
    if checked:
        message["media"] = checked
    return message


def send_message(
    to: str,
    body: str | None = None,
    *,
    from_: str | None = None,
    messaging_service_sid: str | None = None,
    media: Sequence[str] | None = None,
    status_callback: str | None = None,
) -> Message:
    """Build an ``sms.send``; TypeError for plain type mistakes (the gateway checks the rest)."""
    if not isinstance(to, str) or not to:
        raise TypeError(f"to must be a non-empty str, got {to!r}")
    if body is not None and not isinstance(body, str):
        raise TypeError(f"body must be a str, got {type(body).__name__}")
    message: Message = {"type": "sms.send", "to": to}
    optional: dict[str, Any] = {
        "body": body,
        "from": from_,
        "messaging_service_sid": messaging_service_sid,
        "media": _check_media(media),
        "status_callback": status_callback,
    }
    message.update({key: value for key, value in optional.items() if value is not None})
    return message


async def send_sms(
    to: str,
    body: str | None = None,
    *,
    from_: str | None = None,
    messaging_service_sid: str | None = None,
    media: Sequence[str] | None = None,
    status_callback: str | None = None,
    channel_layer: ChannelLayer | None = None,
) -> None:
    """Queue an SMS for a gateway to send through Twilio's REST API.

    Raises ``ChannelFull`` when ``switchboard.sms.outbound`` is at capacity (no gateway
    with the sms plugin is keeping up, or none is running): a deferred message is
    something the caller cares about, so it is not dropped silently.
    """
    message = send_message(
        to, body, from_=from_, messaging_service_sid=messaging_service_sid, media=media, status_callback=status_callback
    )
    layer = channel_layer or get_channel_layer()
    await layer.send(OUTBOUND_CHANNEL, message)


def send_sms_sync(to: str, body: str | None = None, **options: Any) -> None:
    """:func:`send_sms` for sync code (views, management commands, sync consumers)."""
    async_to_sync(send_sms)(to, body, **options)


class SmsConsumer(AsyncConsumer):
    """Async SMS consumer: override :meth:`message_received` (and :meth:`status_received`)."""

    replied: bool = False

    async def sms_received(self, message: Message) -> None:
        """Dispatch target of ``sms.received``: handle it, make sure Twilio is answered, end."""
        self.replied = False
        try:
            await self.message_received(IncomingSms.from_message(message))
        finally:
            if not self.replied:
                await self._answer_nothing()
        raise StopConsumer()

    async def sms_status(self, message: Message) -> None:
        """Dispatch target of ``sms.status``."""
        await self.status_received(SmsStatus.from_message(message))
        raise StopConsumer()

    async def message_received(self, sms: IncomingSms) -> None:
        """Handle one incoming message. Override this."""
        raise NotImplementedError(f"{type(self).__name__} must define message_received(sms)")

    async def status_received(self, status: SmsStatus) -> None:
        """Handle a status change of a sent message (only with a status callback). Optional."""
        logger.debug("sms %s is %s", status.message_sid, status.status)

    async def reply(self, body: str | None = None, media: Sequence[str] | None = None) -> bool:
        """Answer the incoming message inline (TwiML); no arguments means "no reply".

        Only the first reply of a webhook counts, and only within the gateway's
        ``reply_deadline``. Returns False (and logs) when the gateway's reply channel is
        full; the gateway then answers Twilio with no reply at its deadline.
        """
        if self.replied:
            raise RuntimeError("this message was already answered (one reply per incoming SMS)")
        message = reply_message(body, media)
        self.replied = True
        try:
            await self.send(message)
        except ChannelFull:
            logger.warning("sms reply dropped: the gateway's reply channel is full")
            return False
        return True

    async def _answer_nothing(self) -> None:
        """Tell the gateway there is no reply, so Twilio is answered now, not at the deadline."""
        try:
            await self.reply()
        except Exception:  # never hide the handler's own exception behind this one
            logger.exception("could not answer the webhook with no reply")

    async def send_sms(self, to: str, body: str | None = None, **options: Any) -> None:
        """Queue a deferred SMS (see :func:`send_sms`); works at any time, even after replying."""
        await send_sms(to, body, channel_layer=getattr(self, "channel_layer", None), **options)


class SyncSmsConsumer(SyncConsumer):
    """Synchronous SMS consumer (runs in a thread; may use the ORM)."""

    replied: bool = False

    def sms_received(self, message: Message) -> None:
        """Dispatch target of ``sms.received``: handle it, make sure Twilio is answered, end."""
        self.replied = False
        try:
            self.message_received(IncomingSms.from_message(message))
        finally:
            if not self.replied:
                self._answer_nothing()
        raise StopConsumer()

    def sms_status(self, message: Message) -> None:
        """Dispatch target of ``sms.status``."""
        self.status_received(SmsStatus.from_message(message))
        raise StopConsumer()

    def message_received(self, sms: IncomingSms) -> None:
        """Handle one incoming message. Override this."""
        raise NotImplementedError(f"{type(self).__name__} must define message_received(sms)")

    def status_received(self, status: SmsStatus) -> None:
        """Handle a status change of a sent message (only with a status callback). Optional."""
        logger.debug("sms %s is %s", status.message_sid, status.status)

    def reply(self, body: str | None = None, media: Sequence[str] | None = None) -> bool:
        """Answer the incoming message inline; see :meth:`SmsConsumer.reply`."""
        if self.replied:
            raise RuntimeError("this message was already answered (one reply per incoming SMS)")
        message = reply_message(body, media)
        self.replied = True
        try:
            self.send(message)
        except ChannelFull:
            logger.warning("sms reply dropped: the gateway's reply channel is full")
            return False
        return True

    def _answer_nothing(self) -> None:
        try:
            self.reply()
        except Exception:  # never hide the handler's own exception behind this one
            logger.exception("could not answer the webhook with no reply")

    def send_sms(self, to: str, body: str | None = None, **options: Any) -> None:
        """Queue a deferred SMS (see :func:`send_sms`)."""
        send_sms_sync(to, body, channel_layer=getattr(self, "channel_layer", None), **options)


__all__ = [
    "OUTBOUND_CHANNEL",
    "IncomingSms",
    "Media",
    "SmsConsumer",
    "SmsStatus",
    "SyncSmsConsumer",
    "reply_message",
    "send_message",
    "send_sms",
    "send_sms_sync",
]
