"""Request bodies streamed to the worker in chunks, with a read timeout and a gateway-wide
bound on the bytes held (issue 12 item 3).

Real clients (h11 and raw sockets) against the in-process gateway + worker (conftest.py);
the body reader and its budget are also checked on their own with a scripted ``receive``.
The same attack against real processes over Redis, with memory measured, is in
tests/reliability/test_rel_attacks_http.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Awaitable, Callable
from typing import Any

import h11
from support.waiting import deadline, wait_until

from switchboard.protocols._http_body import BodyBudget, BodyProblem, BodyReader

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
KiB = 1024
WAIT = deadline(20)


class Recorder:
    """Records every event of every request; answers ``<sha256> <events>`` once the body is in.

    ``/early`` answers after the first event without reading the rest of the body.
    """

    def __init__(self) -> None:
        self.requests: list[list[Message]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        events: list[Message] = []
        self.requests.append(events)
        while True:
            event = await receive()
            events.append(event)
            if event["type"] == "http.disconnect":
                return
            if scope["path"] == "/early" or not event.get("more_body", False):
                break
        body = b"".join(event.get("body", b"") for event in events)
        text = f"{hashlib.sha256(body).hexdigest()} {len(events)}".encode()
        await send({"type": "http.response.start", "status": 200, "headers": [[b"content-length", str(len(text)).encode()]]})
        await send({"type": "http.response.body", "body": text})

    def bodies(self, index: int = 0) -> list[Message]:
        return [event for event in self.requests[index] if event["type"] == "http.request"]


async def read_all(reader: asyncio.StreamReader) -> bytes:
    data = b""
    async with asyncio.timeout(WAIT):
        while True:
            try:
                chunk = await reader.read(65536)
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk


def post(path: str, length: int) -> bytes:
    return b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (path.encode(), length)


# -- streaming --------------------------------------------------------------------------------


async def test_a_body_complete_within_the_chunk_size_is_one_event(serve, fetch_url) -> None:
    app = Recorder()
    stack = await serve(app)
    body = os.urandom(60 * KiB)
    response = await fetch_url(stack.port, "POST", "/", body=body)
    assert response.body == f"{hashlib.sha256(body).hexdigest()} 1".encode()
    assert app.bodies() == [{"type": "http.request", "body": body, "more_body": False}]
    assert "http.bodies_streamed" not in stack.plugin.stats()


async def test_a_large_body_reaches_one_instance_whole_in_chunks(serve, fetch_url) -> None:
    app = Recorder()
    stack = await serve(app, body_chunk_size=64 * KiB)
    body = os.urandom(3 * 1024 * KiB + 123)
    response = await fetch_url(stack.port, "POST", "/", body=body)
    assert response.status == 200 and response.body.split()[0] == hashlib.sha256(body).hexdigest().encode()
    events = app.bodies()
    assert len(app.requests) == 1 and len(events) > 3, "streamed to one instance, in several events"
    assert [event["more_body"] for event in events] == [True] * (len(events) - 1) + [False]
    assert all(len(event["body"]) >= 64 * KiB for event in events[:-1]), "chunks of at least body_chunk_size"
    assert b"".join(event["body"] for event in events) == body
    assert stack.plugin.stats()["http.bodies_streamed"] == 1
    assert stack.plugin.stats()["http.body_bytes_buffered"] == 0


async def test_a_chunked_upload_streams_as_it_arrives(serve, http_connect) -> None:
    """The consumer has the first chunks while the client is still sending."""
    app = Recorder()
    stack = await serve(app, body_chunk_size=16 * KiB)
    client = await http_connect(stack.port)
    pieces = [os.urandom(20 * KiB) for _ in range(5)]
    await client.send_request("POST", "/", chunks=pieces[:2], end=False)
    await wait_until(lambda: bool(app.requests) and len(app.bodies()) >= 1, what="the first chunk at the worker")
    assert app.requests[0][0]["more_body"] is True
    client.writer.write(b"".join(client.conn.send(h11.Data(data=piece)) for piece in pieces[2:]))
    client.writer.write(client.conn.send(h11.EndOfMessage()))
    response = await client.read_response()
    assert response.body.split()[0] == hashlib.sha256(b"".join(pieces)).hexdigest().encode()


async def test_a_consumer_answering_early_stops_the_stream_and_no_second_instance_starts(serve) -> None:
    app = Recorder()
    stack = await serve(app, body_chunk_size=16 * KiB)
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.port)
    body = os.urandom(2 * 1024 * KiB)
    try:
        writer.write(post("/early", len(body)))
        sender = asyncio.get_running_loop().create_task(_send_slowly(writer, body))
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        sender.cancel()
    finally:
        writer.close()
    worker = stack.worker
    assert worker is not None
    await wait_until(lambda: not stack.gateway.connections, what="the request to end")
    await wait_until(lambda: worker.stats.events == stack.gateway.stats.events_sent, what="every event at the worker")
    assert len(app.requests) == 1 and worker.stats.instances_started == 1, "the tail of the body started nothing"


async def _send_slowly(writer: asyncio.StreamWriter, body: bytes) -> None:
    for start in range(0, len(body), 8 * KiB):
        writer.write(body[start:start + 8 * KiB])
        await writer.drain()
        await asyncio.sleep(0.005)


# -- limits while reading ---------------------------------------------------------------------------


async def test_a_body_that_stops_arriving_gets_408_and_the_consumer_a_disconnect(serve) -> None:
    app = Recorder()
    stack = await serve(app, body_chunk_size=4 * KiB, body_timeout=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.port)
    try:
        writer.write(post("/", 100 * KiB) + os.urandom(10 * KiB))  # and then nothing
        answer = await read_all(reader)
    finally:
        writer.close()
    head = answer.partition(b"\r\n\r\n")[0].lower()
    assert head.startswith(b"http/1.1 408") and b"connection: close" in head
    await wait_until(lambda: app.requests and app.requests[0][-1]["type"] == "http.disconnect", what="the disconnect")
    assert sum(len(event["body"]) for event in app.bodies()) <= 10 * KiB
    stats = stack.plugin.stats()
    assert stats["http.body_timeouts"] == 1 and stats["http.body_bytes_buffered"] == 0


async def test_a_body_stalling_within_its_first_chunk_gets_408_and_reaches_no_worker(serve) -> None:
    app = Recorder()
    stack = await serve(app, body_timeout=0.5)
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.port)
    try:
        writer.write(post("/", 1000) + b"x" * 999)  # the last byte withheld
        assert (await read_all(reader)).startswith(b"HTTP/1.1 408")
    finally:
        writer.close()
    assert app.requests == []
    assert stack.plugin.stats()["http.body_bytes_buffered"] == 0


async def test_a_chunked_body_growing_past_max_body_size_is_cut_off_with_413(serve, http_connect) -> None:
    app = Recorder()
    stack = await serve(app, body_chunk_size=16 * KiB, max_body_size=100 * KiB)
    client = await http_connect(stack.port)
    await client.send_request("POST", "/", chunks=[os.urandom(30 * KiB) for _ in range(3)], end=False)
    await wait_until(lambda: bool(app.requests), what="the first chunks at the worker")
    client.writer.write(b"".join(client.conn.send(h11.Data(data=os.urandom(30 * KiB))) for _ in range(3)))
    response = await client.read_response()
    assert response.status == 413 and response.headers[b"connection"] == b"close"
    await wait_until(lambda: app.requests and app.requests[0][-1]["type"] == "http.disconnect", what="the disconnect")
    assert sum(len(event["body"]) for event in app.bodies()) <= 100 * KiB
    assert stack.plugin.stats()["http.413"] == 1


# -- the reader and its budget on their own --------------------------------------------------------


def scripted(*messages: Message) -> Receive:
    """An ASGI ``receive`` that returns these messages, then waits forever (a silent client)."""
    queue = list(messages)

    async def receive() -> Message:
        if queue:
            return queue.pop(0)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return receive


def piece(size: int, more: bool = True) -> Message:
    return {"type": "http.request", "body": b"x" * size, "more_body": more}


async def test_a_new_body_is_refused_while_the_budget_is_full() -> None:
    budget = BodyBudget(100)
    holder = BodyReader(scripted(piece(150)), budget=budget, chunk_size=1000, max_size=10_000, timeout=5)
    assert await holder.next_chunk() == b"x" * 150, "full: what it holds goes on at once"
    assert budget.used == 150 and budget.full, "counted until the layer has it"
    newcomer = BodyReader(scripted(piece(10)), budget=budget, chunk_size=1000, max_size=10_000, timeout=5)
    assert await newcomer.next_chunk() is BodyProblem.BUSY
    bodiless = BodyReader(scripted({"type": "http.request"}), budget=budget, chunk_size=1000, max_size=0, timeout=None)
    assert await bodiless.next_chunk() == b"", "a request without a body is never refused for it"
    holder.release()
    assert budget.used == 0


class Feed:
    """A ``receive`` the test feeds piece by piece."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Message] = asyncio.Queue()
        self.asked = 0

    async def __call__(self) -> Message:
        self.asked += 1
        return await self.queue.get()


async def test_a_streaming_body_sends_what_it_holds_then_waits_for_room() -> None:
    budget = BodyBudget(100)
    feed = Feed()
    stream = BodyReader(feed, budget=budget, chunk_size=1000, max_size=10_000, timeout=5)
    chunk = asyncio.get_running_loop().create_task(stream.next_chunk())
    feed.queue.put_nowait(piece(20))
    await wait_until(lambda: feed.asked == 2, what="the reader to want more")
    other = BodyReader(scripted(piece(100)), budget=budget, chunk_size=100, max_size=10_000, timeout=5)
    assert await other.next_chunk() == b"x" * 100  # the gateway is full now (120 of 100)
    feed.queue.put_nowait(piece(30))
    assert await asyncio.wait_for(chunk, WAIT) == b"x" * 50, "full: what it holds goes on before it reads more"
    stream.release()
    waiting = asyncio.get_running_loop().create_task(stream.next_chunk())
    feed.queue.put_nowait(piece(5, more=False))
    await asyncio.sleep(0.05)
    assert not waiting.done() and feed.asked == 2, "no reading while the budget is full"
    other.release()
    assert await asyncio.wait_for(waiting, WAIT) == b"x" * 5
    stream.release()
    assert budget.used == 0 and stream.done


async def test_waiting_for_room_is_bounded_by_the_body_timeout() -> None:
    budget = BodyBudget(100)
    feed = Feed()
    stream = BodyReader(feed, budget=budget, chunk_size=10, max_size=1000, timeout=0.2)
    feed.queue.put_nowait(piece(10))
    assert await stream.next_chunk() == b"x" * 10
    stream.release()
    budget.take(100)  # others fill the gateway and stay
    assert await stream.next_chunk() is BodyProblem.BUSY


async def test_memory_is_returned_once_a_burst_of_bodies_has_gone_quiet() -> None:
    trims: list[int] = []
    budget = BodyBudget(10_000, trim_above=1000, trim_delay=0.1, release=lambda: trims.append(budget.used))
    budget.take(5000)
    budget.give(4000)
    budget.give(500)
    await wait_until(lambda: trims == [500], what="one trim after the burst")
    budget.give(500)
    await asyncio.sleep(0.3)
    assert trims == [500], "a small release after it is not worth another"
