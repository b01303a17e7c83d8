"""Fixtures for the Channels promises: long-poll, ordering, zero-downtime deploys.

In-process tests (``test_*_consumer.py``) drive consumers with queues on the in-memory
layer. End-to-end tests start real OS processes with the test project in this directory
(``promises_settings.py``, ``promises_routing.py``, ``promises_consumers.py``, plus the
example's ``longpolldemo`` app):

- ``split``: ``switchboard gateway`` and one or more ``switchboard worker`` processes over
  the real Redis on 127.0.0.1:6379 (skipped with a reason when it is not reachable);
- ``run``: ``switchboard run``, one process on the in-memory layer.

Every process is stopped in teardown; their logs are printed when a test failed.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support.django_settings import configure as configure_django
from support.processes import ModeDeployment, free_port, process_env, redis_reachable
from support.processes import pytest_runtest_makereport as pytest_runtest_makereport
from support.waiting import deadline

configure_django()

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "chatsite"
HERE = Path(__file__).resolve().parent
REDIS_URL = os.environ.get("SWITCHBOARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
WAIT = deadline(10)  # safety net for one expected answer (scaled): a broken path fails instead of hanging


def require_redis() -> None:
    if not redis_reachable():
        pytest.skip("Redis is not reachable on 127.0.0.1:6379 (start it: see .ci/run)")


@dataclass
class Deployment(ModeDeployment):
    """The OS processes of one test deployment, and how to reach them."""

    udp_ports: dict[str, int] = field(default_factory=dict)

    settings_module = "promises_settings"
    cwd = HERE
    stop_timeout = 20

    @property
    def log_prefix(self) -> str:
        """Where the test consumers' Redis logs live (``promises_consumers.log_handled``)."""
        return self.env["PROMISES_LOG_PREFIX"]

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def gateway(self) -> str:
        """The process holding the client connections."""
        return "gateway" if self.mode == "split" else "run"

    def stop_all(self) -> None:
        """Workers first, while the gateway can still acknowledge their stop; then the gateway."""
        for name in reversed(list(self.processes)):
            self.stop(name)

    async def wait_logged(self, name: str, text: str, timeout: float = 30, count: int = 1) -> None:
        """Wait until ``name``'s log has ``text`` ``count`` times (e.g. a worker listening)."""
        await self.wait_until(lambda: self.log(name).count(text) >= count, timeout, f"{name} to log {text!r} x{count}")

    async def start_worker(self, name: str) -> None:
        """Start a worker process and wait until it reads the layer."""
        self.start(name, "worker")
        await self.wait_logged(name, "listening on")

    async def request(self, method: str, path: str, body: bytes = b"", timeout: float = WAIT) -> tuple[int, bytes]:
        """One HTTP/1.1 request on a fresh connection (``Connection: close``); status and body."""
        return await asyncio.wait_for(http_request(self.port, method, path, body), timeout)

    async def get_json(self, path: str, timeout: float = WAIT) -> Any:
        status, body = await self.request("GET", path, timeout=timeout)
        assert status == 200, (path, status, body)
        return json.loads(body)

    async def wait_ready(self, timeout: float = 30) -> None:
        """Wait until a worker answers through the gateway."""

        async def answers() -> bool:
            try:
                status, _ = await self.request("GET", "/pid/", timeout=deadline(5))
            except (OSError, TimeoutError):
                return False
            return status == 200

        await self.wait_until(answers, timeout, "a worker to answer through the gateway")


async def http_request(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    """A raw asyncio HTTP/1.1 client: cheap enough to hold thousands of requests at once."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        return parse_response(await reader.read())
    finally:
        writer.close()


def parse_response(raw: bytes) -> tuple[int, bytes]:
    """Status and body of one whole ``Connection: close`` response (chunked or not)."""
    head, _, body = raw.partition(b"\r\n\r\n")
    if not head:
        raise ConnectionError("connection closed without a response")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        decoded = b""
        while body:
            size_line, _, rest = body.partition(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            if size == 0:
                break
            decoded += rest[:size]
            body = rest[size + 2 :]
        body = decoded
    return status, body


def new_deployment(tmp_path: Path, mode: str, **extra_env: str) -> Deployment:
    """A deployment's environment (not started): its ports, Redis prefix, log keys."""
    port = free_port()
    prefix = f"sb-promises-{secrets.token_hex(4)}:"
    env = process_env(
        [HERE, EXAMPLE],
        PROMISES_HTTP_BIND=f"127.0.0.1:{port}",
        PROMISES_LOG_REDIS_URL=REDIS_URL,
        PROMISES_LOG_PREFIX=prefix + "log:",
    )
    for name in ("PROMISES_REDIS_URL", "PROMISES_REDIS_PREFIX", "PROMISES_UDP_BINDS", "DJANGO_SETTINGS_MODULE"):
        env.pop(name, None)
    if mode == "split":
        env["PROMISES_REDIS_URL"] = REDIS_URL
        env["PROMISES_REDIS_PREFIX"] = prefix
    env.update(extra_env)
    return Deployment(mode, port, env, tmp_path)


@pytest.fixture
def make_deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """``make_deployment(mode, **env)``: a :class:`Deployment`, stopped after the test."""
    made: list[Deployment] = []

    def make(mode: str, **extra_env: str) -> Deployment:
        if mode == "split":
            require_redis()
        deployment = new_deployment(tmp_path / f"{mode}-{len(made)}", mode, **extra_env)
        deployment.log_dir.mkdir(parents=True)
        made.append(deployment)
        return deployment

    yield make
    for deployment in made:
        deployment.stop_all()
        report = getattr(request.node, "rep_call", None)
        if report is None or report.failed:
            print(deployment.logs())


def redis_client() -> Any:
    """A synchronous Redis client for reading the consumers' logs in the test process."""
    import redis

    return redis.Redis.from_url(REDIS_URL)


def read_log(deployment: Deployment, key: str) -> list[tuple[int, int, int]]:
    """``(pid, number, active)`` entries a consumer logged under ``key``, in log order."""
    entries = redis_client().lrange(deployment.log_prefix + key, 0, -1)
    result = []
    for entry in entries:
        pid, number, active = entry.decode().split(":")
        result.append((int(pid), int(number), int(active)))
    return result
