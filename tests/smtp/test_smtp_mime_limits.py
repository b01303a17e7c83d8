"""MIME bombs against the SMTP plugin, with real smtplib clients and raw sockets.

A mail of 100,000 MIME parts cost ~30-60 s of gateway CPU, and the parse went on after the
sender hung up. Now the parse runs in a parser process, stops at ``max_mime_parts`` (552),
``max_mime_depth`` (554) or ``max_header_size`` (552), and the process is killed when the
sender leaves. Nothing here is timed: the tests check the answers, that other clients are
served meanwhile, and that an abandoned parser process is gone.
"""

from __future__ import annotations

import asyncio
import os
import smtplib
from typing import Any

import pytest
from support.waiting import deadline, wait_until

from switchboard.gateway.config import ConfigError
from switchboard.gateway.plugins import build_plugins
from switchboard.protocols.smtp import HEADER_TOO_LONG, PARSE_TOO_SLOW, TOO_DEEP, TOO_MANY_PARTS

from .conftest import RawClient, Stack

#: Safety net for a bomb's answer: well under a second on an idle machine, more under load.
BOMB_WAIT = deadline(120)


def simple_message(subject: str) -> bytes:
    return b"From: a@example.org\r\nTo: b@example.com\r\nSubject: " + subject.encode() + b"\r\n\r\nhello\r\n"


def bomb(parts: int) -> bytes:
    """A multipart/mixed mail of ``parts`` tiny text parts (about 36 bytes each)."""
    body = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(parts))
    return (b"From: a@example.org\r\nTo: b@example.com\r\nSubject: bomb\r\n"
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + body + b"--b--\r\n")


def nested(levels: int) -> bytes:
    body = b"".join(b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1) for i in range(levels))
    return b"Subject: deep\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n" + body


def refusal(stack: Stack, raw: bytes) -> tuple[int, str]:
    """Send ``raw`` expecting a refusal of DATA; its code and text (blocking)."""
    with smtplib.SMTP(*stack.address, timeout=BOMB_WAIT) as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("a@example.org", ["b@example.com"], raw)
    return refused.value.smtp_code, refused.value.smtp_error.decode()


def accepted_by(stack: Stack, raw: bytes) -> dict[str, Any]:
    """Send ``raw`` with the bombs' patience (blocking); smtplib's refused-recipients dict."""
    with smtplib.SMTP(*stack.address, timeout=BOMB_WAIT) as client:
        return client.sendmail("a@example.org", ["b@example.com"], raw)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_part_bomb_gets_552_and_another_clients_mail_is_served_meanwhile(stack: Any) -> None:
    running: Stack = await stack()
    bombs = [asyncio.to_thread(refusal, running, bomb(100_000)) for _ in range(3)]
    honest = asyncio.to_thread(accepted_by, running, simple_message("meanwhile"))
    *answers, accepted = await asyncio.gather(*bombs, honest)
    assert accepted == {}
    assert (await running.next(BOMB_WAIT)).email.subject == "meanwhile"
    expected = TOO_MANY_PARTS.format(limit=1000)
    assert answers == [(int(expected[:3]), expected[4:])] * 3
    stats = running.plugin.stats()
    assert stats["messages_too_many_parts"] == 3 and stats["messages_in"] == 1
    assert running.received.empty()  # no part of a bomb reached a consumer
    assert not any(running.plugin.storage.directory.iterdir())  # nor the disk


async def test_a_message_at_the_part_limit_is_delivered(stack: Any) -> None:
    running: Stack = await stack(max_mime_parts=50)
    await running.send(bomb(50))
    email = (await running.next()).email
    assert email.subject == "bomb" and len(email.attachments) == 49  # the first text part is the body
    code, text = await asyncio.to_thread(refusal, running, bomb(51))
    assert f"{code} {text}" == TOO_MANY_PARTS.format(limit=50)


async def test_deep_nesting_gets_554(stack: Any) -> None:
    running: Stack = await stack(max_mime_depth=10)
    code, text = await asyncio.to_thread(refusal, running, nested(11))
    assert f"{code} {text}" == TOO_DEEP.format(limit=10)
    assert running.plugin.stats()["messages_too_deep"] == 1
    await running.send(nested(10) + b"--b10--\r\n")  # ten levels are fine
    assert (await running.next()).email.subject == "deep"


async def test_a_huge_address_header_gets_552_before_it_is_decoded(stack: Any) -> None:
    running: Stack = await stack()
    # 100,000 addresses in one folded To: header: minutes of CPU to decode.
    to = b",\r\n ".join(b"a%d@example.com" % i for i in range(100_000))
    raw = b"From: a@example.org\r\nTo: " + to + b"\r\nSubject: huge\r\n\r\nbody\r\n"
    code, text = await asyncio.to_thread(refusal, running, raw)
    assert f"{code} {text}" == HEADER_TOO_LONG.format(limit=100 * 1024)
    assert running.plugin.stats()["messages_header_too_long"] == 1
    await running.send(simple_message(subject="next"))
    assert (await running.next()).email.subject == "next"


async def test_sender_hanging_up_mid_parse_kills_its_parser_process(stack: Any) -> None:
    # Limits off, so the bomb keeps a parser busy for many seconds: long enough to leave.
    running: Stack = await stack(max_mime_parts=10_000_000)
    raw = await asyncio.to_thread(RawClient, running.address)
    try:
        await asyncio.to_thread(raw.command, b"HELO x")
        await asyncio.to_thread(raw.command, b"MAIL FROM:<a@example.org>")
        await asyncio.to_thread(raw.command, b"RCPT TO:<b@example.com>")
        assert (await asyncio.to_thread(raw.command, b"DATA"))[0] == 354
        await asyncio.to_thread(raw.sock.sendall, bomb(100_000) + b".\r\n")
        await wait_until(lambda: bool(running.plugin.parser.busy_pids()), 120, "the parse to start")
        (pid,) = running.plugin.parser.busy_pids()
    finally:
        raw.close()  # the sender hangs up mid-parse
    await wait_until(lambda: running.plugin.stats()["parses_abandoned"] == 1, 10, "the parse to be abandoned")
    await wait_until(lambda: not pid_alive(pid), 10, "the parser process to be gone")
    assert running.plugin.parser.killed == 1
    await running.send(simple_message(subject="after"))  # a fresh process serves the next one
    assert (await running.next()).email.subject == "after"
    assert running.received.empty()


async def test_parse_over_parse_timeout_gets_451_and_its_process_is_killed(stack: Any) -> None:
    running: Stack = await stack(max_mime_parts=10_000_000, parse_timeout=0.5)
    code, text = await asyncio.to_thread(refusal, running, bomb(100_000))
    assert (code, text) == (451, PARSE_TOO_SLOW[4:])
    stats = running.plugin.stats()
    assert stats["messages_parse_timeout"] == 1 and running.plugin.parser.killed == 1
    await running.send(simple_message(subject="after"))
    assert (await running.next()).email.subject == "after"


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"max_mime_parts": 0}, "max_mime_parts"),
        ({"max_mime_depth": 0}, "max_mime_depth"),
        ({"max_header_size": 0}, "max_header_size"),
        ({"parser_processes": 0}, "parser_processes"),
        ({"parse_timeout": 0}, "parse_timeout"),
    ],
)
def test_bad_parse_options_fail_before_start(options: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        build_plugins({"smtp": {"domains": ["example.com"], **options}})
