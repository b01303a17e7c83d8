"""The smtp plugin in process: real plugin, gateway core and worker over the in-memory layer.

The client is the standard library's ``smtplib`` (run in a thread), or a raw socket where
the test needs input smtplib would never produce.
"""

from __future__ import annotations

import asyncio
import hashlib
import smtplib
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from support.waiting import wait_until

from switchboard.gateway.layers import build_layer, set_channel_layer
from switchboard.gateway.server import Gateway
from switchboard.gateway.specs import GATEWAY_TO_WORKER, validate_message
from switchboard.protocols.smtp import SmtpPlugin

from .conftest import WAIT, RawClient, Stack, smtp_client

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 2  # ~520 bytes: inline under a 1 KiB limit
BIG = bytes(range(256)) * 64  # 16 KiB: stored above a 1 KiB limit


def simple_message(subject: str = "Hello", body: str = "Hi Bob!\n", to: str = "bob@example.com") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Alice <alice@example.org>"
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = "<1@example.org>"
    message.set_content(body)
    return message


def rich_message() -> EmailMessage:
    """Text and HTML alternatives, an inline image, a small and a large attachment."""
    message = simple_message(subject="Quarterly report: ünïcode ✓", body="Numbers attached.\nBye\n")
    message["Cc"] = "Carol <carol@example.com>, dave@example.com"
    message.add_alternative("<p>Numbers <img src='cid:logo'> attached.</p>", subtype="html")
    html = message.get_body(("html",))
    assert html is not None
    html.add_related(PNG, maintype="image", subtype="png", cid="<logo>", filename="logo.png")
    message.add_attachment(b"a,b\n1,2\n", maintype="text", subtype="csv", filename="small.csv")
    message.add_attachment(BIG, maintype="application", subtype="octet-stream", filename="big.bin")
    return message


# -- receiving ------------------------------------------------------------------------


async def test_consumer_gets_subject_body_and_attachments(stack: Any, tmp_path: Path) -> None:
    running: Stack = await stack(attachment_inline_limit=1024)
    from email import policy

    sent = rich_message().as_bytes(policy=policy.SMTP)
    await running.send(sent, to_addrs=["bob@example.com", "carol@example.com"])
    got = await running.next()

    assert got.spec_error is None, got.spec_error
    email = got.email
    assert email.subject == "Quarterly report: ünïcode ✓"
    assert email.text == "Numbers attached.\nBye\n"
    assert email.html is not None and "cid:logo" in email.html
    assert email.mail_from == "alice@example.org"
    assert email.rcpt_tos == ["bob@example.com", "carol@example.com"]
    assert email.from_ == "Alice <alice@example.org>"
    assert email.to == ["bob@example.com"]
    assert email.cc == ["Carol <carol@example.com>", "dave@example.com"]
    assert email.message_id == "<1@example.org>"
    assert email.helo == "client.test" and email.tls is False and email.auth_user is None
    assert email.header("subject") == email.subject

    by_name = {a.filename: a for a in email.attachments}
    assert set(by_name) == {"logo.png", "small.csv", "big.bin"}
    assert by_name["logo.png"].content_type == "image/png"
    assert by_name["logo.png"].content_id == "<logo>"
    assert by_name["logo.png"].data == PNG  # small: inline bytes
    assert by_name["small.csv"].data == b"a,b\n1,2\n"
    big = by_name["big.bin"]
    assert big.data is None and big.stored_path is not None and big.size == len(BIG)
    assert got.contents["big.bin"] == BIG  # read from storage inside the handler
    storage = tmp_path / "storage"
    assert Path(big.stored_path).parent == storage.resolve()
    assert "big.bin" not in big.stored_path  # names never come from the message

    # The message is larger than the limit, so the raw bytes were stored too.
    assert got.message.get("raw") is None and got.message["raw_stored_path"]
    assert got.raw == sent
    assert email.size == len(got.raw)

    # The consumer base class deleted the stored files once the handler returned.
    await wait_until(lambda: not any(storage.iterdir()), what="stored files deleted")
    assert running.plugin.stats()["messages_in"] == 1
    assert running.plugin.stats()["parts_stored"] == 2


async def test_small_message_carries_raw_bytes_inline(stack: Any) -> None:
    running: Stack = await stack()
    raw = b"From: a@example.org\r\nTo: bob@example.com\r\nSubject: raw\r\n\r\nline one\r\n.dot line\r\n"
    await running.send(raw)
    got = await running.next()
    assert got.spec_error is None, got.spec_error
    assert got.message["raw"] == raw  # dot-stuffing undone, bytes as sent
    assert "raw_stored_path" not in got.message
    assert got.email.text == "line one\n.dot line\n"
    assert got.email.date is None and got.email.attachments == []
    assert got.scope["type"] == "email" and got.scope["server"] == list(running.address)
    assert got.scope["hostname"] == "mx.test"


async def test_undeclared_8bit_and_unknown_charset_become_valid_text(stack: Any) -> None:
    running: Stack = await stack()
    raw = (
        b"From: =?utf-8?q?J=C3=BCrgen?= <j@example.org>\r\n"
        b"To: bob@example.com\r\n"
        b"Subject: caf\xe9 \xff\r\n"  # latin-1 bytes, no encoded word: not UTF-8
        b"X-Broken: =?bogus-charset?q?abc?=\r\n"
        b"Content-Type: text/plain; charset=no-such-charset\r\n"
        b"\r\n"
        b"caf\xc3\xa9 \xff\r\n"
    )
    await running.send(raw)
    got = await running.next()
    assert got.spec_error is None, got.spec_error
    assert got.email.from_ == "Jürgen <j@example.org>"
    assert got.email.subject.startswith("caf") and "\ufffd" in got.email.subject
    assert got.email.text == "café \ufffd\n"


async def test_malformed_mime_is_still_delivered(stack: Any) -> None:
    running: Stack = await stack()
    raw = (
        b"From: a@example.org\r\nTo: bob@example.com\r\nSubject: broken\r\n"
        b"Content-Type: multipart/mixed; boundary=\"missing\"\r\n\r\n"
        b"no boundary ever appears\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n!!!not base64!!!\r\n"
    )
    await running.send(raw)
    got = await running.next()
    assert got.spec_error is None, got.spec_error
    assert got.email.subject == "broken"


async def test_bounce_with_null_sender(stack: Any) -> None:
    running: Stack = await stack()
    await running.send(simple_message(subject="Undeliverable"), from_addr="<>")
    got = await running.next()
    assert got.email.mail_from == "<>"


async def test_forwarded_message_is_one_attachment(stack: Any) -> None:
    running: Stack = await stack()
    inner = simple_message(subject="original")
    outer = simple_message(subject="Fwd: original", body="see below")
    outer.add_attachment(inner)
    await running.send(outer)
    got = await running.next()
    assert got.spec_error is None, got.spec_error
    (attachment,) = got.email.attachments
    assert attachment.content_type == "message/rfc822"
    assert b"Subject: original" in attachment.read()


async def test_sync_consumer_receives(stack: Any) -> None:
    from switchboard.consumers.email import ReceivedEmail, SyncEmailConsumer

    from .conftest import Received

    class SyncCollector(SyncEmailConsumer):
        sink: Any = None

        def email_received(self, message: dict[str, Any]) -> None:
            email = ReceivedEmail.from_message(message)
            contents = {a.filename: a.read() for a in email.attachments}
            self.sink.put_nowait(Received(message, dict(self.scope), email, contents, email.raw(), None))

    running: Stack = await stack(consumer=SyncCollector, attachment_inline_limit=1024)
    await running.send(rich_message())
    got = await running.next()
    assert got.contents["big.bin"] == BIG
    assert got.email.subject.startswith("Quarterly")


# -- recipients and sizes ------------------------------------------------------------


async def test_recipient_of_another_domain_gets_550(stack: Any) -> None:
    running: Stack = await stack(domains=["example.com", "*.lists.example.net"])
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        await running.send(simple_message(), to_addrs=["eve@elsewhere.org"])
    assert refused.value.recipients["eve@elsewhere.org"][0] == 550

    # Mixed: the accepted recipients get the message, the others are refused.
    refusals = await running.send(simple_message(), to_addrs=["bob@EXAMPLE.com", "x@dev.lists.example.net", "eve@x.org"])
    assert refusals == {"eve@x.org": (550, refusals["eve@x.org"][1])}
    got = await running.next()
    assert got.email.rcpt_tos == ["bob@EXAMPLE.com", "x@dev.lists.example.net"]
    assert running.plugin.stats()["recipients_rejected"] == 2


async def test_too_many_recipients_gets_452(stack: Any) -> None:
    running: Stack = await stack(max_recipients=2)
    refusals = await running.send(simple_message(), to_addrs=["a@example.com", "b@example.com", "c@example.com"])
    assert refusals["c@example.com"][0] == 452
    got = await running.next()
    assert got.email.rcpt_tos == ["a@example.com", "b@example.com"]


async def test_oversized_message_gets_552(stack: Any) -> None:
    running: Stack = await stack(max_message_size=2000)
    # smtplib declares SIZE= (the server advertises the SIZE extension): refused at MAIL.
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        await running.send(simple_message(body="x" * 3000))
    assert refused.value.smtp_code == 552

    def without_size_declaration() -> tuple[int, bytes]:
        with smtp_client(running.address) as client:
            client.ehlo()
            assert "size" in client.esmtp_features and client.esmtp_features["size"] == "2000"
            client.mail("alice@example.org")
            client.rcpt("bob@example.com")
            too_big = client.data(b"Subject: big\r\n\r\n" + (b"y" * 70 + b"\r\n") * 40)
            # The session survives: the next message on it goes through.
            client.mail("alice@example.org")
            client.rcpt("bob@example.com")
            assert client.data(b"Subject: after\r\n\r\nsmall\r\n")[0] == 250
            return too_big

    code, _ = await asyncio.to_thread(without_size_declaration)
    assert code == 552
    got = await running.next()
    assert got.email.subject == "after"


# -- bad input on the wire -------------------------------------------------------------


async def test_garbage_and_malformed_commands_get_5xx_and_server_keeps_serving(stack: Any) -> None:
    running: Stack = await stack()

    def misbehave() -> list[int]:
        raw = RawClient(running.address)
        assert raw.banner[0] == 220
        codes = [
            raw.command(b"\xff\xfe\x00garbage")[0],  # not ASCII
            raw.command(b"MAIL FROM:<a@example.org>")[0],  # before HELO
            raw.command(b"EHLO client.test")[0],
            raw.command(b"MAIL FROM:<\xffbad@example.org>")[0],  # not UTF-8
            raw.command(b"MAIL TO:<a@example.org>")[0],  # wrong keyword
            raw.command(b"MAIL FROM:<a@example.org>")[0],
            raw.command(b"RCPT TO:<b@example.com> NOTIFY=NEVER")[0],  # unknown parameter
            raw.command(b"RCPT TO:<\xffb@example.com>")[0],
            raw.command(b"DATA")[0],  # no recipient yet
            raw.command(b"X" * 5000)[0],  # line too long
            raw.command(b"")[0],
        ]
        raw.close()
        return codes

    codes = await asyncio.to_thread(misbehave)
    assert codes[2] == 250 and codes[5] == 250
    for code in codes[:2] + codes[3:5] + codes[6:]:
        assert 500 <= code < 600, codes
    assert codes[3] == 553

    def too_many_unknown_commands() -> int:
        raw = RawClient(running.address)
        for _ in range(4):
            assert raw.command(b"BOGUS")[0] == 500
        code = raw.command(b"BOGUS")[0]
        raw.close()
        return code

    assert await asyncio.to_thread(too_many_unknown_commands) == 502

    def hang_up_mid_data() -> None:
        raw = RawClient(running.address)
        raw.command(b"HELO x")
        raw.command(b"MAIL FROM:<a@example.org>")
        raw.command(b"RCPT TO:<b@example.com>")
        assert raw.command(b"DATA")[0] == 354
        raw.sock.sendall(b"Subject: half\r\n\r\npartial")
        raw.close()

    await asyncio.to_thread(hang_up_mid_data)
    # After all that, a well-behaved client is served.
    await running.send(simple_message(subject="still alive"))
    got = await running.next()
    assert got.email.subject == "still alive"
    assert running.received.empty()  # the half message never became an event


async def test_channel_full_gets_451_and_leaves_no_files(tmp_path: Path) -> None:
    layer = build_layer({"BACKEND": "memory", "CONFIG": {
        "block_timeout": 0.05, "channel_capacity": {"switchboard.email": 1, "gateway.*": 100},
    }})
    set_channel_layer(layer)
    from .conftest import smtp_options

    gateway = Gateway(layer)
    await gateway.start()
    storage = tmp_path / "storage"
    plugin = SmtpPlugin(smtp_options(storage_path=str(storage), attachment_inline_limit=1024))
    await plugin.start(gateway)
    assert plugin.address is not None
    try:
        message = rich_message()
        from .conftest import send

        await asyncio.to_thread(send, plugin.address, message)  # fills the pool channel (no worker)
        stored_after_first = set(storage.iterdir())
        assert stored_after_first
        with pytest.raises(smtplib.SMTPDataError) as deferred:
            await asyncio.to_thread(send, plugin.address, message)
        assert deferred.value.smtp_code == 451
        assert set(storage.iterdir()) == stored_after_first  # the refused message's files are gone
        stats = plugin.stats()
        assert stats["events_full"] == 1 and stats["messages_in"] == 1
        # Once there is room again, the retry is accepted.
        await layer.receive("switchboard.email")
        await asyncio.to_thread(send, plugin.address, message)
        envelope = await asyncio.wait_for(layer.receive("switchboard.email"), WAIT)
        validate_message(envelope["event"], direction=GATEWAY_TO_WORKER)
    finally:
        await plugin.stop(1.0)
        await gateway.stop()
        set_channel_layer(None)
        await layer.close()


async def test_layer_failure_gets_451(stack: Any) -> None:
    running: Stack = await stack(worker=False)

    async def broken_send(connection: Any, event: Any) -> None:
        raise ConnectionError("redis went away")

    running.gateway.send_event = broken_send  # type: ignore[method-assign]
    with pytest.raises(smtplib.SMTPDataError) as deferred:
        await running.send(simple_message())
    assert deferred.value.smtp_code == 451
    assert running.plugin.stats()["events_failed"] == 1


async def test_outbound_messages_are_counted_and_dropped(stack: Any) -> None:
    running: Stack = await stack(worker=False)
    assert running.plugin.connection is not None
    await running.layer.send(running.plugin.connection.channel, {"type": "email.send", "to": "x@example.com"})
    await wait_until(lambda: running.plugin.stats().get("replies_invalid") == 1, what="outbound drop")
    await running.send(simple_message())  # and it keeps serving
    assert running.plugin.stats()["messages_in"] == 1


async def test_stop_hangs_up_idle_sessions_and_closes_the_connection(stack: Any) -> None:
    running: Stack = await stack(worker=False)
    client = await asyncio.to_thread(smtp_client, running.address)
    await asyncio.to_thread(client.ehlo)
    connection = running.plugin.connection
    assert connection is not None and connection.open
    await running.stop()
    assert not connection.open
    with pytest.raises((smtplib.SMTPServerDisconnected, OSError)):
        await asyncio.to_thread(client.noop)
    with pytest.raises(OSError):
        await asyncio.to_thread(smtp_client, running.address, 2)


# -- AUTH and STARTTLS ----------------------------------------------------------------


def pbkdf2(password: str, salt: str = "testsalt", iterations: int = 1000) -> str:
    import base64

    digest = hashlib.pbkdf2_hmac("sha256", password.encode(), salt.encode(), iterations)
    return f"pbkdf2_sha256${iterations}${salt}${base64.b64encode(digest).decode()}"


def test_hashes_are_djangos_format() -> None:
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    from switchboard.protocols.smtp import check_password

    encoded = PBKDF2PasswordHasher().encode("s3cret", "somesalt", iterations=1000)
    assert check_password(encoded, b"s3cret")
    assert not check_password(encoded, b"wrong")
    assert pbkdf2("s3cret", "somesalt") == encoded
    assert check_password("plain", b"plain") and not check_password("plain", b"plain2")


async def test_auth_over_starttls(stack: Any, tls_files: tuple[str, str]) -> None:
    from .conftest import client_tls_context

    cert, key = tls_files
    running: Stack = await stack(
        tls_cert_file=cert, tls_key_file=key, require_auth=True,
        users={"alice": pbkdf2("s3cret"), "bob": "plain-pw"},
    )

    def session(user: str, password: str, starttls: bool = True) -> dict[str, Any]:
        with smtp_client(running.address) as client:
            client.ehlo()
            before_tls = client.has_extn("auth")
            if starttls:
                client.starttls(context=client_tls_context(cert))
                client.ehlo()
            client.login(user, password)
            client.send_message(simple_message(subject=f"from {user}"))
            return {"auth_before_tls": before_tls}

    result = await asyncio.to_thread(session, "alice", "s3cret")
    assert result["auth_before_tls"] is False  # AUTH is only offered over TLS
    got = await running.next()
    assert got.email.auth_user == "alice" and got.email.tls is True
    assert got.email.subject == "from alice"

    await asyncio.to_thread(session, "bob", "plain-pw")
    assert (await running.next()).email.auth_user == "bob"

    with pytest.raises(smtplib.SMTPAuthenticationError) as denied:
        await asyncio.to_thread(session, "alice", "wrong")
    assert denied.value.smtp_code == 535
    with pytest.raises(smtplib.SMTPAuthenticationError):
        await asyncio.to_thread(session, "nobody", "s3cret")
    with pytest.raises(smtplib.SMTPNotSupportedError):
        await asyncio.to_thread(session, "alice", "s3cret", False)

    def unauthenticated() -> int:
        with smtp_client(running.address) as client:
            client.starttls(context=client_tls_context(cert))
            client.ehlo()
            return client.mail("alice@example.org")[0]

    assert await asyncio.to_thread(unauthenticated) == 530
    stats = running.plugin.stats()
    # smtplib's login() tries PLAIN, then LOGIN: two failed attempts per failed login.
    assert stats["auth_succeeded"] == 2 and stats["auth_failed"] == 4


async def test_require_starttls(stack: Any, tls_files: tuple[str, str]) -> None:
    from .conftest import client_tls_context

    cert, key = tls_files
    running: Stack = await stack(tls_cert_file=cert, tls_key_file=key, require_starttls=True)

    def plain() -> int:
        with smtp_client(running.address) as client:
            client.ehlo()
            return client.mail("alice@example.org")[0]

    assert await asyncio.to_thread(plain) == 530

    def encrypted() -> None:
        with smtp_client(running.address) as client:
            client.starttls(context=client_tls_context(cert))
            client.send_message(simple_message(subject="over tls"))

    await asyncio.to_thread(encrypted)
    got = await running.next()
    assert got.email.tls is True and got.email.auth_user is None


async def test_no_auth_offered_without_users(stack: Any, tls_files: tuple[str, str]) -> None:
    from .conftest import client_tls_context

    cert, key = tls_files
    running: Stack = await stack(tls_cert_file=cert, tls_key_file=key)

    def features() -> bool:
        with smtp_client(running.address) as client:
            client.starttls(context=client_tls_context(cert))
            client.ehlo()
            return client.has_extn("auth")

    assert await asyncio.to_thread(features) is False


async def test_auth_without_tls_when_explicitly_allowed(stack: Any) -> None:
    running: Stack = await stack(users={"carol": "pw"}, auth_require_tls=False)

    def session() -> None:
        with smtp_client(running.address) as client:
            client.login("carol", "pw")
            client.send_message(simple_message())

    await asyncio.to_thread(session)
    assert (await running.next()).email.auth_user == "carol"


async def test_stop_lets_a_message_in_flight_reach_the_layer(stack: Any) -> None:
    running: Stack = await stack(worker=False)
    gate = asyncio.Event()
    original = running.gateway.send_event

    async def slow_send(connection: Any, event: Any) -> None:
        await gate.wait()
        await original(connection, event)

    running.gateway.send_event = slow_send  # type: ignore[method-assign]
    sending = asyncio.ensure_future(running.send(simple_message(subject="in flight")))
    await wait_until(lambda: running.plugin._in_flight == 1, what="message in flight")
    stopping = asyncio.ensure_future(running.plugin.stop(5.0))
    await asyncio.sleep(0.05)
    assert not stopping.done()
    gate.set()
    assert await sending == {}  # the sender got 250: the message is on the layer
    await stopping
    envelope = await asyncio.wait_for(running.layer.receive("switchboard.email"), WAIT)
    assert envelope["event"]["subject"] == "in flight"


# -- configuration --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({}, "domains"),
        ({"domains": ["ex ample.com"]}, "not a domain"),
        ({"domains": ["user@example.com"]}, "not a domain"),
        ({"domains": ["example.com"], "bind": "nowhere"}, "host:port"),
        ({"domains": ["example.com"], "max_message_size": 0}, "max_message_size"),
        ({"domains": ["example.com"], "users": {"a": "pw"}}, "TLS"),
        ({"domains": ["example.com"], "require_auth": True}, "require_auth needs users"),
        ({"domains": ["example.com"], "require_starttls": True}, "require_starttls"),
        ({"domains": ["example.com"], "tls_cert_file": "/nonexistent.pem"}, "go together"),
        ({"domains": ["example.com"], "tls_cert_file": "/nope.pem", "tls_key_file": "/nope.key"}, "not a readable"),
        ({"domains": ["example.com"], "users": {"a": "pbkdf2_sha256$x$y$z"}, "auth_require_tls": False}, "hashed"),
        ({"domains": ["example.com"], "max_mesage_size": 5}, "unknown option"),
        ({"domains": ["example.com"], "host": "x"}, "host"),
    ],
)
def test_bad_options_fail_before_start(options: dict[str, Any], error: str) -> None:
    from switchboard.gateway.config import ConfigError
    from switchboard.gateway.plugins import build_plugins

    with pytest.raises(ConfigError, match=error):
        build_plugins({"smtp": options})


def test_domain_matching() -> None:
    from .conftest import smtp_options

    options = smtp_options(domains=["Example.COM.", "*.lists.example.net", "bücher.de"])
    assert options.accepts_domain("example.com") and options.accepts_domain("EXAMPLE.com.")
    assert options.accepts_domain("a.lists.example.net") and options.accepts_domain("b.a.lists.example.net")
    assert not options.accepts_domain("lists.example.net") and not options.accepts_domain("evil-example.com")
    assert options.accepts_domain("xn--bcher-kva.de") and options.accepts_domain("BÜCHER.de")
    assert smtp_options(domains=["*"]).accepts_domain("anything.org")


async def test_storage_path_that_is_a_symlink_is_refused(layer: Any, tmp_path: Path) -> None:
    from .conftest import smtp_options

    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    plugin = SmtpPlugin(smtp_options(storage_path=str(link)))
    gateway = Gateway(layer)
    with pytest.raises(RuntimeError, match="symlink"):
        await plugin.start(gateway)
    assert plugin.address is None


async def test_sessions_over_max_sessions_get_421(stack: Any) -> None:
    running: Stack = await stack(max_sessions=1)
    first = await asyncio.to_thread(smtp_client, running.address)
    await asyncio.to_thread(first.ehlo)
    with pytest.raises(smtplib.SMTPConnectError) as busy:
        await asyncio.to_thread(smtp_client, running.address)
    assert busy.value.smtp_code == 421
    await asyncio.to_thread(first.quit)
    await wait_until(lambda: not running.plugin.sessions, what="the first session to end")
    await running.send(simple_message(subject="next"))
    assert (await running.next()).email.subject == "next"
    assert running.plugin.stats()["sessions_refused"] == 1


async def test_example_consumer_posts_to_the_chat_room(stack: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from .conftest import EXAMPLE

    monkeypatch.syspath_prepend(str(EXAMPLE))
    from emaildemo.consumers import MailToChatConsumer, room_of

    assert room_of("Lobby@chat.example.com") == "lobby" and room_of("a.b@x") is None and room_of("../x@y") is None
    running: Stack = await stack(consumer=MailToChatConsumer)
    member = await running.layer.new_channel("test")
    await running.layer.group_add("chat.lobby", member)
    await running.send(simple_message(subject="Lunch?", body="At noon.\n"), to_addrs=["lobby@example.com"])
    posted = await asyncio.wait_for(running.layer.receive(member), WAIT)
    assert posted == {"type": "chat.message", "message": "✉ Alice <alice@example.org>: Lunch? — At noon."}


async def test_message_the_parser_cannot_handle_gets_554(stack: Any) -> None:
    # The depth limit (max_mime_depth) would refuse this before the parser gets deep; with
    # it out of the way, the email package's own failure must still end in a 554.
    running: Stack = await stack(max_mime_depth=100_000)
    # MIME nested deeper than the email package's recursion can follow.
    nested = b"".join(b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1) for i in range(1500))
    raw = b"Subject: deep\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n" + nested
    with pytest.raises(smtplib.SMTPDataError) as refused:
        await running.send(raw)
    assert refused.value.smtp_code == 554
    assert running.plugin.stats()["messages_unparsable"] == 1
    await running.send(simple_message(subject="next"))
    assert (await running.next()).email.subject == "next"


async def test_stalled_data_transfer_is_hung_up(stack: Any) -> None:
    # aiosmtpd's timer also runs while a message is handled, and the handling now includes
    # a round trip to a parser process: 0.3 s hung up the "next" message on a loaded host.
    running: Stack = await stack(timeout=2.0)

    def stall() -> bytes:
        raw = RawClient(running.address)
        raw.command(b"HELO x")
        raw.command(b"MAIL FROM:<a@example.org>")
        raw.command(b"RCPT TO:<b@example.com>")
        assert raw.command(b"DATA")[0] == 354
        raw.sock.sendall(b"Subject: slow\r\n\r\nand then nothing")
        rest = raw.file.read()  # returns once the server closes the connection
        raw.close()
        return rest

    assert await asyncio.to_thread(stall) == b""
    await wait_until(lambda: not running.plugin.sessions, what="the session to end")
    assert running.received.empty()
    await running.send(simple_message(subject="next"))
    assert (await running.next()).email.subject == "next"
