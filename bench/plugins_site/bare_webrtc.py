"""The WebRTC baseline: an aiortc answering peer that echoes on its data channels.

Signaling is one tiny aiohttp endpoint: POST the whole offer (``{"type": "offer", "sdp":
...}``), get the whole answer, no trickle ICE, exactly like the ``webrtc`` plugin's
signaling. Each peer's data channel sends every message straight back from aiortc's
``message`` callback. ICE host candidates on 127.0.0.1 only, as the plugin is configured
(``ice_host_addresses``). On uvloop, like the gateway.

Run as ``python -m plugins_site.bare_webrtc --bind 127.0.0.1:8766``; closes its peers and
stops on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal

from aiohttp import web
from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from plugins_site.common import patch_loopback_ice

PEERS: set[RTCPeerConnection] = set()


def _echo(channel: RTCDataChannel) -> None:
    channel.on("message", channel.send)


async def offer(request: web.Request) -> web.Response:
    try:
        params = json.loads(await request.read())
        description = RTCSessionDescription(sdp=params["sdp"], type=params["type"])
    except (ValueError, KeyError, TypeError):
        return web.json_response({"error": "expected {type: offer, sdp: ...}"}, status=400)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    PEERS.add(pc)
    pc.on("datachannel", _echo)

    @pc.on("connectionstatechange")
    async def on_state() -> None:
        if pc.connectionState in ("failed", "closed"):
            PEERS.discard(pc)
            await pc.close()

    await pc.setRemoteDescription(description)
    await pc.setLocalDescription(await pc.createAnswer())  # gathers every candidate
    return web.json_response({"type": pc.localDescription.type, "sdp": pc.localDescription.sdp})


async def main(bind: str) -> None:
    patch_loopback_ice()
    host, _, port = bind.rpartition(":")
    app = web.Application()
    app.router.add_post("/{tail:.*}", offer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, int(port)).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await asyncio.gather(*(pc.close() for pc in list(PEERS)), return_exceptions=True)
        await runner.cleanup()


def run(bind: str) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(main(bind))
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main(bind))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bind", required=True, help="host:port of the signaling endpoint")
    run(parser.parse_args().bind)
