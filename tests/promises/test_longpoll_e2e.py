"""HTTP long-poll end to end: thousands of held requests, one group send answers them all.

Split mode: ``switchboard gateway`` + one ``switchboard worker`` over Redis (the ring
buffer in a Redis cache); run mode: one ``switchboard run`` process. The clients are raw
asyncio streams, so holding 2,000 requests costs the test one socket each and no thread.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
from support.waiting import deadline

from .conftest import WAIT, Deployment, http_request, new_deployment, parse_response, require_redis

pytestmark = pytest.mark.e2e

CLIENTS = 2_000


@pytest.fixture(params=["split", "run"], scope="module")
def longpoll(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """One deployment per mode, shared by this module's tests (unique groups per test)."""
    mode = request.param
    if mode == "split":
        require_redis()
    deployment = new_deployment(tmp_path_factory.mktemp(f"longpoll-{mode}"), mode)
    failed_before = request.session.testsfailed
    if mode == "split":
        deployment.start("gateway", "gateway")
        deployment.start("worker", "worker")
    else:
        deployment.start("run", "run")
    try:
        asyncio.run(deployment.wait_ready())
        yield deployment
    finally:
        deployment.stop_all()
        if request.session.testsfailed > failed_before:
            print(deployment.logs())


def group_name(what: str) -> str:
    return f"{what}-{secrets.token_hex(4)}"


async def held_count(deployment: Deployment) -> int:
    return int((await deployment.get_json("/held/"))["held"])


async def wait_held(deployment: Deployment, count: int, tasks: list[asyncio.Task[Any]], timeout: float = 40) -> None:
    """Wait until the worker holds ``count`` requests; fail early if any client already ended."""

    async def all_held() -> bool:
        finished = [task for task in tasks if task.done()]
        if finished:
            raise AssertionError(f"{len(finished)} request(s) ended while they should be held: {finished[0].result()!r}")
        return await held_count(deployment) == count

    await deployment.wait_until(all_held, timeout, f"{count} requests to be held")


async def publish(deployment: Deployment, group: str, message: str, *, buffered: bool = True, history: int = 100) -> Any:
    body = json.dumps({"message": message, "buffered": buffered, "history": history}).encode()
    status, answer = await deployment.request("POST", f"/publish/{group}/", body)
    assert status == 200, answer
    return json.loads(answer)


@pytest.mark.timeout(240)  # 2,000 clients on a loaded 2-core machine: the default 120 s is too tight a net
async def test_two_thousand_held_requests_answered_by_one_group_send(longpoll: Deployment) -> None:
    group = group_name("crowd")
    gateway = psutil.Process(longpoll.pid(longpoll.gateway))
    worker = psutil.Process(longpoll.pid("worker")) if longpoll.mode == "split" else None
    rss_before = gateway.memory_info().rss
    worker_before = worker.memory_info().rss if worker else 0
    connecting = asyncio.Semaphore(250)  # the listen backlog is 4096; stay well inside it

    async def held_client() -> tuple[int, bytes]:
        async with connecting:
            reader, writer = await asyncio.open_connection("127.0.0.1", longpoll.port)
            writer.write(f"GET /poll/{group}/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
        try:
            return parse_response(await reader.read())
        finally:
            writer.close()

    tasks = [asyncio.ensure_future(held_client()) for _ in range(CLIENTS)]
    try:
        await wait_held(longpoll, CLIENTS, tasks)
        rss_held = gateway.memory_info().rss
        worker_held = worker.memory_info().rss if worker else 0
        seq = (await publish(longpoll, group, "to all of you"))["seq"]
        results = await asyncio.wait_for(asyncio.gather(*tasks), deadline(90))
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    answers = [json.loads(body) for status, body in results if status == 200]
    expected = {"messages": [{"message": "to all of you"}], "cursor": f"{group}:{seq}", "gap": False}
    answered = sum(1 for answer in answers if answer == expected)
    assert answered == CLIENTS, [r for r in results if r[0] != 200][:3]
    assert await held_count(longpoll) == 0
    print(
        f"\n[{longpoll.mode}] {CLIENTS} held long-polls: gateway ({longpoll.gateway}) RSS "
        f"{rss_before / 2**20:.1f} -> {rss_held / 2**20:.1f} MiB, "
        f"~{(rss_held - rss_before) / CLIENTS / 1024:.1f} KiB per held request"
        + (f"; worker RSS +{(worker_held - worker_before) / CLIENTS / 1024:.1f} KiB per held instance" if worker else "")
    )


async def test_held_request_times_out_with_no_messages(longpoll: Deployment) -> None:
    status, body = await longpoll.request("GET", f"/poll-short/{group_name('quiet')}/")
    assert status == 200
    answer = json.loads(body)
    assert answer["messages"] == [] and answer["gap"] is False


async def test_cursor_catches_up_on_messages_sent_between_polls(longpoll: Deployment) -> None:
    group = group_name("cursor")
    first = asyncio.ensure_future(http_request(longpoll.port, "GET", f"/poll/{group}/"))
    await wait_held(longpoll, 1, [first])
    await publish(longpoll, group, "one")
    status, body = await asyncio.wait_for(first, WAIT)
    cursor = json.loads(body)["cursor"]
    # The client is between polls: a plain group_send would reach nobody for it.
    await publish(longpoll, group, "two")
    await publish(longpoll, group, "three")
    status, body = await longpoll.request("GET", f"/poll/{group}/?cursor={cursor}")
    answer = json.loads(body)
    assert (status, answer["messages"], answer["gap"]) == (200, [{"message": "two"}, {"message": "three"}], False)
    # Caught up: held again until the next message.
    third = asyncio.ensure_future(http_request(longpoll.port, "GET", f"/poll/{group}/?cursor={answer['cursor']}"))
    await wait_held(longpoll, 1, [third])
    await publish(longpoll, group, "four")
    status, body = await asyncio.wait_for(third, WAIT)
    assert json.loads(body)["messages"] == [{"message": "four"}]


async def test_client_that_goes_away_is_no_longer_held(longpoll: Deployment) -> None:
    group = group_name("gone")
    _, writer = await asyncio.open_connection("127.0.0.1", longpoll.port)
    writer.write(f"GET /poll/{group}/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    await writer.drain()

    async def held(count: int) -> bool:
        return await held_count(longpoll) == count

    await longpoll.wait_until(lambda: held(1), what="the request to be held")
    writer.close()
    await longpoll.wait_until(lambda: held(0), what="the instance to go with its client")


async def test_demo_page_and_chat_poll(longpoll: Deployment) -> None:
    status, page = await longpoll.request("GET", "/longpoll/lobby/")
    assert status == 200 and b"/poll/chat/" in page
    assert (await longpoll.request("GET", "/poll-chat/no!such!room/"))[0] == 404
    room = group_name("demo")
    poll = asyncio.ensure_future(http_request(longpoll.port, "GET", f"/poll-chat/{room}/"))
    # The demo consumer is not counted by /held/: publish until its answer comes.
    end = time.monotonic() + WAIT
    while not poll.done():
        assert time.monotonic() < end, "the demo poll was never answered"
        # A plain group_send, as the WebSocket chat does: what the demo page shows.
        await publish(longpoll, f"chat.{room}", "hi from the chat", buffered=False)
        await asyncio.wait([poll], timeout=0.3)
    status, body = poll.result()
    assert status == 200
    assert json.loads(body) == {"messages": [{"message": "hi from the chat"}], "cursor": None, "gap": False}
