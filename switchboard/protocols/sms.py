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
* Twilio may deliver a webhook twice, and anyone who captured a signed webhook can replay
  it (the signature has no timestamp); a ``MessageSid`` seen within ``dedupe_ttl`` seconds
  is answered (200, empty TwiML) but not delivered again. The seen SIDs are markers on the
  channel layer (``ChannelLayer.mark``, Redis ``SET NX`` with a TTL), so they survive a
  gateway restart and are shared by every gateway on the layer.
* On the durable ``switchboard.sms`` pool (the default) Twilio's ``2xx`` means the event is
  stored until a consumer finished with it; a reply that comes after the webhook was
  answered goes out through the REST API (``_sms_late.py``, docs/sms.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, urlsplit

from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from switchboard.gateway.asgi import (
    TEXT_PLAIN,
    BodyTooLarge,
    ClientGone,
    Receive,
    Send,
    header_text,
    read_body,
    refuse_websocket,
    respond,
)
from switchboard.gateway.layers import ChannelLayer, InvalidName, Message
from switchboard.gateway.layers.names import check_marker_key
from switchboard.gateway.plugins import CONNECTIONS_OPENED, MESSAGES_IN, EventOutcome, PluginNotRunning, ProtocolPlugin
from switchboard.gateway.specs import WORKER_TO_GATEWAY, SpecError, validate_message
from switchboard.messages import SmsReceivedEvent, SmsStatusEvent

from ._sms_late import LATE_COUNTERS, LateReplies, WebhookReplies
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

logger = logging.getLogger("switchboard.protocols.sms")

#: The version of specs/sms.md this module implements (``scope["asgi"]["spec_version"]``).
SPEC_VERSION = "1.0"

#: Twilio gives up on a webhook after 15 seconds; the inline reply deadline must be shorter.
TWILIO_WEBHOOK_TIMEOUT = 15.0

RECEIVED: Final = "sms.received"
STATUS: Final = "sms.status"
REPLY: Final = "sms.reply"

DEFAULT_API_BASE_URL = "https://api.twilio.com"

# Most form fields accepted in one webhook (Twilio sends a few dozen; MMS adds two per
# medium): parse_qsl stops early instead of building a huge list from a hostile body.
_MAX_FORM_FIELDS = 500

_EMPTY_TWIML = str(MessagingResponse()).encode()
_TWIML_HEADERS = [(b"content-type", b"application/xml; charset=utf-8")]
_TEXT_HEADERS = [TEXT_PLAIN]

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
    #: Seconds a ``MessageSid`` is remembered (on the channel layer, shared by every
    #: gateway) to drop Twilio's duplicate deliveries and replays (0: off). A day by
    #: default: a replay of a captured webhook is refused for that long.
    dedupe_ttl: float = 86400.0
    #: Largest webhook body accepted (bytes); larger ones get 413.
    max_body_size: int = 64 * 1024
    #: Durable pool: seconds an answered incoming message's reply channel stays open, so a
    #: reply that comes later (a slow handler, a redelivery) is sent through the REST API.
    late_reply_window: float = 600.0
    #: Most answered webhooks kept open for late replies (oldest closed first).
    late_reply_max: int = 10_000

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
            raise ValueError(
                f"reply_deadline must be between 0 and {TWILIO_WEBHOOK_TIMEOUT:g} seconds (Twilio's timeout), "
                f"got {self.reply_deadline}"
            )
        if (self.api_key_sid is None) != (self.api_key_secret is None):
            raise ValueError("api_key_sid and api_key_secret go together")
        if self.api_key_sid is not None and self.account_sid is None:
            raise ValueError("api_key_sid needs account_sid (the account the key sends for)")
        positive = {
            "api_timeout": self.api_timeout,
            "send_concurrency": self.send_concurrency,
            "max_body_size": self.max_body_size,
            "late_reply_window": self.late_reply_window,
            "late_reply_max": self.late_reply_max,
        }
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
    """A webhook answered with an error status; ``counter`` says why (for stats; None when
    the layer's refusal was counted already under its standard name).

    ``stored``: the event was stored all the same (not replicated in time), so Twilio's
    retry is a duplicate to drop, not a new delivery.
    """

    def __init__(
        self,
        status: int,
        counter: str | None,
        text: str,
        headers: list[tuple[bytes, bytes]] | None = None,
        *,
        stored: bool = False,
    ) -> None:
        super().__init__(text)
        self.status = status
        self.counter = counter
        self.text = text
        self.headers = headers or []
        self.stored = stored


class _SeenSids:
    """MessageSids seen within ``ttl``: markers on the channel layer, shared and durable.

    Why not process memory: a memory is empty after a restart and private to one gateway,
    so a webhook replayed after a restart, or retried onto another gateway, was delivered
    again. A marker on the layer is one ``SET NX`` with a TTL on Redis, atomic across
    gateways: of several deliveries of one SID, exactly one goes on.
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl

    @staticmethod
    def key(sid: str, status: str) -> str:
        """The marker key of a SID (and status); hashed when the SID is not plain ASCII."""
        key = f"sms:{sid}:{status}"
        try:
            return check_marker_key(key)
        except InvalidName:
            # A signed form can still carry odd values: any SID gets a valid, bounded key.
            return "sms:sha256:" + hashlib.sha256(f"{sid}\0{status}".encode()).hexdigest()

    async def add(self, layer: ChannelLayer, key: str) -> bool:
        """Remember ``key``; False when it was already seen within the TTL (by any gateway)."""
        if self.ttl <= 0:
            return True
        return await layer.mark(key, self.ttl)

    async def forget(self, layer: ChannelLayer, key: str) -> None:
        """Forget ``key`` (its delivery failed, so Twilio's retry must not be a duplicate)."""
        if self.ttl <= 0:
            return
        try:
            await layer.unmark(key)
        except Exception as exc:
            # Then a retry within dedupe_ttl is answered as a duplicate: say so.
            logger.warning(
                "sms: could not forget %s after a failed delivery (%s); a retry of it will be dropped as a duplicate",
                key,
                type(exc).__name__,
            )


def build_twiml(message: Message) -> bytes:
    """The TwiML answer for an ``sms.reply``: ``<Response/>`` when it has no content."""
    response = MessagingResponse()
    body, media = message.get("body"), message.get("media") or []
    if body or media:
        reply = response.message(body or None)
        for url in media:
            reply.media(url)
    return str(response).encode()


def _media(form: _Form, count: int) -> list[dict[str, str]]:
    media = []
    for index in range(count):
        url = form.get(f"MediaUrl{index}")
        if url:
            media.append({"url": url, "content_type": form.get(f"MediaContentType{index}", "")})
    return media


def received_event(form: _Form) -> SmsReceivedEvent:
    """The ``sms.received`` event of an incoming-message webhook (specs/sms.md)."""
    sid = form.get("MessageSid") or form.get("SmsMessageSid")
    if not sid or "From" not in form or "To" not in form:
        raise _Reject(400, "rejected_fields", "Bad Request: MessageSid, From and To are required\n")
    try:
        num_media = int(form.get("NumMedia") or 0)
    except ValueError:
        raise _Reject(400, "rejected_fields", "Bad Request: NumMedia is not a number\n") from None
    num_media = max(0, min(num_media, 100))
    event: SmsReceivedEvent = {
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
    return event


def status_event(form: _Form) -> SmsStatusEvent:
    """The ``sms.status`` event of a status-callback webhook (specs/sms.md)."""
    sid = form.get("MessageSid") or form.get("SmsSid")
    status = form.get("MessageStatus") or form.get("SmsStatus")
    if not sid or not status:
        raise _Reject(400, "rejected_fields", "Bad Request: MessageSid and MessageStatus are required\n")
    error_code: int | None = None
    if form.get("ErrorCode", "").strip().isdigit():
        error_code = int(form["ErrorCode"])
    event: SmsStatusEvent = {"type": STATUS, "message_sid": sid, "status": status, "error_code": error_code, "params": dict(form)}
    if "To" in form:
        event["to"] = form["To"]
    if "From" in form:
        event["from"] = form["From"]
    return event


class _Webhook:
    """The ASGI app mounted for one webhook path: check, translate, wait, answer."""

    def __init__(self, plugin: SmsPlugin, kind: str) -> None:
        self.plugin = plugin
        self.kind = kind  # RECEIVED or STATUS

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        plugin = self.plugin
        if scope.get("type") != "http":
            if scope.get("type") == "websocket":
                await refuse_websocket(receive, send)
            return
        plugin.count("webhooks")
        plugin.active += 1
        plugin.idle.clear()
        try:
            await self._serve(scope, receive, send)
        except _Reject as reject:
            if reject.counter is not None:
                plugin.count(reject.counter)
            await respond(send, reject.status, reject.text.encode(), _TEXT_HEADERS + reject.headers)
        except ClientGone:
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
        try:
            body = await read_body(scope, receive, plugin.options.max_body_size)
        except BodyTooLarge:
            raise _Reject(413, "rejected_too_large", "Request body too large\n", [(b"connection", b"close")]) from None
        form = _parse_form(scope, body)
        url = plugin.public_url(scope)
        signature = header_text(scope, b"x-twilio-signature")
        if not signature or not plugin.validator.validate(url, form, signature):
            plugin.log.warning(
                "forged signature",
                "webhook %s: %s X-Twilio-Signature, answered 403 (is public_base_url %s the URL Twilio is configured with?)",
                scope.get("path"),
                "wrong" if signature else "missing",
                plugin.options.public_base_url,
            )
            raise _Reject(403, "rejected_signature", "Forbidden: bad or missing X-Twilio-Signature\n")
        event: SmsReceivedEvent | SmsStatusEvent = received_event(form) if self.kind == RECEIVED else status_event(form)
        dedupe_key = plugin.seen.key(event["message_sid"], event["status"] if event["type"] == "sms.status" else "")
        if not await plugin.first_delivery(dedupe_key):
            plugin.count("duplicates")
            await self._answer_empty(send)
            return
        await self._deliver(scope, url, event, dedupe_key, send)

    async def _answer_empty(self, send: Send) -> None:
        if self.kind == RECEIVED:
            await respond(send, 200, _EMPTY_TWIML, _TWIML_HEADERS)
        else:
            await respond(send, 204, b"")

    async def _deliver(
        self, http_scope: dict[str, Any], url: str, event: SmsReceivedEvent | SmsStatusEvent, dedupe_key: str, send: Send
    ) -> None:
        """Open the webhook's connection, send its event, answer Twilio, close it."""
        plugin = self.plugin
        scope = plugin.sms_scope(http_scope, url)
        replies = WebhookReplies()
        gateway = plugin.running_gateway()
        connection = gateway.open_connection(scope, lambda message: plugin.on_reply(message, replies))
        plugin.count(CONNECTIONS_OPENED)
        stored = False
        try:
            try:
                await plugin.store_event(connection, event)
            except _Reject as reject:
                if not reject.stored:
                    # Not delivered: Twilio's retry is no duplicate.
                    await plugin.seen.forget(gateway.layer, dedupe_key)
                stored = reject.stored
                raise
            stored = True
            plugin.count(MESSAGES_IN if self.kind == RECEIVED else "statuses")
            if event["type"] == STATUS:
                await self._answer_empty(send)
                return
            twiml = await plugin.wait_reply(replies.queue)
            replies.replied = twiml != _EMPTY_TWIML
        finally:
            late = plugin.late
            if stored and late is not None and event["type"] == RECEIVED and not replies.answered:
                # No answer from the consumer yet (it is slow, or its worker was lost and
                # the event comes again): its reply goes out through the REST API, within
                # the late-reply window.
                late.keep(connection, replies, event["from"], event["to"])
            else:
                gateway.close_connection(connection)
        await respond(send, 200, twiml, _TWIML_HEADERS)


def _parse_form(scope: dict[str, Any], body: bytes) -> _Form:
    """The form fields of a webhook; 400 unless a well-formed UTF-8 urlencoded form."""
    content_type = (header_text(scope, b"content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise _Reject(400, "rejected_form", "Bad Request: expected an application/x-www-form-urlencoded body\n")
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(
            text, keep_blank_values=True, strict_parsing=bool(text), max_num_fields=_MAX_FORM_FIELDS, errors="strict"
        )
    except (UnicodeDecodeError, ValueError):
        raise _Reject(400, "rejected_form", "Bad Request: malformed form body\n") from None
    return _Form(pairs)


def reply_problem(message: Message) -> str | None:
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
        self.seen = _SeenSids(options.dedupe_ttl)
        self.sender: OutboundSender | None = None
        #: Answered webhooks kept for late replies (only on a durable pool).
        self.late: LateReplies | None = None
        for counter in LATE_COUNTERS:
            self.counters[counter] = 0
        self.stopping = False
        #: Webhooks being served right now, and an event set whenever there are none.
        self.active = 0
        self.idle = asyncio.Event()
        self.idle.set()

    def endpoints(self, gateway: Gateway) -> list[str]:
        """The webhook URLs to give Twilio (``public_base_url``: what Twilio signs and calls)."""
        base = self.options.public_base_url
        return [
            f'{base}{self.options.inbound_path}  (Twilio "A message comes in" webhook, POST)',
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
        if gateway.layer.durable.options_for(f"switchboard.{self.scope_types[0]}") is not None:
            self.late = LateReplies(gateway, options.late_reply_window, options.late_reply_max, self.count, reply_problem)
        settings = options.send_settings()
        if settings is None:
            logger.info(
                "sms: no account_sid, so this gateway does not send deferred messages (%s)%s",
                OUTBOUND_CHANNEL,
                "; late replies wait there for a gateway that has one" if self.late is not None else "",
            )
        else:
            self.sender = OutboundSender(gateway.layer, settings, self.count)
            self.sender.start()
        logger.info(
            "sms webhooks at %s (incoming) and %s (status), signed for %s",
            options.inbound_path,
            options.status_path,
            options.public_base_url,
        )

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
        if self.late is not None:
            await self.late.close()
            self.late = None
        if self.sender is not None:
            await self.sender.stop(max(0.0, deadline - asyncio.get_running_loop().time()))
            self.sender = None
        self.gateway = None
        self.report_stats()

    # -- helpers used by the webhook apps ------------------------------------------------

    def running_gateway(self) -> Gateway:
        """The gateway, or the webhook's answer: 503 while the plugin is stopped."""
        try:
            return self.gateway_or_fail()
        except PluginNotRunning:
            raise _Reject(503, "rejected_stopping", "Service Unavailable: gateway stopping\n") from None

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
            path = path[len(root_path) :] or "/"
        return {"type": "sms", "asgi": {"version": "3.0", "spec_version": SPEC_VERSION}, "path": path, "public_url": url}

    async def first_delivery(self, key: str) -> bool:
        """Whether this is the first delivery of ``key`` within ``dedupe_ttl`` (any gateway).

        The layer being down is a 503 (Twilio's retry, if the URL asks for one, comes back
        here): without the marker a replay could not be told from a first delivery, and
        the event could not reach the workers anyway.
        """
        try:
            return await self.seen.add(self.running_gateway().layer, key)
        except _Reject:
            raise
        except Exception as exc:
            self.log.warning("dedupe marker", "the de-duplication marker could not be set: %s", type(exc).__name__)
            raise _Reject(503, "dedupe_failed", "Service Unavailable\n", [(b"retry-after", b"1")]) from None

    async def store_event(self, connection: Connection, event: SmsReceivedEvent | SmsStatusEvent) -> None:
        """Hand the event to the worker pool; a refusal (counted by ``send_event``) is Twilio's 503 or 413."""
        self.running_gateway()
        outcome = await self.send_event(connection, event)
        if outcome is EventOutcome.SENT:
            return
        retry = [(b"retry-after", b"1")]
        if outcome is EventOutcome.FULL:
            raise _Reject(503, None, "Service Unavailable: server busy\n", retry)
        if outcome is EventOutcome.TOO_LARGE:
            raise _Reject(413, None, "Request too large to queue\n")
        raise _Reject(503, None, "Service Unavailable\n", retry, stored=outcome is EventOutcome.NOT_REPLICATED)

    def on_reply(self, message: Message, replies: WebhookReplies) -> None:
        """``Connection.deliver`` of a webhook: queue ``sms.*`` replies for the waiter."""
        if message.get("type") == SEND_TYPE:
            # Only the named channel is read after the webhook is answered; taking sends
            # here would make them work or vanish depending on timing.
            self.count("send_dropped_wrong_channel")
            logger.warning(
                "sms.send dropped: send it to the channel %s (SmsConsumer.send_sms), not to the webhook's reply channel",
                OUTBOUND_CHANNEL,
            )
            return
        if replies.late is not None and self.late is not None:
            self.late.on_reply(message, replies)  # the webhook was answered already
            return
        replies.answered = True
        replies.queue.put_nowait(message)

    async def wait_reply(self, replies: asyncio.Queue[Message]) -> bytes:
        """The TwiML to answer with: the consumer's reply, or empty after the deadline."""
        try:
            async with asyncio.timeout(self.options.reply_deadline):
                message = await replies.get()
        except TimeoutError:
            self.count("replies_deadline")
            return _EMPTY_TWIML
        problem = reply_problem(message)
        if problem is not None:
            self.drop_reply(message, f"{problem} (Twilio gets empty TwiML)")
            return _EMPTY_TWIML
        twiml = build_twiml(message)
        self.count("replies" if twiml != _EMPTY_TWIML else "replies_empty")
        return twiml
