"""Fuzz: malformed HTTP/1.1 requests as raw bytes against a running gateway.

Why raw bytes: the HTTP plugin's parser (uvicorn + httptools) is the first thing a hostile
client reaches; a request that confuses it must end in a 4xx for that client alone, never
in a traceback, a hung connection or a dead gateway. Each strategy below produces inputs
whose correct answer is known (specs/http.md, RFC 9112), so every example checks the
status, not just survival.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from rel_clients import http_exchange, request_bytes
from rel_fuzz import assert_no_reply_channel, end_batch, fuzz_settings
from rel_harness import HTTP_MAX_BODY, FuzzLedger, FuzzTarget

# Characters that may not appear in a method (RFC 9110 token) or a header name.
_NOT_TOKEN = [bytes([c]) for c in b'\x00\x01\x08\x7f()<>@,;\\"/[]?={}'] + [b"\xff", b"\xc3\xa9"]
_TOKEN = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+-.^_`|~", min_size=1, max_size=12)
_PATH = st.text("abcdefghijklmnopqrstuvwxyz0123456789/-._~%!$&'()*+,;=:@", max_size=40).map(lambda p: "/" + p)


@st.composite
def bad_request_line(draw: st.DrawFn) -> tuple[bytes, set[int], str]:
    """A request line with a forbidden byte in the method, or an unknown HTTP version."""
    if draw(st.booleans()):
        method = draw(_TOKEN).encode()
        at = draw(st.integers(0, len(method)))
        method = method[:at] + draw(st.sampled_from(_NOT_TOKEN)) + method[at:]
        line = method + b" / HTTP/1.1"
        kind = "bad method"
    else:
        version = draw(st.sampled_from([b"HTTP/1.2", b"HTTP/3.0", b"HTTP/1.", b"HTTP/x.y", b"HTTPS/1.1", b"HTTP/11",
                                        b"http/1.1", b"HTTP/1.1 extra"]))
        line = b"GET / " + version
        kind = "bad version"
    return line + b"\r\nHost: x\r\n\r\n", {400}, kind


@st.composite
def bad_header(draw: st.DrawFn) -> tuple[bytes, set[int], str]:
    """A header with a forbidden byte in its name, no colon, obs-fold, or a NUL/bare CR in its value."""
    name = draw(_TOKEN).encode()
    value = draw(st.text(" !abcdefghijklmnopqrstuvwxyz0123456789", max_size=20)).encode()
    kind = draw(st.sampled_from(["name byte", "no colon", "obs-fold", "value NUL", "value CR", "space before colon"]))
    if kind == "name byte":
        at = draw(st.integers(0, len(name)))
        header = name[:at] + draw(st.sampled_from([*_NOT_TOKEN, b" "])) + name[at:] + b": " + value
    elif kind == "no colon":
        header = name + b" " + value
    elif kind == "obs-fold":
        header = name + b": " + value + b"\r\n folded"
    elif kind == "value NUL":
        header = name + b": " + value + b"\x00" + value
    elif kind == "value CR":
        header = name + b": " + value + b"\rx"
    else:
        header = name + b" : " + value
    return b"GET / HTTP/1.1\r\nHost: x\r\n" + header + b"\r\nConnection: close\r\n\r\n", {400}, "header " + kind


@st.composite
def chunked_body(draw: st.DrawFn) -> tuple[bytes, set[int], str]:
    """Chunked bodies: malformed sizes or framing (400), too large (413), or valid (200)."""
    head = b"POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    kind = draw(st.sampled_from(["bad size", "overflow", "missing crlf", "too large", "valid", "bad terminator"]))
    data = draw(st.binary(min_size=1, max_size=300))
    if kind == "bad size":
        size = draw(st.text("ghijklmnopqrstuvwxyz-+ ", min_size=1, max_size=6)).encode()
        return head + size + b"\r\n" + data + b"\r\n0\r\n\r\n", {400}, "chunked bad size"
    if kind == "overflow":
        return head + b"f" * draw(st.integers(17, 40)) + b"\r\n" + data + b"\r\n0\r\n\r\n", {400}, "chunked size overflow"
    if kind == "missing crlf":
        return head + b"%x\r\n" % len(data) + data + b"XX0\r\n\r\n", {400}, "chunked missing CRLF"
    if kind == "bad terminator":
        return head + b"%x\r\n" % len(data) + data + b"\r\n0\r\nbad trailer line\r\n\r\n", {400}, "chunked bad trailer"
    if kind == "too large":
        chunk = b"a" * 16384
        count = HTTP_MAX_BODY // len(chunk) + draw(st.integers(1, 4))
        body = b"".join(b"%x\r\n" % len(chunk) + chunk + b"\r\n" for _ in range(count))
        return head + body + b"0\r\n\r\n", {413}, "chunked too large"
    pieces = draw(st.lists(st.binary(min_size=1, max_size=100), min_size=1, max_size=5))
    body = b"".join(b"%x\r\n" % len(p) + p + b"\r\n" for p in pieces) + b"0\r\n\r\n"
    return head + body, {200}, "chunked valid"


@st.composite
def content_length(draw: st.DrawFn) -> tuple[bytes, set[int], str]:
    """Bad, duplicated, conflicting or oversized Content-Length; CL with Transfer-Encoding."""
    kind = draw(st.sampled_from(["not a number", "negative", "two values", "with chunked", "over the limit"]))
    body = draw(st.binary(max_size=50))
    base = b"POST /cl HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    if kind == "not a number":
        value = draw(st.text("abcxyz+- .", min_size=1, max_size=5)).encode()
        return base + b"Content-Length: " + value + b"\r\n\r\n" + body, {400}, "content-length not a number"
    if kind == "negative":
        return base + b"Content-Length: -%d\r\n\r\n" % draw(st.integers(1, 99)) + body, {400}, "content-length negative"
    if kind == "two values":
        return (base + b"Content-Length: %d\r\nContent-Length: %d\r\n\r\n" % (len(body), len(body) + 1) + body + b"x",
                {400}, "content-length twice")
    if kind == "with chunked":
        return (base + b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" % 5, {400},
                "content-length with chunked (smuggling)")
    size = HTTP_MAX_BODY + draw(st.integers(1, 10**9))
    return base + b"Content-Length: %d\r\n\r\n" % size + body, {413}, "content-length over max_body_size"


@st.composite
def valid_with_odd_headers(draw: st.DrawFn) -> tuple[bytes, set[int], str]:
    """Well-formed requests with arbitrary header values and bodies: must reach the worker."""
    headers = draw(st.lists(st.tuples(_TOKEN, st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF,
                                                                        blacklist_characters="\x7f"), max_size=60)),
                            max_size=8))
    headers = [(name, value.strip()) for name, value in headers
               if name.lower() not in ("content-length", "transfer-encoding", "connection", "host", "expect", "upgrade")]
    body = draw(st.binary(max_size=2000))
    data = request_bytes(draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"])), draw(_PATH), headers, body)
    return data, {200}, "valid (odd headers)"


_GARBAGE = st.binary(min_size=1, max_size=400).map(lambda b: (b + b"\r\n\r\n", {400, 404, 405, 413, 431, 505}, "random bytes"))

HTTP_INPUTS = st.one_of(bad_request_line(), bad_header(), chunked_body(), content_length(), valid_with_odd_headers(),
                        _GARBAGE)


def test_malformed_http_requests_get_4xx_and_the_gateway_keeps_serving(
    fuzz_target: FuzzTarget, fuzz_ledger: FuzzLedger
) -> None:
    """Every malformed request gets its 4xx; valid ones reach a worker; nothing else breaks."""
    fuzz_target.begin()

    @fuzz_settings(500)
    @given(case=HTTP_INPUTS)
    def one(case: tuple[bytes, set[int], str]) -> None:
        data, expected, kind = case
        answer = http_exchange(fuzz_target.http_port, data, wait=1.0 if kind == "random bytes" else None)
        outcome = answer.outcome if answer.status is None else str(answer.status)
        fuzz_ledger.record("http", fuzz_target.name, f"{kind}: {outcome}")
        assert_no_reply_channel(answer.raw, "an HTTP answer")
        if kind == "random bytes":
            # Garbage may be an incomplete request (the server rightly waits) or parse as
            # one; what it must never get is a 5xx (a crash) or a silent close.
            assert answer.status in expected or (answer.status is None and answer.outcome.startswith("no answer")), (
                f"{data[:200]!r} -> {answer.outcome} {answer.raw[:200]!r}")
            return
        assert answer.status in expected, f"{kind}: {data[:300]!r} -> {answer.outcome} {answer.raw[:200]!r}"
        if expected == {200}:
            body = data.partition(b"\r\n\r\n")[2]
            if b"chunked" not in data:
                assert answer.body == b"ok %d" % len(body)

    one()
    end_batch(fuzz_target, fuzz_ledger)
