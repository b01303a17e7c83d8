"""Turning the bytes of one received e-mail into an ``email.received`` event (specs/email.md).

Parsing is Python's :mod:`email` package (``BytesParser`` with ``policy.default``); this
module only decides what of the parsed message goes into the event and where large parts
go, and bounds what one message may cost. It runs in a parser process (``_smtp_pool``), so
it touches nothing but its arguments and the storage directory.

The bounds (:class:`Limits`) are enforced *while* the email package parses, through its
own extension points: a message class whose ``attach`` counts parts and nesting (the
parser attaches every part it creates to its parent), and a policy whose
``header_source_parse`` sees each header's raw lines. A hostile message is refused after
``max_parts`` parts, not after all 100,000 of them were built.

Every string put in the event is valid UTF-8: mail carries undeclared 8-bit bytes, which
the email package keeps as surrogate escapes, and msgpack (the layer's wire format)
refuses those. A header the email package cannot parse falls back to its raw text rather
than failing the message: a sender's mistake in one header must not cost the recipient
the whole e-mail.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.policy import EmailPolicy
from pathlib import Path
from typing import Any

logger = logging.getLogger("switchboard.protocols.smtp")

EVENT_TYPE = "email.received"


@dataclass(frozen=True)
class Limits:
    """What one message may hold before it is refused (the plugin's ``max_mime_*`` options)."""

    #: MIME parts, every part counted (multipart containers and forwarded messages too).
    max_parts: int = 1000
    #: Levels of MIME nesting below the top-level message.
    max_depth: int = 32
    #: Bytes of one header, folded lines included (Postfix's ``header_size_limit``).
    max_header_size: int = 102_400


class MessageRefused(Exception):
    """The message breaks one of the :class:`Limits`; ``kind`` names which."""

    kind = "refused"

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.limit = limit


class TooManyParts(MessageRefused):
    kind = "too_many_parts"


class TooDeep(MessageRefused):
    kind = "too_deep"


class HeaderTooLong(MessageRefused):
    kind = "header_too_long"


class _LimitedPolicy(EmailPolicy):
    """``policy.default`` that refuses an oversized header as the parser reads it.

    ``header_source_parse`` is called once per header with its raw lines, before any of
    the (costly) structured parsing: a 2 MB ``To:`` of 100,000 addresses takes the email
    package minutes to decode, so it must never get that far.
    """

    max_header_size: int = Limits.max_header_size

    def header_source_parse(self, sourcelines: list[str]) -> tuple[str, str]:
        if sum(len(line) for line in sourcelines) > self.max_header_size:
            raise HeaderTooLong(self.max_header_size)
        return super().header_source_parse(sourcelines)


def _limited_message_class(limits: Limits) -> type[EmailMessage]:
    """A message class for one parse that counts parts and levels as the parser attaches them."""
    parts = 0

    class LimitedMessage(EmailMessage):
        _depth = 0

        def attach(self, payload: Any) -> None:
            nonlocal parts
            parts += 1
            if parts > limits.max_parts:
                raise TooManyParts(limits.max_parts)
            depth = self._depth + 1
            if depth > limits.max_depth:
                raise TooDeep(limits.max_depth)
            payload._depth = depth
            super().attach(payload)

    return LimitedMessage


def parse(content: bytes, limits: Limits) -> EmailMessage:
    """Parse ``content`` with the email package; :class:`MessageRefused` past ``limits``."""
    # Policies take their settings as constructor keywords (the stubs only know the stock ones).
    make_policy: Any = _LimitedPolicy
    limited = make_policy(message_factory=_limited_message_class(limits), max_header_size=limits.max_header_size)
    message = BytesParser(policy=limited).parsebytes(content)
    assert isinstance(message, EmailMessage)
    return message


def clean_text(value: object) -> str:
    """``str(value)`` as valid UTF-8 text.

    Surrogate escapes (undeclared 8-bit bytes) are decoded as UTF-8 where they form it and
    replaced by U+FFFD where they do not, so the text can cross the layer.
    """
    text = str(value)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def is_clean(text: str) -> bool:
    """Whether ``text`` is valid UTF-8 as it stands (no surrogate escapes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Storage:
    """The directory large parts are written to, under names nobody can guess.

    A file name never comes from the e-mail (no path traversal, no overwrite of another
    message's file): it is 128 random bits. Files are created exclusively, readable only by
    the gateway's user, which workers on the same host run as.
    """

    def __init__(self, directory: Path, prefix: str = "") -> None:
        self.directory = directory
        #: Starts every file name: a parser process writes under the prefix of its job, so
        #: the files of a parse that was killed half-way can be found and removed.
        self.prefix = prefix

    def prepare(self) -> None:
        """Create the directory (mode 0700) and refuse one owned by another user.

        Called once at plugin start; a shared temp directory that someone else created (or
        symlinked) first would hand them every stored attachment.
        """
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(self.directory)
        if os.path.islink(self.directory):
            raise RuntimeError(f"storage_path {self.directory} is a symlink; refusing it")
        if hasattr(os, "getuid") and info.st_uid != os.getuid():
            raise RuntimeError(f"storage_path {self.directory} belongs to another user; refusing it")

    def store(self, data: bytes, suffix: str) -> Path:
        """Write ``data`` to a new file and return its absolute path."""
        path = self.directory / f"{self.prefix}{secrets.token_hex(16)}{suffix}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path.resolve()


@dataclass
class Envelope:
    """What the SMTP session knows about a message beyond its bytes."""

    mail_from: str
    rcpt_tos: list[str]
    peer: list[Any]
    helo: str | None = None
    auth_user: str | None = None
    tls: bool = False


@dataclass
class BuiltEvent:
    """The event, plus the files written for it (deleted again if the event is refused)."""

    event: dict[str, Any]
    stored: list[Path] = field(default_factory=list)

    def discard_files(self) -> None:
        """Remove the stored files: the sender was not told 250, so it will send again."""
        for path in self.stored:
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                logger.warning("could not remove stored part %s: %s", path, exc)


def build_event(
    content: bytes, envelope: Envelope, *, inline_limit: int, storage: Storage, limits: Limits | None = None
) -> BuiltEvent:
    """Parse ``content`` and build the ``email.received`` event for it.

    Raises :class:`MessageRefused` for a message past ``limits``, and otherwise only for
    storage errors (``OSError``: disk full...) and for messages the email package itself
    cannot parse at all; all leave no file behind.
    """
    built = BuiltEvent({})
    try:
        message = parse(content, limits or Limits())
        text_part = _body_part(message, "plain")
        html_part = _body_part(message, "html")
        event: dict[str, Any] = {
            "type": EVENT_TYPE,
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "peer": envelope.peer,
            "helo": envelope.helo,
            "auth_user": envelope.auth_user,
            "tls": envelope.tls,
            "size": len(content),
            "subject": _header_text(message, "subject") or "",
            "from": _header_text(message, "from") or "",
            "to": _addresses(message, "to"),
            "cc": _addresses(message, "cc"),
            "date": _header_text(message, "date"),
            "message_id": _header_text(message, "message-id"),
            "headers": _headers(message),
            "text": _part_text(text_part),
            "html": _part_text(html_part),
        }
        _put_bytes(event, built, content, inline_limit, storage, key="raw", stored_key="raw_stored_path", suffix=".eml")
        event["attachments"] = [
            _attachment(part, built, inline_limit, storage)
            for part in _leaf_parts(message)
            if part is not text_part and part is not html_part
        ]
    except BaseException:
        built.discard_files()
        raise
    built.event = event
    return built


# -- headers ------------------------------------------------------------------------


def _unfold(raw: str) -> str:
    return clean_text("".join(raw.splitlines()).strip())


def _header_text(message: Message, name: str) -> str | None:
    """The first ``name`` header, decoded (RFC 2047), or its raw text if it will not parse."""
    try:
        value = message.get(name)
    except Exception:
        raw = _raw_header(message, name)
        return None if raw is None else _unfold(raw)
    return None if value is None else clean_text(value)


def _raw_header(message: Message, name: str) -> str | None:
    for key, raw in message.raw_items():
        if key.lower() == name:
            return str(raw)
    return None


def _headers(message: Message) -> list[list[str]]:
    """Every header in order, as ``[name, decoded value]``."""
    result: list[list[str]] = []
    for name, raw in message.raw_items():
        try:
            value = clean_text(message.policy.header_fetch_parse(name, raw))
        except Exception:
            value = _unfold(str(raw))
        result.append([clean_text(name), value])
    return result


def _addresses(message: Message, name: str) -> list[str]:
    """The addresses of every ``name`` header, each as ``"Name <addr>"`` or ``"addr"``."""
    result: list[str] = []
    try:
        headers = message.get_all(name) or []
    except Exception:
        raw = _raw_header(message, name)
        return [] if raw is None else [_unfold(raw)]
    for header in headers:
        try:
            addresses = getattr(header, "addresses", None)
            if addresses is None:
                result.append(clean_text(header))
            else:
                result.extend(clean_text(address) for address in addresses)
        except Exception:
            result.append(clean_text(header))
    return result


# -- bodies and attachments -------------------------------------------------------------


def _body_part(message: EmailMessage, subtype: str) -> Message | None:
    """The part the email package picks as the ``text/<subtype>`` body, if any."""
    try:
        part = message.get_body(preferencelist=(subtype,))
    except Exception:
        return None
    if part is None or part.get_content_type() != f"text/{subtype}":
        return None
    return part


def _part_text(part: Message | None) -> str | None:
    """A text part's content as str, decoded with its charset (unknown: UTF-8), LF line ends."""
    if part is None:
        return None
    try:
        content = part.get_content()  # type: ignore[attr-defined]
        text = content if isinstance(content, str) else None
    except Exception:
        text = None
    if text is None:
        text = _payload_bytes(part).decode("utf-8", "replace")
    # SMTP carries CRLF; Python text uses "\n" (as reading a file in text mode would).
    return clean_text(text).replace("\r\n", "\n")


def _payload_bytes(part: Message) -> bytes:
    """A leaf part's content with its transfer encoding (base64, quoted-printable) undone."""
    try:
        if part.get_content_maintype() == "message":
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                return bytes(inner[0].as_bytes())
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if isinstance(data, bytes):
        return data
    payload = part.get_payload()
    return payload.encode("utf-8", "surrogateescape") if isinstance(payload, str) else b""


def _leaf_parts(part: Message) -> Iterator[Message]:
    """Every non-multipart part, depth first; a ``message/*`` part counts as one leaf.

    A forwarded message is one attachment (its bytes), not a flood of parts mixed into the
    outer message's list. The parse bounded the depth (``Limits.max_depth``).
    """
    if part.get_content_maintype() == "multipart" and part.is_multipart():
        for sub in part.get_payload():
            if isinstance(sub, Message):
                yield from _leaf_parts(sub)
    else:
        yield part


def _attachment(part: Message, built: BuiltEvent, inline_limit: int, storage: Storage) -> dict[str, Any]:
    try:
        filename = part.get_filename()
    except Exception:
        filename = None
    try:
        disposition = part.get_content_disposition()
    except Exception:
        disposition = None
    content_id = _header_text(part, "content-id")
    attachment: dict[str, Any] = {
        "filename": None if filename is None else clean_text(filename),
        "content_type": clean_text(part.get_content_type()),
        "disposition": None if disposition is None else clean_text(disposition),
        "content_id": content_id,
    }
    data = _payload_bytes(part)
    attachment["size"] = len(data)
    _put_bytes(attachment, built, data, inline_limit, storage, key="data", stored_key="stored_path", suffix=".part")
    return attachment


def _put_bytes(
    target: dict[str, Any],
    built: BuiltEvent,
    data: bytes,
    inline_limit: int,
    storage: Storage,
    *,
    key: str,
    stored_key: str,
    suffix: str,
) -> None:
    """Put ``data`` inline under ``key``, or store it and put its path under ``stored_key``."""
    if len(data) <= inline_limit:
        target[key] = data
        return
    path = storage.store(data, suffix)
    built.stored.append(path)
    target[stored_key] = str(path)
