"""End to end: ``switchboard gateway`` + ``switchboard worker`` over Redis, and ``switchboard run``.

smtplib in the test process sends; the example consumer in the worker process records what
it received to files the test reads (conftest.py, smtp_routing.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import smtplib
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from email import policy
from email.message import EmailMessage
from typing import Any

import pytest
from support.processes import free_tcp_port
from support.waiting import deadline, wait_until_sync

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
    deployment.wait_until_sync(lambda: not any(deployment.storage_dir.iterdir()), 10, "the stored files to be deleted")
    for name in list(deployment.processes):
        assert deployment.stop(name) == 0


def mime_bomb(parts: int) -> bytes:
    body = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(parts))
    return (b"From: a@example.org\r\nTo: lobby@chat.example.com\r\nSubject: bomb\r\n"
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + body + b"--b--\r\n")


#: Safety net for one bomb's answer: seconds on an idle machine, much more under load.
BOMB_WAIT = deadline(180)


def send_expecting_refusal(address: tuple[str, int], raw: bytes) -> tuple[int, bytes]:
    with smtp_client(address, timeout=BOMB_WAIT) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("a@example.org", ["lobby@chat.example.com"], raw)
    return refused.value.smtp_code, refused.value.smtp_error


def send_honest(address: tuple[str, int], raw: bytes) -> dict[str, Any]:
    with smtp_client(address, timeout=BOMB_WAIT) as client:
        return client.sendmail("alice@example.org", ["lobby@chat.example.com"], raw)


def http_get(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=BOMB_WAIT) as response:
        assert response.read() == b"pong"
        return int(response.status)


def test_mime_bombs_are_refused_while_mail_and_http_are_served(deploy: Any) -> None:
    """Six 100,000-part mails at once (the attack that pegged the gateway for two minutes):
    each gets its 552, and meanwhile another sender's mail is delivered and HTTP requests
    are answered. What is asserted is that they complete, not how fast."""
    http_port = free_tcp_port()
    deployment = deploy("split", http_port=http_port)
    wait_until_sync(lambda: _answers(http_port), timeout=60, what="the HTTP side")
    bomb = mime_bomb(100_000)
    with ThreadPoolExecutor(8) as pool:
        bombs = [pool.submit(send_expecting_refusal, deployment.address, bomb) for _ in range(6)]
        honest = pool.submit(send_honest, deployment.address, message("during the bombs"))
        statuses = [http_get(http_port)]
        while not all(future.done() for future in bombs):
            statuses.append(http_get(http_port))
        refusals = [future.result() for future in bombs]
        assert honest.result() == {}
    assert refusals == [(552, b"5.3.4 Message has more than 1000 MIME parts")] * 6
    assert set(statuses) == {200}
    (result_file,) = deployment.wait_for_output(1, timeout=180)
    assert json.loads(result_file.read_text())["subject"] == "during the bombs"
    gateway_log = deployment.log("gateway")
    assert "Traceback" not in gateway_log and "messages_too_many_parts" in gateway_log


def _answers(port: int) -> bool:
    try:
        return http_get(port) == 200
    except OSError:
        return False
