"""Fixtures for the reliability tests: running gateways to attack, faults to inject, a ledger.

``fuzz_target`` is parametrized over an in-process gateway (``memory``: every plugin and a
worker on a background event loop, see ``rel_harness.InProcessGateway``) and real
``switchboard gateway`` + ``switchboard worker`` processes over the Redis on
127.0.0.1:6379 (``redis``), so every fuzz test runs against both. ``deploy`` starts
processes for the fault, flood and security tests; ``private_redis`` a ``redis-server``
those tests may kill. The ``fuzz_ledger`` counts every input tried and what the gateway
did with it; at the end of the session it is stored in pytest's cache
(``reliability/fuzz_counts``) and, when ``REL_COUNTS_FILE`` is set, written there, which is
what ``rel_report.py`` turns into the table of docs/reliability.md.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.django_settings import configure as configure_django
from support.redis_server import RedisServer

configure_django()

from rel_harness import (
    REDIS_URL,
    FuzzLedger,
    FuzzTarget,
    InProcessGateway,
    LogCapture,
    ProcessDeployment,
    deployment_env,
    free_port,
    inprocess_protocols,
    mosquitto_reachable,
    port_open,
    redis_reachable,
    split_addresses,
)
from support.waiting import wait_until_sync


@pytest.fixture(scope="session")
def log_capture() -> Iterator[LogCapture]:
    """Captures this process's log records for the whole session (the in-process gateway's)."""
    handler = LogCapture()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


@pytest.fixture(scope="session")
def fuzz_ledger(request: pytest.FixtureRequest) -> Iterator[FuzzLedger]:
    """Session-wide counts of fuzz inputs; stored in the cache and ``$REL_COUNTS_FILE`` at the end."""
    ledger = FuzzLedger()
    yield ledger
    data = ledger.as_json()
    cache = getattr(request.config, "cache", None)  # absent under -p no:cacheprovider
    if cache is not None:
        cache.set("reliability/fuzz_counts", data)
    path = os.environ.get("REL_COUNTS_FILE")
    if path:
        Path(path).write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """``private_redis(password=None)``: a started private Redis, killed at teardown."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    servers: list[RedisServer] = []

    def start(password: str | None = None) -> RedisServer:
        server = RedisServer(binary, tmp_path / f"redis{len(servers)}", password=password)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.kill()


@pytest.fixture
def deploy(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., ProcessDeployment]]:
    """``deploy(redis_url, protocols=..., workers=1, **env)`` starts gateway + worker(s).

    Every process is stopped at teardown (SIGTERM, then SIGKILL); all logs are printed,
    which pytest shows only for a failed test.
    """
    deployments: list[ProcessDeployment] = []

    def start(redis_url: str | None, *, protocols: str = "http", workers: int = 1, wait: bool = True,
              **extra: str) -> ProcessDeployment:
        env, http_port = deployment_env(redis_url, protocols=protocols, **extra)
        log_dir = tmp_path / f"deploy-{len(deployments)}"
        log_dir.mkdir()
        deployment = ProcessDeployment(env, log_dir, http_port)
        deployments.append(deployment)
        deployment.start("gateway", "gateway")
        for index in range(workers):
            deployment.start(f"worker{index}", "worker")
        if wait and "http" in protocols.split(","):
            deployment.wait_http()
        return deployment

    yield start
    for deployment in deployments:
        deployment.stop_all()
        print(deployment.logs())


@pytest.fixture(scope="session", params=["memory", "redis"])
def fuzz_target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, log_capture: LogCapture
) -> Iterator[FuzzTarget]:
    """The gateway every fuzz test attacks: in-process (``memory``) or processes over Redis."""
    mqtt_prefix = f"sb-rel-{secrets.token_hex(4)}" if mosquitto_reachable() else None
    storage = tmp_path_factory.mktemp("rel-smtp-storage")
    if request.param == "memory":
        gateway = InProcessGateway(inprocess_protocols(mqtt_prefix, storage)).start()
        target = FuzzTarget(
            "memory",
            gateway.http_port,
            gateway.plugins["udp"].bound_addresses[0],  # type: ignore[attr-defined]
            gateway.plugins["smtp"].address,  # type: ignore[attr-defined]
            mqtt_prefix,
            inprocess=gateway,
            log_capture=log_capture,
        )
        try:
            yield target
        finally:
            gateway.stop()
        return
    if not redis_reachable():
        pytest.skip("Redis is not reachable on 127.0.0.1:6379 (the processes pass needs it)")
    protocols = "http,udp,smtp,sms,webrtc" + (",mqtt" if mqtt_prefix else "")
    env, http_port = deployment_env(
        REDIS_URL,
        protocols=protocols,
        REL_UDP_BIND=f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}",
        REL_SMTP_BIND=f"127.0.0.1:{free_port()}",
        REL_SMTP_STORAGE=str(storage),
        REL_MQTT_PREFIX=mqtt_prefix or "unused",
    )
    log_dir = tmp_path_factory.mktemp("rel-fuzz-processes")
    deployment = ProcessDeployment(env, log_dir, http_port)
    deployment.start("gateway", "gateway")
    deployment.start("worker", "worker")
    try:
        deployment.wait_http()
        wait_until_sync(lambda: port_open(int(env["REL_SMTP_BIND"].rsplit(":", 1)[1])), 30, "the SMTP port")
        udp, smtp = split_addresses(deployment)
        yield FuzzTarget("redis", http_port, udp, smtp, mqtt_prefix, deployment=deployment)
    finally:
        deployment.stop_all()
        problems, _ = deployment.new_log_problems()
        if problems:
            print(deployment.logs())


@pytest.fixture(autouse=True)
def _process_logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """When a test against the processes target fails, print their logs (pytest shows them
    with that test's report; the session fixture's own teardown comes much later)."""
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed and "fuzz_target" in request.fixturenames:
        target = request.getfixturevalue("fuzz_target")
        if target.deployment is not None:
            print(target.deployment.logs())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the item, so fixtures can tell a failed test at teardown."""
    report = yield
    setattr(item, "rep_" + report.when, report)
    return report
