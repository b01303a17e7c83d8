"""A real browser: headless Chromium chats over a WebRTC data channel with a WebSocket client.

The gateway serves the example's page (``webrtcdemo``'s Django view, through a worker);
the page creates an ``RTCPeerConnection`` and a ``chat`` data channel, posts its offer to
the gateway's signaling endpoint and applies the answer. The test drives the page through
the Chrome DevTools Protocol (``cdp.py``) while a WebSocket client sits in the same chat
room, and checks messages both ways. Gateway and worker are OS processes over Redis (one
``switchboard run`` process when Redis is absent).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from support.cdp import CHROMIUM, Chromium
from websockets.asyncio.client import connect as ws_connect

from .conftest import Deployment, redis_reachable, start_deployment

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"),
]


# The addresses of the ICE candidate pair the page's peer connection uses.
SELECTED_PAIR = """(async () => {
  const stats = [...(await window.webrtcChat.pc.getStats()).values()];
  const transport = stats.find((s) => s.type === "transport" && s.selectedCandidatePairId);
  const pair = stats.find((s) => s.id === transport.selectedCandidatePairId);
  const address = (id) => stats.find((s) => s.id === id).address;
  return [address(pair.localCandidateId), address(pair.remoteCandidateId)];
})()"""


def is_own_address(address: str) -> bool:
    """Whether ``address`` belongs to this machine (a socket can bind it)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.bind((address, 0))
    except OSError:
        return False
    return True


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    mode = "split" if redis_reachable() else "run"
    running = start_deployment(mode, tmp_path_factory.mktemp(f"webrtc-browser-{mode}"))
    try:
        yield running
    finally:
        for name in list(running.processes):
            running.stop(name)
        print(running.logs())


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Chromium]:
    chromium = await Chromium.launch(tmp_path / "profile")
    try:
        yield chromium
    finally:
        await chromium.close()
        print("--- chromium ---\n" + chromium.logs())


async def test_browser_chats_over_a_data_channel_with_a_websocket_client(site: Deployment, browser: Chromium) -> None:
    await site.wait_ready()
    # Chromium offers only its default-route address as ICE candidate unless the page may
    # use a microphone; with that permission (and --allow-loopback-in-peer-connection) it
    # offers 127.0.0.1 too, so the whole exchange stays on loopback.
    await browser.call("Browser.grantPermissions", {"origin": site.base_url, "permissions": ["audioCapture"]})
    session = await browser.open_page(f"{site.base_url}/chat/browsers/webrtc/")
    await browser.wait_for(session, "document.readyState === 'complete' && !!window.webrtcChat")
    assert await browser.evaluate(session, "window.webrtcChat.ready") is True
    local, remote = await browser.evaluate(session, SELECTED_PAIR)
    assert remote == "127.0.0.1"  # the gateway's only candidate (ice_host_addresses)
    # Chromium's end is 127.0.0.1 or another address of this machine (which candidate it
    # nominates is its choice): either way the packets never leave the host.
    print(f"selected ICE pair: {local} -> {remote}")
    assert is_own_address(local), local

    # The page's own message coming back proves its consumer joined the room's group.
    await browser.evaluate(session, "window.webrtcChat.send('hello from chromium')")
    assert await browser.evaluate(session, "window.webrtcChat.waitFor('hello from chromium')") is True

    async with ws_connect(site.base_url.replace("http://", "ws://") + "/ws/chat/browsers/") as socket:
        await browser.evaluate(session, "window.webrtcChat.send('second from chromium')")
        assert json.loads(await asyncio.wait_for(socket.recv(), 10)) == {"message": "second from chromium"}
        for index in range(5):
            await socket.send(json.dumps({"message": f"from websocket {index}"}))
        assert await browser.evaluate(session, "window.webrtcChat.waitFor('from websocket 4')") is True
        received = await browser.evaluate(session, "window.webrtcChat.received")
    assert received[-5:] == [f"from websocket {i}" for i in range(5)]
    assert received[:2] == ["hello from chromium", "second from chromium"]
