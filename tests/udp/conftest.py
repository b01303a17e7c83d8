"""Fixtures for the UDP plugin tests: in-process stacks, a real UDP client, OS processes.

In-process tests run the real plugin, gateway core and worker over the in-memory layer and
talk to them with a real UDP socket on loopback. End-to-end tests start ``switchboard
gateway`` + ``switchboard worker`` over the real Redis (or ``switchboard run``) as OS
processes with the settings in ``udp_settings.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.django_settings import configure as configure_django
from support.processes import ModeDeployment, free_udp_port, process_env, redis_reachable, split_layer_env, stop_reporting
from support.processes import pytest_runtest_makereport as pytest_runtest_makereport
from support.waiting import deadline

configure_django()

from support.layers import installed_layer
from support.stacks import PluginStack, stacks_stopped_after

from switchboard.gateway.config import parse_options
from switchboard.gateway.layers import ChannelLayer
from switchboard.protocols.udp import INBOUND_OUTCOMES, UdpOptions, UdpPlugin

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "chatsite"
HERE = Path(__file__).resolve().parent
REDIS_URL = os.environ.get("SWITCHBOARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
WAIT = deadline(5)  # safety net (scaled): a broken path fails the test instead of hanging it


def ipv6_available() -> bool:
    """Whether a UDP socket can bind ``::1`` here (containers often lack IPv6)."""
    if not socket.has_ipv6:
        return False
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


def assert_counts_add_up(stats: dict[str, int]) -> None:
    """Every received datagram is queued or in exactly one outcome counter."""
    outcomes = {name: stats.get(name, 0) for name in INBOUND_OUTCOMES}
    assert stats["messages_in"] == stats.get("queued", 0) + sum(outcomes.values()), (stats, outcomes)


# -- a real UDP client ----------------------------------------------------------------


class _ClientProtocol(asyncio.DatagramProtocol):
    def __init__(self, inbox: asyncio.Queue[tuple[bytes, Any]]) -> None:
        self.inbox = inbox

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.inbox.put_nowait((data, addr))


class UdpClient:
    """An asyncio UDP socket on loopback that records what it receives and from where."""

    def __init__(self, transport: asyncio.DatagramTransport, inbox: asyncio.Queue[tuple[bytes, Any]]) -> None:
        self.transport = transport
        self.inbox = inbox

    @classmethod
    async def open(cls, host: str = "127.0.0.1") -> UdpClient:
        inbox: asyncio.Queue[tuple[bytes, Any]] = asyncio.Queue()
        transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _ClientProtocol(inbox), local_addr=(host, 0)
        )
        return cls(transport, inbox)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.transport.get_extra_info("sockname")[:2]
        return host, port

    def send(self, data: bytes, address: tuple[str, int]) -> None:
        self.transport.sendto(data, address)

    async def receive(self, timeout: float = WAIT) -> tuple[bytes, Any]:
        return await asyncio.wait_for(self.inbox.get(), timeout)

    async def nothing_within(self, seconds: float) -> bool:
        try:
            await asyncio.wait_for(self.inbox.get(), seconds)
        except TimeoutError:
            return True
        return False

    def close(self) -> None:
        self.transport.close()


@pytest.fixture
async def client() -> AsyncIterator[UdpClient]:
    udp = await UdpClient.open()
    yield udp
    udp.close()


# -- the in-process stack -------------------------------------------------------------


@pytest.fixture
async def layer() -> AsyncIterator[ChannelLayer]:
    """A fresh in-memory layer installed as the process layer."""
    async with installed_layer() as channel_layer:
        yield channel_layer


def udp_options(**raw: Any) -> UdpOptions:
    """Options as the config would give them (so they pass the real validation)."""
    raw.setdefault("bind", ["127.0.0.1:0"])
    return parse_options(UdpOptions, raw, where="PROTOCOLS.udp")


class Stack(PluginStack):
    """The UDP plugin + gateway core (+ a worker running ``app``, when given) on one layer."""

    @property
    def plugin(self) -> UdpPlugin:
        return self.plugin_of(UdpPlugin)

    @property
    def address(self) -> tuple[str, int]:
        return self.plugin.bound_addresses[0]


@pytest.fixture
async def stack(layer: ChannelLayer) -> AsyncIterator[Any]:
    """``await stack(app=..., **options)`` starts a :class:`Stack`; stopped after the test."""
    async with stacks_stopped_after() as stacks:

        async def start(app: Any = None, **options: Any) -> Stack:
            running = await Stack.start(layer, [UdpPlugin(udp_options(**options))], app=app, protocols=["udp"])
            stacks.append(running)
            return running

        yield start


# -- OS processes ---------------------------------------------------------------------


@dataclass
class Deployment(ModeDeployment):
    """Gateway and worker processes (or one ``run`` process) serving UDP on ``port``."""

    settings_module = "udp_settings"
    cwd = HERE

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def stats_file(self) -> Path:
        return Path(self.env["UDP_TEST_STATS_FILE"])

    @property
    def handled_file(self) -> Path:
        return Path(self.env["UDP_TEST_HANDLED_FILE"])

    def gateway_name(self) -> str:
        return "gateway" if self.mode == "split" else "run"

    def read_json(self, path: Path) -> dict[str, int]:
        if not path.exists():
            raise AssertionError(f"{path.name} was not written\n{self.logs()}")
        data: dict[str, int] = json.loads(path.read_text())
        return data


async def wait_ready(deployment: Deployment, client: UdpClient, timeout: float = 30) -> None:
    """Ping until the consumer answers: the gateway is bound and a worker is serving.

    Pings sent while the worker was still starting wait on the layer and are answered
    late: their answers are drained here (until all are in or 0.5 s pass without one), so
    the test's own first answer is not a stale ``READY?``.
    """
    end = time.monotonic() + deadline(timeout)
    pings = 0
    while time.monotonic() < end:
        deployment.check_alive()
        client.send(b"ready?", deployment.address)
        pings += 1
        try:
            data, _ = await client.receive(timeout=0.2)
        except TimeoutError:
            continue
        if data == b"READY?":
            for _ in range(pings - 1):
                if await client.nothing_within(0.5):
                    break
            return
    raise RuntimeError(f"no UDP answer within {timeout}s\n{deployment.logs()}")


@pytest.fixture(params=["split", "run"])
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    """``split``: gateway + worker processes over Redis; ``run``: one process, memory layer."""
    mode = request.param
    if mode == "split" and not redis_reachable():
        pytest.skip("Redis is not reachable on 127.0.0.1:6379")
    port = free_udp_port()
    env = process_env(
        [HERE, EXAMPLE, ROOT],
        UDP_TEST_BIND=f"127.0.0.1:{port}",
        UDP_TEST_STATS_FILE=str(tmp_path / "gateway-stats.json"),
        UDP_TEST_HANDLED_FILE=str(tmp_path / "handled.json"),
    )
    split_layer_env(env, mode, "UDP_TEST", REDIS_URL)
    deployment = Deployment(mode, port, env, tmp_path)
    deployment.start_mode()
    try:
        yield deployment
    finally:
        stop_reporting(deployment, request)

