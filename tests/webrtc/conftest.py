"""Fixtures for the WebRTC plugin tests: in-process stacks, a real aiortc client peer, OS processes.

In-process tests run the real HTTP plugin (uvicorn on 127.0.0.1:0), the WebRTC plugin, the
gateway core and a worker over the in-memory layer; the client is a real aiortc peer in
the test process that signals over real HTTP. End-to-end tests start ``switchboard
gateway`` + ``switchboard worker`` over the real Redis (or ``switchboard run``) as OS
processes with ``webrtc_settings.py``.

ICE stays on loopback: aioice leaves 127.0.0.1 out of its host candidates, so the gateway
gets ``ice_host_addresses: ["127.0.0.1"]`` and the test's client peer the same through the
``loopback_ice`` fixture.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.django_settings import configure as configure_django
from support.processes import ModeDeployment, free_tcp_port, process_env, redis_reachable
from support.waiting import deadline

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "chatsite"
HERE = Path(__file__).resolve().parent
REDIS_URL = os.environ.get("SWITCHBOARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
WAIT = deadline(10)  # safety net (scaled): a broken path fails the test instead of hanging it

if str(EXAMPLE) not in sys.path:
    sys.path.insert(0, str(EXAMPLE))  # the example's chat and webrtcdemo apps

configure_django()

import aioice.ice
from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from support.layers import installed_layer
from support.stacks import PluginStack, stacks_stopped_after

from switchboard.gateway.config import parse_options
from switchboard.gateway.layers import ChannelLayer
from switchboard.protocols.http import HttpOptions, HttpPlugin
from switchboard.protocols.webrtc import WebrtcOptions, WebrtcPlugin


@pytest.fixture(autouse=True)
def loopback_ice(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test's own aiortc peers gather host candidates on 127.0.0.1 only."""
    monkeypatch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else [])


# -- HTTP helpers (urllib in a thread: a plain, independent HTTP client) --------------


def _request(url: str, body: bytes | None, method: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


async def http(
    url: str, body: bytes | None = None, *, method: str = "POST", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """``(status, headers, body)`` of one real HTTP request."""
    return await asyncio.to_thread(_request, url, body, method, headers or {"content-type": "application/json"})


async def post_offer(url: str, offer: dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, Any]:
    status, _, body = await http(url, json.dumps(offer).encode(), headers=headers)
    return status, json.loads(body)


# -- a real aiortc client peer --------------------------------------------------------


class ClientPeer:
    """An aiortc peer in the test process with data channels, like a browser page."""

    def __init__(self, labels: tuple[str, ...]) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.channels: dict[str, RTCDataChannel] = {}
        self.inbox: dict[str, asyncio.Queue[str | bytes]] = {}
        self.opened: dict[str, asyncio.Event] = {}
        self.closed = asyncio.Event()
        self.pc.on("connectionstatechange", self._on_state)
        for label in labels:
            self.add_channel(label)

    def add_channel(self, label: str) -> RTCDataChannel:
        channel = self.pc.createDataChannel(label)
        inbox: asyncio.Queue[str | bytes] = asyncio.Queue()
        opened = asyncio.Event()
        channel.on("message", inbox.put_nowait)
        channel.on("open", opened.set)
        self.channels[label] = channel
        self.inbox[label] = inbox
        self.opened[label] = opened
        return channel

    def _on_state(self) -> None:
        if self.pc.connectionState in ("closed", "failed"):
            self.closed.set()

    async def offer(self) -> dict[str, str]:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return {"sdp": self.pc.localDescription.sdp, "type": "offer"}

    async def accept(self, answer: dict[str, str]) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))

    async def wait_open(self, *labels: str) -> None:
        for label in labels or tuple(self.channels):
            await asyncio.wait_for(self.opened[label].wait(), WAIT)

    async def receive(self, label: str, timeout: float = WAIT) -> str | bytes:
        return await asyncio.wait_for(self.inbox[label].get(), timeout)

    async def nothing_within(self, label: str, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self.inbox[label].get(), seconds)
        except TimeoutError:
            return True
        return False

    async def close(self) -> None:
        await self.pc.close()


async def connect_peer(url: str, labels: tuple[str, ...] = ("chat",), headers: dict[str, str] | None = None) -> ClientPeer:
    """Offer over HTTP, apply the answer, wait until every channel is open."""
    peer = ClientPeer(labels)
    status, answer = await post_offer(url, await peer.offer(), headers)
    assert status == 200, answer
    assert answer["type"] == "answer"
    await peer.accept(answer)
    await peer.wait_open()
    return peer


@pytest.fixture
async def peers() -> AsyncIterator[list[ClientPeer]]:
    """Client peers a test appends here are closed after it."""
    opened: list[ClientPeer] = []
    yield opened
    for peer in opened:
        await peer.close()


# -- the in-process stack -------------------------------------------------------------


@pytest.fixture
async def layer(request: pytest.FixtureRequest) -> AsyncIterator[ChannelLayer]:
    """A fresh in-memory layer installed as the process layer (indirect param: extra CONFIG)."""
    config = {"block_timeout": 0.05, **getattr(request, "param", {})}
    async with installed_layer({"BACKEND": "memory", "CONFIG": config}) as channel_layer:
        yield channel_layer


def webrtc_options(**raw: Any) -> WebrtcOptions:
    """Options as the config would give them (so they pass the real validation)."""
    raw.setdefault("ice_host_addresses", ["127.0.0.1"])
    return parse_options(WebrtcOptions, raw, where="PROTOCOLS.webrtc")


class Stack(PluginStack):
    """HTTP plugin + WebRTC plugin + gateway core (+ a worker running ``app``) on one layer."""

    @property
    def http(self) -> HttpPlugin:
        return self.plugin_of(HttpPlugin)

    @property
    def plugin(self) -> WebrtcPlugin:
        return self.plugin_of(WebrtcPlugin)

    @property
    def base_url(self) -> str:
        host, port = self.http.bound_addresses[0]
        return f"http://{host}:{port}"

    def url(self, path: str = "/webrtc/offer/test/echo/") -> str:
        return self.base_url + path


@pytest.fixture
async def stack(layer: ChannelLayer) -> AsyncIterator[Any]:
    """``await stack(app=..., **webrtc_options)`` starts a :class:`Stack`; stopped after the test."""
    async with stacks_stopped_after() as stacks:

        async def start(app: Any = None, protocols: tuple[str, ...] = ("webrtc",), **options: Any) -> Stack:
            http = HttpPlugin(parse_options(HttpOptions, {"bind": ["127.0.0.1:0"], "response_timeout": 5}, where="http"))
            running = await Stack.start(
                layer,
                [http, WebrtcPlugin(webrtc_options(**options))],
                app=app,
                protocols=protocols,
                gateway_options={"worker_timeout": 5.0},
                drain_timeout=2.0,
            )
            stacks.append(running)
            return running

        yield start


@dataclass
class Deployment(ModeDeployment):
    """Gateway and worker processes (or one ``run`` process) serving the test site."""

    settings_module = "webrtc_settings"
    cwd = HERE

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def wait_ready(self, timeout: float = 30) -> None:
        """Until a worker answers a Django view through the gateway."""

        async def answers() -> bool:
            try:
                status, _, _ = await http(self.base_url + "/ready/", method="GET", headers={})
            except OSError:
                return False
            return status == 200

        await self.wait_until(answers, timeout, "a worker to answer through the gateway")


def start_deployment(mode: str, log_dir: Path) -> Deployment:
    """``split``: gateway + worker over Redis; ``run``: one process on the memory layer."""
    port = free_tcp_port()
    env = process_env([HERE, EXAMPLE, ROOT], WEBRTC_TEST_BIND=f"127.0.0.1:{port}")
    env.pop("WEBRTC_TEST_REDIS_URL", None)
    if mode == "split":
        env["WEBRTC_TEST_REDIS_URL"] = REDIS_URL
        env["WEBRTC_TEST_REDIS_PREFIX"] = f"sb-webrtc-{secrets.token_hex(4)}:"
    deployment = Deployment(mode, port, env, log_dir)
    deployment.start_mode()
    return deployment


@pytest.fixture(scope="module", params=["split", "run"])
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """The test site deployed in ``split`` (over Redis) or ``run`` mode, shared by a module."""
    mode = request.param
    if mode == "split" and not redis_reachable():
        pytest.skip("Redis is not reachable on 127.0.0.1:6379")
    running = start_deployment(mode, tmp_path_factory.mktemp(f"webrtc-{mode}"))
    try:
        yield running
    finally:
        running.stop_all()
        print(running.logs())  # shown by pytest only when a test of the module failed
