"""Fixtures for the failover suite: a Redis Cluster / Sentinel setup and gateway + worker processes.

The topologies are real ``redis-server`` processes (tests/support/redis_topologies.py),
one of each per session, started on first use and skipped with a reason when the binary
is absent. The records the consumers keep (acknowledged and handled chat-log ids) go to a
private plain ``redis-server``, so killing a primary of the topology never touches them.

:class:`FailoverDeployment` runs ``switchboard gateway`` / ``worker`` processes with the
test project in this directory, each with its own metrics port, so the test reads the
layer's and the gateway's counters the way an operator would (Prometheus exposition).
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.processes import ProcessDeployment, free_tcp_port, process_env
from support.processes import pytest_runtest_makereport as pytest_runtest_makereport
from support.redis_server import RedisServer

HERE = Path(__file__).resolve().parent


def redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("the redis-server binary is not installed; the failover tests need private servers")
    return binary


@pytest.fixture(scope="session")
def records_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A plain private Redis for the consumers' records (acknowledged / handled ids)."""
    server = RedisServer(redis_binary(), tmp_path_factory.mktemp("records"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def metrics(port: int) -> dict[str, float]:
    """One process's Prometheus metrics: ``name{label=value,...}`` -> value (samples only)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def port_bound(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class FailoverDeployment(ProcessDeployment):
    """Gateways and workers of the failover test project; each with its own metrics port."""

    env: dict[str, str]
    log_dir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    http_ports: dict[str, int] = field(default_factory=dict)
    metrics_ports: dict[str, int] = field(default_factory=dict)

    settings_module = "failover_settings"
    cwd = HERE
    stop_timeout = 20

    def start_gateway(self, name: str) -> int:
        """Start ``switchboard gateway`` as ``name`` on a port of its own; that port."""
        port, metrics_port = free_tcp_port(), free_tcp_port()
        self.http_ports[name], self.metrics_ports[name] = port, metrics_port
        self.start(
            name, "gateway", "--metrics-bind", f"127.0.0.1:{metrics_port}", env={"FAILOVER_HTTP_BIND": f"127.0.0.1:{port}"}
        )
        return port

    def start_worker(self, name: str) -> None:
        metrics_port = free_tcp_port()
        self.metrics_ports[name] = metrics_port
        self.start(name, "worker", "--metrics-bind", f"127.0.0.1:{metrics_port}")

    def metrics(self, name: str) -> dict[str, float]:
        return metrics(self.metrics_ports[name])

    def stop_all(self) -> None:
        """Workers first, while the gateways can still acknowledge their stop; then gateways."""
        for name in reversed(list(self.processes)):
            self.stop(name)


def new_deployment(log_dir: Path, hosts: list[Any], records: RedisServer) -> FailoverDeployment:
    prefix = f"sb-failover-{secrets.token_hex(4)}:"
    env = process_env(
        [HERE], FAILOVER_HOSTS=json.dumps(hosts), FAILOVER_PREFIX=prefix, FAILOVER_LOG_URL=records.url
    )
    env.pop("DJANGO_SETTINGS_MODULE", None)
    log_dir.mkdir(parents=True, exist_ok=True)
    return FailoverDeployment(env, log_dir)


@pytest.fixture
def make_deployment(
    request: pytest.FixtureRequest, tmp_path: Path, records_server: RedisServer
) -> Iterator[Any]:
    """``make_deployment(hosts)``: a :class:`FailoverDeployment`, stopped after the test."""
    made: list[FailoverDeployment] = []

    def make(hosts: list[Any]) -> FailoverDeployment:
        deployment = new_deployment(tmp_path / f"deploy{len(made)}", hosts, records_server)
        made.append(deployment)
        return deployment

    yield make
    for deployment in made:
        deployment.stop_all()
        report = getattr(request.node, "rep_call", None)
        if report is None or report.failed:
            print(deployment.logs())
