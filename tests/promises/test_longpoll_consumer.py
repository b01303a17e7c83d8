"""The long-poll consumer and ``ordered = True`` in process: queues in, messages out.

Without a gateway reply channel the consumer reads a channel of its own next to
``receive``, so group messages reach it straight from the in-memory layer. The ring
buffer lives in Django's local-memory cache here.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from django.core.cache import cache
from support.asgi_app import AppRunner
from support.asgi_app import run_app as run_app
from support.layers import installed_layer
from support.waiting import wait_until

from switchboard.consumers import AsyncConsumer, SyncConsumer
from switchboard.consumers.exceptions import StopConsumer
from switchboard.consumers.longpoll import AsyncLongPollConsumer, format_cursor, parse_cursor, publish
from switchboard.gateway.layers import ChannelLayer


@pytest.fixture(autouse=True)
async def layer() -> AsyncIterator[ChannelLayer]:
    cache.clear()
    async with installed_layer() as channel_layer:
        yield channel_layer


class Runner(AppRunner):
    """An instance of a long-poll consumer: one request in, one JSON answer out."""

    async def request(self) -> None:
        await self.send_input({"type": "http.request", "body": b"", "more_body": False})

    async def answer(self) -> tuple[int, dict[str, Any]]:
        start = await self.receive_output()
        body = await self.receive_output()
        assert start["type"] == "http.response.start" and body["type"] == "http.response.body"
        assert [b"content-type", b"application/json"] in start["headers"]
        return start["status"], json.loads(body["body"])


@pytest.fixture
def run(run_app: Any) -> Any:
    """``run(app, scope)``: a :class:`Runner`, stopped after the test."""
    return lambda app, scope: run_app(app, scope, Runner)


def scope(method: str = "GET", query: bytes = b"", **extra: Any) -> dict[str, Any]:
    return {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": "/poll/",
        "raw_path": b"/poll/",
        "root_path": "",
        "query_string": query,
        "headers": [],
        **extra,
    }


class RoomPoll(AsyncLongPollConsumer):
    groups = ["room"]
    timeout = 5.0

    async def chat_message(self, event: dict[str, Any]) -> None:
        if event["message"] != "ignore me":
            await self.reply({"message": event["message"]})


class BufferedRoomPoll(RoomPoll):
    history = 5


async def members(layer: ChannelLayer, group: str) -> list[str]:
    return await layer.storage.group_members(group, time.time(), layer.group_expiry)


async def wait_members(layer: ChannelLayer, group: str, count: int) -> None:
    """Wait until ``count`` channels joined ``group`` (a held request has joined)."""

    async def joined() -> bool:
        return len(await members(layer, group)) >= count

    await wait_until(joined, what=f"{count} member(s) of {group}", interval=0.01)


async def test_held_request_is_answered_by_a_group_message(run: Any, layer: ChannelLayer) -> None:
    runners = [run(RoomPoll.as_asgi(), scope()) for _ in range(3)]
    for runner in runners:
        await runner.request()
    await wait_members(layer, "room", 3)
    assert all(runner.output.empty() for runner in runners)  # held, not answered
    await layer.group_send("room", {"type": "chat.message", "message": "hello"})
    for runner in runners:
        assert await runner.answer() == (200, {"messages": [{"message": "hello"}], "cursor": None, "gap": False})
        await runner.wait()
    assert await members(layer, "room") == []


async def test_a_handler_may_ignore_a_message_and_keep_holding(run: Any, layer: ChannelLayer) -> None:
    runner = run(RoomPoll.as_asgi(), scope())
    await runner.request()
    await wait_members(layer, "room", 1)
    await layer.group_send("room", {"type": "chat.message", "message": "ignore me"})
    await layer.group_send("room", {"type": "chat.message", "message": "this one"})
    assert (await runner.answer())[1]["messages"] == [{"message": "this one"}]


async def test_timeout_answers_with_no_messages(run: Any) -> None:
    runner = run(RoomPoll.as_asgi(timeout=0.2), scope())
    await runner.request()
    assert await runner.answer() == (200, {"messages": [], "cursor": None, "gap": False})
    await runner.wait()


async def test_other_methods_get_405(run: Any) -> None:
    runner = run(RoomPoll.as_asgi(), scope(method="POST"))
    await runner.request()
    start = await runner.receive_output()
    assert start["status"] == 405
    await runner.wait()


async def test_client_going_away_leaves_the_group(run: Any, layer: ChannelLayer) -> None:
    runner = run(RoomPoll.as_asgi(), scope())
    await runner.request()
    await wait_members(layer, "room", 1)
    await runner.input.put({"type": "http.disconnect"})
    await runner.wait()
    assert runner.output.empty()
    assert await members(layer, "room") == []


async def test_a_message_without_a_request_answers_it_from_here(run: Any) -> None:
    # What a worker builds when a held request's group message reaches it after the worker
    # holding the request stopped or died: the scope is all it needs to answer.
    runner = run(BufferedRoomPoll.as_asgi(), scope(query=b"cursor=room:6", reply_channel="gateway.abc!def"))
    await runner.input.put({"type": "chat.message", "message": "moved", "longpoll_group": "room", "longpoll_seq": 7})
    assert await runner.answer() == (200, {"messages": [{"message": "moved"}], "cursor": "room:7", "gap": False})
    await runner.wait()


async def test_a_message_the_client_had_or_ignores_still_ends_the_request(run: Any) -> None:
    runner = run(RoomPoll.as_asgi(), scope(reply_channel="gateway.abc!def"))
    await runner.input.put({"type": "chat.message", "message": "ignore me"})
    assert await runner.answer() == (200, {"messages": [], "cursor": None, "gap": False})
    await runner.wait()


async def test_cancelled_while_held_answers_empty(run: Any, layer: ChannelLayer) -> None:
    # A stopping worker cancels what is still held after its drain time: the client gets
    # an empty answer and polls again (another worker), not a 503 much later.
    runner = run(RoomPoll.as_asgi(), scope())
    await runner.request()
    await wait_members(layer, "room", 1)
    runner.task.cancel()
    assert await runner.answer() == (200, {"messages": [], "cursor": None, "gap": False})
    with pytest.raises(asyncio.CancelledError):
        await runner.task
    assert await members(layer, "room") == []


async def test_cursor_hands_over_what_was_missed_between_polls(run: Any, layer: ChannelLayer) -> None:
    first = run(BufferedRoomPoll.as_asgi(), scope())
    await first.request()
    await wait_members(layer, "room", 1)
    seq = await publish("room", {"type": "chat.message", "message": "one"}, history=5)
    status, answer = await first.answer()
    assert status == 200
    assert answer == {"messages": [{"message": "one"}], "cursor": f"room:{seq}", "gap": False}
    # Nobody polls now: these would be lost without the buffer.
    await publish("room", {"type": "chat.message", "message": "two"}, history=5)
    await publish("room", {"type": "chat.message", "message": "three"}, history=5)
    second = run(BufferedRoomPoll.as_asgi(), scope(query=f"cursor={answer['cursor']}".encode()))
    await second.request()
    status, answer = await second.answer()
    assert status == 200
    assert answer == {"messages": [{"message": "two"}, {"message": "three"}], "cursor": f"room:{seq + 2}", "gap": False}
    # Caught up: the next poll is held until something new comes.
    third = run(BufferedRoomPoll.as_asgi(), scope(query=f"cursor={answer['cursor']}".encode()))
    await third.request()
    await wait_members(layer, "room", 1)
    await publish("room", {"type": "chat.message", "message": "four"}, history=5)
    assert (await third.answer())[1] == {"messages": [{"message": "four"}], "cursor": f"room:{seq + 3}", "gap": False}


async def test_first_poll_without_cursor_starts_from_now(run: Any, layer: ChannelLayer) -> None:
    await publish("room", {"type": "chat.message", "message": "old news"}, history=5)
    runner = run(BufferedRoomPoll.as_asgi(), scope())
    await runner.request()
    await wait_members(layer, "room", 1)
    await publish("room", {"type": "chat.message", "message": "fresh"}, history=5)
    assert (await runner.answer())[1] == {"messages": [{"message": "fresh"}], "cursor": "room:2", "gap": False}


async def test_overflowed_buffer_reports_a_gap(run: Any) -> None:
    for n in range(8):
        await publish("room", {"type": "chat.message", "message": str(n)}, history=5)
    runner = run(BufferedRoomPoll.as_asgi(), scope(query=b"cursor=room:1"))
    await runner.request()
    status, answer = await runner.answer()
    assert status == 200
    # Messages 2..8 were missed; the buffer keeps the last five (4..8 -> "3".."7").
    assert answer == {"messages": [{"message": str(n)} for n in range(3, 8)], "cursor": "room:8", "gap": True}


async def test_live_duplicate_of_a_buffered_message_is_skipped(run: Any, layer: ChannelLayer) -> None:
    await publish("room", {"type": "chat.message", "message": "a"}, history=5)
    runner = run(BufferedRoomPoll.as_asgi(), scope(query=b"cursor=room:1"))
    await runner.request()
    await wait_members(layer, "room", 1)
    # The same numbered message arriving live again (a publish racing the poll's read).
    await layer.group_send("room", {"type": "chat.message", "message": "a", "longpoll_group": "room", "longpoll_seq": 1})
    await publish("room", {"type": "chat.message", "message": "b"}, history=5)
    assert (await runner.answer())[1] == {"messages": [{"message": "b"}], "cursor": "room:2", "gap": False}


def test_cursor_text_round_trips_and_ignores_junk() -> None:
    cursor = {"chat.lobby": 12, "news-1_x": 3}
    assert parse_cursor(format_cursor(cursor)) == cursor
    assert parse_cursor("chat.lobby:12,bad,:4,x:-1,y:z,news:7") == {"chat.lobby": 12, "news": 7}
    assert parse_cursor("") == {}


# -- ordered = True ---------------------------------------------------------------------


class Recorder(AsyncConsumer):
    async def udp_datagram(self, message: dict[str, Any]) -> None:
        await self.send({"type": "udp.send", "data": message["data"], "address": ["127.0.0.1", 9]})
        if message["data"] == b"last":
            raise StopConsumer()


class SyncRecorder(SyncConsumer):
    def udp_datagram(self, message: dict[str, Any]) -> None:
        self.send({"type": "udp.send", "data": message["data"], "address": ["127.0.0.1", 9]})
        if message["data"] == b"last":
            raise StopConsumer()


def udp_scope(reply_channel: str | None = "gateway.abc!sock") -> dict[str, Any]:
    result: dict[str, Any] = {"type": "udp", "server": ["127.0.0.1", 9999]}
    if reply_channel:
        result["reply_channel"] = reply_channel
    return result


@pytest.mark.parametrize("consumer", [Recorder, SyncRecorder])
async def test_ordered_consumer_claims_once_before_its_first_handler(run: Any, consumer: Any) -> None:
    runner = run(consumer.as_asgi(ordered=True), udp_scope())
    for data in (b"first", b"second", b"last"):
        await runner.input.put({"type": "udp.datagram", "data": data, "client": ["127.0.0.1", 9]})
    sent = [await runner.receive_output() for _ in range(4)]
    await runner.wait()
    assert [m["type"] for m in sent] == ["switchboard.claim", "udp.send", "udp.send", "udp.send"]
    assert sent[0] == {"type": "switchboard.claim"}


@pytest.mark.parametrize(("ordered", "reply_channel"), [(False, "gateway.abc!sock"), (True, None)])
async def test_no_claim_unless_ordered_under_a_gateway(run: Any, ordered: bool, reply_channel: str | None) -> None:
    runner = run(Recorder.as_asgi(ordered=ordered), udp_scope(reply_channel))
    await runner.input.put({"type": "udp.datagram", "data": b"last", "client": ["127.0.0.1", 9]})
    assert (await runner.receive_output())["type"] == "udp.send"
    await runner.wait()
    assert runner.output.empty()
