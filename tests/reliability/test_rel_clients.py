"""The raw test clients themselves: what they read is what the server sent.

Why: the fuzz tests judge the gateway by what these clients read. A client that loses
bytes makes the gateway look broken, and only on a loaded machine, where the server's
frames coalesce into one TCP read (a pong and an echo arrived together and the echo was
dropped: the fuzz test then waited 10 s for it and Hypothesis reported a flaky failure).
"""

from __future__ import annotations

import socket

from rel_clients import FrameReader
from support.waiting import deadline


def server_frame(opcode: int, payload: bytes) -> bytes:
    return bytes([0x80 | opcode, len(payload)]) + payload


def test_frames_read_together_are_all_returned_across_reads() -> None:
    server, client = socket.socketpair()
    with server, client:
        server.sendall(server_frame(10, b"p") + server_frame(2, b"echo"))  # one segment
        reader = FrameReader(client)
        first, ended = reader.read(until_close=False, timeout=deadline(5))
        assert ended == "frame" and [(f.opcode, f.payload) for f in first] == [(10, b"p")]
        second, ended = reader.read(until_close=False, timeout=deadline(5))
        assert ended == "frame" and [(f.opcode, f.payload) for f in second] == [(2, b"echo")]


def test_a_partial_frame_is_completed_by_the_next_read() -> None:
    server, client = socket.socketpair()
    with server, client:
        whole = server_frame(1, b"hello") + server_frame(8, b"\x03\xe8")
        server.sendall(whole[:4])
        reader = FrameReader(client)
        frames, ended = reader.read(timeout=0.2)
        assert (frames, ended) == ([], "timeout")
        server.sendall(whole[4:])
        frames, ended = reader.read(timeout=deadline(5))
        assert ended == "close"
        assert [(f.opcode, f.payload) for f in frames] == [(1, b"hello"), (8, b"\x03\xe8")]
        assert frames[-1].close_code == 1000
