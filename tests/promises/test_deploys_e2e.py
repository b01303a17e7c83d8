"""Zero-downtime deploys end to end: a gateway stays up while every worker is replaced.

Gateway + two workers over Redis, the http plugin's ``response_timeout`` at 3 s. Worker
processes are stopped with SIGTERM (drain, hand connections back, exit) or SIGKILL (no
goodbye at all) while clients keep talking; new workers pick the connections up.

``EchoConsumer`` answers ``text|pid|resumed``: which worker handled a message, and whether
that worker resumed the connection (replayed ``connect`` with ``scope["resumed"]``).
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from support.waiting import deadline
from websockets.asyncio.client import ClientConnection, connect
from websockets.protocol import State

from .conftest import WAIT, Deployment
from .test_deploy_order_core import (
    OVERTAKE_BUG,
    REPOOL_GAP,
    envelopes_pooled_for_one_unclaimed_connection,
    events_reach_the_new_worker_in_order,
)

pytestmark = pytest.mark.e2e

RESPONSE_TIMEOUT = 3.0


def started(deployment: Deployment) -> Deployment:
    """``deployment`` with its gateway and two workers (a and b) up."""

    async def start() -> None:
        deployment.start("gateway", "gateway")
        await deployment.start_worker("worker-a")
        await deployment.start_worker("worker-b")
        await deployment.wait_ready()

    asyncio.run(start())
    return deployment


@pytest.fixture
def deploy(make_deployment: Any) -> Iterator[Deployment]:
    yield started(make_deployment("split", PROMISES_RESPONSE_TIMEOUT=str(RESPONSE_TIMEOUT)))


@pytest.fixture
def patient_deploy(make_deployment: Any) -> Iterator[Deployment]:
    """A deployment whose gateway waits long for a worker to answer (``response_timeout``).

    For a request that must outlive a worker restart: starting two Django worker processes
    can take several seconds on a loaded machine, which a 3 s timeout would turn into a 503.
    """
    yield started(make_deployment("split", PROMISES_RESPONSE_TIMEOUT=str(deadline(60))))


async def stop_workers(deployment: Deployment, *names: str, sig: int = signal.SIGTERM) -> list[int]:
    """Signal the workers together, wait for all to exit (off the loop: clients keep going)."""
    return list(await asyncio.gather(*(asyncio.to_thread(deployment.stop, name, sig) for name in names)))


@dataclass
class Talker:
    """A WebSocket client sending numbered messages on a beat and collecting the echoes."""

    socket: ClientConnection
    sent: list[int] = field(default_factory=list)
    echoes: list[tuple[int, int, bool]] = field(default_factory=list)  # (number, pid, resumed)
    sending: bool = True
    interval: float = 0.02

    async def send_loop(self) -> None:
        n = 0
        while self.sending:
            await self.socket.send(str(n))
            self.sent.append(n)
            n += 1
            await asyncio.sleep(self.interval)

    async def receive_loop(self) -> None:
        async for text in self.socket:
            number, pid, resumed = str(text).split("|")
            self.echoes.append((int(number), int(pid), resumed == "1"))

    async def send_now(self, count: int) -> list[int]:
        """Send ``count`` more numbered messages at once; their numbers."""
        start = self.sent[-1] + 1 if self.sent else 0
        numbers = list(range(start, start + count))
        for n in numbers:
            await self.socket.send(str(n))
            self.sent.append(n)
        return numbers


@pytest.mark.parametrize("how", ["all-at-once", "rolling"])
async def test_websockets_keep_every_message_in_order_while_all_workers_are_replaced(deploy: Deployment, how: str) -> None:
    old = {deploy.pid("worker-a"), deploy.pid("worker-b")}
    sockets = [await connect(f"{deploy.ws_url}/ws/echo/") for _ in range(4)]
    talkers = [Talker(socket) for socket in sockets]
    loops = [asyncio.ensure_future(t.send_loop()) for t in talkers] + [asyncio.ensure_future(t.receive_loop()) for t in talkers]
    try:
        await asyncio.sleep(0.5)
        if how == "all-at-once":
            # The hard way: every worker stops, then new ones start. The old ones drain and
            # exit; the gateway holds (then queues on the layer) what the clients send.
            assert await stop_workers(deploy, "worker-a", "worker-b") == [0, 0]
            during = [len(t.sent) for t in talkers]
            await asyncio.sleep(1.0)  # no worker at all, and the clients keep talking
            assert all(len(t.sent) > n for t, n in zip(talkers, during))
            await deploy.start_worker("worker-c")
            await deploy.start_worker("worker-d")
        else:
            # The recommended way (docs/deploys.md): new workers first, then stop the old.
            await deploy.start_worker("worker-c")
            await deploy.start_worker("worker-d")
            await asyncio.sleep(0.3)
            assert await stop_workers(deploy, "worker-a", "worker-b") == [0, 0]
        new = {deploy.pid("worker-c"), deploy.pid("worker-d")}
        await asyncio.sleep(1.0)
        for talker in talkers:
            talker.sending = False
        await asyncio.gather(*loops[: len(talkers)])
        await deploy.wait_until(lambda: all(len(t.echoes) == len(t.sent) for t in talkers), 30, "every message to be answered")
        for talker in talkers:
            assert sorted(number for number, _, _ in talker.echoes) == talker.sent  # every one, once
            owners = [pid for _, pid, _ in talker.echoes]
            assert owners[0] in old and owners[-1] in new
            # Old workers' answers first, then only new workers'.
            switch = next(i for i, pid in enumerate(owners) if pid in new)
            assert set(owners[:switch]) <= old and set(owners[switch:]) <= new
            assert talker.echoes[-1][2] is True  # the new worker resumed the connection
            assert talker.socket.state is State.OPEN  # never closed, never reconnected
    finally:
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        for socket in sockets:
            await socket.close()
    out_of_order = sum(1 for t in talkers if [number for number, _, _ in t.echoes] != t.sent)
    shared = sum(1 for t in talkers if len({pid for _, pid, _ in t.echoes if pid in new}) > 1)
    print(
        f"\ndeploy: {sum(len(t.sent) for t in talkers)} messages on {len(talkers)} sockets all answered; "
        f"{out_of_order} socket(s) saw them out of order, {shared} handled by both new workers"
    )
    await xfail_if_known_core_gaps(out_of_order=out_of_order > 0, shared=shared > 0)
    assert out_of_order == 0, "messages were answered out of order across the deploy"
    assert shared == 0, "a connection's events were handled by two workers after the deploy"


async def xfail_if_known_core_gaps(*, out_of_order: bool, shared: bool) -> None:
    """Turn a failure into XFAIL only while the gateway gap behind it still reproduces.

    test_deploy_order_core.py reproduces both gaps deterministically in process; once the
    gateway is fixed they no longer reproduce and the assertions after this call hold (or
    fail plainly).
    """
    reasons = []
    if out_of_order and await events_reach_the_new_worker_in_order() != [str(n) for n in range(1, 31)]:
        reasons.append(OVERTAKE_BUG)
    if shared and await envelopes_pooled_for_one_unclaimed_connection() > 1:
        reasons.append(REPOOL_GAP)
    if reasons and len(reasons) == out_of_order + shared:
        pytest.xfail(" / ".join(reasons))


async def test_http_request_sent_with_no_worker_waits_for_returning_workers(patient_deploy: Deployment) -> None:
    deploy = patient_deploy
    assert await stop_workers(deploy, "worker-a", "worker-b") == [0, 0]
    # Sent with no worker running: it waits on the layer, and workers that start within the
    # response timeout answer it.
    waiting = asyncio.ensure_future(deploy.request("GET", "/pid/?n=waited", timeout=WAIT + deadline(60)))
    await asyncio.sleep(0.3)
    assert not waiting.done()
    deploy.start("worker-c", "worker")
    deploy.start("worker-d", "worker")
    status, body = await waiting  # answered by whichever new worker is up first
    assert status == 200 and b'"n": "waited"' in body


async def test_http_request_gets_503_when_no_worker_returns_in_time(deploy: Deployment) -> None:
    # No worker for longer than the response timeout: the gateway answers 503 itself.
    assert await stop_workers(deploy, "worker-a", "worker-b") == [0, 0]
    status, body = await deploy.request("GET", "/pid/?n=too-late", timeout=WAIT + RESPONSE_TIMEOUT)
    assert status == 503 and b"no worker answered in time" in body, body
    # The gateway is fine: the next worker serves the next request.
    await deploy.start_worker("worker-e")
    status, _ = await deploy.request("GET", "/pid/?n=after")
    assert status == 200


async def test_killed_worker_loses_in_flight_messages_but_not_the_connection(deploy: Deployment) -> None:
    pids = {deploy.pid("worker-a"): "worker-a", deploy.pid("worker-b"): "worker-b"}
    async with connect(f"{deploy.ws_url}/ws/echo/") as socket:
        talker = Talker(socket, interval=0.1)
        receiver = asyncio.ensure_future(talker.receive_loop())
        try:
            await talker.send_now(1)
            await deploy.wait_until(lambda: len(talker.echoes) == 1, what="the first echo")
            owner = talker.echoes[0][1]
            survivor = next(pid for pid in pids if pid != owner)
            # kill -9: no release, no drain, no more heartbeats.
            await stop_workers(deploy, pids[owner], sig=signal.SIGKILL)
            sender = asyncio.ensure_future(talker.send_loop())
            # Events sent to the dead worker's channel are lost until the gateway misses its
            # heartbeats (worker timeout, 1 s) and gives the connection to the pool.
            await deploy.wait_until(lambda: any(pid == survivor for _, pid, _ in talker.echoes), 30, "the survivor to resume")
            talker.sending = False
            await sender
            later = await talker.send_now(20)
            await deploy.wait_until(lambda: talker.echoes[-1][0] == later[-1], what="the later messages' echoes")
        finally:
            receiver.cancel()
            await asyncio.gather(receiver, return_exceptions=True)
        assert socket.state is State.OPEN
        numbers = [number for number, _, _ in talker.echoes]
        assert numbers == sorted(set(numbers))  # what did arrive is in order, nothing twice
        assert numbers[-len(later) :] == later  # everything after the move is answered
        after_kill = [(pid, resumed) for number, pid, resumed in talker.echoes if number > 0]
        assert {pid for pid, _ in after_kill} == {survivor} and after_kill[0][1] is True
        lost = len(talker.sent) - len(numbers)
    print(f"\nkill -9: {lost} of {len(talker.sent)} messages lost (sent to the dead worker), the rest answered")


async def wait_held(deployment: Deployment, request: asyncio.Future[Any], what: str) -> None:
    """Until the worker holds one long-poll request; fails at once if ``request`` ended instead."""

    async def held() -> bool:
        assert not request.done(), f"the request ended while it should be held: {request.result()!r}"
        return bool((await deployment.get_json("/held/"))["held"] == 1)

    await deployment.wait_until(held, what=what)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "kill-9"])
async def test_held_long_poll_is_answered_by_another_worker_when_its_own_goes(make_deployment: Any, sig: int) -> None:
    deployment: Deployment = make_deployment("split")
    deployment.start("gateway", "gateway")
    await deployment.start_worker("worker-a")
    await deployment.wait_ready()
    group = "deploy-poll"
    held = asyncio.ensure_future(deployment.request("GET", f"/poll/{group}/", timeout=deadline(30)))
    await wait_held(deployment, held, "the request to be held")
    await deployment.start_worker("worker-b")
    stopping = asyncio.ensure_future(stop_workers(deployment, "worker-a", sig=sig))
    if sig == signal.SIGTERM:
        # It drains, then waits (10 s) for its held requests before it exits.
        await deployment.wait_logged("gateway", "is stopping: holding")
    else:
        # Nothing tells the gateway: it notices the missing heartbeats (1 s). Until then
        # the request's group messages go to the dead worker, and are lost.
        await deployment.wait_logged("gateway", "missed its heartbeats", timeout=20)
    status, body = await deployment.request("POST", f"/publish/{group}/", b'{"message": "while it went"}')
    assert status == 200, body
    # The message reaches worker-b, which answers the request from its scope at once.
    status, body = await held
    answer = json.loads(body)
    assert (status, answer["messages"], answer["gap"]) == (200, [{"message": "while it went"}], False)
    assert await stopping == ([0] if sig == signal.SIGTERM else [-signal.SIGKILL])
    # The cursor it got is right: the next poll is held until something new comes.
    again = asyncio.ensure_future(deployment.request("GET", f"/poll/{group}/?cursor={answer['cursor']}", timeout=deadline(30)))
    await wait_held(deployment, again, "the next poll to be held")
    await deployment.request("POST", f"/publish/{group}/", b'{"message": "next"}')
    assert json.loads((await again)[1])["messages"] == [{"message": "next"}]
