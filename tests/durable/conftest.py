"""Fixtures of the durable-delivery fault tests: real processes, real peers, real faults.

Each test deploys ``switchboard gateway`` and ``switchboard worker`` processes over Redis
with the consumers of ``durable_app`` recording every handler run in PostgreSQL (a schema
of its own per test), then breaks something the way production breaks: SIGKILL to a
worker or the gateway, SIGTERM plus a new worker (a deploy), SIGKILL to Redis itself. The
peers are the real clients: ``smtplib``, a paho publisher through Mosquitto, webhooks
signed with twilio's ``RequestValidator``, and a management command sending tasks.

Skipped with a reason when Redis, PostgreSQL or (for MQTT) the mosquitto binary is absent.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest
from support.mosquitto import MosquittoServer, mosquitto_binary
from support.processes import ProcessDeployment, process_env, redis_reachable, stop_reporting
from support.processes import pytest_runtest_makereport as pytest_runtest_makereport
from support.waiting import deadline

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
REDIS_URL = os.environ.get("SWITCHBOARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "test"}


def postgres_reachable() -> bool:
    try:
        with socket.create_connection((PG["host"], int(PG["port"])), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session", autouse=True)
def services() -> None:
    if not redis_reachable():
        pytest.skip("Redis is not reachable on 127.0.0.1:6379")
    if not postgres_reachable():
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432 (the consumers record in it)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (pip install -e '.[test]')")


# -- PostgreSQL: one schema per test ------------------------------------------------------


class Records:
    """What the consumers recorded, read with psycopg from the test's own schema."""

    def __init__(self, schema: str) -> None:
        self.schema = schema

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(**PG, options=f"-c search_path={self.schema}", autocommit=True) as connection:
            return connection.execute(sql, params).fetchall()  # type: ignore[arg-type]

    def handled(self, kind: str) -> list[tuple[str, str, int]]:
        """(key, event id, delivery count) of every run of ``kind`` consumers, in order."""
        rows = self.query("SELECT key, event_id, delivery FROM durable_app_handling WHERE kind = %s ORDER BY id", kind)
        return [(str(key), str(event_id), int(count)) for key, event_id, count in rows]

    def distinct_keys(self, kind: str) -> set[str]:
        return {key for (key,) in self.query("SELECT DISTINCT key FROM durable_app_handling WHERE kind = %s", kind)}

    def effects(self) -> list[str]:
        return [str(key) for (key,) in self.query("SELECT key FROM durable_app_taskeffect")]


@pytest.fixture
def records(tmp_path: Path) -> Iterator[Records]:
    """A fresh PostgreSQL schema with the test project's tables (``migrate`` run in it)."""
    import psycopg

    schema = f"sbdur_{secrets.token_hex(4)}"
    with psycopg.connect(**PG, autocommit=True) as connection:  # type: ignore[arg-type]
        connection.execute(f"CREATE SCHEMA {schema}")
    try:
        env = process_env([HERE, ROOT], DURABLE_PG_SCHEMA=schema, DURABLE_REDIS_URL=REDIS_URL, DURABLE_REDIS_PREFIX="x:")
        result = subprocess.run(
            [sys.executable, "-m", "django", "migrate", "--settings", "durable_settings", "-v", "0"],
            cwd=HERE, env=env, capture_output=True, timeout=deadline(120),
        )  # fmt: skip
        if result.returncode:
            raise RuntimeError(f"migrate failed:\n{result.stdout.decode()}\n{result.stderr.decode()}")
        yield Records(schema)
    finally:
        with psycopg.connect(**PG, autocommit=True) as connection:  # type: ignore[arg-type]
            connection.execute(f"DROP SCHEMA {schema} CASCADE")


# -- The deployment ---------------------------------------------------------------------


@dataclass
class Deployment(ProcessDeployment):
    """Gateway and worker processes of the test project, started and broken by the test."""

    settings_module: ClassVar[str] = "durable_settings"
    cwd: ClassVar[Path] = HERE
    stop_timeout: ClassVar[float] = 30

    env: dict[str, str]
    log_dir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def kill(self, name: str) -> None:
        """SIGKILL: the process gets no chance to settle anything."""
        self.stop(name, signal.SIGKILL)

    def command(self, *args: str, timeout: float = 120) -> str:
        """Run a management command of the test project to its end; its output."""
        result = subprocess.run(
            [sys.executable, "-m", "django", *args, "--settings", self.settings_module],
            cwd=self.cwd, env=self.env, capture_output=True, timeout=deadline(timeout),
        )  # fmt: skip
        if result.returncode:
            raise RuntimeError(f"{args[0]} failed ({result.returncode}):\n{result.stdout.decode()}\n{result.stderr.decode()}")
        return result.stdout.decode()

    def switchboard(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``switchboard <args>`` (e.g. ``deadletters``) with the deployment's settings."""
        return subprocess.run(
            self.command_line(*args), cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=deadline(timeout)
        )

    def wait_port(self, port: int, banner: bytes | None = None, timeout: float = 60) -> None:
        """Wait until something listens on ``port`` (and greets with ``banner``)."""
        end = time.monotonic() + deadline(timeout)
        while time.monotonic() < end:
            self.check_alive()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                    if banner is None or sock.recv(64).startswith(banner):
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"nothing listening on {port} after {timeout}s\n{self.logs()}")


@pytest.fixture
def deployment(request: pytest.FixtureRequest, tmp_path: Path, records: Records) -> Iterator[Any]:
    """``deployment(protocols, **env)``: the project's environment; start processes on it."""
    made: list[Deployment] = []

    def make(protocols: str = "", redis_url: str = REDIS_URL, **variables: str) -> Deployment:
        env = process_env(
            [HERE, ROOT],
            DURABLE_PG_SCHEMA=records.schema,
            DURABLE_REDIS_URL=redis_url,
            DURABLE_REDIS_PREFIX=f"sbdur-{secrets.token_hex(4)}:",
            DURABLE_PROTOCOLS=protocols,
            DURABLE_POISON_FLAG=str(tmp_path / "poison"),
            **variables,
        )
        log_dir = tmp_path / f"logs{len(made)}"
        log_dir.mkdir()
        created = Deployment(env, log_dir)
        made.append(created)
        return created

    yield make
    for created in made:
        stop_reporting(created, request)
        _forget_keys(created.env["DURABLE_REDIS_URL"], created.env["DURABLE_REDIS_PREFIX"])


def _forget_keys(url: str, prefix: str) -> None:
    """Delete the deployment's keys (its own prefix only: the server is shared)."""
    import redis

    try:
        with redis.Redis.from_url(url, socket_timeout=5) as client:
            keys = list(client.scan_iter(match=prefix + "*", count=1000))
            if keys:
                client.unlink(*keys)
    except redis.RedisError:
        pass  # a private server already stopped: nothing left to delete


# -- A private Mosquitto -------------------------------------------------------------------


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoServer]:
    """A mosquitto on a free port that queues plenty for offline persistent sessions."""
    if mosquitto_binary() is None:
        pytest.skip("the mosquitto binary is not installed")
    # The default (1,000) would drop messages queued for a gateway while it is down.
    running = MosquittoServer(tmp_path / "mosquitto", "max_queued_messages 100000\n")
    running.start()
    yield running
    running.stop()
