"""Per-address and per-session limits of the SMTP plugin, with real smtplib clients.

``max_sessions_per_ip`` is checked from two loopback addresses (127.0.0.1 and 127.0.0.2,
both routed to the gateway on Linux): one address over its limit is refused with 421 while
the other is served. Nothing here is timed; waits poll the plugin's state with a safety net.
"""

from __future__ import annotations

import asyncio
import smtplib
import socket
from email.message import EmailMessage
from typing import Any

import pytest
from support.waiting import wait_until

from switchboard.gateway.config import ConfigError
from switchboard.gateway.plugins import build_plugins
from switchboard.protocols.smtp import TOO_BUSY_FROM_IP, TOO_MANY_MESSAGES, SmtpOptions, peer_ip

from .conftest import WAIT, RawClient, Stack, client_tls_context, smtp_options

OTHER_ADDRESS = "127.0.0.2"


def message(subject: str) -> EmailMessage:
    mail = EmailMessage()
    mail["From"] = "alice@example.org"
    mail["To"] = "bob@example.com"
    mail["Subject"] = subject
    mail.set_content("hello\n")
    return mail


def connect(address: tuple[str, int], source: str = "127.0.0.1") -> smtplib.SMTP:
    """An smtplib session from ``source`` (blocking: call through ``asyncio.to_thread``)."""
    client = smtplib.SMTP(address[0], address[1], local_hostname="client.test", timeout=WAIT,
                          source_address=(source, 0))
    client.ehlo()
    return client


def send_from(address: tuple[str, int], source: str, subject: str) -> None:
    with connect(address, source) as client:
        client.send_message(message(subject))


def loopback_alias_available() -> bool:
    try:
        with socket.socket() as sock:
            sock.bind((OTHER_ADDRESS, 0))
    except OSError:
        return False
    return True


needs_alias = pytest.mark.skipif(not loopback_alias_available(), reason=f"cannot bind {OTHER_ADDRESS}")


@needs_alias
async def test_sixth_session_from_one_address_gets_421_and_others_are_served(stack: Any) -> None:
    running: Stack = await stack(max_sessions_per_ip=5)
    first_five = [await asyncio.to_thread(connect, running.address) for _ in range(5)]
    assert running.plugin.sessions_per_ip == {"127.0.0.1": 5}

    with pytest.raises(smtplib.SMTPConnectError) as refused:
        await asyncio.to_thread(connect, running.address)
    assert refused.value.smtp_code == 421
    assert refused.value.smtp_error == TOO_BUSY_FROM_IP[4:].encode()
    stats = running.plugin.stats()
    assert stats["sessions_refused_per_ip"] == 1 and stats["connections_opened"] == 5 and stats["sessions_refused"] == 0

    # Another address is not affected: it gets a session and its mail goes through.
    await asyncio.to_thread(send_from, running.address, OTHER_ADDRESS, "from elsewhere")
    received = await running.next()
    assert received.email.subject == "from elsewhere" and received.message["peer"][0] == OTHER_ADDRESS
    # ...and the five open sessions still work.
    for client in first_five:
        assert (await asyncio.to_thread(client.noop))[0] == 250

    # A session that ends frees its address's slot.
    await asyncio.to_thread(first_five.pop().quit)
    await wait_until(lambda: running.plugin.sessions_per_ip.get("127.0.0.1") == 4, what="the slot to be freed")
    await asyncio.to_thread(send_from, running.address, "127.0.0.1", "after a slot was freed")
    assert (await running.next()).email.subject == "after a slot was freed"

    for client in first_five:
        await asyncio.to_thread(client.quit)
    await wait_until(lambda: not running.plugin.sessions, what="every session to end")
    assert running.plugin.sessions_per_ip == {}
    assert running.plugin.stats()["sessions_refused_per_ip"] == 1


async def test_refused_client_gets_the_421_line_and_is_hung_up(stack: Any) -> None:
    running: Stack = await stack(max_sessions_per_ip=1)

    def dialogue() -> None:  # blocking socket calls: run in a thread, the gateway's loop is here
        held = RawClient(running.address)
        assert held.banner[0] == 220
        refused = RawClient(running.address)
        try:
            assert refused.banner == (421, TOO_BUSY_FROM_IP)
            assert refused.file.readline() == b""  # closed by the server, no banner after it
        finally:
            refused.close()
        assert held.command(b"NOOP")[0] == 250  # the admitted session is untouched
        held.close()

    await asyncio.to_thread(dialogue)
    await wait_until(lambda: not running.plugin.sessions_per_ip, what="the held session to end")
    assert running.plugin.stats()["sessions_refused_per_ip"] == 1


async def test_starttls_session_is_counted_once(stack: Any, tls_files: tuple[str, str]) -> None:
    """aiosmtpd calls ``connection_made`` again after STARTTLS: that must not count twice."""
    cert_file, key_file = tls_files
    running: Stack = await stack(max_sessions_per_ip=1, tls_cert_file=cert_file, tls_key_file=key_file)

    def tls_session(subject: str) -> None:
        with smtplib.SMTP(*running.address, local_hostname="client.test", timeout=WAIT) as client:
            client.starttls(context=client_tls_context(cert_file))
            client.send_message(message(subject))

    for subject in ("over tls 1", "over tls 2"):  # the second needs the first's slot back
        await asyncio.to_thread(tls_session, subject)
        assert (await running.next()).message["tls"] is True
        await wait_until(lambda: not running.plugin.sessions_per_ip, what="the TLS session to be released")
    stats = running.plugin.stats()
    assert stats["connections_opened"] == 2 and stats["sessions_refused_per_ip"] == 0


async def test_message_over_max_messages_per_session_gets_421_and_a_new_session_goes_on(stack: Any) -> None:
    running: Stack = await stack(max_messages_per_session=2)
    client = await asyncio.to_thread(connect, running.address)
    for n in (1, 2):
        await asyncio.to_thread(client.send_message, message(f"message {n}"))
        assert (await running.next()).email.subject == f"message {n}"
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        await asyncio.to_thread(client.send_message, message("message 3"))
    assert refused.value.smtp_code == 421
    assert refused.value.smtp_error == TOO_MANY_MESSAGES[4:].encode()
    client.close()  # smtplib closes on 421 itself; the server hung up too (below)
    assert running.plugin.stats()["sessions_over_message_limit"] == 1

    # The limit is per session: a new one carries on.
    await asyncio.to_thread(send_from, running.address, "127.0.0.1", "message 3, again")
    assert (await running.next()).email.subject == "message 3, again"
    stats = running.plugin.stats()
    assert stats["messages_in"] == 3 and stats["sessions_over_message_limit"] == 1


async def test_server_closes_the_session_after_the_message_limit(stack: Any) -> None:
    """Every ``MAIL`` counts (RSET does not undo it), and the 421 is followed by a hang-up."""
    running: Stack = await stack(max_messages_per_session=2)

    def dialogue() -> None:
        raw = RawClient(running.address)
        try:
            assert raw.command(b"EHLO client.test")[0] == 250
            for _ in range(2):
                assert raw.command(b"MAIL FROM:<alice@example.org>")[0] == 250
                assert raw.command(b"RSET")[0] == 250
            assert raw.command(b"MAIL FROM:<alice@example.org>") == (421, TOO_MANY_MESSAGES)
            assert raw.file.readline() == b""
        finally:
            raw.close()

    await asyncio.to_thread(dialogue)
    await wait_until(lambda: not running.plugin.sessions, what="the session to end")
    assert running.plugin.sessions_per_ip == {}
    assert running.plugin.stats()["sessions_over_message_limit"] == 1


def test_defaults_and_off() -> None:
    options = smtp_options()
    assert options.max_sessions_per_ip == 20 and options.max_messages_per_session == 1000
    off = smtp_options(max_sessions_per_ip=None, max_messages_per_session=None)
    assert off.max_sessions_per_ip is None and off.max_messages_per_session is None
    assert isinstance(off, SmtpOptions)


async def test_limits_off_let_one_address_use_every_session(stack: Any) -> None:
    running: Stack = await stack(max_sessions_per_ip=None, max_sessions=3)
    clients = [await asyncio.to_thread(connect, running.address) for _ in range(3)]
    assert running.plugin.stats()["sessions_refused_per_ip"] == 0
    for client in clients:
        await asyncio.to_thread(client.quit)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"max_sessions_per_ip": 0}, "max_sessions_per_ip must be at least 1"),
        ({"max_sessions_per_ip": -5}, "max_sessions_per_ip"),
        ({"max_sessions_per_ip": "5"}, "max_sessions_per_ip"),
        ({"max_messages_per_session": 0}, "max_messages_per_session must be at least 1"),
        ({"max_messages_per_session": 1.5}, "max_messages_per_session"),
    ],
)
def test_bad_limit_options_fail_before_start(options: dict[str, Any], error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        build_plugins({"smtp": {"domains": ["example.com"], **options}})


@pytest.mark.parametrize(
    ("peername", "expected"),
    [
        (("192.0.2.1", 25), "192.0.2.1"),
        (("::ffff:192.0.2.1", 25, 0, 0), "192.0.2.1"),
        (("2001:DB8::1", 25, 0, 0), "2001:db8::1"),
        (("fe80::1%eth0", 25, 0, 2), "fe80::1%eth0"),
        (None, None),
        ("/tmp/socket", None),
    ],
)
def test_peer_ip(peername: Any, expected: str | None) -> None:
    assert peer_ip(peername) == expected
