"""The SMS plugin: Twilio webhooks in, TwiML and Twilio REST sends out.

Twilio reaches the gateway over HTTP, so this plugin opens no socket of its own: it mounts
two in-gateway ASGI endpoints on the HTTP plugin's port (``Gateway.mount``), one for
incoming messages (default ``/sms/inbound``) and one for status callbacks (default
``/sms/status``). twilio-python does everything Twilio-specific: the signature check
(``RequestValidator``), the TwiML answer (``MessagingResponse``) and the REST call for
deferred sends (``Client`` on its aiohttp-based ``AsyncTwilioHttpClient``, see
``_sms_outbound.py``). Form decoding is ``urllib.parse``. This module is policy:

* Every request must carry a valid ``X-Twilio-Signature`` for the URL Twilio was given
  (``public_base_url`` + path + query: behind a proxy the gateway's own URL differs);
  anything else gets 403 and nothing reaches the layer.
* Each webhook is one short, non-sticky gateway connection (like an HTTP request) with
  scope ``{"type": "sms", ...}`` and exactly one event (``sms.received`` or
  ``sms.status``); it is closed as soon as the webhook is answered.
* An incoming message waits up to ``reply_deadline`` seconds for an ``sms.reply`` on its
  reply channel and answers Twilio with that reply as TwiML; after the deadline it answers
  an empty ``<Response/>`` (Twilio then sends nothing), well within Twilio's 15 s timeout.
* Twilio may deliver a webhook twice; a ``MessageSid`` seen within ``dedupe_ttl`` seconds
  is answered (200, empty TwiML) but not delivered again. The memory of seen SIDs is per
  gateway process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from switchboard.gateway.layers import ChannelFull, Message
from switchboard.gateway.plugins import ProtocolPlugin
from switchboard.gateway.specs import WORKER_TO_GATEWAY, SpecError, validate_message

from ._sms_outbound import (
    OUTBOUND_CHANNEL,
    SEND_TYPE,
    OutboundSender,
    SendSettings,
    check_body,
    check_media,
)

if TYPE_CHECKING:
    from switchboard.gateway.server import Connection, Gateway

    from ._http_common import Receive, Send

logger = logging.getLogger("switchboard.protocols.sms")

#: The version of specs/sms.md this module implements (``scope["asgi"]["spec_version"]``).
SPEC_VERSION = "1.0"

#: Twilio gives up on a webhook after 15 seconds; the inline reply deadline must be shorter.
TWILIO_WEBHOOK_TIMEOUT = 15.0

RECEIVED = "sms.received"
STATUS = "sms.status"
REPLY = "sms.reply"

DEFAULT_API_BASE_URL = "https://api.twilio.com"

# Most form fields accepted in one webhook (Twilio sends a few dozen; MMS adds two per
# medium): parse_qsl stops early instead of building a huge list from a hostile body.
_MAX_FORM_FIELDS = 500

_EMPTY_TWIML = str(MessagingResponse()).encode()
_TWIML_HEADERS = [(b"content-type", b"application/xml; charset=utf-8")]
_TEXT_HEADERS = [(b"content-type", b"text/plain; charset=utf-8")]

__all__ = ["OUTBOUND_CHANNEL", "SmsOptions", "SmsPlugin", "build_twiml"]


def _check_base_url(name: str, value: str) -> str:
    """``value`` without a trailing slash; ValueError unless an absolute http(s) URL."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"{name} must be an absolute http(s) URL without query or fragment, got {value!r}")
    return value.rstrip("/")


def _check_path(name: str, value: str) -> str:
    if not value.startswith("/") or value.endswith("/") or "?" in value or "#" in value:
        raise ValueError(f"{name} must start with '/', not end with '/' and have no query, got {value!r}")
    return value


@dataclass
class SmsOptions:
    """Options of ``SWITCHBOARD["PROTOCOLS"]["sms"]``; checked before any socket opens.

    ``auth_token`` and ``api_key_secret`` are kept out of ``repr`` so no log or error
    message ever shows them.
    """

    #: The account's Auth Token: Twilio signs every webhook with it (and, without an API
    #: key, it authenticates REST sends).
    auth_token: str = field(repr=False)
    #: The public URL Twilio is configured with, up to the gateway's root
    #: (``https://sms.example.com``, or ``https://example.com/gw`` behind a proxy that
    #: strips ``/gw``). Signatures are checked against it + path + query.
    public_base_url: str
    #: Path of the incoming-message webhook (sub-paths are served too).
    inbound_path: str = "/sms/inbound"
    #: Path of the status-callback webhook.
    status_path: str = "/sms/status"
    #: The account SID (``AC...``). Needed for deferred sends (``sms.send``): without it
    #: this gateway does not read ``switchboard.sms.outbound`` at all.
    account_sid: str | None = None
    #: Authenticate REST sends with an API key (``SK...``) instead of the Auth Token.
    api_key_sid: str | None = None
    api_key_secret: str | None = field(default=None, repr=False)
    #: Seconds an incoming message waits for an inline ``sms.reply``; then Twilio gets an
    #: empty ``<Response/>``. Must stay under Twilio's 15 s webhook timeout.
    reply_deadline: float = 5.0
    #: Base URL of the Twilio REST API (tests point it at a local server).
    api_base_url: str = DEFAULT_API_BASE_URL
    #: Seconds one REST call may take before it counts as failed.
    api_timeout: float = 10.0
    #: REST calls in flight at once per gateway.
    send_concurrency: int = 8
    #: Sender used when an ``sms.send`` names neither ``from`` nor ``messaging_service_sid``.
    default_from: str | None = None
    #: Ask Twilio for status callbacks (to ``public_base_url + status_path``) on every
    #: ``sms.send`` that does not name its own ``status_callback``.
    default_status_callback: bool = False
    #: Seconds a ``MessageSid`` is remembered to drop Twilio's duplicate deliveries (0: off).
    dedupe_ttl: float = 600.0
    #: Most remembered SIDs (oldest forgotten first), bounding the memory de-dup uses.
    dedupe_max_entries: int = 100_000
    #: Largest webhook body accepted (bytes); larger ones get 413.
    max_body_size: int = 64 * 1024

    def __post_init__(self) -> None:
        if not self.auth_token:
            raise ValueError("auth_token is required (the account's Auth Token: Twilio signs webhooks with it)")
        self.public_base_url = _check_base_url("public_base_url", self.public_base_url)
        self.api_base_url = _check_base_url("api_base_url", self.api_base_url)
        self.inbound_path = _check_path("inbound_path", self.inbound_path)
        self.status_path = _check_path("status_path", self.status_path)
        if self.inbound_path == self.status_path:
            raise ValueError("inbound_path and status_path must differ")
        if not 0 < self.reply_deadline < TWILIO_WEBHOOK_TIMEOUT:
            raise ValueError(f"reply_deadline must be between 0 and {TWILIO_WEBHOOK_TIMEOUT:g} seconds (Twilio's timeout), "
                             f"got {self.reply_deadline}")
        if (self.api_key_sid is None) != (self.api_key_secret is None):
            raise ValueError("api_key_sid and api_key_secret go together")
        if self.api_key_sid is not None and self.account_sid is None:
            raise ValueError("api_key_sid needs account_sid (the account the key sends for)")
        positive = {"api_timeout": self.api_timeout, "send_concurrency": self.send_concurrency,
                    "max_body_size": self.max_body_size, "dedupe_max_entries": self.dedupe_max_entries}
        for name, value in positive.items():
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.dedupe_ttl < 0:
            raise ValueError(f"dedupe_ttl must be >= 0, got {self.dedupe_ttl}")

    def send_settings(self) -> SendSettings | None:
        """What the REST sender needs, or None when this gateway cannot send."""
        if self.account_sid is None:
            return None
        username, password = self.account_sid, self.auth_token
        if self.api_key_sid is not None and self.api_key_secret is not None:
            username, password = self.api_key_sid, self.api_key_secret
        return SendSettings(
            account_sid=self.account_sid,
            username=username,
            password=password,
            api_base_url=self.api_base_url,
            api_timeout=self.api_timeout,
            concurrency=self.send_concurrency,
            default_from=self.default_from,
            default_status_callback=self.public_base_url + self.status_path if self.default_status_callback else None,
        )


class _Form(dict[str, str]):
    """Decoded form fields; plain lookups see the last value of a repeated key.

    ``getall`` is what ``RequestValidator`` calls first, so a repeated key is signed over
    every one of its values, exactly as Twilio computed it.
    """

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        pairs = list(pairs)
        super().__init__(pairs)
        self._all: dict[str, list[str]] = {}
        for key, value in pairs:
            self._all.setdefault(key, []).append(value)

    def getall(self, key: str) -> list[str]:
        return self._all[key]


class _Reject(Exception):
    """A webhook answered with an error status; ``counter`` says why (for stats)."""

    def __init__(self, status: int, counter: str, text: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(text)
        self.status = status
        self.counter = counter
        self.text = text
        self.headers = headers or []


class _Gone(Exception):
    """The client went away before the request body was read."""


class _SeenSids:
    """MessageSids seen recently (insertion-ordered, so expiry pops from the front)."""

    def __init__(self, ttl: float, max_entries: int) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()

    def add(self, key: str) -> bool:
        """Remember ``key``; False when it was already seen within the TTL."""
        if self.ttl <= 0:
            return True
        now = time.monotonic()
        while self._seen:
            oldest, expires = next(iter(self._seen.items()))
            if expires > now and len(self._seen) < self.max_entries:
                break
            del self._seen[oldest]
        if key in self._seen:
            return False
        self._seen[key] = now + self.ttl
        return True

    def forget(self, key: str) -> None:
        """Forget ``key`` (its delivery failed, so Twilio's retry must not be a duplicate)."""
        self._seen.pop(key, None)


def build_twiml(message: Message) -> bytes:
    """The TwiML answer for an ``sms.reply``: ``<Response/>`` when it has no content."""
    response = MessagingResponse()
    body, media = message.get("body"), message.get("media") or []
    if body or media:
        reply = response.message(body or None)
        for url in media:
            reply.media(url)
    return str(response).encode()


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    all_headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _media(form: _Form, count: int) -> list[dict[str, str]]:
    media = []
    for index in range(count):
        url = form.get(f"MediaUrl{index}")
        if url:
            media.append({"url": url, "content_type": form.get(f"MediaContentType{index}", "")})
    return media


def received_event(form: _Form) -> Message:
    """The ``sms.received`` event of an incoming-message webhook (specs/sms.md)."""
    sid = form.get("MessageSid") or form.get("SmsMessageSid")
    if not sid or "From" not in form or "To" not in form:
        raise _Reject(400, "rejected_fields", "Bad Request: MessageSid, From and To are required\n")
    try:
        num_media = int(form.get("NumMedia") or 0)
    except ValueError:
        raise _Reject(400, "rejected_fields", "Bad Request: NumMedia is not a number\n") from None
    num_media = max(0, min(num_media, 100))
    return {
        "type": RECEIVED,
        "from": form["From"],
        "to": form["To"],
        "body": form.get("Body", ""),
        "message_sid": sid,
        "account_sid": form.get("AccountSid", ""),
        "num_media": num_media,
        "media": _media(form, num_media),
        "params": dict(form),
    }


def status_event(form: _Form) -> Message:
    """The ``sms.status`` event of a status-callback webhook (specs/sms.md)."""
    sid = form.get("MessageSid") or form.get("SmsSid")
    status = form.get("MessageStatus") or form.get("SmsStatus")
    if not sid or not status:
        raise _Reject(400, "rejected_fields", "Bad Request: MessageSid and MessageStatus are required\n")
    error_code: int | None = None
    if form.get("ErrorCode", "").strip().isdigit():
        error_code = int(form["ErrorCode"])
    event: Message = {"type": STATUS, "message_sid": sid, "status": status, "error_code": error_code, "params": dict(form)}
    for key, name in (("to", "To"), ("from", "From")):
        if name in form:
            event[key] = form[name]
    return event


class _Webhook:
    """The ASGI app mounted for one webhook path: check, translate, wait, answer."""

    def __init__(self, plugin: SmsPlugin, kind: str) -> None:
        self.plugin = plugin
        self.kind = kind  # RECEIVED or STATUS

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        plugin = self.plugin
        if scope.get("type") != "http":
            await _refuse_non_http(scope, receive, send)
            return
        plugin.count("webhooks")
        plugin.active += 1
        plugin.idle.clear()
        try:
            await self._serve(scope, receive, send)
        except _Reject as reject:
            plugin.count(reject.counter)
            await _respond(send, reject.status, reject.text.encode(), _TEXT_HEADERS + reject.headers)
        except _Gone:
            plugin.count("client_disconnects")
        finally:
            plugin.active -= 1
            if not plugin.active:
                plugin.idle.set()

    async def _serve(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        plugin = self.plugin
        if scope.get("method") != "POST":
            raise _Reject(405, "rejected_method", "Method Not Allowed: webhooks are POSTed\n", [(b"allow", b"POST")])
        if plugin.stopping:
            raise _Reject(503, "rejected_stopping", "Service Unavailable: gateway stopping\n", [(b"retry-after", b"1")])
        body = await _read_body(scope, receive, plugin.options.max_body_size)
        form = _parse_form(scope, body)
        url = plugin.public_url(scope)
        signature = _header(scope, b"x-twilio-signature")
        if not signature or not plugin.validator.validate(url, form, signature):
            plugin.warn_forged(scope.get("path"), "wrong" if signature else "missing")
            raise _Reject(403, "rejected_signature", "Forbidden: bad or missing X-Twilio-Signature\n")
        event = received_event(form) if self.kind == RECEIVED else status_event(form)
        dedupe_key = f"{event['message_sid']}:{event.get('status', '')}"
        if not plugin.seen.add(dedupe_key):
            plugin.count("duplicates")
            await self._answer_empty(send)
            return
        await self._deliver(scope, url, event, dedupe_key, send)

    async def _answer_empty(self, send: Send) -> None:
        if self.kind == RECEIVED:
            await _respond(send, 200, _EMPTY_TWIML, _TWIML_HEADERS)
        else:
            await _respond(send, 204, b"", [])

    async def _deliver(self, http_scope: dict[str, Any], url: str, event: Message, dedupe_key: str, send: Send) -> None:
        """Open the webhook's connection, send its event, answer Twilio, close it."""
        plugin = self.plugin
        scope = plugin.sms_scope(http_scope, url)
        replies: asyncio.Queue[Message] = asyncio.Queue()
        gateway = plugin.gateway_or_fail()
        connection = gateway.open_connection(scope, lambda message: plugin.on_reply(message, replies))
        try:
            try:
                await plugin.send_event(connection, event)
            except _Reject:
                plugin.seen.forget(dedupe_key)  # not delivered: Twilio's retry is no duplicate
                raise
            plugin.count("received" if self.kind == RECEIVED else "statuses")
            if self.kind == STATUS:
                await self._answer_empty(send)
                return
            twiml = await plugin.wait_reply(replies)
        finally:
            gateway.close_connection(connection)
        await _respond(send, 200, twiml, _TWIML_HEADERS)


async def _refuse_non_http(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """A WebSocket to a webhook path: refuse the handshake (the client sees 403)."""
    if scope.get("type") == "websocket" and (await receive()).get("type") == "websocket.connect":
        await send({"type": "websocket.close", "code": 1008})


async def _read_body(scope: dict[str, Any], receive: Receive, limit: int) -> bytes:
    """The whole request body; 413 past ``limit`` (checked before reading when declared)."""
    declared = _header(scope, b"content-length")
    too_large = _Reject(413, "rejected_too_large", "Request body too large\n", [(b"connection", b"close")])
    if declared is not None and declared.strip().isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Gone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _parse_form(scope: dict[str, Any], body: bytes) -> _Form:
    """The form fields of a webhook; 400 unless a well-formed UTF-8 urlencoded form."""
    content_type = (_header(scope, b"content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise _Reject(400, "rejected_form", "Bad Request: expected an application/x-www-form-urlencoded body\n")
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text), max_num_fields=_MAX_FORM_FIELDS,
                          errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise _Reject(400, "rejected_form", "Bad Request: malformed form body\n") from None
    return _Form(pairs)


def check_reply(message: Message) -> str | None:
    """Why ``message`` is not a valid ``sms.reply``, or None."""
    try:
        validate_message(message, direction=WORKER_TO_GATEWAY)
    except SpecError as exc:
        return str(exc)
    if message.get("type") != REPLY:
        return f"expected {REPLY} on a webhook's reply channel, got {message.get('type')!r}"
    return check_body(message.get("body")) or check_media(message.get("media"))


class SmsPlugin(ProtocolPlugin[SmsOptions]):
    """Twilio SMS webhooks in (through the HTTP plugin's port), TwiML and REST sends out."""

    name = "sms"
    Options = SmsOptions
    scope_types = ("sms",)

    def __init__(self, options: SmsOptions) -> None:
        super().__init__(options)
        self.validator = RequestValidator(options.auth_token)
        self.seen = _SeenSids(options.dedupe_ttl, options.dedupe_max_entries)
        self.gateway: Gateway | None = None
        self.sender: OutboundSender | None = None
        self.stopping = False
        #: Webhooks being served right now, and an event set whenever there are none.
        self.active = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self._last_forged_log = float("-inf")
        self._forged_unlogged = 0

    def endpoints(self, gateway: Gateway) -> list[str]:
        """The webhook URLs to give Twilio (``public_base_url``: what Twilio signs and calls)."""
        base = self.options.public_base_url
        return [
            f"{base}{self.options.inbound_path}  (Twilio \"A message comes in\" webhook, POST)",
            f"{base}{self.options.status_path}  (status callbacks)",
        ]

    # -- lifecycle --------------------------------------------------------------------

    async def start(self, gateway: Gateway) -> None:
        """Mount both webhooks and, with credentials, start reading deferred sends."""
        if self.gateway is not None:
            raise RuntimeError("the sms plugin is already started")
        options = self.options
        self.gateway = gateway
        self.stopping = False
        for path in (options.inbound_path, options.status_path):
            # A stopped sms plugin leaves its endpoints mounted (answering 503, see stop());
            # a new start on the same gateway takes them over.
            mounted = gateway.mounts.get(path)
            if mounted is not None and mounted[1] == self.name:
                gateway.unmount(path)
        mounted_now: list[str] = []
        try:
            for path, kind in ((options.inbound_path, RECEIVED), (options.status_path, STATUS)):
                gateway.mount(path, _Webhook(self, kind), owner=self.name)
                mounted_now.append(path)
        except ValueError:
            for path in mounted_now:
                gateway.unmount(path)
            self.gateway = None
            raise
        settings = options.send_settings()
        if settings is None:
            logger.info("sms: no account_sid, so this gateway does not send deferred messages (%s)", OUTBOUND_CHANNEL)
        else:
            self.sender = OutboundSender(gateway.layer, settings, self.count)
            self.sender.start()
        logger.info("sms webhooks at %s (incoming) and %s (status), signed for %s",
                    options.inbound_path, options.status_path, options.public_base_url)

    async def stop(self, timeout: float) -> None:
        """Answer new webhooks 503, let open ones finish, finish deferred sends.

        The endpoints stay mounted, answering 503: the HTTP plugin usually stops after this
        one and keeps serving meanwhile, and an unmounted webhook path would reach the
        workers as an ordinary HTTP request.
        """
        if self.gateway is None:
            return
        self.stopping = True
        deadline = asyncio.get_running_loop().time() + timeout
        if self.active:
            try:
                async with asyncio.timeout_at(deadline):
                    await self.idle.wait()
            except TimeoutError:
                logger.warning("sms: %d webhook(s) still open after %.1fs", self.active, timeout)
        if self.sender is not None:
            await self.sender.stop(max(0.0, deadline - asyncio.get_running_loop().time()))
            self.sender = None
        self.gateway = None
        logger.info("sms stats: %s", json.dumps(self.stats(), sort_keys=True))

    # -- helpers used by the webhook apps ------------------------------------------------

    def warn_forged(self, path: Any, what: str) -> None:
        """Log a refused signature, at most once a second: forged requests must not flood logs."""
        now = time.monotonic()
        if now - self._last_forged_log < 1.0:
            self._forged_unlogged += 1
            return
        more = f" ({self._forged_unlogged} more since the last report)" if self._forged_unlogged else ""
        self._last_forged_log, self._forged_unlogged = now, 0
        logger.warning("sms webhook %s: %s X-Twilio-Signature, answered 403%s (is public_base_url %s the URL "
                       "Twilio is configured with?)", path, what, more, self.options.public_base_url)

    def gateway_or_fail(self) -> Gateway:
        if self.gateway is None:
            raise _Reject(503, "rejected_stopping", "Service Unavailable: gateway stopping\n")
        return self.gateway

    def public_url(self, scope: dict[str, Any]) -> str:
        """The URL Twilio requested, as it signed it: public base + raw path + query.

        ``raw_path`` is the request target exactly as sent (percent-encoding intact), which
        is what Twilio signs; a proxy's prefix is part of ``public_base_url``.
        """
        raw_path = scope.get("raw_path") or scope["path"].encode()
        url = self.options.public_base_url + bytes(raw_path).decode("latin-1")
        query = bytes(scope.get("query_string") or b"").decode("latin-1")
        return f"{url}?{query}" if query else url

    def sms_scope(self, http_scope: dict[str, Any], url: str) -> dict[str, Any]:
        """The ``sms`` scope of one webhook (specs/sms.md); the gateway adds reply_channel."""
        path = http_scope["path"]
        root_path = http_scope.get("root_path") or ""
        if root_path and path.startswith(root_path):
            path = path[len(root_path):] or "/"
        return {"type": "sms", "asgi": {"version": "3.0", "spec_version": SPEC_VERSION}, "path": path, "public_url": url}

    async def send_event(self, connection: Connection, event: Message) -> None:
        """Hand the event to the worker pool; 503 (counted) when the layer refuses it."""
        try:
            await self.gateway_or_fail().send_event(connection, event)
        except ChannelFull:
            raise _Reject(503, "events_full", "Service Unavailable: server busy\n", [(b"retry-after", b"1")]) from None
        except _Reject:
            raise
        except Exception as exc:
            logger.warning("sms: sending %s to the worker pool failed: %s", event["type"], type(exc).__name__)
            raise _Reject(503, "layer_errors", "Service Unavailable\n", [(b"retry-after", b"1")]) from None

    def on_reply(self, message: Message, replies: asyncio.Queue[Message]) -> None:
        """``Connection.deliver`` of a webhook: queue ``sms.*`` replies for the waiter."""
        if message.get("type") == SEND_TYPE:
            # Only the named channel is read after the webhook is answered; taking sends
            # here would make them work or vanish depending on timing.
            self.count("send_dropped_wrong_channel")
            logger.warning("sms.send dropped: send it to the channel %s (SmsConsumer.send_sms), "
                           "not to the webhook's reply channel", OUTBOUND_CHANNEL)
            return
        replies.put_nowait(message)

    async def wait_reply(self, replies: asyncio.Queue[Message]) -> bytes:
        """The TwiML to answer with: the consumer's reply, or empty after the deadline."""
        try:
            async with asyncio.timeout(self.options.reply_deadline):
                message = await replies.get()
        except TimeoutError:
            self.count("replies_deadline")
            return _EMPTY_TWIML
        problem = check_reply(message)
        if problem is not None:
            self.count("replies_invalid")
            logger.warning("sms: bad reply from the consumer, answering empty TwiML: %s", problem)
            return _EMPTY_TWIML
        twiml = build_twiml(message)
        self.count("replies" if twiml != _EMPTY_TWIML else "replies_empty")
        return twiml
