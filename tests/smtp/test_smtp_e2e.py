"""End to end: ``switchboard gateway`` + ``switchboard worker`` over Redis, and ``switchboard run``.

smtplib in the test process sends; the example consumer in the worker process records what
it received to files the test reads (conftest.py, smtp_routing.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import smtplib
import time
from email import policy
from email.message import EmailMessage
from typing import Any

import pytest

from .conftest import smtp_client

pytestmark = pytest.mark.e2e

BIG = os.urandom(8 * 1024)  # stored: the e2e settings inline at most 1 KiB


def message(subject: str) -> bytes:
    mail = EmailMessage()
    mail["From"] = "Alice <alice@example.org>"
    mail["To"] = "lobby@chat.example.com"
    mail["Subject"] = subject
    mail.set_content("Hello from the e2e test.\n")
    mail.add_attachment(b"tiny", maintype="text", subtype="plain", filename="tiny.txt")
    mail.add_attachment(BIG, maintype="application", subtype="octet-stream", filename="big.bin")
    return mail.as_bytes(policy=policy.SMTP)


@pytest.mark.parametrize("mode", ["split", "run"])
def test_message_reaches_the_consumer_in_the_worker(deploy: Any, mode: str) -> None:
    deployment = deploy(mode)
    raw = message(f"e2e {mode}")
    with smtp_client(deployment.address) as client:
        code, banner = client.ehlo()
        assert code == 250 and banner.startswith(b"mx.e2e.test")
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("alice@example.org", ["someone@elsewhere.org"], raw)
        assert client.sendmail("alice@example.org", ["lobby@chat.example.com"], raw) == {}

    (result_file,) = deployment.wait_for_output(1)
    record = json.loads(result_file.read_text())
    assert record["subject"] == f"e2e {mode}"
    assert record["text"] == "Hello from the e2e test.\n"
    assert record["rcpt_tos"] == ["lobby@chat.example.com"]
    assert record["scope_type"] == "email"
    assert record["stored_raw"] is True and record["raw_sha256"] == hashlib.sha256(raw).hexdigest()
    assert record["attachments"] == {
        "tiny.txt": {"sha256": hashlib.sha256(b"tiny").hexdigest(), "stored": False},
        "big.bin": {"sha256": hashlib.sha256(BIG).hexdigest(), "stored": True},
    }
    if mode == "split":
        assert record["pid"] == deployment.processes["worker"].pid  # handled in the worker process

    # The consumer deleted the stored files once its handler had returned.
    deadline = time.monotonic() + 10
    while any(deployment.storage_dir.iterdir()):
        assert time.monotonic() < deadline, sorted(deployment.storage_dir.iterdir())
        time.sleep(0.02)
    for name in list(deployment.processes):
        assert deployment.stop(name) == 0
