"""Routing for the SMTP end-to-end tests: the example's consumer, plus a record of each message.

The record (a JSON file per message in ``SMTP_TEST_OUT_DIR``) is how the test, in another
process, sees what the consumer in the worker process got, including the bytes of stored
attachments read from the gateway's storage directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from typing import Any

from emaildemo.consumers import MailToChatConsumer

from switchboard.consumers import ProtocolTypeRouter
from switchboard.consumers.email import ReceivedEmail


class RecordingConsumer(MailToChatConsumer):
    """The example consumer; then writes what it received to a file for the test."""

    def email_received(self, message: dict[str, Any]) -> None:
        super().email_received(message)
        email = ReceivedEmail.from_message(message)
        record = {
            "subject": email.subject,
            "text": email.text,
            "mail_from": email.mail_from,
            "rcpt_tos": email.rcpt_tos,
            "scope_type": self.scope["type"],
            "stored_raw": email.raw_stored_path is not None,
            "raw_sha256": hashlib.sha256(email.raw()).hexdigest(),
            "attachments": {
                a.filename: {"sha256": hashlib.sha256(a.read()).hexdigest(), "stored": a.stored_path is not None}
                for a in email.attachments
            },
            "pid": os.getpid(),
        }
        out_dir = os.environ["SMTP_TEST_OUT_DIR"]
        name = secrets.token_hex(8)
        with open(os.path.join(out_dir, name + ".tmp"), "w", encoding="utf-8") as handle:
            json.dump(record, handle)
        os.replace(os.path.join(out_dir, name + ".tmp"), os.path.join(out_dir, name + ".json"))


async def ping(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Every HTTP request: 200 ``pong`` (the worker answering, through the gateway)."""
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"pong"})


application = ProtocolTypeRouter({"email": RecordingConsumer.as_asgi(), "http": ping})
