"""``switchboard status`` against real processes, and in one-process mode.

Split mode: ``switchboard gateway`` + ``switchboard worker`` OS processes over the real
Redis (a key prefix of their own per test), a WebSocket held open and some HTTP traffic,
then ``switchboard status`` run as a command. One-process mode: the in-memory layer of
``switchboard run`` is private to its process, so the status client runs in that process
(the same code the command runs), and the command itself refuses a memory layer.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from typing import Any

import pytest
from obs_helpers import HERE, Deployment, Stack, free_port, http_get, scrape, value
from support.waiting import eventually
from websockets.sync.client import connect

from switchboard.gateway import specs
from switchboard.gateway.layers import get_channel_layer
from switchboard.gateway.observer import STATUS
from switchboard.gateway.status import render_table, snapshot

pytestmark = pytest.mark.e2e


def as_message(row: dict[str, Any]) -> dict[str, Any]:
    """A status row back as the message that crossed the layer (the command adds two keys)."""
    message = {k: v for k, v in row.items() if k not in ("last_seen", "uptime")}
    return {"type": STATUS, **message}


def start_split(deployment: Any) -> tuple[Deployment, int]:
    """Gateway + worker over Redis; the worker serves metrics on a port of its own."""
    split: Deployment = deployment(redis=True, metrics={"interval": 0.2})
    worker_metrics = free_port()
    split.start("gateway", "gateway")
    split.start("worker", "worker", "--metrics-bind", f"127.0.0.1:{worker_metrics}")
    split.wait_ready()
    return split, worker_metrics


@pytest.mark.redis
def test_status_once_json_lists_gateway_and_worker(deployment: Any) -> None:
    split, worker_metrics = start_split(deployment)
    with connect(f"ws://127.0.0.1:{split.http_port}/ws") as ws:
        ws.send("hi")
        assert ws.recv(timeout=10) == "echo:hi"
        for path in ("/a", "/b", "/c"):
            assert http_get(split.base_url + path) == (200, b"hello")

        result = split.command("status", "--once", "--json", "--wait", "2")
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        rows = {row["kind"]: row for row in report["processes"]}
        assert sorted(rows) == ["gateway", "worker"] and len(report["processes"]) == 2

        gateway, worker = rows["gateway"], rows["worker"]
        for row, name in ((gateway, "gateway"), (worker, "worker")):
            specs.validate_message(as_message(row))
            assert row["pid"] == split.processes[name].pid
            assert row["host"] == socket.gethostname()
            assert row["state"] == "running"
            assert row["uptime"] >= 0 and row["last_seen"] >= 0
            assert row["drops"] == {}
            assert row["layer"]["sent"] > 0 and row["layer"]["received"] > 0
        assert gateway["connections"] == {"websocket": 1}  # the three requests have finished
        assert gateway["gateway"]["plugins"] == ["http"]
        # At least: /ready, /a, /b, /c, the connect and the message; their replies came back.
        assert gateway["gateway"]["events_in"] >= 6
        assert gateway["gateway"]["events_out"] >= 4 * 2 + 2
        assert gateway["gateway"]["claimed"] == 1  # the open WebSocket belongs to the worker
        assert gateway["gateway"]["held"] == 0
        assert "worker" not in gateway and "gateway" not in worker
        assert worker["connections"] == {}
        assert worker["worker"]["events_in"] >= 6
        assert worker["worker"]["instances"] >= 1 and worker["worker"]["claimed"] == 1
        assert worker["worker"]["events_out"] is None  # WorkerStats does not count replies yet
        assert worker["worker"]["failed"] == 0

        table = split.command("status", "--once", "--wait", "1")
        assert table.returncode == 0, table.stderr
        header, *lines = table.stdout.splitlines()
        assert header.split()[:3] == ["ID", "KIND", "HOST/PID"]
        assert len(lines) == 2
        assert gateway["id"] in lines[0] and "websocket=1" in lines[0]
        assert worker["id"] in lines[1] and f"/{worker['pid']}" in lines[1]

    # The worker's own metrics endpoint, from the real process.
    samples = scrape(f"http://127.0.0.1:{worker_metrics}/metrics")
    assert value(samples, "switchboard_info", kind="worker", id=worker["id"], host=worker["host"]) == 1
    assert value(samples, "switchboard_worker_events_total") >= 6


@pytest.mark.redis
def test_status_live_json_streams_snapshots(deployment: Any) -> None:
    split, _ = start_split(deployment)
    command = [sys.executable, "-m", "switchboard", "status", "--json", "--interval", "0.3", "--settings", "obs_settings"]
    live = subprocess.Popen(command, cwd=HERE, env=split.env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert live.stdout is not None
        snapshots = []
        while len(snapshots) < 3:
            line = live.stdout.readline()
            assert line, "status exited early"
            snapshots.append(json.loads(line))
        # The first collects for two intervals, later ones for one: both processes in each.
        for report in snapshots:
            assert sorted(row["kind"] for row in report["processes"]) == ["gateway", "worker"]
    finally:
        live.send_signal(signal.SIGTERM)  # (SIGINT, ignored in background jobs, may not arrive)
        live.wait(20)
    assert live.returncode == 0


@pytest.mark.redis
def test_status_exits_1_when_nobody_answers(deployment: Any) -> None:
    empty: Deployment = deployment(redis=True)  # a fresh key prefix: no process behind it
    result = empty.command("status", "--once", "--json", "--wait", "0.5")
    assert result.returncode == 1
    assert json.loads(result.stdout)["processes"] == []
    assert "no gateway or worker answered" in result.stderr


def test_status_refuses_the_in_memory_layer(deployment: Any) -> None:
    memory: Deployment = deployment(redis=False)
    result = memory.command("status", "--once")
    assert result.returncode == 2
    assert "in-memory layer" in result.stderr


async def test_status_in_one_process_mode(stack: Stack) -> None:
    """``switchboard run``: one row, kind ``run``, with both the gateway and the worker part."""
    for path in ("/a", "/b"):
        assert await eventually(lambda p=path: http_get(stack.base_url + p) == (200, b"hello"), path)
    rows = await snapshot(get_channel_layer(), wait=0.5)
    assert len(rows) == 1
    (row,) = rows
    specs.validate_message(as_message(row))
    assert row["kind"] == "run" and row["state"] == "running"
    assert row["id"] == row["gateway"]["id"] != row["worker"]["id"]
    assert row["gateway"]["events_in"] >= 3 and row["worker"]["events_in"] >= 3
    assert row["gateway"]["events_out"] >= 3 * 2
    assert "run" in render_table(rows).splitlines()[1]
