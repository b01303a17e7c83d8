"""Background tasks: sync and async consumers of named channels, and workers limited to them."""

from __future__ import annotations

import asyncio
from typing import Any

from asgiref.sync import async_to_sync
from support.waiting import deadline

from switchboard.consumers import AsyncConsumer, ChannelNameRouter, ProtocolTypeRouter, SyncConsumer, URLRouter
from switchboard.gateway.cli import build_parser
from switchboard.gateway.layers import ChannelLayer
from switchboard.gateway.worker import Worker

WAIT = deadline(5)


class SyncJob(SyncConsumer):
    """Runs in Django's sync thread; reports to a results channel."""

    def job_run(self, message: dict[str, Any]) -> None:
        async_to_sync(self.channel_layer.send)("results", {"type": "job.done", "by": "sync", "n": message["n"] * 2})


class AsyncJob(AsyncConsumer):
    """Runs on the worker's event loop."""

    async def job_run(self, message: dict[str, Any]) -> None:
        assert self.scope == {"type": "channel", "channel": "io-jobs"}
        await self.channel_layer.send("results", {"type": "job.done", "by": "async", "n": message["n"] + 1})


APP = ProtocolTypeRouter(
    {
        "websocket": URLRouter([]),
        "channel": ChannelNameRouter({"cpu-jobs": SyncJob.as_asgi(), "io-jobs": AsyncJob.as_asgi()}),
    }
)


async def run_worker(worker: Worker) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    return stop, asyncio.get_running_loop().create_task(worker.run(stop, drain_timeout=WAIT))


def test_cli_names_channels_for_a_worker() -> None:
    args = build_parser().parse_args(["worker", "cpu-jobs", "io-jobs", "--settings", "mysite.settings"])
    assert args.channels == ["cpu-jobs", "io-jobs"]


async def test_worker_limited_to_named_channels_runs_sync_and_async_consumers(layer: ChannelLayer) -> None:
    # What `switchboard worker cpu-jobs io-jobs` builds: no protocols, only those channels.
    worker = Worker(APP, layer, protocols=[], channels=["cpu-jobs", "io-jobs"])
    assert worker.listen_channels() == ["cpu-jobs", "io-jobs"]
    stop, task = await run_worker(worker)
    try:
        await layer.send("cpu-jobs", {"type": "job.run", "n": 21})
        await layer.send("io-jobs", {"type": "job.run", "n": 41})
        results = [await asyncio.wait_for(layer.receive("results"), WAIT) for _ in range(2)]
        assert sorted((r["by"], r["n"]) for r in results) == [("async", 42), ("sync", 42)]
        assert worker.stats.named_messages == 2
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT)


async def test_connection_worker_can_leave_named_channels_alone(layer: ChannelLayer) -> None:
    # SWITCHBOARD["WORKER"] = {"channels": []}: connections only.
    assert Worker(APP, layer, channels=[]).listen_channels() == ["switchboard.websocket"]
    assert Worker(APP, layer).listen_channels() == ["switchboard.websocket", "cpu-jobs", "io-jobs"]
