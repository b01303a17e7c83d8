"""WebRTC data channel load: aiortc client peers, a window of N messages in flight.

``--peers`` aiortc peers (what a browser page would be, in one process) each signal like
the plugin's docs say (POST the whole offer, apply the whole answer, no trickle ICE) and
open one data channel. Slot ``i`` of the window lives on peer ``i % peers``; each
message is binary (slot, sequence, padding: bench.loadgen.windowed) and the echo must be
the same bytes. Data channels are reliable and ordered, so ``--lost-after`` only
catches a stalled server. Two measurements, one server start: ``x1`` and ``xN``.

ICE host candidates on 127.0.0.1 only (the servers are configured the same way).

Run as ``python -m bench.loadgen.webrtc_rtt --url http://127.0.0.1:PORT/webrtc/offer/echo/``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription

from bench.loadgen.common import emit, run
from bench.loadgen.windowed import Window, measure, phases, wait_ready
from bench.plugins_site.common import WEBRTC_LABEL, patch_loopback_ice


def _post(url: str, body: bytes) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=body, method="POST", headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


async def wait_port(url: str, timeout: float) -> bool:
    parts = urlsplit(url)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((parts.hostname, parts.port or 80), timeout=0.5):
                return True
        except OSError:
            await asyncio.sleep(0.1)
    return False


async def open_peer(url: str, window: Window) -> tuple[RTCPeerConnection, RTCDataChannel]:
    """One client peer with one open data channel whose messages go to ``window``."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    channel = pc.createDataChannel(WEBRTC_LABEL)
    opened = asyncio.Event()
    channel.on("open", opened.set)
    channel.on("message", lambda message: window.on_reply(message if isinstance(message, bytes) else message.encode()))
    try:
        await pc.setLocalDescription(await pc.createOffer())
        offer = json.dumps({"type": "offer", "sdp": pc.localDescription.sdp}).encode()
        status, body = await asyncio.to_thread(_post, url, offer)
        if status != 200:
            raise RuntimeError(f"signaling answered {status}: {body[:200]!r}")
        answer = json.loads(body)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
        await asyncio.wait_for(opened.wait(), 20)
    except BaseException:
        await pc.close()
        raise
    return pc, channel


async def main(args: argparse.Namespace) -> None:
    patch_loopback_ice()
    channels: list[RTCDataChannel] = []

    def send(slot: int, payload: bytes) -> None:
        channels[slot % len(channels)].send(payload)

    window = Window(send, size=args.size, lost_after=args.lost_after, max_sends=args.max_sends)
    if not await wait_port(args.url, args.ready_timeout):
        print(f"webrtc_rtt: nothing listening at {args.url}", file=sys.stderr)
        sys.exit(2)
    peers: list[RTCPeerConnection] = []
    try:
        started = time.perf_counter()
        for _ in range(args.peers):
            pc, channel = await open_peer(args.url, window)
            peers.append(pc)
            channels.append(channel)
        setup_s = time.perf_counter() - started
        # Slots 0..peers-1 are one per peer: every peer's consumer must have answered.
        if not await wait_ready(window, args.ready_timeout, retry=5.0, slots=args.peers):
            print(f"webrtc_rtt: not every peer got an echo within {args.ready_timeout}s", file=sys.stderr)
            sys.exit(2)
        rows = [await measure(window, label, slots, warmup, duration)
                for label, slots, warmup, duration in phases(args.window, args.warmup, args.duration)]
    finally:
        await asyncio.gather(*(pc.close() for pc in peers), return_exceptions=True)
    emit("result", data={"rows": rows, "window": args.window, "peers": args.peers, "size": args.size,
                         "peer_setup_s": setup_s})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="signaling URL the offers are POSTed to")
    parser.add_argument("--peers", type=int, default=4)
    parser.add_argument("--window", type=int, default=50, help="messages in flight in the xN measurement")
    parser.add_argument("--size", type=int, default=64, help="message bytes")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--lost-after", type=float, default=5.0)
    parser.add_argument("--ready-timeout", type=float, default=30.0)
    parser.add_argument("--max-sends", type=int, default=2_000_000, help="cap on messages per measurement")
    args = parser.parse_args(argv)
    if not args.url.startswith(("http://127.", "http://localhost")):
        parser.error("load goes to this machine only")
    return args


if __name__ == "__main__":
    run(main(parse_args()))
