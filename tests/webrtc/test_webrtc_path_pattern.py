"""``path_pattern``: signaling for a path the site does not serve is refused (404) before any peer exists.

Without it a bad path (the example's chat room with a name that is no room) was answered
200, a peer and its UDP socket were made, and the worker then failed to route it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.urls import path
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import InvalidStatus

from switchboard.consumers import ProtocolTypeRouter, URLRouter
from switchboard.gateway.config import ConfigError

from .conftest import ClientPeer, connect_peer, http, post_offer, webrtc_options
from .webrtc_consumers import EchoConsumer

APP = ProtocolTypeRouter({"webrtc": URLRouter([path("webrtc/offer/<str:room>/", EchoConsumer.as_asgi())])})
ROOMS = r"[a-z]{1,10}/"


def test_a_bad_pattern_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"PROTOCOLS\.webrtc: path_pattern: "):
        webrtc_options(path_pattern="[unclosed")


async def test_paths_outside_the_pattern_get_404_and_no_peer(stack: Any, peers: list[ClientPeer]) -> None:
    running = await stack(APP, path_pattern=ROOMS)
    peers.append(await connect_peer(running.url("/webrtc/offer/lobby/")))  # a room: served
    assert await peers[0].receive("chat") == "open chat"
    refused = ClientPeer(("chat",))
    offer = await refused.offer()
    await refused.close()
    for bad in ("/webrtc/offer/no%20such/", "/webrtc/offer/Lobby/", "/webrtc/offer/lobby/more/", "/webrtc/offer/"):
        status, answer = await post_offer(running.url(bad), offer)
        assert (status, answer) == (404, {"error": "no such path here (path_pattern)"}), bad
    # Refused before the body is even read: a non-POST to a bad path is 404 too, not 405.
    status, _, body = await http(running.url("/webrtc/offer/x1/"), method="GET", headers={})
    assert status == 404 and json.loads(body)["error"].startswith("no such path")
    with pytest.raises(InvalidStatus) as denied:
        async with ws_connect(running.url("/webrtc/offer/x1/").replace("http://", "ws://")):
            pass
    assert denied.value.response.status_code == 404
    stats = running.plugin.stats()
    assert stats["signaling_404"] == 6
    assert stats["connections_opened"] == 1  # only the good one


async def test_without_a_pattern_every_path_is_answered(stack: Any, peers: list[ClientPeer]) -> None:
    running = await stack(APP)
    peers.append(await connect_peer(running.url("/webrtc/offer/Any-Name/")))
    assert await peers[0].receive("chat") == "open chat"
