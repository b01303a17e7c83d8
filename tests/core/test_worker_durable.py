"""The worker on durable channels: acknowledged when the handler finished, never before.

Consumers here are ordinary Channels-style consumers (``AsyncConsumer``, ``SyncConsumer``)
behind ``ProtocolTypeRouter``/``ChannelNameRouter``, run by in-process workers over the
in-memory layer and over Redis (each test runs on both). The kill -9 and deploy tests
with real OS processes are in tests/durable/.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from support.waiting import wait_until

from switchboard.consumers import AsyncConsumer, ChannelNameRouter, ProtocolTypeRouter, SyncConsumer
from switchboard.gateway.layers import ChannelLayer, build_layer, set_channel_layer
from switchboard.gateway.layers.durable import delivery_of
from switchboard.gateway.server import Gateway
from switchboard.gateway.worker import Worker

pytestmark = pytest.mark.timeout(60)

REDIS_URL = os.environ.get("SWITCHBOARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
FAST = {"visibility_timeout": 1.0, "retry_delay": 0.05, "retry_delay_max": 0.2, "capacity": 1000}

#: (event id, delivery count, payload) of every handler run, in order, per test.
Runs = list[tuple[str, int, Any]]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def layer(request: pytest.FixtureRequest) -> AsyncIterator[ChannelLayer]:
    config: dict[str, Any] = {
        "block_timeout": 0.05,
        "durable": {"tasks": dict(FAST), "poison": {**FAST, "max_deliveries": 3}, "switchboard.email": dict(FAST)},
    }
    if request.param == "redis":
        from support.processes import redis_reachable

        if not redis_reachable():
            pytest.skip("Redis is not reachable")
        config.update(hosts=[REDIS_URL], prefix=f"sbtest:worker-durable:{secrets.token_hex(4)}:")
    channel_layer = build_layer({"BACKEND": request.param, "CONFIG": config})
    set_channel_layer(channel_layer)
    yield channel_layer
    set_channel_layer(None)
    await channel_layer.flush()
    await channel_layer.close()


class Deployment:
    """Workers running in this process, each stoppable on its own (SIGTERM-like)."""

    def __init__(self, application: Any, layer: ChannelLayer) -> None:
        self.application = application
        self.layer = layer
        self.running: dict[str, tuple[Worker, asyncio.Event, asyncio.Task[None]]] = {}

    def start(self, name: str, **options: Any) -> Worker:
        worker = Worker(self.application, self.layer, heartbeat_interval=0.2, **options)
        stop = asyncio.Event()
        task = asyncio.get_running_loop().create_task(worker.run(stop, drain_timeout=5))
        self.running[name] = (worker, stop, task)
        return worker

    async def stop(self, name: str) -> None:
        _worker, stop, task = self.running.pop(name)
        stop.set()
        await asyncio.wait_for(task, 30)

    async def kill(self, name: str) -> None:
        """As near to SIGKILL as one process gets: cancelled, nothing settled."""
        _worker, _stop, task = self.running.pop(name)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def close(self) -> None:
        for name in list(self.running):
            await self.stop(name)


@pytest.fixture
async def deploy(layer: ChannelLayer) -> AsyncIterator[Callable[[Any], Deployment]]:
    made: list[Deployment] = []

    def make(application: Any) -> Deployment:
        deployment = Deployment(application, layer)
        made.append(deployment)
        return deployment

    yield make
    for deployment in made:
        await deployment.close()


def task_app(consumer: type[AsyncConsumer]) -> Any:
    return ProtocolTypeRouter({"channel": ChannelNameRouter({"tasks": consumer.as_asgi(), "poison": consumer.as_asgi()})})


async def stored(layer: ChannelLayer, channel: str) -> int:
    return (await layer.durable.info(channel))[0]


async def nothing_stored(layer: ChannelLayer, channel: str) -> None:
    async def empty() -> bool:
        return await stored(layer, channel) == 0

    await wait_until(empty, what=f"{channel} to be empty (everything acknowledged)")


# -- Acknowledged after the handler -------------------------------------------------


async def test_a_task_stays_stored_until_its_handler_returns(layer: ChannelLayer, deploy: Any) -> None:
    started = asyncio.Event()
    finish = asyncio.Event()
    runs: Runs = []

    class Slow(AsyncConsumer):
        async def task_run(self, message: dict[str, Any]) -> None:
            delivery = delivery_of(message)
            assert delivery is not None
            runs.append((delivery.event_id, delivery.count, message["n"]))
            started.set()
            await finish.wait()

    deploy(task_app(Slow)).start("a")
    event_id = await layer.send_durable("tasks", {"type": "task.run", "n": 1})
    await asyncio.wait_for(started.wait(), 20)
    assert await layer.durable.info("tasks") == (1, 1)  # handed to the handler, not acknowledged
    finish.set()
    await wait_until(lambda: layer.stats.durable_acked == 1, what="the acknowledgement")
    assert await stored(layer, "tasks") == 0
    assert runs == [(event_id, 1, 1)]


async def test_a_raising_handler_gets_the_task_again_then_it_is_acknowledged(layer: ChannelLayer, deploy: Any) -> None:
    runs: Runs = []

    class Flaky(SyncConsumer):
        def task_run(self, message: dict[str, Any]) -> None:
            delivery = delivery_of(message)
            assert delivery is not None
            runs.append((delivery.event_id, delivery.count, message["n"]))
            if delivery.count == 1:
                raise RuntimeError("transient")

    workers = deploy(task_app(Flaky))
    worker = workers.start("a")
    event_id = await layer.send_durable("tasks", {"type": "task.run", "n": 1})
    await wait_until(lambda: layer.stats.durable_acked == 1, what="the second delivery to be acknowledged")
    assert runs == [(event_id, 1, 1), (event_id, 2, 1)]
    assert worker.stats.durable_failed == 1 and worker.stats.durable_finished == 1
    assert await stored(layer, "tasks") == 0


async def test_a_task_that_keeps_failing_ends_in_the_dead_letters(layer: ChannelLayer, deploy: Any) -> None:
    runs: Runs = []

    class Broken(AsyncConsumer):
        async def task_run(self, message: dict[str, Any]) -> None:
            delivery = delivery_of(message)
            assert delivery is not None
            runs.append((delivery.event_id, delivery.count, message["n"]))
            if message["n"] == "poison":
                raise ValueError(f"cannot handle {message['n']}")

    deploy(task_app(Broken)).start("a")
    poison_id = await layer.send_durable("poison", {"type": "task.run", "n": "poison"})
    good_id = await layer.send_durable("poison", {"type": "task.run", "n": "good"})
    await wait_until(lambda: layer.stats.dead_lettered == 1, what="the dead letter")
    assert [count for event_id, count, _n in runs if event_id == poison_id] == [1, 2, 3]
    assert (good_id, 1, "good") in runs  # the others carry on meanwhile
    (letter,) = await layer.durable.dead_letters("poison")
    assert letter.event_id == poison_id and letter.deliveries == 3
    assert "ValueError: cannot handle poison" in letter.error and "Traceback" in letter.error
    await nothing_stored(layer, "poison")

    # Replayed (say after a fix): handled again under the same event id.
    runs.clear()
    assert await layer.durable.replay("poison") == (1, 0)
    await wait_until(lambda: len(runs) >= 1, what="the replay")
    assert runs[0][:2] == (poison_id, 1)


async def test_listener_events_are_acknowledged_one_by_one(layer: ChannelLayer, deploy: Any) -> None:
    """One instance serves every mail of the SMTP listener; each event is settled on its own."""
    runs: Runs = []

    class Mail(AsyncConsumer):
        async def email_received(self, message: dict[str, Any]) -> None:
            delivery = delivery_of(message)
            assert delivery is not None
            runs.append((delivery.event_id, delivery.count, message["n"]))
            if message["n"] == 3 and delivery.count == 1:
                raise RuntimeError("mailbox busy")

    gateway = Gateway(layer)
    await gateway.start()
    try:
        connection = gateway.open_connection({"type": "email"}, lambda message: None)
        deploy(ProtocolTypeRouter({"email": Mail.as_asgi()})).start("a")
        for n in range(6):
            await gateway.send_event(connection, {"type": "email.received", "n": n})
        await wait_until(lambda: layer.stats.durable_acked == 6, what="six acknowledgements")
        handled = sorted((n, count) for _e, count, n in runs)
        assert handled == [(0, 1), (1, 1), (2, 1), (3, 1), (3, 2), (4, 1), (5, 1)]
        assert await stored(layer, "switchboard.email") == 0
    finally:
        await gateway.stop()


async def test_an_ordered_consumer_on_a_durable_pool_is_not_pinned(layer: ChannelLayer, deploy: Any) -> None:
    class Ordered(AsyncConsumer):
        ordered = True

        async def email_received(self, message: dict[str, Any]) -> None:
            pass

    gateway = Gateway(layer)
    await gateway.start()
    try:
        connection = gateway.open_connection({"type": "email"}, lambda message: None)
        worker = deploy(ProtocolTypeRouter({"email": Ordered.as_asgi()})).start("a")
        for n in range(3):
            await gateway.send_event(connection, {"type": "email.received", "n": n})
        await wait_until(lambda: layer.stats.durable_acked == 3, what="three acknowledgements")
        assert connection.worker is None and worker.claims == {}
    finally:
        await gateway.stop()


async def test_an_app_that_takes_nothing_cannot_spin_and_ends_in_dead_letters(layer: ChannelLayer, deploy: Any) -> None:
    async def returns_at_once(scope: dict[str, Any], receive: Any, send: Any) -> None:
        return None

    app = ProtocolTypeRouter({"channel": ChannelNameRouter({"poison": returns_at_once})})
    worker = deploy(app).start("a")
    await layer.send("poison", {"type": "task.run"})
    await wait_until(lambda: layer.stats.dead_lettered == 1, what="the dead letter")
    assert worker.stats.instances_started <= 3 + 1  # one per delivery, no restart loop


# -- Deploys and lost workers ---------------------------------------------------------


async def test_a_deploy_loses_and_duplicates_nothing(layer: ChannelLayer, deploy: Any) -> None:
    runs: Runs = []

    class Work(AsyncConsumer):
        async def task_run(self, message: dict[str, Any]) -> None:
            delivery = delivery_of(message)
            assert delivery is not None
            await asyncio.sleep(0.002)
            runs.append((delivery.event_id, delivery.count, message["n"]))

    workers = deploy(task_app(Work))
    workers.start("old", durable_prefetch=20)
    sent = [await layer.send_durable("tasks", {"type": "task.run", "n": n}) for n in range(200)]
    await wait_until(lambda: len(runs) >= 20, what="the old worker to be busy")
    workers.start("new", durable_prefetch=20)
    await workers.stop("old")  # SIGTERM: finishes what it read, hands back nothing twice
    await wait_until(lambda: len(runs) >= 200, what="every task")
    await wait_until(lambda: layer.stats.durable_acked >= 200, what="every acknowledgement")
    assert sorted(event_id for event_id, _c, _n in runs) == sorted(sent)  # each exactly once
    assert await stored(layer, "tasks") == 0


async def test_a_killed_workers_task_is_handled_by_another(layer: ChannelLayer, deploy: Any) -> None:
    runs: Runs = []
    hang = asyncio.Event()

    class Hangs(AsyncConsumer):
        async def task_run(self, message: dict[str, Any]) -> None:
            delivery = delivery_of(message)
            assert delivery is not None
            runs.append((delivery.event_id, delivery.count, message["n"]))
            if delivery.count == 1:
                hang.set()
                await asyncio.Event().wait()  # killed in here

    workers = deploy(task_app(Hangs))
    workers.start("doomed")
    event_id = await layer.send_durable("tasks", {"type": "task.run", "n": 1})
    await asyncio.wait_for(hang.wait(), 20)
    await workers.kill("doomed")
    workers.start("heir")
    await wait_until(lambda: len(runs) >= 2, what="the redelivery after the visibility timeout")
    assert runs == [(event_id, 1, 1), (event_id, 2, 1)]
    await nothing_stored(layer, "tasks")
