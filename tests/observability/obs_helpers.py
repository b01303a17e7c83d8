"""Helpers for the observability tests: ports, HTTP, metric scraping, OS processes.

Real clients only: urllib for HTTP and the Prometheus endpoint (parsed with
prometheus_client's own text parser), the ``websockets`` client for WebSockets, and
``python -m switchboard`` subprocesses for the CLI.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from support.processes import ProcessDeployment
from support.processes import free_port as free_port
from support.processes import redis_reachable as redis_reachable
from support.waiting import deadline

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
REDIS_URL = os.environ.get("SWITCHBOARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

#: Secrets the OS processes' configuration holds (obs_settings.py); none may reach a log.
SECRETS = {
    "OBS_REDIS_PW": "hunter2-redis-pw-5b1f",
    "OBS_UPSTREAM_KEY": "tok-obs-9c2d1e77",
}
SECRET_KEY = "obs-secret-key-do-not-log-7f3a"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def http_get(url: str, timeout: float = 10) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def scrape(url: str) -> Samples:
    """Every sample of a Prometheus endpoint: ``(name, sorted labels) -> value``."""
    _status, body = http_get(url)
    samples: Samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value, 0 when absent (a counter not yet created)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@dataclass
class Stack:
    """``switchboard run`` wiring (``cli._run_both``) running on the test's own loop."""

    http_port: int
    metrics_port: int
    stop: asyncio.Event
    task: asyncio.Task[None]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def scrape(self) -> Samples:
        return scrape(self.metrics_url)


@dataclass
class Deployment(ProcessDeployment):
    """``switchboard`` OS processes sharing one environment (obs_settings.py)."""

    env: dict[str, str]
    log_dir: Path
    http_port: int
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    settings_module = "obs_settings"
    cwd = HERE
    stop_timeout = 20

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def command(self, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``switchboard <args>`` to completion (``status``), capturing its output."""
        return subprocess.run(
            self.command_line(*args),
            cwd=self.cwd,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def wait_ready(self) -> None:
        """Until a request answers through the gateway: it is bound and a worker serves."""

        def answers() -> bool:
            try:
                return http_get(self.base_url + "/ready", timeout=deadline(5))[0] == 200
            except OSError:  # not listening yet
                return False

        self.wait_until_sync(answers, what="the deployment to answer")


def json_lines(text: str) -> list[dict[str, Any]]:
    """Parse every non-empty line as one JSON object (fails on any other line)."""
    records = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise AssertionError(f"line {number} is not JSON: {line!r}") from exc
    return records
