"""Fixtures for the line-protocol plugin's tests: in-process stacks, a real TCP client, OS processes.

In-process tests run the real plugin, the gateway core and a worker over the in-memory
layer and talk to them through a real TCP socket on loopback. The OS-process tests start
``switchboard run`` (or ``gateway`` + ``worker`` over Redis) with settings that name the
plugin only by its entry-point name, as a project using it would.

Switchboard's own test command (``pytest`` at the repository root) runs these too; the
distribution is installed (editable, into the running venv) by :func:`installed` the
first time a test needs its entry point, so a clean clone needs no extra step.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import django
import pytest
from django.conf import settings
from support.processes import ModeDeployment, free_tcp_port, process_env, redis_reachable
from support.processes import pytest_runtest_makereport as pytest_runtest_makereport
from support.waiting import deadline

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="switchboard-lineproto-tests",
        INSTALLED_APPS=[],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        USE_TZ=True,
    )
    django.setup()

import lineproto_consumers
from switchboard_lineproto import LineOptions, LinePlugin

from switchboard.gateway.config import parse_options
from switchboard.gateway.layers import ChannelLayer, build_layer, set_channel_layer
from switchboard.gateway.server import Gateway
from switchboard.gateway.worker import Worker

HERE = Path(__file__).resolve().parent
DISTRIBUTION = HERE.parent
#: Tests written for this plugin use Redis database 14 only (a prefix of their own too).
REDIS_URL = os.environ.get("LINE_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
WAIT = deadline(20)  # safety net: a broken path fails the test instead of hanging it


# -- the distribution, installed --------------------------------------------------------


def _entry_point_installed() -> bool:
    return any(entry.name == "lineproto" for entry in entry_points(group="switchboard.protocols"))


@pytest.fixture(scope="session")
def installed() -> None:
    """``switchboard-lineproto`` installed in this venv, so its entry point can be found.

    Editable and without dependencies (Switchboard is the one under test): the code stays
    the checkout's, only the metadata (the entry point) lands in site-packages, where
    ``importlib.metadata`` finds it at once and child processes' imports follow it.
    """
    if _entry_point_installed():
        return
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e", str(DISTRIBUTION)],
        capture_output=True, text=True, check=False,
    )
    importlib.invalidate_caches()
    if result.returncode != 0 or not _entry_point_installed():
        pytest.fail(f"cannot install {DISTRIBUTION} for its entry point:\n{result.stdout}\n{result.stderr}")


# -- a real TCP client -------------------------------------------------------------------


class LineClient:
    """A TCP connection that sends and reads lines, each wait bounded by :data:`WAIT`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, address: tuple[str, int]) -> LineClient:
        reader, writer = await asyncio.open_connection(*address, limit=2**22)
        return cls(reader, writer)

    async def send(self, *lines: str | bytes, ending: bytes = b"\n") -> None:
        for line in lines:
            self.writer.write((line.encode() if isinstance(line, str) else line) + ending)
        await self.writer.drain()

    async def line(self) -> str:
        """The next line, without its terminator; AssertionError at the end of the stream."""
        async with asyncio.timeout(WAIT):
            raw = await self.reader.readline()
        if not raw.endswith(b"\n"):
            raise AssertionError(f"the server closed the connection (partial: {raw!r})")
        return raw.decode().rstrip("\r\n")

    async def closed(self) -> bytes:
        """Wait for the server to close; what it sent before that."""
        async with asyncio.timeout(WAIT):
            return await self.reader.read()

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


@pytest.fixture
async def clients() -> AsyncIterator[Any]:
    """``await clients(address)`` opens a :class:`LineClient`; all closed after the test."""
    opened: list[LineClient] = []

    async def connect(address: tuple[str, int]) -> LineClient:
        client = await LineClient.connect(address)
        opened.append(client)
        return client

    yield connect
    for client in opened:
        await client.close()


# -- the in-process stack ----------------------------------------------------------------


def line_options(**raw: Any) -> LineOptions:
    """Options as the config gives them (through the real validation)."""
    raw.setdefault("bind", ["127.0.0.1:0"])
    return parse_options(LineOptions, raw, where="PROTOCOLS.lineproto")


@dataclass
class Stack:
    """Plugin + gateway core + a worker running the test echo, on one in-memory layer."""

    layer: ChannelLayer
    gateway: Gateway
    plugin: LinePlugin
    worker_stop: asyncio.Event = field(default_factory=asyncio.Event)
    worker_task: asyncio.Task[None] | None = None
    stopped: bool = False

    @property
    def address(self) -> tuple[str, int]:
        return self.plugin.bound_addresses[0]

    async def stop(self, drain: float = 5.0) -> None:
        if self.stopped:
            return
        self.stopped = True
        await self.plugin.stop(drain)
        self.worker_stop.set()
        if self.worker_task is not None:
            await self.worker_task
        await self.gateway.stop()


@pytest.fixture
async def stack() -> AsyncIterator[Any]:
    """``await stack(**options)`` starts a :class:`Stack`; stopped after the test."""
    layer = build_layer({"BACKEND": "memory", "CONFIG": {"block_timeout": 0.05}})
    set_channel_layer(layer)
    lineproto_consumers.EVENTS.clear()
    stacks: list[Stack] = []

    async def start(**options: Any) -> Stack:
        gateway = Gateway(layer)
        await gateway.start()
        plugin = LinePlugin(line_options(**options))
        await plugin.start(gateway)
        running = Stack(layer, gateway, plugin)
        stacks.append(running)
        worker = Worker(lineproto_consumers.EchoConsumer.as_asgi(), layer, protocols=["line"], channels=[])
        running.worker_task = asyncio.get_running_loop().create_task(worker.run(running.worker_stop, drain_timeout=1))
        return running

    try:
        yield start
    finally:
        for running in stacks:
            await running.stop()
        set_channel_layer(None)
        await layer.close()


# -- OS processes --------------------------------------------------------------------------


@dataclass
class Deployment(ModeDeployment):
    """``switchboard run``, or ``gateway`` + ``worker`` over Redis, serving lines on ``port``."""

    settings_module = "lineproto_settings"
    cwd = HERE

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def stats_file(self) -> Path:
        return Path(self.env["LINE_TEST_STATS_FILE"])


@pytest.fixture(params=["run", "split"])
def deployment(request: pytest.FixtureRequest, installed: None, tmp_path: Path) -> Iterator[Deployment]:
    """The plugin deployed as a project would: by its entry-point name in the settings."""
    mode = request.param
    if mode == "split" and not redis_reachable():
        pytest.skip("Redis is not reachable on 127.0.0.1:6379")
    port = free_tcp_port()
    env = process_env([HERE], LINE_TEST_BIND=f"127.0.0.1:{port}", LINE_TEST_STATS_FILE=str(tmp_path / "stats.json"))
    env.pop("LINE_TEST_REDIS_URL", None)
    if mode == "split":
        env["LINE_TEST_REDIS_URL"] = REDIS_URL
        env["LINE_TEST_REDIS_PREFIX"] = f"sb-line-{secrets.token_hex(4)}:"
    deployment = Deployment(mode, port, env, tmp_path)
    deployment.start_mode()
    try:
        yield deployment
    finally:
        deployment.stop_all()
        rep_call = getattr(request.node, "rep_call", None)
        if rep_call is not None and rep_call.failed:
            print(deployment.logs())
