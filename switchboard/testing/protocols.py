"""Communicators for the protocols beyond HTTP: UDP, MQTT, e-mail, SMS and WebRTC.

Each runs one consumer instance the way a worker does under a gateway, so a consumer is
unit-tested in a few lines, without sockets or a broker:

* the scope is the one the gateway would build, from the protocol's spec
  (``switchboard/specs/<protocol>.md``), with what you pass overriding it, and is checked
  against the spec before the consumer sees it;
* every event you send is checked against the spec (``gateway -> worker``), and every
  message the consumer sends is checked when you read it (``worker -> gateway``): a
  consumer that would send the gateway something it refuses fails the test at once, with
  the spec's reason;
* the scope has a ``reply_channel`` on the layer, read by the communicator as the gateway
  reads it: group messages sent to the consumer's channel come in as events (so
  ``group_send(... {"type": "chat.message"})`` reaches ``chat_message``), and protocol
  messages sent there (a group's ``udp.send``) come out as output;
* a consumer's ``switchboard.claim`` (``ordered = True``) is taken as the gateway takes it.

For example, an SMS consumer::

    communicator = SmsCommunicator(AutoReply.as_asgi())
    await communicator.send_sms("hello", from_="+15557654321")
    assert await communicator.receive_reply() == {"body": "You said: hello", "media": []}
    await communicator.stop_consumer()
"""

from __future__ import annotations

import asyncio
import copy
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from switchboard.gateway.layers.aliases import get_channel_layer
from switchboard.gateway.specs import GATEWAY_TO_WORKER, WORKER_TO_GATEWAY, _registry, validate_message, validate_scope

from .application import ApplicationCommunicator

CLAIM_TYPE = "switchboard.claim"


def spec_scope(protocol: str, **overrides: Any) -> dict[str, Any]:
    """The first example scope of ``protocol``'s spec, with ``overrides`` applied."""
    example = _registry().scopes[protocol].examples[0]
    scope = copy.deepcopy(dict(example))
    scope.update(overrides)
    return scope


class ProtocolCommunicator(ApplicationCommunicator):
    """Runs a consumer of ``protocol`` as a gateway would; see the module docstring."""

    protocol: str = ""

    def __init__(self, application: Any, scope: Mapping[str, Any] | None = None, **scope_overrides: Any) -> None:
        self.layer = get_channel_layer()
        base = dict(scope) if scope is not None else spec_scope(self.protocol)
        base.update(scope_overrides)
        base["reply_channel"] = f"gateway.{self.layer.client_prefix}!{secrets.token_urlsafe(9)}"
        validate_scope(base)
        self.claimed = False
        self._forwarder: asyncio.Task[None] | None = None
        super().__init__(application, base)

    # -- the gateway side of the reply channel ----------------------------------------

    def _started(self, task: asyncio.Task[Any]) -> None:
        self._forwarder = asyncio.get_running_loop().create_task(self._forward())
        task.add_done_callback(lambda _task: self._forwarder.cancel() if self._forwarder else None)

    async def _forward(self) -> None:
        """What the gateway does with the connection's reply channel."""
        prefix = self.protocol + "."
        while True:
            message = await self.layer.receive(self.scope["reply_channel"])
            if str(message.get("type", "")).startswith(prefix):
                await self.output_queue.put(message)
            else:
                await self.input_queue.put(message)

    # -- events in, messages out --------------------------------------------------------

    async def send_event(self, event_type: str, **fields: Any) -> None:
        """Send one spec-valid ``gateway -> worker`` event to the consumer."""
        message = {"type": event_type, **fields}
        validate_message(message, direction=GATEWAY_TO_WORKER)
        await self.send_input(message)

    async def receive_output(self, timeout: float = 1) -> dict[str, Any]:
        """The consumer's next message, checked against the spec (claims are taken here)."""
        while True:
            message: dict[str, Any] = await super().receive_output(timeout)
            if message.get("type") == CLAIM_TYPE:
                self.claimed = True
                continue
            validate_message(message, direction=WORKER_TO_GATEWAY)
            return message

    async def receive_type(self, event_type: str, timeout: float = 1) -> dict[str, Any]:
        message = await self.receive_output(timeout)
        assert message["type"] == event_type, f"Expected {event_type!r}, got {message['type']!r}: {message!r}"
        return message

    async def stop_consumer(self, timeout: float = 1) -> None:
        """End the instance (the gateway closing the connection: the consumer is cancelled)."""
        self.stop(exceptions=False)
        if self._future is not None:
            await asyncio.gather(self._future, return_exceptions=True)
        if self._forwarder is not None:
            self._forwarder.cancel()
            await asyncio.gather(self._forwarder, return_exceptions=True)


class UdpCommunicator(ProtocolCommunicator):
    """A bound UDP socket: ``send_datagram`` in, ``receive_datagram`` out."""

    protocol = "udp"

    def __init__(self, application: Any, server: Sequence[Any] = ("127.0.0.1", 9999), **scope: Any) -> None:
        super().__init__(application, server=list(server), **scope)

    async def send_datagram(self, data: bytes, client: Sequence[Any] = ("127.0.0.1", 50000)) -> None:
        await self.send_event("udp.datagram", data=data, client=list(client))

    async def receive_datagram(self, timeout: float = 1) -> tuple[bytes, list[Any]]:
        """``(data, address)`` of the consumer's next ``udp.send``."""
        message = await self.receive_type("udp.send", timeout)
        return message["data"], message["address"]


class MqttCommunicator(ProtocolCommunicator):
    """A broker session: ``publish`` delivers a message in; read ``mqtt.publish`` /
    ``mqtt.subscribe`` / ``mqtt.unsubscribe`` with ``receive_publish`` or ``receive_output``."""

    protocol = "mqtt"

    async def publish(
        self,
        topic: str,
        payload: bytes | str,
        qos: int = 0,
        retain: bool = False,
        properties: Mapping[str, Any] | None = None,
    ) -> None:
        """A message arriving from the broker on ``topic`` (str payloads are UTF-8 encoded)."""
        data = payload.encode("utf-8") if isinstance(payload, str) else payload
        properties = dict(properties or {})
        await self.send_event("mqtt.message", topic=topic, payload=data, qos=qos, retain=retain, properties=properties)

    async def receive_publish(self, timeout: float = 1) -> dict[str, Any]:
        return await self.receive_type("mqtt.publish", timeout)


class EmailCommunicator(ProtocolCommunicator):
    """The SMTP server: ``send_email`` delivers a message the way the gateway parses it."""

    protocol = "email"

    async def send_email(
        self,
        message: EmailMessage | bytes | None = None,
        *,
        mail_from: str = "sender@example.com",
        rcpt_tos: Iterable[str] = ("inbox@example.com",),
        subject: str = "",
        text: str | None = "",
        html: str | None = None,
        attachments: Iterable[tuple[str, str, bytes]] = (),
        peer: Sequence[Any] = ("127.0.0.1", 50000),
        helo: str | None = "client.example.com",
        auth_user: str | None = None,
        tls: bool = False,
        inline_limit: int = 1024 * 1024,
        storage_dir: str | Path | None = None,
    ) -> dict[str, Any]:
        """Build an ``email.received`` event with the gateway's own parser and send it.

        Pass a whole ``message`` (an ``EmailMessage`` or raw bytes), or the parts to build
        one from (``attachments`` as ``(filename, content_type, data)``). Parts over
        ``inline_limit`` are written under ``storage_dir`` (a temporary directory by
        default), as the gateway does. Returns the event sent.
        """
        import tempfile

        from switchboard.protocols._smtp_message import Envelope, Storage, build_event

        rcpts = list(rcpt_tos)
        if message is None:
            message = EmailMessage()
            message["From"] = mail_from
            message["To"] = ", ".join(rcpts)
            message["Subject"] = subject
            message["Message-ID"] = f"<{secrets.token_hex(8)}@switchboard.test>"
            if text is not None:
                message.set_content(text)
            if html is not None:
                message.add_alternative(html, subtype="html") if text is not None else message.set_content(html, subtype="html")
            for filename, content_type, data in attachments:
                maintype, _, subtype = content_type.partition("/")
                message.add_attachment(data, maintype=maintype, subtype=subtype or "octet-stream", filename=filename)
        raw = message if isinstance(message, bytes) else message.as_bytes()
        directory = Path(storage_dir) if storage_dir is not None else Path(tempfile.mkdtemp(prefix="switchboard-email-"))
        storage = Storage(directory)
        storage.prepare()
        envelope = Envelope(mail_from=mail_from, rcpt_tos=rcpts, peer=list(peer), helo=helo, auth_user=auth_user, tls=tls)
        event = build_event(raw, envelope, inline_limit=inline_limit, storage=storage).event
        fields = {key: value for key, value in event.items() if key != "type"}
        await self.send_event(event["type"], **fields)
        return event


class SmsCommunicator(ProtocolCommunicator):
    """Twilio's webhook: ``send_sms`` / ``send_status`` in, ``receive_reply`` out."""

    protocol = "sms"

    def __init__(self, application: Any, account_sid: str = "AC" + "0" * 32, **scope: Any) -> None:
        self.account_sid = account_sid
        super().__init__(application, **scope)

    async def send_sms(
        self,
        body: str,
        from_: str = "+15557654321",
        to: str = "+15551230000",
        media: Iterable[tuple[str, str]] = (),
        message_sid: str | None = None,
    ) -> str:
        """An inbound text (``media`` as ``(url, content_type)``); returns its MessageSid."""
        sid = message_sid or "SM" + secrets.token_hex(16)
        media_list = [{"url": url, "content_type": content_type} for url, content_type in media]
        params = {"From": from_, "To": to, "Body": body, "MessageSid": sid, "AccountSid": self.account_sid}
        params["NumMedia"] = str(len(media_list))
        for index, item in enumerate(media_list):
            params[f"MediaUrl{index}"] = item["url"]
            params[f"MediaContentType{index}"] = item["content_type"]
        await self.send_event(
            "sms.received",
            **{
                "from": from_,
                "to": to,
                "body": body,
                "message_sid": sid,
                "account_sid": self.account_sid,
                "num_media": len(media_list),
                "media": media_list,
                "params": params,
            },
        )
        return sid

    async def send_status(self, message_sid: str, status: str, error_code: int | None = None) -> None:
        """A delivery status callback for an outbound message."""
        params = {"MessageSid": message_sid, "MessageStatus": status}
        if error_code is not None:
            params["ErrorCode"] = str(error_code)
        await self.send_event("sms.status", message_sid=message_sid, status=status, error_code=error_code, params=params)

    async def receive_reply(self, timeout: float = 1) -> dict[str, Any]:
        """The consumer's ``sms.reply``: ``{"body": str | None, "media": [urls]}``."""
        message = await self.receive_type("sms.reply", timeout)
        return {"body": message.get("body"), "media": list(message.get("media") or [])}


class WebRTCCommunicator(ProtocolCommunicator):
    """A peer connection: ``connect``, data channel ``open_channel`` / ``send_to`` /
    ``receive_from``, and ``disconnect``."""

    protocol = "webrtc"

    def __init__(self, application: Any, path: str = "/webrtc/", **scope: Any) -> None:
        super().__init__(application, path=path, **scope)

    async def connect(self, timeout: float = 1) -> bool:
        """The peer connected; False if the consumer closed it at once (``webrtc.close``)."""
        await self.send_event("webrtc.connect")
        return not await self._closed_within(timeout)

    async def _closed_within(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.output_queue.empty():
                message = self.output_queue.get_nowait()
                if message.get("type") == "webrtc.close":
                    return True
                self.output_queue.put_nowait(message)  # keep it for the test to read
                return False
            if self.future.done():
                self.future.result()
                return False
            await asyncio.sleep(0.01)
        return False

    async def open_channel(self, label: str, id: int = 1, protocol: str = "") -> None:
        await self.send_event("webrtc.datachannel.open", label=label, id=id, protocol=protocol)

    async def send_to(self, label: str, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        assert (text_data is None) != (bytes_data is None), "You must supply exactly one of text_data or bytes_data"
        fields: dict[str, Any] = {"text": text_data} if text_data is not None else {"bytes": bytes_data}
        await self.send_event("webrtc.datachannel.message", label=label, **fields)

    async def receive_from(self, timeout: float = 1) -> tuple[str, str | bytes]:
        """``(label, data)`` of the consumer's next ``webrtc.datachannel.send``."""
        message = await self.receive_type("webrtc.datachannel.send", timeout)
        text = message.get("text")
        return message["label"], text if text is not None else message["bytes"]

    async def disconnect(self, reason: str = "closed", timeout: float = 1) -> None:
        await self.send_event("webrtc.disconnect", reason=reason)
        await self.wait(timeout)
