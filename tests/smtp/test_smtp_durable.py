"""SMTP on the durable pool: 250 after the durable write, 552 for what cannot be queued.

Real ``smtplib`` clients against the plugin; consumers are ``EmailConsumer`` subclasses run
by an in-process worker. The kill -9 runs with OS processes are in tests/durable/.
"""

from __future__ import annotations

import asyncio
import os
import smtplib
from email.message import EmailMessage
from pathlib import Path
from typing import Any, ClassVar

import pytest
from support.waiting import wait_until

from switchboard.consumers.email import EmailConsumer, ReceivedEmail
from switchboard.gateway.layers import ChannelLayer, build_layer, set_channel_layer
from switchboard.gateway.layers.durable import delivery_of
from switchboard.gateway.server import Gateway
from switchboard.protocols.smtp import SmtpPlugin

from .conftest import WAIT, send, smtp_options


def mail(subject: str, attachment: bytes = b"") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "alice@example.org"
    message["To"] = "bob@example.com"
    message["Subject"] = subject
    message["Message-ID"] = f"<{subject}@example.org>"
    message.set_content("hello\n")
    if attachment:
        message.add_attachment(attachment, maintype="application", subtype="octet-stream", filename="data.bin")
    return message


async def test_250_means_stored_until_a_consumer_finished(stack: Any, layer: ChannelLayer) -> None:
    running = await stack(worker=False)
    await running.send(mail("kept"))
    assert await layer.durable.info("switchboard.email") == (1, 0)
    envelope = await asyncio.wait_for(layer.receive("switchboard.email"), WAIT)
    assert envelope["event"]["message_id"] == "<kept@example.org>"
    assert delivery_of(envelope) is not None


async def test_a_message_too_big_for_the_queue_gets_552(tmp_path: Path) -> None:
    layer = build_layer({"CONFIG": {"block_timeout": 0.05, "durable": {"switchboard.email": {"max_message_size": 4096}}}})
    set_channel_layer(layer)
    storage = tmp_path / "storage"
    gateway = Gateway(layer)
    await gateway.start()
    plugin = SmtpPlugin(smtp_options(storage_path=str(storage), attachment_inline_limit=64 * 1024))
    await plugin.start(gateway)
    assert plugin.address is not None
    try:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            await asyncio.to_thread(send, plugin.address, mail("big", os.urandom(8192)))
        assert refused.value.smtp_code == 552 and b"delivery queue" in refused.value.smtp_error
        assert plugin.stats()["events_too_large"] == 1
        assert await layer.durable.info("switchboard.email") == (0, 0)
        await asyncio.to_thread(send, plugin.address, mail("small"))  # the session carries on
        assert plugin.stats()["messages_in"] == 1
    finally:
        await plugin.stop(1.0)
        await gateway.stop()
        set_channel_layer(None)
        await layer.close()


class FailsOnce(EmailConsumer):
    """Raises on a message's first delivery, reading its stored attachment each time."""

    seen: ClassVar[list[tuple[int, bytes]]] = []

    async def email_received(self, message: dict[str, Any]) -> None:
        delivery = delivery_of(message)
        assert delivery is not None
        email = ReceivedEmail.from_message(message)
        (attachment,) = email.attachments
        self.seen.append((delivery.count, await asyncio.to_thread(attachment.read)))
        if delivery.count == 1:
            raise RuntimeError("database down")


async def test_stored_files_outlive_a_failed_delivery(stack: Any, layer: ChannelLayer, tmp_path: Path) -> None:
    FailsOnce.seen = []
    payload = os.urandom(4096)
    running = await stack(consumer=FailsOnce, attachment_inline_limit=1024)
    await running.send(mail("retried", payload))
    await wait_until(lambda: len(FailsOnce.seen) == 2, timeout=20, what="the second delivery")
    assert FailsOnce.seen == [(1, payload), (2, payload)]  # the file was still there for the retry
    await wait_until(lambda: layer.stats.durable_acked == 1, timeout=20, what="the acknowledgement")
    storage = tmp_path / "storage"
    await wait_until(lambda: not any(path.is_file() for path in storage.rglob("*")), timeout=20,
                     what="the stored files deleted after the successful delivery")
