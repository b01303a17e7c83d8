"""The plugin deployed as a project would use it: OS processes, settings naming it by entry point.

``run``: one ``switchboard run`` process on the in-memory layer; ``split``: ``switchboard
gateway`` + ``switchboard worker`` over Redis (database 14, a prefix of its own). A real
TCP client sends lines and reads the consumer's answers; SIGTERM drains and writes the
plugin's final counters.
"""

from __future__ import annotations

import asyncio
import json
import signal

import pytest
from lineproto_support import Deployment, LineClient
from support.waiting import wait_until

pytestmark = pytest.mark.e2e


async def connect_when_ready(deployment: Deployment) -> LineClient:
    """Connect once the gateway listens, and wait for the consumer's greeting (a worker serves)."""
    client: LineClient | None = None

    async def connected() -> bool:
        nonlocal client
        deployment.check_alive()
        try:
            client = await LineClient.connect(deployment.address)
        except OSError:
            return False
        return True

    await wait_until(connected, timeout=60, what="the gateway to listen")
    assert client is not None
    assert await client.line() == "HELLO"
    return client


async def test_lines_through_gateway_and_worker_processes(deployment: Deployment) -> None:
    client = await connect_when_ready(deployment)
    await client.send("hello from nc", "second")
    assert [await client.line(), await client.line()] == ["HELLO FROM NC", "SECOND"]
    await client.send("BAD", "after the bad reply")
    assert await client.line() == "AFTER THE BAD REPLY"
    await client.send("x" * 65)  # the settings' max_line_length is 64
    assert await client.closed() == b"ERROR line too long (max 64 bytes)\n"
    await client.close()
    gateway = "gateway" if deployment.mode == "split" else "run"
    assert f"tcp://127.0.0.1:{deployment.port}" in deployment.log(gateway)  # the banner names it
    assert deployment.stop(gateway, signal.SIGTERM) == 0
    stats = json.loads(deployment.stats_file.read_text())
    assert stats["connections_opened"] == 1 and stats["messages_in"] == 4
    assert stats["messages_out"] == 4  # HELLO and three answers
    assert stats["replies_invalid"] == 1 and stats["lines_refused_too_long"] == 1


async def test_sigterm_tells_a_connected_client(deployment: Deployment) -> None:
    client = await connect_when_ready(deployment)
    gateway = "gateway" if deployment.mode == "split" else "run"
    deployment.processes[gateway].send_signal(signal.SIGTERM)
    assert await client.closed() == b"ERROR server shutting down\n"
    await client.close()
    await asyncio.to_thread(deployment.stop, gateway)
