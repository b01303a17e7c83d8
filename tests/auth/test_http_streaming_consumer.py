"""HTTP consumers whose response outlives handle(): server-sent events and long-poll."""

from __future__ import annotations

from typing import Any

import pytest

from switchboard.consumers import AsyncHttpConsumer, HttpConsumer
from switchboard.gateway.layers import ChannelLayer


class AsyncEvents(AsyncHttpConsumer):
    """handle() opens the stream and returns; each ``news.item`` message is one event."""

    log: list[str] | None = None

    async def handle(self, body: bytes) -> None:
        await self.channel_layer.group_add("news", self.channel_name)
        await self.send_headers(headers={"Content-Type": "text/event-stream"})
        await self.send_body(b": subscribed\n\n", more_body=True)

    async def news_item(self, message: dict[str, Any]) -> None:
        if message["text"] == "boom":
            raise RuntimeError("handler failed (on purpose)")
        await self.send_body(f"data: {message['text']}\n\n".encode(), more_body=not message.get("last"))

    async def disconnect(self) -> None:
        assert self.log is not None
        self.log.append("disconnect")
        await self.channel_layer.group_discard("news", self.channel_name)


class SyncEvents(HttpConsumer):
    log: list[str] | None = None

    def handle(self, body: bytes) -> None:
        self.send_headers(headers={"Content-Type": "text/event-stream"})
        self.send_body(b": subscribed\n\n", more_body=True)

    def news_item(self, message: dict[str, Any]) -> None:
        if message["text"] == "boom":
            raise RuntimeError("handler failed (on purpose)")
        self.send_body(f"data: {message['text']}\n\n".encode(), more_body=not message.get("last"))

    def disconnect(self) -> None:
        assert self.log is not None
        self.log.append("disconnect")


EVENTS = pytest.mark.parametrize("consumer", [AsyncEvents, SyncEvents], ids=["async", "sync"])


async def open_stream(consumer: Any, run_app: Any, scope: Any, log: list[str], **extra: Any) -> Any:
    runner = run_app(consumer.as_asgi(log=log), scope("http", "/events/", **extra))
    await runner.send_input({"type": "http.request", "body": b""})
    assert (await runner.receive_output())["headers"] == [(b"Content-Type", b"text/event-stream")]
    assert (await runner.receive_output())["body"] == b": subscribed\n\n"
    return runner


@EVENTS
async def test_stream_stays_open_after_handle_and_ends_on_client_disconnect(consumer: Any, run_app: Any, scope: Any) -> None:
    log: list[str] = []
    runner = await open_stream(consumer, run_app, scope, log)
    assert not runner.task.done() and log == []
    for text in ("one", "two"):
        await runner.send_input({"type": "news.item", "text": text})
        assert (await runner.receive_output()) == {
            "type": "http.response.body",
            "body": f"data: {text}\n\n".encode(),
            "more_body": True,
        }
    await runner.send_input({"type": "http.disconnect"})
    await runner.wait()
    assert log == ["disconnect"]
    assert runner.sent_nothing_more()


@EVENTS
async def test_handler_finishing_the_response_ends_the_instance(consumer: Any, run_app: Any, scope: Any) -> None:
    log: list[str] = []
    runner = await open_stream(consumer, run_app, scope, log)
    await runner.send_input({"type": "news.item", "text": "bye", "last": True})
    assert (await runner.receive_output())["more_body"] is False
    await runner.wait()
    assert log == ["disconnect"]


@EVENTS
async def test_handler_failure_still_runs_disconnect(consumer: Any, run_app: Any, scope: Any) -> None:
    log: list[str] = []
    runner = await open_stream(consumer, run_app, scope, log)
    await runner.send_input({"type": "news.item", "text": "boom"})
    with pytest.raises(RuntimeError, match="on purpose"):
        await runner.wait()
    assert log == ["disconnect"]


async def test_group_messages_reach_the_open_stream_through_the_layer(layer: ChannelLayer, run_app: Any, scope: Any) -> None:
    # No reply channel: the consumer reads a channel of its own, as under plain Channels.
    log: list[str] = []
    runner = await open_stream(AsyncEvents, run_app, scope, log, reply_channel=None)
    await layer.group_send("news", {"type": "news.item", "text": "via the group"})
    assert (await runner.receive_output())["body"] == b"data: via the group\n\n"
    await runner.send_input({"type": "http.disconnect"})
    await runner.wait()
    assert log == ["disconnect"]


class LongPoll(AsyncHttpConsumer):
    """handle() answers nothing; the first ``news.item`` is the whole response."""

    async def handle(self, body: bytes) -> None:
        pass

    async def news_item(self, message: dict[str, Any]) -> None:
        await self.send_response(200, message["text"].encode())


async def test_long_poll_response_sent_by_a_later_handler(run_app: Any, scope: Any) -> None:
    runner = run_app(LongPoll.as_asgi(), scope("http", "/poll/"))
    await runner.send_input({"type": "http.request", "body": b""})
    await runner.send_input({"type": "news.item", "text": "finally"})
    assert (await runner.receive_output())["status"] == 200
    assert (await runner.receive_output()) == {"type": "http.response.body", "body": b"finally", "more_body": False}
    await runner.wait()
