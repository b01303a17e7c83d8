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

import importlib
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from support.django_settings import configure as configure_django
from support.processes import free_tcp_port, process_env, redis_reachable, split_layer_env, stop_reporting
from support.processes import pytest_runtest_makereport as pytest_runtest_makereport

# The repository's one definition of the in-process suites' Django settings: the example's
# tests run in the same pytest process as the project's (testpaths), configured once.
configure_django()

import lineproto_consumers
from lineproto_support import DISTRIBUTION, HERE, REDIS_URL, Deployment, LineClient, Stack, line_options
from support.layers import installed_layer
from support.stacks import stacks_stopped_after
from switchboard_lineproto import LinePlugin

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
    # First with the venv's own setuptools (no package index needed); where the venv has
    # none (Python 3.12 on), pip fetches one into an isolated build environment.
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e", str(DISTRIBUTION)]
    result = subprocess.run([*command, "--no-build-isolation"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    importlib.invalidate_caches()
    if result.returncode != 0 or not _entry_point_installed():
        pytest.fail(f"cannot install {DISTRIBUTION} for its entry point:\n{result.stdout}\n{result.stderr}")


# -- a real TCP client -------------------------------------------------------------------


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


@pytest.fixture
async def stack() -> AsyncIterator[Any]:
    """``await stack(**options)`` starts a :class:`Stack`; stopped after the test."""
    lineproto_consumers.EVENTS.clear()
    async with installed_layer({"BACKEND": "memory", "CONFIG": {"block_timeout": 0.05}}) as layer:
        async with stacks_stopped_after() as stacks:

            async def start(**options: Any) -> Stack:
                running = await Stack.start(
                    layer,
                    [LinePlugin(line_options(**options))],
                    app=lineproto_consumers.EchoConsumer.as_asgi(),
                    protocols=["line"],
                    drain_timeout=5.0,
                )
                stacks.append(running)
                return running

            yield start


# -- OS processes --------------------------------------------------------------------------


@pytest.fixture(params=["run", "split"])
def deployment(request: pytest.FixtureRequest, installed: None, tmp_path: Path) -> Iterator[Deployment]:
    """The plugin deployed as a project would: by its entry-point name in the settings."""
    mode = request.param
    if mode == "split" and not redis_reachable():
        pytest.skip("Redis is not reachable on 127.0.0.1:6379")
    port = free_tcp_port()
    env = process_env([HERE], LINE_TEST_BIND=f"127.0.0.1:{port}", LINE_TEST_STATS_FILE=str(tmp_path / "stats.json"))
    split_layer_env(env, mode, "LINE_TEST", REDIS_URL)
    deployment = Deployment(mode, port, env, tmp_path)
    deployment.start_mode()
    try:
        yield deployment
    finally:
        stop_reporting(deployment, request)
