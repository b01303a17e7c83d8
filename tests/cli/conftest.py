"""The command line as a user meets it: ``python -m switchboard`` processes on the test project.

Quick commands (errors, ``--version``) run to completion with :func:`run_cli`; servers
are :class:`CliDeployment` processes (tests/support/processes.py), stopped by SIGTERM at
teardown with their logs shown when a test fails.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support.processes import ProcessDeployment, free_tcp_port, free_udp_port, process_env
from support.processes import pytest_runtest_makereport as pytest_runtest_makereport
from support.waiting import deadline

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
REDIS_URL = os.environ.get("SWITCHBOARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def cli_env(**variables: str) -> dict[str, str]:
    """The test project's environment: free ports for every listener, in-memory layer."""
    env = process_env(
        [HERE],
        CLI_HTTP_BIND=f"127.0.0.1:{free_tcp_port()}",
        CLI_UDP_BIND=f"127.0.0.1:{free_udp_port()}",
        CLI_SMTP_BIND=f"127.0.0.1:{free_tcp_port()}",
        CLI_REDIS_PREFIX=f"sb-cli-{secrets.token_hex(4)}:",
    )
    for name in ("CLI_REDIS_URL", "CLI_DEBUG", "SWITCHBOARD_LOG_LEVEL", "SWITCHBOARD_LOG_FORMAT", "SWITCHBOARD_METRICS_BIND"):
        env.pop(name, None)
    env.update(variables)
    return env


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path = HERE, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``python -m switchboard <args>`` to completion: its exit code, stdout and stderr."""
    return subprocess.run(
        [sys.executable, "-m", "switchboard", *args],
        cwd=cwd,
        env=env or cli_env(),
        capture_output=True,
        text=True,
        timeout=deadline(timeout),
    )


@dataclass
class CliDeployment(ProcessDeployment):
    """Servers of the test project; ``env`` says where they listen."""

    settings_module = "cli_settings"
    cwd = HERE

    env: dict[str, str]
    log_dir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def http_port(self) -> int:
        return int(self.env["CLI_HTTP_BIND"].rsplit(":", 1)[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


@pytest.fixture
def deployment(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[CliDeployment]:
    """An empty deployment with its own ports; tests start the processes they need."""
    running = CliDeployment(cli_env(), tmp_path)
    try:
        yield running
    finally:
        running.stop_all()
        report = getattr(request.node, "rep_call", None)
        if report is None or report.failed:
            print(running.logs())
