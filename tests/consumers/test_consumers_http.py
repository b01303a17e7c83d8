"""HTTP consumers: whole responses, assembled request bodies, streaming, disconnects."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from switchboard.consumers import AsyncHttpConsumer, HttpConsumer


class AsyncHello(AsyncHttpConsumer):
    log: list[Any] | None = None

    async def handle(self, body: bytes) -> None:
        assert self.log is not None
        self.log.append(("handle", body, threading.current_thread() is threading.main_thread()))
        await self.send_response(201, b"got " + body, headers={"Content-Type": "text/plain"})

    async def disconnect(self) -> None:
        assert self.log is not None
        self.log.append(("disconnect",))


class SyncHello(HttpConsumer):
    log: list[Any] | None = None

    def handle(self, body: bytes) -> None:
        assert self.log is not None
        self.log.append(("handle", body, threading.current_thread() is threading.main_thread()))
        self.send_response(201, b"got " + body, headers={"Content-Type": "text/plain"})

    def disconnect(self) -> None:
        assert self.log is not None
        self.log.append(("disconnect",))


class AsyncStream(AsyncHttpConsumer):
    async def handle(self, body: bytes) -> None:
        await self.send_headers(headers=[(b"content-type", b"text/event-stream")])
        for number in range(3):
            await self.send_body(f"data: {number}\n\n".encode(), more_body=True)
        await self.send_body(b"")


class SyncStream(HttpConsumer):
    def handle(self, body: bytes) -> None:
        self.send_headers(headers=[(b"content-type", b"text/event-stream")])
        for number in range(3):
            self.send_body(f"data: {number}\n\n".encode(), more_body=True)
        self.send_body(b"")


HELLOS = pytest.mark.parametrize(
    ("consumer", "in_main_thread"), [(SyncHello, False), (AsyncHello, True)], ids=["sync", "async"]
)
STREAMS = pytest.mark.parametrize("consumer", [SyncStream, AsyncStream], ids=["sync", "async"])


@HELLOS
async def test_single_request_gets_response_then_instance_ends(
    consumer: Any, in_main_thread: bool, run_app: Any, web_scope: Any
) -> None:
    log: list[Any] = []
    runner = run_app(consumer.as_asgi(log=log), web_scope("/hello", "POST", reply_channel="gateway.t!h"))
    await runner.send_input({"type": "http.request", "body": b"ping", "more_body": False})
    assert (await runner.receive_output()) == {
        "type": "http.response.start",
        "status": 201,
        "headers": [(b"Content-Type", b"text/plain")],  # as written (Channels passes headers on as given)
    }
    assert (await runner.receive_output()) == {"type": "http.response.body", "body": b"got ping", "more_body": False}
    await runner.wait()
    assert log == [("handle", b"ping", in_main_thread), ("disconnect",)]


@HELLOS
async def test_body_is_assembled_from_several_request_chunks(
    consumer: Any, in_main_thread: bool, run_app: Any, web_scope: Any
) -> None:
    log: list[Any] = []
    runner = run_app(consumer.as_asgi(log=log), web_scope("/upload", "POST", reply_channel="gateway.t!h"))
    await runner.send_input({"type": "http.request", "body": b"one,", "more_body": True})
    await runner.send_input({"type": "http.request", "more_body": True})  # no body key at all
    await runner.send_input({"type": "http.request", "body": b"two,", "more_body": True})
    await runner.send_input({"type": "http.request", "body": b"three", "more_body": False})
    await runner.receive_output()
    assert (await runner.receive_output())["body"] == b"got one,two,three"
    await runner.wait()
    assert log[0][:2] == ("handle", b"one,two,three")


@HELLOS
async def test_request_without_body_key_handles_empty_body(
    consumer: Any, in_main_thread: bool, run_app: Any, web_scope: Any
) -> None:
    log: list[Any] = []
    runner = run_app(consumer.as_asgi(log=log), web_scope(reply_channel="gateway.t!h"))
    await runner.send_input({"type": "http.request"})
    assert (await runner.receive_output())["status"] == 201
    assert (await runner.receive_output())["body"] == b"got "


@HELLOS
async def test_client_disconnect_before_body_completes(
    consumer: Any, in_main_thread: bool, run_app: Any, web_scope: Any
) -> None:
    log: list[Any] = []
    runner = run_app(consumer.as_asgi(log=log), web_scope("/upload", "POST", reply_channel="gateway.t!h"))
    await runner.send_input({"type": "http.request", "body": b"partial", "more_body": True})
    await runner.send_input({"type": "http.disconnect"})
    await runner.wait()
    assert log == [("disconnect",)]
    assert runner.sent_nothing_more()


@STREAMS
async def test_streaming_response_in_chunks(consumer: Any, run_app: Any, web_scope: Any) -> None:
    runner = run_app(consumer.as_asgi(), web_scope("/events", reply_channel="gateway.t!h"))
    await runner.send_input({"type": "http.request", "body": b"", "more_body": False})
    start = await runner.receive_output()
    assert start == {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]}
    chunks = [await runner.receive_output() for _ in range(4)]
    assert [chunk["body"] for chunk in chunks] == [b"data: 0\n\n", b"data: 1\n\n", b"data: 2\n\n", b""]
    assert [chunk["more_body"] for chunk in chunks] == [True, True, True, False]
    await runner.wait()


async def test_body_must_be_bytes(run_app: Any, web_scope: Any) -> None:
    class Wrong(AsyncHttpConsumer):
        async def handle(self, body: bytes) -> None:
            await self.send_headers()
            await self.send_body("text, not bytes")  # type: ignore[arg-type]

    runner = run_app(Wrong.as_asgi(), web_scope(reply_channel="gateway.t!h"))
    await runner.send_input({"type": "http.request"})
    assert (await runner.receive_output()) == {"type": "http.response.start", "status": 200, "headers": []}
    with pytest.raises(TypeError, match="must be bytes"):
        await runner.wait()


@pytest.mark.parametrize("consumer", [AsyncHttpConsumer, HttpConsumer], ids=["async", "sync"])
async def test_missing_handle_is_reported(consumer: Any, run_app: Any, web_scope: Any) -> None:
    runner = run_app(consumer.as_asgi(), web_scope(reply_channel="gateway.t!h"))
    await runner.send_input({"type": "http.request"})
    with pytest.raises(NotImplementedError, match="handle"):
        await runner.wait()


async def test_url_route_kwargs_reach_handle(run_app: Any, web_scope: Any) -> None:
    class Item(HttpConsumer):
        def handle(self, body: bytes) -> None:
            item = self.scope["url_route"]["kwargs"]["pk"]
            self.send_response(200, f"item {item}".encode(), headers=[("X-Item", str(item))])

    scope = web_scope("/items/5", reply_channel="gateway.t!h", url_route={"args": (), "kwargs": {"pk": 5}})
    runner = run_app(Item.as_asgi(), scope)
    await runner.send_input({"type": "http.request"})
    assert (await runner.receive_output())["headers"] == [(b"X-Item", b"5")]
    assert (await runner.receive_output())["body"] == b"item 5"
