"""What every fuzz test shares: Hypothesis settings, the per-batch checks, the leak check.

A fuzz test is one Hypothesis run (a *batch*) against a running gateway (``fuzz_target``).
Each example is one hostile input whose answer is checked against the protocol's outcomes
table; after the batch :func:`end_batch` checks that the gateway still serves (a valid
request works, the process or loop is alive) and wrote no unexpected ERROR/traceback line.
"""

from __future__ import annotations

import re

from hypothesis import HealthCheck, Phase, settings
from rel_clients import valid_request_works

#: One real offer made by aiortc (a data channel, a loopback candidate), fixed so that every
#: run mutates the same text: aiortc makes new ids and ports each time, which would make
#: the mutations, and so a failure, unreproducible.
OFFER_SDP = (
    "v=0\r\no=- 4004591784 4004591784 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    "a=msid-semantic:WMS *\r\nm=application 41235 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 127.0.0.1\r\n"
    "a=mid:0\r\na=sctp-port:5000\r\na=max-message-size:262144\r\n"
    "a=candidate:16572de626da4e5384a0ce2d0d93678a 1 udp 2130706431 127.0.0.1 41235 typ host\r\n"
    "a=end-of-candidates\r\na=ice-ufrag:GHWQ\r\na=ice-pwd:Lk7eU7BRAHtrFQaGGM8O0L\r\n"
    "a=fingerprint:sha-256 18:F1:41:32:8B:D7:00:6E:4D:97:4C:75:5A:5A:39:1D:14:F5:52:3C:11:68:13:41:20:6B:3B:1E:FF:C4:FC:9F\r\n"
    "a=setup:actpass\r\n"
)

#: A reply channel as the gateway names them (gateway.<12 hex>!<token>): never for clients.
REPLY_CHANNEL_RE = re.compile(rb"gateway\.[0-9a-f]{12}!")


def fuzz_settings(examples: int) -> settings:
    """CI-sized and reproducible: fixed seed, no example database, no per-example deadline."""
    from rel_harness import fuzz_scale

    return settings(
        max_examples=fuzz_scale(examples),
        deadline=None,
        derandomize=True,
        database=None,
        phases=(Phase.explicit, Phase.generate, Phase.shrink),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


def assert_no_reply_channel(data: bytes, where: str) -> None:
    """Reply channels are capabilities of the gateway and its workers: a client never sees one."""
    match = REPLY_CHANNEL_RE.search(data)
    assert match is None, f"{where} exposed a reply channel: {data[max(0, match.start() - 40) : match.end() + 20]!r}"


def end_batch(target: object, ledger: object, *, http_probe: bool = True) -> None:
    """After a batch: still serving, still alive, no unexpected error lines."""
    from rel_harness import FuzzLedger, FuzzTarget

    assert isinstance(target, FuzzTarget) and isinstance(ledger, FuzzLedger)
    target.check_alive()
    if http_probe:
        assert valid_request_works(target.http_port), "a valid request failed after the batch"
    problems = target.log_problems(ledger)
    assert not problems, "unexpected error log lines:\n" + "\n".join(problems[:10])
