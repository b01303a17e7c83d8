"""Fixtures for the observability tests: Django settings for in-process stacks, OS deployments.

In-process tests run the real CLI wiring (``cli._run_both``) on the test's event loop and
talk to it over real sockets. OS-process tests start ``switchboard gateway`` +
``switchboard worker`` over the real Redis on 127.0.0.1:6379 (skipped with a reason when
it is not reachable), each test under its own key prefix.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from obs_helpers import HERE, REDIS_URL, ROOT, SECRETS, Deployment, Stack, free_port, http_get, redis_reachable
from support.django_settings import configure as configure_django
from support.processes import process_env, stop_reporting
from support.processes import pytest_runtest_makereport as pytest_runtest_makereport
from support.waiting import eventually

from switchboard.gateway import cli
from switchboard.gateway.config import from_mapping
from switchboard.gateway.layers import set_channel_layer

configure_django()


@pytest.fixture
def redis_url() -> str:
    if not redis_reachable():
        pytest.skip("Redis is not reachable on 127.0.0.1:6379")
    return REDIS_URL


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    """``switchboard run`` in this process: the obs routing, metrics on, a fast interval."""
    http_port, metrics_port = free_port(), free_port()
    config = from_mapping(
        {
            "APPLICATION": "obs_routing.application",
            "PROTOCOLS": {"http": {"bind": [f"127.0.0.1:{http_port}"]}},
            "METRICS": {"bind": f"127.0.0.1:{metrics_port}", "interval": 0.05},
        }
    )
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(cli._run_both(config, argparse.Namespace(metrics_bind=None), stop=stop))
    running = Stack(http_port, metrics_port, stop, task)
    try:
        await eventually(lambda: task.done() or http_get(running.base_url + "/ready")[0] == 200, "the gateway")
        if task.done():
            task.result()  # raise what stopped it
        yield running
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        set_channel_layer(None)


@pytest.fixture
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Deployment]]:
    """``deployment(redis=True, metrics={...})``: an environment for obs_settings processes.

    Processes started through it are stopped after the test; their logs are printed when
    the test failed.
    """
    made: list[Deployment] = []

    def make(*, redis: bool = True, metrics: dict[str, Any] | None = None) -> Deployment:
        if redis and not redis_reachable():
            pytest.skip("Redis is not reachable on 127.0.0.1:6379")
        http_port = free_port()
        env = process_env(
            [HERE, ROOT],
            OBS_HTTP_BIND=f"127.0.0.1:{http_port}",
            OBS_METRICS=json.dumps(metrics or {"interval": 0.2}),
            **SECRETS,
        )
        for name in ("OBS_REDIS_URL", "OBS_REDIS_PREFIX", "SWITCHBOARD_LOG_FORMAT", "SWITCHBOARD_METRICS_BIND"):
            env.pop(name, None)
        if redis:
            env["OBS_REDIS_URL"] = REDIS_URL
            env["OBS_REDIS_PREFIX"] = f"sb-obs-{secrets.token_hex(4)}:"
        log_dir = tmp_path / f"deployment-{len(made)}"
        log_dir.mkdir()
        made.append(Deployment(env, log_dir, http_port))
        return made[-1]

    yield make
    for deployment in made:
        stop_reporting(deployment, request)

