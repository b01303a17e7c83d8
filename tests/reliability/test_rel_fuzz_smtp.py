"""Fuzz: SMTP sessions of random command sequences, garbage lines and hostile DATA.

Why: an SMTP server is talked to by every spam bot on the internet. specs/email.md says
what each mistake gets (5xx for bad syntax or unknown commands, 550 for other domains,
552 for too much data, 500 for long lines) and that "one session's errors never affect
another session or the server". Each line's reply is checked; after the batch a clean
message must still be accepted.
"""

from __future__ import annotations

import smtplib

from hypothesis import given
from hypothesis import strategies as st
from rel_clients import SmtpRaw
from rel_fuzz import assert_no_reply_channel, end_batch, fuzz_settings
from rel_harness import SMTP_MAX_MESSAGE, FuzzLedger, FuzzTarget
from support.waiting import deadline

COMMANDS = [
    b"HELO client.test", b"EHLO client.test", b"MAIL FROM:<alice@example.org>", b"MAIL FROM:<>",
    b"RCPT TO:<bob@example.com>", b"RCPT TO:<mallory@elsewhere.org>", b"RCPT TO:<@relay.org:bob@example.com>",
    b"DATA", b"RSET", b"NOOP", b"VRFY bob", b"EXPN list", b"HELP", b"QUIT", b"STARTTLS", b"AUTH PLAIN AGFAYgBj",
    b"AUTH LOGIN", b"BDAT 10 LAST", b"MAIL FROM:<alice@example.org> SIZE=999999999", b"MAIL FROM:alice",
    b"RCPT TO:<>", b"MAIL FROM:<\xc3\xa9@example.org> SMTPUTF8", b"RCPT TO:<\xff\xfe@example.com>", b"MAIL FROM:<a@b> BODY=9BIT",
]
# Reply codes a line that is not a command at all may get: syntax errors, or the server
# ending a session that sent too many of them.
GARBAGE_REPLIES = {500, 501, 502, 503, 421, 0}

Step = tuple[str, bytes]


@st.composite
def session(draw: st.DrawFn) -> list[Step]:
    """1-10 steps: commands in any order, garbage lines, long lines, whole mails."""
    steps: list[Step] = []
    for _ in range(draw(st.integers(1, 10))):
        kind = draw(st.sampled_from(["command", "command", "garbage", "long line", "mail"]))
        if kind == "command":
            steps.append(("command", draw(st.sampled_from(COMMANDS))))
        elif kind == "garbage":
            line = draw(st.binary(min_size=1, max_size=200)).replace(b"\n", b" ").replace(b"\r", b" ")
            word = line.split(b" ", 1)[0].upper()
            if word.strip() and not any(c.startswith(word) for c in COMMANDS):
                steps.append(("garbage", line))
        elif kind == "long line":
            steps.append(("long line", b"NOOP " + b"a" * draw(st.integers(1000, 5000))))
        else:
            lines = draw(st.lists(st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
                                  max_size=20))
            variant = draw(st.sampled_from(["plain", "long data line", "too much data"]))
            if variant == "long data line":
                lines.append(b"x" * 1200)
            elif variant == "too much data":
                lines += [b"y" * 900] * (SMTP_MAX_MESSAGE // 900 + 2)
            body = b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines)
            steps.append(("mail " + variant, body))
    return steps


def run_session(address: tuple[str, int], steps: list[Step]) -> list[str]:
    """Play one session; the outcomes, each checked against specs/email.md."""
    client = SmtpRaw(address)
    outcomes = []
    try:
        assert client.banner[0] == 220
        for kind, data in steps:
            if kind.startswith("mail"):
                for command in (b"EHLO client.test", b"MAIL FROM:<alice@example.org>", b"RCPT TO:<bob@example.com>"):
                    code, text = client.command(command)
                    if code == 0:
                        return [*outcomes, "closed"]
                code, text = client.command(b"DATA")
                if code != 354:
                    outcomes.append(f"{kind}: DATA {code}")
                    continue
                client.send_raw(data + b"\r\n.\r\n")
                code, text = client.reply()
                allowed = {"mail plain": {250, 554}, "mail long data line": {500}, "mail too much data": {552}}[kind]
                assert code in allowed, f"{kind}: {data[:100]!r} -> {code} {text}"
            else:
                code, text = client.command(data)
                if kind == "garbage":
                    assert code in GARBAGE_REPLIES, f"garbage {data!r} -> {code} {text}"
                elif kind == "long line":
                    assert code in {500, 0}, f"long line -> {code} {text}"
                elif data.startswith(b"RCPT TO:<mallory"):
                    assert code in {550, 503}, f"{data!r} -> {code} {text}"
                elif data == b"QUIT":
                    assert code == 221
                else:
                    assert code == 0 or (200 <= code < 600 and code not in (451, 452, 554)), f"{data!r} -> {code} {text}"
            assert_no_reply_channel(text.encode(), "an SMTP reply")
            outcomes.append(f"{kind}: {code or 'closed'}" if kind != "command" else f"{data.split(b' ')[0].decode()}: {code}")
            if code in (0, 221, 421):
                break
    finally:
        client.close()
    return outcomes


def test_random_smtp_sessions_get_smtp_errors_and_the_server_keeps_accepting(
    fuzz_target: FuzzTarget, fuzz_ledger: FuzzLedger
) -> None:
    """Each bad line gets its 5xx, each session ends cleanly, mail is accepted afterwards."""
    fuzz_target.begin()
    before = fuzz_target.stats("smtp")

    @fuzz_settings(80)
    @given(steps=session())
    def one(steps: list[Step]) -> None:
        for outcome in run_session(fuzz_target.smtp_address, steps):
            fuzz_ledger.record("smtp", fuzz_target.name, outcome)

    one()
    with smtplib.SMTP(*fuzz_target.smtp_address, timeout=deadline(10)) as client:
        client.sendmail("alice@example.org", ["bob@example.com"], b"Subject: still here\r\n\r\nhello\r\n")
    after = fuzz_target.stats("smtp")
    if before is not None and after is not None:
        assert after.get("errors", 0) == before.get("errors", 0), "the plugin hit an unexpected error (451)"
        assert after["messages_in"] > before.get("messages_in", 0)
    end_batch(fuzz_target, fuzz_ledger)
