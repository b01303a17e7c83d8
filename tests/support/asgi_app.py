"""Driving one ASGI application instance in process, for the consumer-level suites.

tests/consumers and tests/auth test consumers and middleware as ASGI applications, with
no server: :class:`AppRunner` is the tiny server (two queues), ``run_app`` the fixture
that starts runners and stops them after the test, ``layer`` a fresh in-memory channel
layer installed as the process layer for each test. A suite's conftest imports the
fixtures it wants (``from support.asgi_app import layer as layer, run_app as run_app``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from switchboard.gateway.layers import ChannelLayer

from .layers import installed_layer
from .waiting import deadline

__all__ = ["WAIT", "AppRunner", "layer", "run_app"]

WAIT = deadline(5)  # a safety net (scaled) so a broken consumer fails the test instead of hanging it


@pytest.fixture(autouse=True)
async def layer() -> AsyncIterator[ChannelLayer]:
    """A fresh in-memory layer installed as the process layer for every test."""
    async with installed_layer() as channel_layer:
        yield channel_layer


class AppRunner:
    """Drives one ASGI application instance with queues, like a tiny server.

    ``send_input`` feeds ``receive``; ``receive_output`` returns what the app sent and
    re-raises the app's exception if it died instead of answering.
    """

    def __init__(self, application: Any, scope: dict[str, Any]) -> None:
        self.scope = scope
        self.input: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.output: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(application(dict(scope), self.input.get, self.output.put))

    async def send_input(self, message: dict[str, Any]) -> None:
        await self.input.put(message)

    async def receive_output(self) -> dict[str, Any]:
        getter = asyncio.ensure_future(self.output.get())
        done, _ = await asyncio.wait({getter, self.task}, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
        if getter in done:
            return getter.result()
        getter.cancel()
        if self.task.done():
            self.task.result()  # re-raise the application's exception, if any
            raise AssertionError("application finished without sending anything")
        raise AssertionError(f"no output within {WAIT}s")

    async def wait(self) -> None:
        """Wait for the application to finish; re-raise its exception."""
        await asyncio.wait_for(asyncio.shield(self.task), WAIT)

    async def stop(self) -> None:
        if not self.task.done():
            self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)

    def sent_nothing_more(self) -> bool:
        return self.output.empty()


@pytest.fixture
async def run_app() -> AsyncIterator[Any]:
    """``run_app(app, scope)`` starts an :class:`AppRunner` (``runner_class``: a subclass of it);
    all are stopped after the test."""
    runners: list[AppRunner] = []

    def start(application: Any, scope: dict[str, Any], runner_class: type[AppRunner] = AppRunner) -> AppRunner:
        runner = runner_class(application, scope)
        runners.append(runner)
        return runner

    yield start
    for runner in runners:
        await runner.stop()
    # Cancelling an instance does not stop a sync handler already in Django's sync thread;
    # let that thread go idle so its tail end cannot run into the next test.
    await sync_to_async(lambda: None, thread_sensitive=True)()
