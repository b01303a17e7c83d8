"""Fuzz: the WebRTC signaling endpoint — mutated valid offers, random JSON, hostile requests.

Why: signaling runs inside the gateway (specs/webrtc.md, "Signaling") and hands attacker
text to an SDP parser and to aiortc. Its table says what each mistake gets (400, 403, 405,
413) and that a 500 is a bug; a mutated offer may still be acceptable (200 with an
answer) but must never be a 5xx.
"""

from __future__ import annotations

import http.client
import json
import random
from dataclasses import dataclass

from hypothesis import given
from hypothesis import strategies as st
from rel_fuzz import OFFER_SDP, assert_no_reply_channel, end_batch, fuzz_settings
from rel_harness import WEBRTC_PATH, FuzzLedger, FuzzTarget
from support.waiting import deadline

MAX_SIGNALING = 64 * 1024


def known_500(sdp: str) -> bool:
    """The bug pinned by test_rel_security: an offer whose data section has no usable
    ``a=mid:`` makes aiortc's createAnswer fail with ValueError, answered 500 (and logged
    with a traceback) instead of 400."""
    section = sdp.partition("m=application")[2]
    mids = [line for line in section.replace("\r\n", "\n").split("\n") if line.startswith("a=mid:")]
    return len(mids) != 1 or not mids[0][len("a=mid:"):].strip()


def mutate(sdp: str, seed: int, how: str) -> str:
    """The offer with one kind of damage, placed by ``seed`` (so the input stays reproducible)."""
    rng = random.Random(seed)
    lines = sdp.split("\r\n")
    if how == "drop line":
        del lines[rng.randrange(len(lines))]
    elif how == "duplicate line":
        index = rng.randrange(len(lines))
        lines.insert(index, lines[index])
    elif how == "flip characters":
        text = list(sdp)
        for _ in range(rng.randint(1, 8)):
            replacement = rng.choice([0, 10, 13, 32, 45, 48, 61, 97, 0xE9, 0xFFFD, rng.randrange(1, 0x2FF)])
            text[rng.randrange(len(text))] = chr(replacement)
        return "".join(text)
    elif how == "truncate":
        return sdp[: rng.randrange(len(sdp))]
    elif how == "swap media":
        lines = [line.replace("m=application", rng.choice(["m=audio", "m=video", "m=text", "m=application m="]))
                 for line in lines]
    elif how == "huge numbers":
        lines = [line.replace("9", "9" * rng.randint(10, 40)) for line in lines]
    return "\r\n".join(lines)


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
                    max_leaves=10)


@dataclass(frozen=True)
class Signal:
    """One generated signaling request, before it is built against the seed offer."""

    kind: str
    seed: int
    some_json: object
    raw: bytes
    how: str
    method: str
    bad_sdp: object


@st.composite
def signaling(draw: st.DrawFn) -> Signal:
    """Every ingredient of a request; :func:`build` turns it into bytes and allowed statuses."""
    return Signal(
        kind=draw(st.sampled_from(["valid offer", "mutated offer", "mutated offer", "mutated offer", "random JSON",
                                   "offer-shaped JSON", "not JSON", "too large", "wrong method", "cross-site origin"])),
        seed=draw(st.integers(0, 2**32)),
        some_json=draw(JSON),
        raw=draw(st.binary(max_size=200)),
        how=draw(st.sampled_from(["drop line", "duplicate line", "flip characters", "truncate", "swap media", "huge numbers"])),
        method=draw(st.sampled_from(["GET", "PUT", "DELETE", "PATCH"])),
        bad_sdp=draw(st.one_of(st.none(), st.integers(), st.just(""), st.lists(st.integers(), max_size=2))),
    )


def build(case: Signal, sdp: str) -> tuple[str, dict[str, str], bytes, set[int]]:
    """Method, headers, body and the statuses specs/webrtc.md allows for them."""
    headers = {"Content-Type": "application/json"}
    if case.kind == "valid offer":
        return "POST", headers, json.dumps({"type": "offer", "sdp": sdp}).encode(), {200}
    if case.kind == "mutated offer":
        return "POST", headers, json.dumps({"type": "offer", "sdp": mutate(sdp, case.seed, case.how)}).encode(), {200, 400}
    if case.kind == "random JSON":
        return "POST", headers, json.dumps(case.some_json).encode(), {400}
    if case.kind == "offer-shaped JSON":
        return "POST", headers, json.dumps({"type": "offer", "sdp": case.bad_sdp}).encode(), {400}
    if case.kind == "not JSON":
        return "POST", headers, b"{" + case.raw, {400}
    if case.kind == "too large":
        return "POST", headers, json.dumps({"type": "offer", "sdp": sdp + "a=x\r\n" * (MAX_SIGNALING // 5)}).encode(), {413}
    if case.kind == "wrong method":
        return case.method, headers, b"", {405}
    headers["Origin"] = "https://evil.example"
    return "POST", headers, json.dumps({"type": "offer", "sdp": sdp}).encode(), {403}


def test_hostile_signaling_gets_4xx_never_5xx(fuzz_target: FuzzTarget, fuzz_ledger: FuzzLedger) -> None:
    """Every refusal is a JSON ``{"error"}`` with its 4xx; valid offers are answered."""
    fuzz_target.begin()
    before = fuzz_target.stats("webrtc")

    @fuzz_settings(120)
    @given(case=signaling())
    def one(case: Signal) -> None:
        method, headers, body, allowed = build(case, OFFER_SDP)
        if case.kind == "mutated offer" and known_500(json.loads(body)["sdp"]):
            allowed = allowed | {500}  # the known bug (see known_500); the rest must hold
        connection = http.client.HTTPConnection("127.0.0.1", fuzz_target.http_port, timeout=deadline(20))
        try:
            connection.request(method, WEBRTC_PATH + "/fuzz/", body=body or None, headers=headers)
            response = connection.getresponse()
            data = response.read()
        finally:
            connection.close()
        known = " (known bug: no a=mid)" if response.status == 500 else ""
        fuzz_ledger.record("webrtc", fuzz_target.name, f"{case.kind}: {response.status}{known}")
        assert_no_reply_channel(data, "a signaling answer")
        assert response.status in allowed, f"{case.kind} {case.how} -> {response.status} {data[:300]!r}\n{body[:3000]!r}"
        reply = json.loads(data)
        if response.status == 200:
            assert reply["type"] == "answer" and reply["sdp"].startswith("v=0")
        else:
            assert isinstance(reply.get("error"), str)

    one()
    after = fuzz_target.stats("webrtc")
    if before is not None and after is not None:
        known = sum(n for outcome, n in fuzz_ledger.counts["webrtc"]["memory"].items() if "known bug" in outcome)
        assert after.get("signaling_500", 0) - before.get("signaling_500", 0) <= known
    end_batch(fuzz_target, fuzz_ledger)
