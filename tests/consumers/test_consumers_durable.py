"""``idempotent``: a durable consumer's handler does its work once per event.

The handlers run as they do in a worker (``SyncConsumer`` handlers in Django's sync
thread, async ones on the loop) against Django's test database (SQLite in memory, with
the ``switchboard`` app's table) and its local-memory cache. Deliveries are made by the
real in-memory durable layer, so a redelivery carries the same event id as in production.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test.utils import override_settings

from switchboard.consumers import AsyncConsumer, SyncConsumer, delivery_of, idempotent
from switchboard.gateway.layers import ChannelLayer, build_layer
from switchboard.gateway.layers.durable import DurableMessage

SETTINGS: dict[str, Any] = {
    "INSTALLED_APPS": ["django.contrib.contenttypes", "switchboard"],
    "CACHES": {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "idempotent-tests"}},
}


def forget_connections() -> None:
    """Drop this thread's connections (another suite's private ``:memory:`` database)."""
    from django.db import connections
    from django.db.backends.base.base import BaseDatabaseWrapper

    for conn in connections.all(initialized_only=True):
        BaseDatabaseWrapper.close(conn)
        del connections[conn.alias]


@pytest.fixture(scope="module")
def database() -> Iterator[None]:
    forget_connections()
    asyncio.run(sync_to_async(forget_connections)())
    with override_settings(**SETTINGS):
        old_name = connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
        try:
            yield
        finally:
            connection.creation.destroy_test_db(old_name, verbosity=0)


@pytest.fixture(autouse=True)
def clean(database: None) -> Iterator[None]:
    with override_settings(**SETTINGS):
        yield
        from django.contrib.contenttypes.models import ContentType
        from django.core.cache import cache

        from switchboard.models import HandledEvent

        HandledEvent.objects.all().delete()
        ContentType.objects.filter(app_label="done").delete()
        cache.clear()


@pytest.fixture
async def durable() -> AsyncIterator[ChannelLayer]:
    layer = build_layer({"CONFIG": {"block_timeout": 0.05, "durable": {"tasks": {"visibility_timeout": 5}}}})
    yield layer
    await layer.close()


async def deliveries(layer: ChannelLayer, *messages: dict[str, Any]) -> list[DurableMessage]:
    """Each message as its first delivery, then the first one again as a redelivery."""
    for message in messages:
        await layer.send("tasks", {"type": "task.run", **message})
    receiver = layer.durable.receiver(["tasks"], "worker.test")
    try:
        got = [message for _c, message in await asyncio.wait_for(receiver.get_batch(len(messages)), 10)]
        delivery = delivery_of(got[0])
        assert delivery is not None
        receiver.fail(delivery, "worker lost before its ack")
        (again,) = [message for _c, message in await asyncio.wait_for(receiver.get_batch(1), 10)]
        return [*got, again]
    finally:
        await receiver.close()


class Recorder(SyncConsumer):
    """Writes a row per task in the handler's transaction; fails when told to."""

    runs: list[int] = []

    @idempotent
    def task_run(self, message: dict[str, Any]) -> None:
        from django.contrib.contenttypes.models import ContentType

        self.runs.append(message["n"])
        ContentType.objects.create(app_label="done", model=f"task{message['n']}")
        if message.get("fail"):
            raise RuntimeError("after writing")


async def test_a_redelivered_event_is_skipped_and_the_work_is_done_once(durable: ChannelLayer) -> None:
    from django.contrib.contenttypes.models import ContentType

    first, second, again = await deliveries(durable, {"n": 1}, {"n": 2})
    assert delivery_of(again).count == 2  # type: ignore[union-attr]
    Recorder.runs = []
    consumer = Recorder()
    for message in (first, second, again):
        await consumer.dispatch(message)
    assert Recorder.runs == [1, 2]
    done = await sync_to_async(lambda: sorted(ContentType.objects.filter(app_label="done").values_list("model", flat=True)))()
    assert done == ["task1", "task2"]


async def test_a_handler_that_raises_leaves_no_record_and_no_work(durable: ChannelLayer) -> None:
    from django.contrib.contenttypes.models import ContentType

    from switchboard.models import HandledEvent

    first, _again = (await deliveries(durable, {"n": 3, "fail": True}))[0:2]
    Recorder.runs = []
    with pytest.raises(RuntimeError):
        await Recorder().dispatch(first)
    # Rolled back together: the retry runs the handler again.
    assert await sync_to_async(HandledEvent.objects.count)() == 0
    assert not await sync_to_async(ContentType.objects.filter(app_label="done").exists)()
    with pytest.raises(RuntimeError):
        await Recorder().dispatch(first)
    assert Recorder.runs == [3, 3]


async def test_messages_without_a_delivery_are_handled_as_usual() -> None:
    runs: list[int] = []

    class Plain(SyncConsumer):
        @idempotent
        def task_run(self, message: dict[str, Any]) -> None:
            runs.append(message["n"])

    consumer = Plain()
    await consumer.dispatch({"type": "task.run", "n": 7})
    await consumer.dispatch({"type": "task.run", "n": 7})
    assert runs == [7, 7]


async def test_a_key_of_the_sources_own_id(durable: ChannelLayer) -> None:
    runs: list[str] = []

    class Mail(SyncConsumer):
        @idempotent(key=lambda message: message["message_id"])
        def task_run(self, message: dict[str, Any]) -> None:
            runs.append(message["message_id"])

    # Two different events (the client retried after a 451): one Message-ID, handled once.
    first, second, _again = await deliveries(durable, {"message_id": "<a@x>"}, {"message_id": "<a@x>"})
    assert delivery_of(first).event_id != delivery_of(second).event_id  # type: ignore[union-attr]
    for message in (first, second):
        await Mail().dispatch(message)
    assert runs == ["<a@x>"]


@pytest.mark.parametrize("store", ["db", "cache"])
async def test_async_handlers_and_the_cache_store(durable: ChannelLayer, store: str) -> None:
    runs: list[int] = []

    class Fast(AsyncConsumer):
        @idempotent(store=store)
        async def task_run(self, message: dict[str, Any]) -> None:
            runs.append(message["n"])

    class Plain(SyncConsumer):
        @idempotent(store="cache")
        def task_run(self, message: dict[str, Any]) -> None:
            runs.append(-message["n"])

    first, again = await deliveries(durable, {"n": 5})
    for message in (first, again):
        await Fast().dispatch(message)
    assert runs == [5]
    for message in (first, again):
        await Plain().dispatch(message)
    assert runs == [5, -5]  # another handler: its own record


def test_a_bad_store_is_refused() -> None:
    with pytest.raises(ValueError, match="'db' or 'cache'"):
        idempotent(store="redis")
