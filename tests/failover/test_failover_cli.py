"""``switchboard gateway`` / ``worker`` with a bad cluster or Sentinel configuration.

Each must exit with code 2 and one clear line on stderr before any socket opens: the
gateway's HTTP port and the metrics port are never bound while the process runs.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from support.processes import free_tcp_port, process_env
from support.redis_server import RedisServer
from support.redis_topologies import SentinelSetup, port_range
from support.waiting import deadline

from .conftest import HERE, port_bound

pytestmark = [pytest.mark.redis, pytest.mark.timeout(180)]


def unused_port() -> int:
    """A port of this engineer's cluster range that nothing listens on."""
    for port in reversed(port_range("SWITCHBOARD_TEST_CLUSTER_PORTS", "27000-27999")):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise RuntimeError("no unused port")


def run_refused(command: str, hosts: list[Any], tmp_path: Path) -> tuple[str, list[int]]:
    """Run ``switchboard <command>`` with ``hosts``; its stderr, and the ports it must not bind.

    Both ports are probed until the process exits: a bind, however short, is seen.
    """
    http_port, metrics_port = free_tcp_port(), free_tcp_port()
    env = process_env(
        [HERE],
        FAILOVER_HOSTS=json.dumps(hosts),
        FAILOVER_PREFIX="sb-failover-cli:",
        FAILOVER_HTTP_BIND=f"127.0.0.1:{http_port}",
        FAILOVER_LOG_URL="redis://127.0.0.1:1/0",
    )
    env.pop("DJANGO_SETTINGS_MODULE", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "switchboard", command, "--settings", "failover_settings",
         "--metrics-bind", f"127.0.0.1:{metrics_port}"],
        cwd=HERE, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    bound: list[int] = []
    give_up = time.monotonic() + deadline(60)
    while process.poll() is None and time.monotonic() < give_up:
        bound += [port for port in (http_port, metrics_port) if port_bound(port)]
    if process.poll() is None:
        process.kill()
    _out, err = process.communicate(timeout=30)
    assert process.returncode == 2, (process.returncode, err.decode())
    return err.decode(), bound


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("command", ["gateway", "worker"])
def test_unreachable_cluster_seeds(command: str, tmp_path: Path) -> None:
    err, bound = run_refused(command, [f"redis+cluster://127.0.0.1:{unused_port()}"], tmp_path)
    assert bound == []
    assert "no Redis Cluster seed" in one_line(err)


@pytest.mark.parametrize("command", ["gateway", "worker"])
def test_cluster_url_for_a_plain_server(command: str, tmp_path: Path, records_server: RedisServer) -> None:
    err, bound = run_refused(command, [f"redis+cluster://127.0.0.1:{records_server.port}"], tmp_path)
    assert bound == []
    assert "is not a Redis Cluster" in one_line(err)


@pytest.mark.parametrize("command", ["gateway", "worker"])
def test_wrong_master_name(command: str, tmp_path: Path, redis_sentinel: SentinelSetup) -> None:
    entry = {**redis_sentinel.hosts_entry, "master_name": "no-such-primary"}
    err, bound = run_refused(command, [entry], tmp_path)
    assert bound == []
    assert "no-such-primary" in one_line(err)


@pytest.mark.parametrize("command", ["gateway", "worker"])
def test_unreachable_sentinels(command: str, tmp_path: Path) -> None:
    entry = {"sentinels": [["127.0.0.1", unused_port()]], "master_name": "mymaster"}
    err, bound = run_refused(command, [entry], tmp_path)
    assert bound == []
    assert "no Sentinel of" in one_line(err)
