"""Private Redis servers for the systems that measure Redis itself: a Redis Cluster for
``switchboard-split-cluster*``, one ``redis-server`` for ``switchboard-split-private``.

Private because the shared server on 6379 also serves every other engineer's tests: its
CPU in a window is theirs too, which makes "Redis CPU per message" unreadable on a busy
day. A server of the run's own counts only the system under test.

The cluster itself is the test suite's :class:`ClusterOfServers`
(tests/support/redis_topologies.py: 3 primaries + 3 replicas of ``redis-server``, created
with ``redis-cli --cluster create``): one implementation for the tests and the bench, so
what the failover tests trust is what the figures were measured on. The bench does not put
``tests/`` on ``sys.path`` (its folder names, ``core``, ``cli``, ``layers``, would shadow
real packages); it loads ``tests/support`` by path under a private package name instead
(which imports pytest, installed with the main venv's ``test`` extra like the bench's
other needs).

Ports come from ``SWITCHBOARD_BENCH_CLUSTER_PORTS`` (for both) (``"32000-32999"`` by default; each
node also needs its port + 10000 for the cluster bus), so a bench run never takes the
ports of someone's test cluster (``SWITCHBOARD_TEST_CLUSTER_PORTS``).
"""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import redis

PORTS_VARIABLE = "SWITCHBOARD_BENCH_CLUSTER_PORTS"
DEFAULT_PORTS = "32000-32999"
_SUPPORT_DIR = Path(__file__).resolve().parent.parent / "tests" / "support"
_PACKAGE = "_switchboard_test_support"


def _support(module: str) -> ModuleType:
    """A module of tests/support, imported once as ``_switchboard_test_support.<module>``."""
    if _PACKAGE not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            _PACKAGE, _SUPPORT_DIR / "__init__.py", submodule_search_locations=[str(_SUPPORT_DIR)]
        )
        if spec is None or spec.loader is None:
            raise RuntimeError(f"cannot load the cluster helpers from {_SUPPORT_DIR}")
        package = importlib.util.module_from_spec(spec)
        sys.modules[_PACKAGE] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"{_PACKAGE}.{module}")


def _binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not on PATH: the systems on private Redis servers need it")
    return binary


@dataclass(frozen=True)
class RedisNode:
    """One Redis server whose CPU counts as the system's ``redis CPU s``."""

    label: str  # "redis", or "primary:32001" / "replica:32004" in a cluster
    host: str
    port: int


class PrivateRedis(ABC):
    """Redis servers of one measured pair: started and stopped by the runner."""

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> None: ...

    @property
    @abstractmethod
    def url(self) -> str:
        """The layer's ``hosts`` entry."""

    @abstractmethod
    def nodes(self) -> list[RedisNode]: ...


class BenchServer(PrivateRedis):
    """One ``redis-server`` (tests/support/redis_server.py's), no persistence."""

    def __init__(self, workdir: Path) -> None:
        topologies: Any = _support("redis_topologies")
        port = topologies._take_ports(topologies.port_range(PORTS_VARIABLE, DEFAULT_PORTS), 1, bus=False)[0]
        self._server = _support("redis_server").RedisServer(_binary(), workdir, port=port)

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

    @property
    def url(self) -> str:
        return str(self._server.url)

    def nodes(self) -> list[RedisNode]:
        return [RedisNode(f"primary:{self._server.port}", "127.0.0.1", self._server.port)]


class BenchCluster(PrivateRedis):
    """A 3-primary + 3-replica cluster (the tests' ``ClusterOfServers``)."""

    def __init__(self, workdir: Path) -> None:
        topologies: Any = _support("redis_topologies")
        ports = topologies.port_range(PORTS_VARIABLE, DEFAULT_PORTS)
        self._cluster = topologies.ClusterOfServers(_binary(), workdir, ports=ports)

    def start(self) -> None:
        self._cluster.start()

    def stop(self) -> None:
        self._cluster.stop()

    @property
    def url(self) -> str:
        # One seed is enough: redis-py's cluster client learns the rest from it.
        return str(self._cluster.seeds[0])

    def nodes(self) -> list[RedisNode]:
        """Every node with its role now (primaries first): the CPU of all of them is Redis's cost."""
        found = []
        for server in self._cluster.servers:
            with redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=5) as client:
                role = "primary" if client.info("replication").get("role") == "master" else "replica"
            found.append(RedisNode(f"{role}:{server.port}", "127.0.0.1", server.port))
        return sorted(found, key=lambda node: (node.label.startswith("replica"), node.port))
