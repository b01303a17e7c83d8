"""Deferred SMS sends of the ``sms`` plugin: ``sms.send`` messages -> Twilio's REST API.

A webhook's gateway connection is gone once Twilio has its answer, so a message sent later
(from a consumer after a slow lookup, from a view, from a background task) cannot go to a
reply channel. It goes to the named channel ``switchboard.sms.outbound`` instead, which
every gateway running the ``sms`` plugin with credentials reads; whichever pops a message
sends it. That makes deferred sends independent of which gateway took the webhook and
lets them scale with the number of gateways.

The REST call is twilio-python's own ``messages.create_async`` on its
``AsyncTwilioHttpClient`` (aiohttp), so no thread and no blocking call ever runs on the
gateway's event loop. The API base URL is twilio's public ``Domain.base_url`` attribute of
``client.api`` (the domain that owns ``/2010-04-01/Accounts/.../Messages.json``); setting
it is how a test or a proxy points the client elsewhere without patching the library.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from twilio.base.exceptions import TwilioRestException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client

from switchboard.gateway.layers import LayerClosed, Message, Receiver
from switchboard.gateway.specs import WORKER_TO_GATEWAY, SpecError, validate_message

if TYPE_CHECKING:
    from switchboard.gateway.layers import ChannelLayer

logger = logging.getLogger("switchboard.protocols.sms")

# twilio's HTTP client logs every request and response at INFO (URL, headers without the
# Authorization header): six lines per message. It gets a logger of its own, quiet unless
# the project asks for it (``"switchboard.protocols.sms.api": {"level": "INFO"}``).
api_logger = logging.getLogger("switchboard.protocols.sms.api")
if api_logger.level == logging.NOTSET:
    api_logger.setLevel(logging.WARNING)

#: The named channel deferred sends go to (``SmsConsumer.send_sms`` writes here).
OUTBOUND_CHANNEL = "switchboard.sms.outbound"

SEND_TYPE = "sms.send"

# Twilio's own limits (Messages resource): longer bodies and more media are refused by the
# API anyway; refusing them here keeps a consumer bug from costing a round trip.
MAX_BODY_CHARS = 1600
MAX_MEDIA = 10


def check_url(value: Any, what: str) -> str | None:
    """Why ``value`` is not an absolute http(s) URL Twilio could fetch or call, or None."""
    if not isinstance(value, str):
        return f"{what} must be a str, got {type(value).__name__}"
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"{what} must be an absolute http(s) URL, got {value[:80]!r}"
    return None


def check_media(media: Any) -> str | None:
    """Why ``media`` is not a list of at most ten media URLs, or None."""
    if media is None:
        return None
    if not isinstance(media, (list, tuple)):
        return f"media must be a list of URLs, got {type(media).__name__}"
    if len(media) > MAX_MEDIA:
        return f"media has {len(media)} URLs; Twilio takes at most {MAX_MEDIA}"
    for index, url in enumerate(media):
        problem = check_url(url, f"media[{index}]")
        if problem is not None:
            return problem
    return None


def check_body(body: Any) -> str | None:
    if body is not None and len(body) > MAX_BODY_CHARS:
        return f"body has {len(body)} characters; Twilio takes at most {MAX_BODY_CHARS}"
    return None


@dataclass(frozen=True)
class SendSettings:
    """What the sender needs from the plugin options (plain values, no secrets kept here
    beyond what the twilio client itself holds)."""

    account_sid: str
    username: str
    password: str
    api_base_url: str
    api_timeout: float
    concurrency: int
    default_from: str | None
    default_status_callback: str | None


def send_arguments(message: Message, settings: SendSettings) -> dict[str, Any]:
    """The keyword arguments of ``messages.create_async`` for a valid ``sms.send``.

    Raises ``ValueError`` naming the problem when the message cannot be sent: the spec
    checks types, this adds what the spec language cannot say (a sender is needed, some
    content is needed, URLs must be absolute).
    """
    validate_message(message, direction=WORKER_TO_GATEWAY)
    if message.get("type") != SEND_TYPE:
        raise ValueError(f"expected {SEND_TYPE}, got {message.get('type')!r}")
    to = message["to"]
    if not to.strip():
        raise ValueError("key 'to' is empty")
    sender = message.get("from") or settings.default_from
    service = message.get("messaging_service_sid")
    if not sender and not service:
        raise ValueError("needs 'from' or 'messaging_service_sid' (or the plugin's default_from option)")
    body, media = message.get("body"), message.get("media")
    if not body and not media:
        raise ValueError("needs a non-empty 'body' or 'media'")
    problem = check_body(body) or check_media(media)
    status_callback = message.get("status_callback") or settings.default_status_callback
    if problem is None and status_callback is not None:
        problem = check_url(status_callback, "status_callback")
    if problem is not None:
        raise ValueError(problem)
    arguments: dict[str, Any] = {"to": to}
    optional = {
        "from_": sender,
        "messaging_service_sid": service,
        "body": body,
        "media_url": list(media) if media else None,
        "status_callback": status_callback,
    }
    arguments.update({key: value for key, value in optional.items() if value})
    return arguments


class OutboundSender:
    """Reads ``switchboard.sms.outbound`` and sends each ``sms.send`` through Twilio.

    At most ``concurrency`` API calls run at once, and the receiver buffers no more than
    that, so a gateway never hoards messages another gateway could be sending.
    """

    def __init__(self, layer: ChannelLayer, settings: SendSettings, count: Callable[..., None]) -> None:
        self.layer = layer
        self.settings = settings
        self.count = count
        self.http_client = AsyncTwilioHttpClient(logger=api_logger)
        # environment: a non-empty mapping without TWILIO_* keys, so the plugin options are
        # the only source of credentials and host (twilio would otherwise read
        # TWILIO_EDGE/TWILIO_REGION from os.environ and rewrite api_base_url's host).
        self.client = Client(
            settings.username,
            settings.password,
            account_sid=settings.account_sid,
            http_client=self.http_client,
            environment={"SWITCHBOARD_SMS": "1"},
        )
        self.client.api.base_url = settings.api_base_url
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self._receiver: Receiver | None = None
        self._reader: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._receiver = self.layer.receiver([OUTBOUND_CHANNEL], max_buffered=self.settings.concurrency)
        self._reader = asyncio.get_running_loop().create_task(self._read_loop(), name="sms-outbound")

    async def _read_loop(self) -> None:
        receiver = self._receiver
        assert receiver is not None
        while True:
            try:
                batch = await receiver.get_batch(self.settings.concurrency)
            except LayerClosed:
                return
            for _channel, message in batch:
                await self.submit(message)

    async def submit(self, message: Message) -> None:
        """Check one message and start its API call once a slot is free."""
        self.count("send_received")
        try:
            arguments = send_arguments(message, self.settings)
        except (SpecError, ValueError, TypeError) as exc:
            self.count("replies_invalid")
            logger.warning("sms.send dropped: %s", exc)
            return
        await self._slots.acquire()
        task = asyncio.get_running_loop().create_task(self._send(arguments))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, arguments: dict[str, Any]) -> None:
        """One API call; failures are logged without credentials, numbers or text."""
        try:
            async with asyncio.timeout(self.settings.api_timeout):
                created = await self.client.messages.create_async(**arguments)
        except TwilioRestException as exc:
            self.count("send_failed")
            logger.warning("sms.send refused by the Twilio API: HTTP %s, error %s: %s", exc.status, exc.code, exc.msg)
        except TimeoutError:
            self.count("send_errors")
            logger.warning("sms.send: no answer from the Twilio API within %.1fs", self.settings.api_timeout)
        except asyncio.CancelledError:
            self.count("send_dropped_shutdown")
            raise
        except Exception as exc:
            # Network errors (aiohttp), or an answer twilio could not parse.
            self.count("send_errors")
            logger.warning("sms.send failed: %s", type(exc).__name__)
            logger.debug("sms.send failure detail", exc_info=True)
        else:
            self.count("messages_out")
            logger.debug("sms.send accepted by the Twilio API as %s", created.sid)
        finally:
            self._slots.release()

    async def stop(self, timeout: float) -> None:
        """Stop reading; send what was already popped; give calls ``timeout`` to finish.

        Calls still running after ``timeout`` are cancelled and counted as
        ``send_dropped_shutdown`` (Twilio may or may not have accepted them).
        """
        deadline = asyncio.get_running_loop().time() + timeout
        leftover = await self._receiver.close() if self._receiver is not None else []
        try:
            async with asyncio.timeout_at(deadline):
                for index, (_channel, message) in enumerate(leftover):
                    await self.submit(message)
                    leftover[index] = ("", {})
                if self._reader is not None:
                    await self._reader
                if self._tasks:
                    await asyncio.wait(set(self._tasks))
        except TimeoutError:
            self.count("send_dropped_shutdown", sum(1 for _c, message in leftover if message))
        finally:
            if self._reader is not None:
                self._reader.cancel()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, *([self._reader] if self._reader else []), return_exceptions=True)
            await self.http_client.close()
