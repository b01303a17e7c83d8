"""Fuzz: raw WebSocket frames after a valid handshake.

Why frames and not messages: a client library only sends valid frames, while an attacker
controls every bit: opcodes, RSV bits, the mask, the length field, fragmentation and the
bytes of a "text" message. RFC 6455 says what each deserves (1002 protocol error, 1007
invalid payload, 1009 too big), specs/websocket.md adds ``max_frame_size``. After each
input the test sends a valid close frame, so a valid input is answered by its echo and a
normal close (1000), and an invalid one by the error close code *before* ours is read.
"""

from __future__ import annotations

import random
import socket

from hypothesis import given
from hypothesis import strategies as st
from rel_clients import FrameReader, ServerFrame, frame_bytes, ws_handshake
from rel_fuzz import assert_no_reply_channel, end_batch, fuzz_settings
from rel_harness import WS_MAX_FRAME, FuzzLedger, FuzzTarget

CLOSE_1000 = frame_bytes(8, b"\x03\xe8")
Case = tuple[bytes, set[int], str, bytes | None]  # frames, close codes allowed, kind, expected echo


def _bad_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


@st.composite
def valid_message(draw: st.DrawFn) -> Case:
    """Text (whole or fragmented at any byte, even inside a character) or binary: echoed."""
    if draw(st.booleans()):
        payload = draw(st.text(max_size=500)).encode()
        opcode = 1
    else:
        payload = draw(st.binary(max_size=2000))
        opcode = 2
    cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=3)))
    if not cuts:
        return frame_bytes(opcode, payload), {1000}, "valid message", payload
    pieces = [payload[a:b] for a, b in zip([0, *cuts], [*cuts, len(payload)])]
    frames = [frame_bytes(opcode if i == 0 else 0, piece, fin=i == len(pieces) - 1) for i, piece in enumerate(pieces)]
    if draw(st.booleans()):  # control frames may come between fragments (RFC 6455 5.4)
        frames.insert(1, frame_bytes(9, b"p"))
    return b"".join(frames), {1000}, "valid fragmented message", payload


@st.composite
def protocol_error(draw: st.DrawFn) -> Case:
    """Frames RFC 6455 forbids: each must close the connection with 1002."""
    data = draw(st.binary(max_size=100))
    kind = draw(st.sampled_from(["bad opcode", "unmasked", "rsv bits", "fragmented control", "control too long",
                                 "continuation without start", "data frame inside a fragmented message",
                                 "close code not allowed", "close payload of 1 byte"]))
    if kind == "bad opcode":
        frames = frame_bytes(draw(st.sampled_from([3, 4, 5, 6, 7, 11, 12, 13, 14, 15])), data)
    elif kind == "unmasked":
        frames = frame_bytes(draw(st.sampled_from([1, 2, 9])), b"x", mask=None)
    elif kind == "rsv bits":
        frames = frame_bytes(2, data, rsv=draw(st.integers(1, 7)))
    elif kind == "fragmented control":
        frames = frame_bytes(draw(st.sampled_from([8, 9, 10])), data[:100], fin=False)
    elif kind == "control too long":
        frames = frame_bytes(draw(st.sampled_from([9, 10])), data + b"x" * (126 - len(data) + draw(st.integers(0, 500))))
    elif kind == "continuation without start":
        frames = frame_bytes(0, data)
    elif kind == "data frame inside a fragmented message":
        frames = frame_bytes(2, b"a", fin=False) + frame_bytes(draw(st.sampled_from([1, 2])), data)
    elif kind == "close code not allowed":
        code = draw(st.one_of(st.integers(0, 999), st.sampled_from([1004, 1005, 1006, 1015]), st.integers(1016, 2999),
                              st.integers(5000, 65535)))
        frames = frame_bytes(8, code.to_bytes(2, "big"))
    else:
        frames = frame_bytes(8, data[:1] or b"\x03")
    return frames, {1002}, kind, None


@st.composite
def invalid_utf8(draw: st.DrawFn) -> Case:
    """A text message, or a close reason, that is not UTF-8: 1007."""
    data = draw(st.binary(min_size=1, max_size=200).filter(_bad_utf8))
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(data)))
        frames = frame_bytes(1, data[:cut], fin=False) + frame_bytes(0, data[cut:])
        return frames, {1007}, "text not UTF-8", None
    return frame_bytes(8, b"\x03\xe8" + data[:120]), {1007}, "close reason not UTF-8", None


@st.composite
def too_big(draw: st.DrawFn) -> Case:
    """Over ``max_frame_size``: declared (the length field alone) or sent, whole or in fragments: 1009."""
    kind = draw(st.sampled_from(["declared", "sent", "fragments"]))
    if kind == "declared":
        length = draw(st.integers(WS_MAX_FRAME + 1, 2**63 - 1))
        return frame_bytes(2, b"", declared_length=length), {1009}, "length over max_frame_size (declared)", None
    size = WS_MAX_FRAME + draw(st.integers(1, 5000))
    if kind == "sent":
        return frame_bytes(2, b"a" * size), {1009}, "message over max_frame_size", None
    half = size // 2 + 1
    return (frame_bytes(2, b"a" * half, fin=False) + frame_bytes(0, b"a" * half), {1009},
            "fragments over max_frame_size", None)


@st.composite
def mutated(draw: st.DrawFn) -> Case:
    """A valid frame with random bytes flipped: whatever it has become, never a crash."""
    frame = bytearray(frame_bytes(draw(st.sampled_from([1, 2])), draw(st.binary(max_size=200))))
    rng = random.Random(draw(st.integers(0, 2**32)))
    for _ in range(draw(st.integers(1, 4))):
        frame[rng.randrange(len(frame))] = rng.randrange(256)
    return bytes(frame), {1000, 1002, 1007, 1009}, "mutated valid frame", None


def exchange(sock: socket.socket, frames: bytes, kind: str, echo: bytes | None) -> tuple[list[ServerFrame], str]:
    """Send one input and read the server's frames up to its close frame.

    Our own close frame goes out only once the server had its chance to answer alone: a
    valid message waits for its echo (a close right behind it is answered at once by the
    protocol library, before any reply), an invalid one for the server's error close. A
    close in the same TCP segment as a bad text message trips the uvicorn bug pinned by
    ``test_invalid_utf8_text_and_close_in_one_segment_gets_1007``.
    """
    received: list[ServerFrame] = []
    reader = FrameReader(sock)
    try:
        sock.sendall(frames)
        if echo is not None:
            while sum(len(f.payload) for f in received if f.opcode in (0, 1, 2)) < len(echo) or not received:
                more, ended = reader.read(until_close=False)
                received += more
                if ended != "frame" or more[-1].opcode == 8:
                    return received, ended
            sock.sendall(CLOSE_1000)
        elif kind == "mutated valid frame":
            received, ended = reader.read(timeout=0.3)
            if ended == "close":
                return received, ended
            sock.sendall(CLOSE_1000)
            more, ended = reader.read(timeout=0.3)
            return received + more, ended
    except OSError:
        pass  # closed while we were still writing (1009 on a huge frame): read the close
    more, ended = reader.read()
    return received + more, ended


WS_INPUTS = st.one_of(valid_message(), protocol_error(), invalid_utf8(), too_big(), mutated())


def test_malformed_websocket_frames_get_their_close_code(fuzz_target: FuzzTarget, fuzz_ledger: FuzzLedger) -> None:
    """Bad frames close with 1002/1007/1009; valid ones are echoed; the gateway keeps serving."""
    fuzz_target.begin()

    @fuzz_settings(250)
    @given(case=WS_INPUTS)
    def one(case: Case) -> None:
        frames, allowed, kind, echo = case
        sock, head = ws_handshake(fuzz_target.http_port)
        try:
            assert_no_reply_channel(head, "a WebSocket handshake response")
            received, ended = exchange(sock, frames, kind, echo)
        finally:
            sock.close()
        close = next((f.close_code for f in received if f.opcode == 8), None)
        outcome = f"close {close}" if close is not None else ended
        fuzz_ledger.record("websocket", fuzz_target.name, f"{kind}: {outcome}")
        for frame in received:
            assert_no_reply_channel(frame.payload, "a WebSocket frame")
        if kind == "mutated valid frame":
            # A flipped length byte can leave the frame incomplete: the server rightly waits.
            assert close in allowed or (close is None and ended in ("timeout", "eof")), (frames[:100], outcome)
            return
        assert close in allowed, f"{kind}: {frames[:120]!r} -> {outcome} {[(f.opcode, f.payload[:40]) for f in received]}"
        if echo is not None:
            data = b"".join(f.payload for f in received if f.opcode in (0, 1, 2))
            assert data == echo

    one()
    end_batch(fuzz_target, fuzz_ledger)
