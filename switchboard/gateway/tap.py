"""Live tails: a worker copies the events of one protocol or channel to a console, for a while.

A console that shows a live tail sends ``switchboard.tap.request`` to the status group
(specs/layer.md, Live tail) every few seconds while someone watches; each worker that
reads that protocol's pool (or that named channel) installs a :class:`Taps` on itself
and copies what it handles — events in, replies out — as short, redacted summaries to the
console's channel, in batches. A request lives ``until`` its deadline (at most
:data:`MAX_TAP_SECONDS` ahead), so a console that goes away without a word stops costing
anything within a minute; with no tap left the worker drops its :class:`Taps` and is back
to one ``None`` test per message.

Why at the worker rather than the gateway: the worker sees every kind of message a tail
can be asked for — events from every gateway, messages on named channels that no gateway
ever touches, and the replies its consumers send.

Payloads are summarized, never shipped whole: strings and bytes cut to
:data:`MAX_TEXT` characters, headers with secret names masked, and the whole summary put
through the log redaction (``gateway/logs.py``), so a tail shows no more than a log line
would. At most :data:`MAX_PER_FLUSH` entries per flush (every :data:`FLUSH_INTERVAL`
seconds) leave a worker; the rest are counted as ``skipped``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from .layers import ChannelLayer, Message
from .logs import MASK, REDACTOR, is_secret_name

logger = logging.getLogger("switchboard.tap")

TAP_REQUEST: Final = "switchboard.tap.request"
TAP_EVENTS: Final = "switchboard.tap.events"

MAX_TAP_SECONDS: Final = 60.0
FLUSH_INTERVAL: Final = 0.5
MAX_PER_FLUSH: Final = 25
MAX_TEXT: Final = 160
MAX_ITEMS: Final = 12


def summarize(value: Any, key: str | None = None, depth: int = 0) -> Any:
    """A small, JSON-ready, redacted copy of a message for a human to glance at."""
    if key is not None and is_secret_name(key):
        return MASK
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, (bytes, bytearray)):
        text = bytes(value[: MAX_TEXT + 1]).decode("utf-8", "backslashreplace")
        return _cut(REDACTOR.redact_text(text), len(value))
    if isinstance(value, str):
        return _cut(REDACTOR.redact_text(value[: MAX_TEXT * 4]), len(value))
    if depth >= 3:
        return "…"
    if isinstance(value, Mapping):
        items = list(value.items())
        out: dict[str, Any] = {}
        for name, item in items[:MAX_ITEMS]:
            name = str(name)
            out[name] = _headers(item) if name == "headers" else summarize(item, name, depth + 1)
        if len(items) > MAX_ITEMS:
            out["…"] = f"{len(items) - MAX_ITEMS} more keys"
        return out
    if isinstance(value, (list, tuple)):
        shown = [summarize(item, None, depth + 1) for item in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            shown.append(f"… {len(value) - MAX_ITEMS} more")
        return shown
    return _cut(REDACTOR.redact_text(repr(value)[: MAX_TEXT * 4]), MAX_TEXT * 4)


def _cut(text: str, length: int) -> str:
    return text if len(text) <= MAX_TEXT and length <= MAX_TEXT else text[:MAX_TEXT] + f"… ({length} chars)"


def _headers(headers: Any) -> Any:
    """ASGI headers ``[[name, value], ...]`` with secret-named ones (cookie, authorization) masked."""
    if not isinstance(headers, (list, tuple)):
        return summarize(headers, None, 2)
    shown: list[Any] = []
    for pair in headers[:MAX_ITEMS]:
        if isinstance(pair, (list, tuple)) and len(pair) == 2:
            name = summarize(pair[0], None, 3)
            secret = is_secret_name(str(name)) or str(name).lower() in ("authorization", "cookie", "set-cookie")
            shown.append([name, MASK if secret else summarize(pair[1], None, 3)])
    if len(headers) > MAX_ITEMS:
        shown.append(f"… {len(headers) - MAX_ITEMS} more")
    return shown


@dataclass
class _Subscription:
    reply_channel: str
    tap: str  # the console's name for this tail: "protocol:websocket" or "channel:thumbnails"
    protocol: str | None
    channel: str | None
    until: float
    entries: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0


class Taps:
    """The tails consoles asked this worker for, and the task that ships them."""

    def __init__(self, layer: ChannelLayer, source: str, *, on_empty: Any = None) -> None:
        self.layer = layer
        self.source = source
        self.on_empty = on_empty
        self._subscriptions: dict[tuple[str, str], _Subscription] = {}
        self._task: asyncio.Task[None] | None = None

    def request(self, message: Message) -> bool:
        """Install or renew the tail ``message`` asks for; False if the request is malformed."""
        reply_channel, tap = message.get("reply_channel"), message.get("tap")
        protocol, channel = message.get("protocol"), message.get("channel")
        until = message.get("until")
        if not isinstance(reply_channel, str) or not isinstance(tap, str) or not isinstance(until, (int, float)):
            return False
        if (protocol is None) == (channel is None) or not isinstance(protocol or channel, str):
            return False
        until = min(float(until), time.time() + MAX_TAP_SECONDS)
        key = (reply_channel, tap)
        subscription = self._subscriptions.get(key)
        if subscription is None:
            self._subscriptions[key] = _Subscription(reply_channel, tap, protocol, channel, until)
        else:
            subscription.until = until
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._ship(), name="tap-ship")
        return True

    def inbound(self, channel: str, message: Message, protocol: str | None) -> None:
        """A message this worker read from ``channel`` (an envelope, or a named-channel message)."""
        if message.get("type") == "switchboard.event":
            event = message.get("event")
            connection = message.get("connection")
            scope = message.get("scope")
            if isinstance(scope, dict) and isinstance(scope.get("type"), str):
                protocol = scope["type"]
            if isinstance(event, dict):
                self._add("in", channel, protocol, connection, event)
            return
        self._add("in", channel, None, None, message)

    def outbound(self, scope: Mapping[str, Any], message: Message) -> None:
        """A reply one of this worker's consumers sent to its client."""
        reply_channel = scope.get("reply_channel")
        protocol = scope.get("type")
        self._add("out", str(reply_channel), protocol if isinstance(protocol, str) else None, reply_channel, message)

    def _add(self, direction: str, channel: str, protocol: str | None, connection: Any, message: Message) -> None:
        entry: dict[str, Any] | None = None
        for subscription in self._subscriptions.values():
            if subscription.protocol is not None:
                if subscription.protocol != protocol:
                    continue
            elif subscription.channel != channel:
                continue
            if len(subscription.entries) >= MAX_PER_FLUSH:
                subscription.skipped += 1
                continue
            if entry is None:
                entry = {
                    "t": time.time(),
                    "dir": direction,
                    "channel": channel,
                    "protocol": protocol,
                    "connection": connection.rpartition("!")[2] if isinstance(connection, str) else None,
                    "type": str(message.get("type")),
                    "message": summarize({k: v for k, v in message.items() if k not in ("type", "trace")}),
                }
            subscription.entries.append(entry)

    async def _ship(self) -> None:
        while self._subscriptions:
            await asyncio.sleep(FLUSH_INTERVAL)
            now = time.time()
            for key, subscription in list(self._subscriptions.items()):
                if subscription.entries or subscription.skipped:
                    batch: Message = {
                        "type": TAP_EVENTS,
                        "tap": subscription.tap,
                        "source": self.source,
                        "events": subscription.entries,
                        "skipped": subscription.skipped,
                    }
                    subscription.entries, subscription.skipped = [], 0
                    try:
                        await self.layer.send(subscription.reply_channel, batch)
                    except Exception as exc:  # a console gone or slow: its tail ends
                        logger.info("live tail to %s stopped: %r", subscription.reply_channel, exc)
                        subscription.until = 0.0
                if subscription.until <= now:
                    del self._subscriptions[key]
        if self.on_empty is not None:
            self.on_empty(self)

    async def close(self) -> None:
        self._subscriptions.clear()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
