"""Fixtures for the MQTT tests: the real Mosquitto, private brokers, in-process stacks.

Every test talks to a real broker: the system Mosquitto on 127.0.0.1:1883 (shared, so each
test uses its own topic prefix) or, for broker restarts, a private ``mosquitto`` process on
a free port that the test may kill and start again. Tests skip with a reason when the
broker (or the binary) is absent; nothing is mocked.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support.django_settings import configure as configure_django
from support.mosquitto import MosquittoServer, mosquitto_binary

configure_django()

from mqtt_helpers import (
    BROKER_PORT,
    Deployment,
    MqttTestClient,
    mosquitto_reachable,
    unique_prefix,
)
from support.processes import redis_reachable

from switchboard.gateway.layers import ChannelLayer, build_layer, set_channel_layer
from switchboard.gateway.plugins import build_plugins
from switchboard.gateway.server import Gateway
from switchboard.gateway.worker import Worker
from switchboard.protocols.mqtt import MqttPlugin

# A short blocking pop keeps teardown fast: read loops notice shutdown within this long.
FAST_LAYER: dict[str, Any] = {"BACKEND": "memory", "CONFIG": {"block_timeout": 0.05}}


@pytest.fixture
def broker_url() -> str:
    """The shared Mosquitto on 127.0.0.1:1883 (skips the test when it is not running)."""
    if not mosquitto_reachable():
        pytest.skip(f"Mosquitto is not reachable on 127.0.0.1:{BROKER_PORT} (install and start mosquitto)")
    return f"mqtt://127.0.0.1:{BROKER_PORT}"


@pytest.fixture
def prefix() -> str:
    return unique_prefix()


@pytest.fixture
def private_broker(tmp_path: Path) -> Iterator[MosquittoServer]:
    """A private mosquitto process on a free port (killed at teardown)."""
    if mosquitto_binary() is None:
        pytest.skip("the mosquitto binary is not installed (apt-get install mosquitto)")
    broker = MosquittoServer(tmp_path)
    broker.start()
    try:
        yield broker
    finally:
        broker.kill()


@pytest.fixture
def mqtt_client() -> Iterator[Callable[..., MqttTestClient]]:
    """``mqtt_client(port=1883, version=4)``: a connected test client, closed at teardown."""
    clients: list[MqttTestClient] = []

    def connect(port: int = BROKER_PORT, version: int = 4) -> MqttTestClient:
        client = MqttTestClient(port, version=version).connect()
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


@dataclass
class Stack:
    """A running gateway core + MQTT plugin (+ worker) over the in-memory layer."""

    layer: ChannelLayer
    gateway: Gateway
    plugin: MqttPlugin
    worker: Worker | None = None
    worker_stop: asyncio.Event = field(default_factory=asyncio.Event)
    worker_task: asyncio.Task[None] | None = None
    closed: bool = False

    async def close(self) -> None:
        """Stop in production order: plugin (drains), gateway core, worker, layer."""
        if self.closed:
            return
        self.closed = True
        await self.plugin.stop(5.0)
        await self.gateway.stop()
        self.worker_stop.set()
        if self.worker_task is not None:
            await self.worker_task
        await self.layer.close()


StartStack = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def serve(request: pytest.FixtureRequest) -> AsyncIterator[StartStack]:
    """``await serve(app, **mqtt_options)`` starts a stack; ``app=None`` runs no worker.

    Defaults: the shared broker (the test skips without it), fast reconnects, and
    consumers may publish anywhere under the test's own ``prefix``.
    """
    stacks: list[Stack] = []

    async def start(app: Any = None, *, layer_config: dict[str, Any] | None = None, **options: Any) -> Stack:
        if "brokers" not in options:
            options["brokers"] = [request.getfixturevalue("broker_url")]
        options.setdefault("reconnect_min_delay", 0.1)
        options.setdefault("reconnect_max_delay", 0.5)
        options.setdefault("publish_topics", [f"{request.getfixturevalue('prefix')}/#"])
        (plugin,) = build_plugins({"mqtt": options})
        assert isinstance(plugin, MqttPlugin)
        layer = build_layer(layer_config or FAST_LAYER)
        set_channel_layer(layer)
        gateway = Gateway(layer)
        await gateway.start()
        await plugin.start(gateway)
        stack = Stack(layer, gateway, plugin)
        stacks.append(stack)
        if app is not None:
            stack.worker = Worker(app, layer, protocols=["mqtt"])
            stack.worker_task = asyncio.get_running_loop().create_task(stack.worker.run(stack.worker_stop))
        return stack

    yield start
    for stack in reversed(stacks):
        await stack.close()
    set_channel_layer(None)


@pytest.fixture
def deploy(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., Deployment]]:
    """``deploy(mode, broker_url, prefix)`` starts the e2e project as OS processes.

    ``split`` (gateway + worker over Redis) skips when Redis is absent. Processes are
    stopped at teardown (SIGTERM, then kill); their logs are printed when the test failed.
    """
    deployments: list[Deployment] = []

    def start(mode: str, broker_url: str, prefix: str) -> Deployment:
        if mode == "split" and not redis_reachable():
            pytest.skip("Redis is not reachable on 127.0.0.1:6379")
        log_dir = tmp_path / f"deploy-{len(deployments)}"
        log_dir.mkdir()
        deployment = Deployment(mode, broker_url, prefix, log_dir)
        deployments.append(deployment)
        deployment.start_all()
        return deployment

    yield start
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    for deployment in deployments:
        deployment.stop_all()
        if failed:
            print(deployment.logs())
        if deployment.broker_port == BROKER_PORT and mosquitto_reachable():
            # The shared broker persists retained messages: leave no "offline" behind.
            cleaner = MqttTestClient(BROKER_PORT).connect()
            cleaner.publish(f"{deployment.prefix}/status", b"", qos=1, retain=True)
            cleaner.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, "rep_" + report.when, report)
    return report
