"""A private Redis Cluster for the ``switchboard-split-cluster*`` systems.

The cluster itself is the test suite's :class:`ClusterOfServers`
(tests/support/redis_topologies.py: 3 primaries + 3 replicas of ``redis-server``, created
with ``redis-cli --cluster create``): one implementation for the tests and the bench, so
what the failover tests trust is what the figures were measured on. The bench does not put
``tests/`` on ``sys.path`` (its folder names, ``core``, ``cli``, ``layers``, would shadow
real packages); it loads ``tests/support`` by path under a private package name instead.

Ports come from ``SWITCHBOARD_BENCH_CLUSTER_PORTS`` (``"32000-32999"`` by default; each
node also needs its port + 10000 for the cluster bus), so a bench run never takes the
ports of someone's test cluster (``SWITCHBOARD_TEST_CLUSTER_PORTS``).
"""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import redis

PORTS_VARIABLE = "SWITCHBOARD_BENCH_CLUSTER_PORTS"
DEFAULT_PORTS = "32000-32999"
_SUPPORT_DIR = Path(__file__).resolve().parent.parent / "tests" / "support"
_PACKAGE = "_switchboard_test_support"


def _topologies() -> ModuleType:
    """tests/support/redis_topologies.py, imported once as ``_switchboard_test_support.*``."""
    if _PACKAGE not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            _PACKAGE, _SUPPORT_DIR / "__init__.py", submodule_search_locations=[str(_SUPPORT_DIR)]
        )
        if spec is None or spec.loader is None:
            raise RuntimeError(f"cannot load the cluster helpers from {_SUPPORT_DIR}")
        package = importlib.util.module_from_spec(spec)
        sys.modules[_PACKAGE] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"{_PACKAGE}.redis_topologies")


@dataclass(frozen=True)
class RedisNode:
    """One Redis server whose CPU counts as the system's ``redis CPU s``."""

    label: str  # "redis", or "primary:32001" / "replica:32004" in a cluster
    host: str
    port: int


class BenchCluster:
    """One fresh 3+3 cluster per measured pair (started and stopped by the runner)."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not on PATH: the cluster systems need it to start a Redis Cluster")
        topologies: Any = _topologies()
        ports = topologies.port_range(PORTS_VARIABLE, DEFAULT_PORTS)
        self._cluster = topologies.ClusterOfServers(binary, workdir, ports=ports)

    def start(self) -> None:
        self._cluster.start()

    def stop(self) -> None:
        self._cluster.stop()

    @property
    def seeds(self) -> list[str]:
        return list(self._cluster.seeds)

    def nodes(self) -> list[RedisNode]:
        """Every node with its role now (primaries first): the CPU of all of them is Redis's cost."""
        found = []
        for server in self._cluster.servers:
            with redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=5) as client:
                role = "primary" if client.info("replication").get("role") == "master" else "replica"
            found.append(RedisNode(f"{role}:{server.port}", "127.0.0.1", server.port))
        return sorted(found, key=lambda node: (node.label.startswith("replica"), node.port))
