"""AsyncConsumer / SyncConsumer: instances, dispatch, channel names, threads, DB hygiene."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from switchboard.consumers import (
    AsyncConsumer,
    StopConsumer,
    SyncConsumer,
    database_sync_to_async,
    get_channel_layer,
)
from switchboard.consumers import db as consumers_db
from switchboard.consumers.base import ConsumerApp, handler_name
from switchboard.gateway.layers import ChannelLayer


class Recorder(AsyncConsumer):
    """Records every ``test.event`` it gets and what it knew when it got it."""

    log: list[Any] | None = None
    label = "default"

    async def test_event(self, message: dict[str, Any]) -> None:
        assert self.log is not None
        self.log.append((self.label, id(self), self.channel_name, message))
        await self.send({"type": "test.reply", "value": message.get("value")})

    async def test_stop(self, message: dict[str, Any]) -> None:
        raise StopConsumer()


def test_handler_name_maps_dots_to_underscores() -> None:
    assert handler_name({"type": "websocket.receive"}) == "websocket_receive"
    assert handler_name({"type": "chat.message.new"}) == "chat_message_new"


@pytest.mark.parametrize(
    "message",
    [
        {},
        {"type": ""},
        {"type": 3},
        {"type": "_private"},
        {"type": "__init__"},
        # Dots become underscores: these would reach ``_my_private_handler`` and ``__init__``.
        {"type": ".my_private_handler"},
        {"type": "..init.."},
        {"type": "._.class__"},
    ],
)
def test_handler_name_refuses_bad_types(message: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        handler_name(message)


def test_as_asgi_returns_app_carrying_class_and_kwargs() -> None:
    app = Recorder.as_asgi(label="x")
    assert isinstance(app, ConsumerApp)
    assert app.consumer_class is Recorder
    assert app.consumer_initkwargs == {"label": "x"}
    assert app.__name__ == "Recorder"


def test_as_asgi_rejects_unknown_initkwargs() -> None:
    with pytest.raises(TypeError, match="labl"):
        Recorder.as_asgi(labl="typo")


async def test_each_scope_gets_a_fresh_instance_with_initkwargs(layer: ChannelLayer, run_app: Any) -> None:
    log: list[Any] = []
    app = Recorder.as_asgi(log=log, label="configured")
    first = run_app(app, {"type": "test", "reply_channel": "gateway.t!one"})
    second = run_app(app, {"type": "test", "reply_channel": "gateway.t!two"})
    await first.send_input({"type": "test.event", "value": 1})
    await second.send_input({"type": "test.event", "value": 2})
    assert (await first.receive_output()) == {"type": "test.reply", "value": 1}
    assert (await second.receive_output()) == {"type": "test.reply", "value": 2}
    (label1, id1, name1, _), (label2, id2, name2, _) = sorted(log, key=lambda entry: entry[2])
    assert label1 == label2 == "configured"
    assert id1 != id2
    assert (name1, name2) == ("gateway.t!one", "gateway.t!two")


async def test_reply_channel_is_the_channel_name_and_no_own_channel_is_read(
    layer: ChannelLayer, run_app: Any
) -> None:
    log: list[Any] = []
    runner = run_app(Recorder.as_asgi(log=log), {"type": "test", "reply_channel": "gateway.t!abc"})
    await runner.send_input({"type": "test.event", "value": "via receive"})
    await runner.receive_output()
    assert log[0][2] == "gateway.t!abc"
    # The consumer must not read its reply channel: that is the gateway's job.
    assert "gateway.t!" not in layer._local_readers


async def test_without_reply_channel_consumer_reads_its_own_new_channel(layer: ChannelLayer, run_app: Any) -> None:
    log: list[Any] = []
    runner = run_app(Recorder.as_asgi(log=log), {"type": "test"})
    await runner.send_input({"type": "test.event", "value": "first"})
    await runner.receive_output()
    channel_name = log[0][2]
    assert channel_name.startswith("specific.") and "!" in channel_name
    await layer.send(channel_name, {"type": "test.event", "value": "via layer"})
    assert (await runner.receive_output()) == {"type": "test.reply", "value": "via layer"}
    # Both sources keep working after one another.
    await runner.send_input({"type": "test.event", "value": "again"})
    assert (await runner.receive_output())["value"] == "again"


async def test_channel_layer_alias_none_disables_the_layer(layer: ChannelLayer, run_app: Any) -> None:
    seen: list[Any] = []

    class NoLayer(AsyncConsumer):
        channel_layer_alias = None

        async def test_event(self, message: dict[str, Any]) -> None:
            seen.append((self.channel_layer, self.channel_name))
            raise StopConsumer()

    runner = run_app(NoLayer.as_asgi(), {"type": "test"})
    await runner.send_input({"type": "test.event"})
    await runner.wait()
    assert seen == [(None, None)]


async def test_consumer_channel_layer_is_the_process_layer(layer: ChannelLayer, run_app: Any) -> None:
    seen: list[Any] = []

    class Probe(AsyncConsumer):
        async def test_event(self, message: dict[str, Any]) -> None:
            seen.append(self.channel_layer)
            raise StopConsumer()

    runner = run_app(Probe.as_asgi(), {"type": "test", "reply_channel": "gateway.t!p"})
    await runner.send_input({"type": "test.event"})
    await runner.wait()
    assert seen == [layer] and get_channel_layer() is layer


async def test_unknown_message_type_raises_value_error(layer: ChannelLayer, run_app: Any) -> None:
    runner = run_app(Recorder.as_asgi(log=[]), {"type": "test", "reply_channel": "gateway.t!x"})
    await runner.send_input({"type": "no.such.thing"})
    with pytest.raises(ValueError, match=r"No handler for message type no\.such\.thing \(define Recorder\.no_such_thing\)"):
        await runner.wait()


async def test_stop_consumer_ends_the_instance_cleanly(layer: ChannelLayer, run_app: Any) -> None:
    runner = run_app(Recorder.as_asgi(log=[]), {"type": "test"})
    await runner.send_input({"type": "test.stop"})
    await runner.wait()
    assert runner.task.result() is None


class ThreadedSync(SyncConsumer):
    log: list[Any] | None = None

    def test_event(self, message: dict[str, Any]) -> None:
        assert self.log is not None
        self.log.append(threading.current_thread())
        self.send({"type": "test.reply", "value": message["value"]})  # sync send, no await

    def test_stop(self, message: dict[str, Any]) -> None:
        raise StopConsumer()


async def test_sync_consumer_runs_handlers_in_a_worker_thread(layer: ChannelLayer, run_app: Any) -> None:
    log: list[Any] = []
    runner = run_app(ThreadedSync.as_asgi(log=log), {"type": "test", "reply_channel": "gateway.t!s"})
    await runner.send_input({"type": "test.event", "value": 7})
    assert (await runner.receive_output()) == {"type": "test.reply", "value": 7}
    await runner.send_input({"type": "test.event", "value": 8})
    assert (await runner.receive_output())["value"] == 8
    assert all(thread is not threading.main_thread() for thread in log)
    assert log[0] is log[1]  # thread-sensitive: Django's one sync thread, every time
    await runner.send_input({"type": "test.stop"})
    await runner.wait()


async def test_sync_consumer_can_query_the_database(layer: ChannelLayer, run_app: Any) -> None:
    class Query(SyncConsumer):
        def test_event(self, message: dict[str, Any]) -> None:
            from django.db import connection

            with connection.cursor() as cursor:
                cursor.execute("SELECT 40 + 2")
                (value,) = cursor.fetchone()
            self.send({"type": "test.reply", "value": value})

    runner = run_app(Query.as_asgi(), {"type": "test", "reply_channel": "gateway.t!q"})
    await runner.send_input({"type": "test.event"})
    assert (await runner.receive_output())["value"] == 42


async def test_sync_consumer_closes_old_connections_around_handlers(
    layer: ChannelLayer, run_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    monkeypatch.setattr(consumers_db, "close_old_connections", lambda: calls.append("close"))

    class Tracked(SyncConsumer):
        def test_event(self, message: dict[str, Any]) -> None:
            calls.append("handler")
            raise StopConsumer()  # stops the instance too: the closing call still runs

    runner = run_app(Tracked.as_asgi(), {"type": "test", "reply_channel": "gateway.t!c"})
    await runner.send_input({"type": "test.event"})
    await runner.wait()
    assert calls == ["close", "handler", "close"]


async def test_database_sync_to_async_decorator_forms() -> None:
    @database_sync_to_async
    def plain(x: int) -> tuple[int, bool]:
        return x * 2, threading.current_thread() is threading.main_thread()

    @database_sync_to_async(thread_sensitive=False)
    def separate(x: int) -> int:
        return x + 1

    assert await plain(21) == (42, False)
    assert await separate(1) == 2
