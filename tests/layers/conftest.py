"""Fixtures for the channel layer tests.

``make_layer`` / ``layer`` are parametrized over the in-memory and the Redis backend, so
every conformance test runs against both. The Redis variant uses the real server on
127.0.0.1:6379 (``SWITCHBOARD_TEST_REDIS_URL`` overrides it) under a key prefix unique to
the test, and is skipped with a reason when that server is not reachable.

``redis_servers`` starts private ``redis-server`` processes on free loopback ports for
the sharding and restart tests (skipped when the binary is not installed).

A module that sets ``TOPOLOGIES = True`` (the layer and durable conformance suites) also
runs on a Redis Cluster (``redis-cluster``: 3 primaries + 3 replicas) and on a
Sentinel-managed primary (``redis-sentinel``), each started once per session
(``redis_cluster`` / ``redis_sentinel``, tests/support/redis_topologies.py).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from support import processes
from support.redis_server import RedisServer

from switchboard.gateway.layers import ChannelLayer, build_layer
from switchboard.gateway.layers.memory import MemoryStorage
from switchboard.gateway.layers.redis import RedisStorage

REDIS_URL = os.environ.get("SWITCHBOARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
# Unique per test session, so concurrent runs (or e2e tests) sharing the server never meet.
RUN_PREFIX = f"sbtest:{secrets.token_hex(4)}:"
_prefix_counter = itertools.count()

# Short blocking pops: Receiver.close() waits for the pop in flight, so this bounds every
# close in the suite.
TEST_BLOCK_TIMEOUT = 0.2

MakeLayer = Callable[..., Awaitable[ChannelLayer]]
StoredCount = Callable[[ChannelLayer, str], Awaitable[int]]


def redis_reachable(url: str = REDIS_URL) -> bool:
    parts = urlsplit(url)
    return processes.redis_reachable(parts.hostname or "127.0.0.1", parts.port or 6379, accept_noauth=True)


_reachable: dict[str, bool] = {}


def require_redis() -> None:
    if REDIS_URL not in _reachable:
        _reachable[REDIS_URL] = redis_reachable()
    if not _reachable[REDIS_URL]:
        pytest.skip(f"Redis is not reachable at {REDIS_URL}; start redis-server to run the Redis backend tests")


def new_prefix() -> str:
    return f"{RUN_PREFIX}{next(_prefix_counter)}:"


@pytest.fixture(name="unique_prefix")
def unique_prefix_fixture() -> Callable[[], str]:
    """``unique_prefix()``: a Redis key prefix no other test (or test run) uses."""
    return new_prefix


BACKENDS = ["memory", pytest.param("redis", marks=pytest.mark.redis)]
TOPOLOGY_BACKENDS = [
    pytest.param("redis-cluster", marks=pytest.mark.redis),
    pytest.param("redis-sentinel", marks=pytest.mark.redis),
]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``backend``: memory and Redis everywhere; the cluster and Sentinel where a module asks."""
    if "backend" in metafunc.fixturenames:
        topologies = TOPOLOGY_BACKENDS if getattr(metafunc.module, "TOPOLOGIES", False) else []
        metafunc.parametrize("backend", BACKENDS + topologies, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":
        require_redis()
    return str(request.param)


@pytest.fixture
def backend_hosts(backend: str, request: pytest.FixtureRequest) -> list[Any]:
    """The ``hosts`` of a Redis ``backend``: the shared server, the cluster's seeds or the Sentinel entry."""
    if backend == "redis-cluster":
        return list(request.getfixturevalue("redis_cluster").seeds)
    if backend == "redis-sentinel":
        return [request.getfixturevalue("redis_sentinel").hosts_entry]
    return [REDIS_URL]


@pytest.fixture
def redis_url() -> str:
    """The shared Redis server's URL (skips the test when it is not reachable)."""
    require_redis()
    return REDIS_URL


@pytest.fixture
async def make_layer(backend: str, request: pytest.FixtureRequest) -> AsyncIterator[MakeLayer]:
    """``await make_layer(**config)``: a flushed layer on this test's backend.

    ``config`` is the layer ``CONFIG`` mapping (LayerOptions fields and, for Redis,
    storage options); it goes through :func:`build_layer` like a real settings entry.
    Layers made in one test share one Redis prefix; all are flushed and closed afterwards.
    """
    layers: list[ChannelLayer] = []
    prefix = new_prefix()
    hosts = request.getfixturevalue("backend_hosts") if backend != "memory" else None

    async def make(**config: Any) -> ChannelLayer:
        config.setdefault("block_timeout", TEST_BLOCK_TIMEOUT)
        if backend != "memory":
            config.setdefault("hosts", hosts)
            config.setdefault("prefix", prefix)
        layer = build_layer({"BACKEND": "memory" if backend == "memory" else "redis", "CONFIG": config})
        layers.append(layer)
        await layer.flush()
        return layer

    yield make
    for layer in layers:
        await layer.flush()
        await layer.close()


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def sync_layer(request: pytest.FixtureRequest) -> Iterator[ChannelLayer]:
    """A layer built outside any event loop, as a settings module's layer is.

    For tests that drive it from several loops (``asyncio.run``, ``async_to_sync``);
    flushed and closed on a loop of its own afterwards.
    """
    config: dict[str, Any] = {"block_timeout": TEST_BLOCK_TIMEOUT}
    if request.param == "redis":
        require_redis()
        config.update(hosts=[REDIS_URL], prefix=new_prefix())
    layer = build_layer({"BACKEND": request.param, "CONFIG": config})
    yield layer

    async def flush_and_close() -> None:
        await layer.flush()
        await layer.close()

    asyncio.run(flush_and_close())


@pytest.fixture
async def layer(make_layer: MakeLayer) -> ChannelLayer:
    return await make_layer()


@pytest.fixture
def stored_count() -> StoredCount:
    """``await stored_count(layer, key)``: items stored under the storage key ``key``.

    Looks into the backend directly (a raw Redis connection, or the in-memory dict), so a
    test can check what was stored without consuming it.
    """

    async def count(layer: ChannelLayer, key: str) -> int:
        storage = layer.storage
        if isinstance(storage, MemoryStorage):
            return len(storage._lists.get(key, ()))
        assert isinstance(storage, RedisStorage)
        shard = storage._shards()[storage.shard_index(key)]
        return int(await shard.client.llen(storage._list_key(key)))

    return count


# -- Private redis-server processes --------------------------------------------------


@pytest.fixture(scope="session")
def redis_server_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("the redis-server binary is not installed; sharding and restart tests need private servers")
    return binary


@pytest.fixture
def redis_server(redis_server_binary: str, tmp_path: Path) -> Iterator[RedisServer]:
    """One private Redis server for this test (free to stop and restart it)."""
    server = RedisServer(redis_server_binary, tmp_path / "redis")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def redis_shards(redis_server_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RedisServer]]:
    """Three private Redis servers, shared by a module's sharding tests."""
    servers = [RedisServer(redis_server_binary, tmp_path_factory.mktemp(f"shard{i}")) for i in range(3)]
    try:
        for server in servers:
            server.start()
        yield servers
    finally:
        for server in servers:
            server.stop()


