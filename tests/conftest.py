"""What every suite shares at the pytest level: the per-test timeout follows the one knob,
and the Redis Cluster and Sentinel setups (one of each per session, for tests/layers and
tests/failover alike: each is six or five redis-server processes).

``SWITCHBOARD_TEST_TIMEOUT_SCALE`` scales every deadline a test waits on
(:mod:`support.waiting`); the per-test timeout of pytest-timeout (``timeout`` in
pyproject.toml, or a test's ``@pytest.mark.timeout``) is the outermost of those deadlines,
so it is scaled by the same knob. Left at 1, nothing changes.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from support.redis_topologies import ClusterOfServers, SentinelSetup
from support.waiting import deadline


def _redis_server_binary(what: str) -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip(f"the redis-server binary is not installed; {what} need private servers")
    return binary


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterOfServers]:
    """A 3-primary + 3-replica Redis Cluster for the whole session (tests/support/redis_topologies.py).

    Tests that kill a primary restore it before they end, so the next finds it whole.
    """
    cluster = ClusterOfServers(_redis_server_binary("Redis Cluster tests"), tmp_path_factory.mktemp("cluster"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def redis_sentinel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSetup]:
    """A primary, a replica and 3 Sentinels for the whole session."""
    setup = SentinelSetup(_redis_server_binary("Sentinel tests"), tmp_path_factory.mktemp("sentinel"))
    setup.start()
    try:
        yield setup
    finally:
        setup.stop()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if deadline(1) == 1:
        return
    try:
        default = float(config.getini("timeout") or 0)
    except ValueError:  # pytest-timeout not installed: no per-test timeout to scale
        return
    for item in items:
        marker = item.get_closest_marker("timeout")
        seconds = float(marker.args[0]) if marker is not None and marker.args else default
        if seconds > 0:
            # In front of any other timeout marker: pytest-timeout reads the closest one.
            item.add_marker(pytest.mark.timeout(deadline(seconds)), append=False)
