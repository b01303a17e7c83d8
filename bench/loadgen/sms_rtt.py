"""SMS webhook load: signed Twilio-style webhooks over N keep-alive connections.

Each connection is a closed loop: POST an incoming-message webhook to ``/sms/inbound``
(the form fields Twilio sends, a new ``MessageSid`` every time so no de-duplication
kicks in, ``X-Twilio-Signature`` computed with twilio's own ``RequestValidator`` for the
public URL the server is configured with), read the answer, check it is 200 and exactly
the TwiML ``<Response><Message>echo: <Body></Message></Response>``, send the next. The
signature is computed before the clock starts for each request, so it is client work
only. Two measurements, one server start: ``x1`` (one connection) and ``xN``.

Run as ``python -m bench.loadgen.sms_rtt --url http://127.0.0.1:PORT/sms/inbound``.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time
from dataclasses import dataclass, field
from urllib.parse import urlencode, urlsplit

from twilio.request_validator import RequestValidator
from twilio.twiml.messaging_response import MessagingResponse

from bench.loadgen.common import emit, run, summarize_ns
from bench.loadgen.windowed import phases
from bench.plugins_site.common import (
    SMS_ACCOUNT_SID,
    SMS_AUTH_TOKEN,
    SMS_FROM,
    SMS_PUBLIC_BASE_URL,
    SMS_REPLY_PREFIX,
    SMS_TO,
)

BODY = "hello from the bench"


@dataclass
class State:
    measuring: bool = False
    stopping: bool = False
    latencies_ns: list[int] = field(default_factory=list)
    requests: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(what)


class Webhooks:
    """Builds signed requests: unique MessageSid, the fields Twilio sends."""

    def __init__(self, host: str, port: int, path: str) -> None:
        self.head = f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        self.public_url = SMS_PUBLIC_BASE_URL + path
        self.validator = RequestValidator(SMS_AUTH_TOKEN)
        self.run_token = secrets.token_hex(4)
        self.counter = 0
        response = MessagingResponse()
        response.message(SMS_REPLY_PREFIX + BODY)
        self.expected = str(response).encode()

    def build(self) -> bytes:
        self.counter += 1
        sid = f"SM{self.run_token}{self.counter:024x}"
        params = {
            "ToCountry": "US", "ToState": "CA", "SmsMessageSid": sid, "NumMedia": "0", "ToCity": "",
            "FromZip": "", "SmsSid": sid, "FromState": "NY", "SmsStatus": "received", "FromCity": "NEW YORK",
            "Body": BODY, "FromCountry": "US", "To": SMS_TO, "ToZip": "", "NumSegments": "1",
            "MessageSid": sid, "AccountSid": SMS_ACCOUNT_SID, "From": SMS_FROM, "ApiVersion": "2010-04-01",
        }
        body = urlencode(params).encode()
        signature = self.validator.compute_signature(self.public_url, params)
        return (self.head + f"X-Twilio-Signature: {signature}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = head[9:12]
    length = -1
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length >= 0:
        return status, await reader.readexactly(length)
    chunks = []
    while True:
        size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
        chunks.append((await reader.readexactly(size + 2))[:-2])
        if size == 0:
            return status, b"".join(chunks)


async def connection(host: str, port: int, hooks: Webhooks, state: State, cap: int) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError as exc:
        state.error(f"connect: {exc!r}")
        return
    try:
        for _ in range(cap):
            if state.stopping:
                break
            request = hooks.build()
            counted = state.measuring
            sent = time.perf_counter_ns()
            writer.write(request)
            status, body = await asyncio.wait_for(read_response(reader), 30)
            state.requests += 1
            if status != b"200" or body != hooks.expected:
                state.error(f"status {status.decode(errors='replace')}: {body[:120]!r}")
                continue
            if counted and state.measuring:
                state.latencies_ns.append(time.perf_counter_ns() - sent)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError) as exc:
        if not state.stopping:
            state.error(repr(exc))
    finally:
        writer.close()


async def wait_ready(host: str, port: int, hooks: Webhooks, timeout: float) -> str | None:
    """POST until the TwiML echo comes back (in split mode: once a worker reads the layer)."""
    deadline = time.monotonic() + timeout
    last = "nothing tried"
    while time.monotonic() < deadline:
        try:
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(hooks.build())
                status, body = await asyncio.wait_for(read_response(reader), 10)
            finally:
                writer.close()
            if status == b"200" and body == hooks.expected:
                return None
            last = f"status {status.decode(errors='replace')}: {body[:200]!r}"
        except (OSError, asyncio.IncompleteReadError, TimeoutError) as exc:
            last = repr(exc)
        await asyncio.sleep(0.2)
    return last


async def phase(host: str, port: int, hooks: Webhooks, label: str, conns: int, warmup: float, duration: float,
                cap: int) -> dict[str, object]:
    state = State()
    tasks = [asyncio.create_task(connection(host, port, hooks, state, cap)) for _ in range(conns)]
    await asyncio.sleep(warmup)
    emit("measure_start", label=label)
    errors_before = state.errors
    state.measuring = True
    started = time.perf_counter()
    await asyncio.sleep(duration)
    state.measuring = False
    seconds = time.perf_counter() - started
    emit("measure_end", label=label)
    errors = state.errors - errors_before
    state.stopping = True
    _done, pending = await asyncio.wait(tasks, timeout=10)
    for task in pending:
        task.cancel()
    return {"label": label, "concurrency": conns, **summarize_ns(state.latencies_ns, seconds), "errors": errors,
            "error_samples": state.error_samples}


async def main(args: argparse.Namespace) -> None:
    url = urlsplit(args.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    hooks = Webhooks(host, port, url.path)
    problem = await wait_ready(host, port, hooks, args.ready_timeout)
    if problem is not None:
        print(f"sms_rtt: no TwiML echo from {args.url} within {args.ready_timeout}s: {problem}", file=sys.stderr)
        sys.exit(2)
    rows = [await phase(host, port, hooks, label, conns, warmup, duration, args.max_per_connection)
            for label, conns, warmup, duration in phases(args.connections, args.warmup, args.duration)]
    emit("result", data={"rows": rows, "connections": args.connections, "webhooks_sent": hooks.counter})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--connections", type=int, default=50, help="keep-alive connections in the xN measurement")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--ready-timeout", type=float, default=30.0)
    parser.add_argument("--max-per-connection", type=int, default=1_000_000, help="cap on requests per connection")
    args = parser.parse_args(argv)
    if not args.url.startswith(("http://127.", "http://localhost")):
        parser.error("load goes to this machine only")
    return args


if __name__ == "__main__":
    run(main(parse_args()))
