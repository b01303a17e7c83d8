"""Consumers for inbound e-mail (``email.received``, specs/email.md).

Override ``email_received(message)``: ``message`` is the event dict the spec describes.
:func:`ReceivedEmail.from_message` wraps it in a small typed object whose attachments read
the same way whether the gateway put their bytes inline or in a stored file::

    class SupportInbox(EmailConsumer):
        async def email_received(self, message):
            email = ReceivedEmail.from_message(message)
            ticket = await create_ticket(email.mail_from, email.subject, email.text or "")
            for attachment in email.attachments:
                await save(ticket, attachment.filename, attachment.read())

An e-mail consumer is stateless between messages: the SMTP server is one connection, its
messages are spread over every worker, and each worker has its own instance. There is
nothing to send back (no outbound ``email.*`` message exists).

Stored files (parts larger than the gateway's ``attachment_inline_limit``) belong to the
consumer that receives their event. With ``delete_stored_files = True`` (the default) they
are deleted after ``email_received`` returns; move a file elsewhere inside the handler to
keep it. When it raises they are deleted too, unless the event came from a durable pool
(the default, docs/delivery.md): then the event is delivered again (or kept as a dead
letter for a replay), and its files with it.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

from switchboard.gateway.layers.durable import delivery_of

from .asgi import Message
from .base import AsyncConsumer, SyncConsumer

logger = logging.getLogger("switchboard.consumers.email")

EMAIL_RECEIVED = "email.received"


@dataclass(frozen=True)
class Attachment:
    """One attachment of a received e-mail: inline ``data`` or a ``stored_path``."""

    filename: str | None
    content_type: str
    size: int
    disposition: str | None = None
    content_id: str | None = None
    data: bytes | None = None
    stored_path: str | None = None

    @classmethod
    def from_dict(cls, part: dict[str, Any]) -> Attachment:
        return cls(
            filename=part.get("filename"),
            content_type=part.get("content_type", "application/octet-stream"),
            size=int(part.get("size", 0)),
            disposition=part.get("disposition"),
            content_id=part.get("content_id"),
            data=part.get("data"),
            stored_path=part.get("stored_path"),
        )

    def read(self) -> bytes:
        """The content, from the event or from the stored file (blocking file I/O)."""
        if self.data is not None:
            return self.data
        if self.stored_path is None:
            return b""
        with open(self.stored_path, "rb") as handle:
            return handle.read()


@dataclass(frozen=True)
class ReceivedEmail:
    """An ``email.received`` event as an object (the spec's keys as attributes)."""

    mail_from: str
    rcpt_tos: list[str]
    subject: str
    from_: str
    to: list[str]
    cc: list[str]
    date: str | None
    message_id: str | None
    text: str | None
    html: str | None
    headers: list[tuple[str, str]]
    attachments: list[Attachment]
    size: int
    peer: tuple[str, int] | None = None
    helo: str | None = None
    auth_user: str | None = None
    tls: bool = False
    raw_data: bytes | None = None
    raw_stored_path: str | None = None
    message: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_message(cls, message: Message) -> ReceivedEmail:
        peer = message.get("peer")
        return cls(
            mail_from=message.get("mail_from", ""),
            rcpt_tos=list(message.get("rcpt_tos", [])),
            subject=message.get("subject", ""),
            from_=message.get("from", ""),
            to=list(message.get("to", [])),
            cc=list(message.get("cc", [])),
            date=message.get("date"),
            message_id=message.get("message_id"),
            text=message.get("text"),
            html=message.get("html"),
            headers=[(str(name), str(value)) for name, value in message.get("headers", [])],
            attachments=[Attachment.from_dict(part) for part in message.get("attachments", [])],
            size=int(message.get("size", 0)),
            peer=(str(peer[0]), int(peer[1])) if peer else None,
            helo=message.get("helo"),
            auth_user=message.get("auth_user"),
            tls=bool(message.get("tls", False)),
            raw_data=message.get("raw"),
            raw_stored_path=message.get("raw_stored_path"),
            message=message,
        )

    def header(self, name: str, default: str | None = None) -> str | None:
        """The first header called ``name`` (any case), else ``default``."""
        wanted = name.lower()
        for key, value in self.headers:
            if key.lower() == wanted:
                return value
        return default

    def raw(self) -> bytes:
        """The whole message as received (blocking file I/O when it was stored)."""
        if self.raw_data is not None:
            return self.raw_data
        if self.raw_stored_path is None:
            return b""
        with open(self.raw_stored_path, "rb") as handle:
            return handle.read()


def stored_paths(message: Message) -> list[str]:
    """The files the gateway stored for one ``email.received`` event."""
    paths = [message["raw_stored_path"]] if isinstance(message.get("raw_stored_path"), str) else []
    for part in message.get("attachments") or []:
        if isinstance(part, dict) and isinstance(part.get("stored_path"), str):
            paths.append(part["stored_path"])
    return paths


def remove_stored_files(message: Message) -> None:
    """Delete the event's stored files; ones already moved or deleted are skipped."""
    for path in stored_paths(message):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            logger.warning("could not delete stored e-mail part %s: %s", path, exc)


async def _dispatch_and_clean_up(consumer: AsyncConsumer, message: Message, dispatch: Any) -> None:
    """Run the handler; delete the event's stored files unless a redelivery still needs them."""
    try:
        await dispatch(message)
    except BaseException:
        if delivery_of(message) is None:  # at most once: nobody will see it again
            await _cleanup(consumer, message)
        raise
    await _cleanup(consumer, message)


async def _cleanup(consumer: AsyncConsumer, message: Message) -> None:
    if getattr(consumer, "delete_stored_files", False) and message.get("type") == EMAIL_RECEIVED:
        if stored_paths(message):
            await asyncio.to_thread(remove_stored_files, message)


class EmailConsumer(AsyncConsumer):
    """Asynchronous e-mail consumer: override ``async def email_received(self, message)``."""

    #: Delete the event's stored files once ``email_received`` has returned (or raised,
    #: unless the event is durable and so comes again).
    delete_stored_files: ClassVar[bool] = True

    async def email_received(self, message: Message) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define email_received(message)")

    async def dispatch(self, message: Message) -> None:
        await _dispatch_and_clean_up(self, message, super().dispatch)


class SyncEmailConsumer(SyncConsumer):
    """Synchronous e-mail consumer: override ``def email_received(self, message)``.

    The handler runs in Django's sync thread, so it may use the ORM directly.
    """

    delete_stored_files: ClassVar[bool] = True

    def email_received(self, message: Message) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define email_received(message)")

    async def dispatch(self, message: Message) -> None:
        await _dispatch_and_clean_up(self, message, super().dispatch)
