"""The core on a bad day (issue 12 items 7, 8, 9, 11), with real processes and a real Redis.

Each test starts ``switchboard gateway`` and ``switchboard worker`` OS processes
(``rel_settings.py``, chat rooms from ``rel_app.room_app``) over Redis, drives real
WebSocket or HTTP clients, injects the fault (a Redis restart, a gateway that stops
reading, a flood of large bodies with no worker, a deploy and a ``kill -9``) and checks
what clients see and what the layer holds.

- Redis restarts: every room membership comes back, and every room message after it
  reaches every member.
- ``group_expiry``: open sockets stay in their groups past it; a closed one leaves.
- A reply list that overflows: no consumer crashes, no 1011; every delivery either
  arrives or is counted as shed.
- 1 MB bodies with no worker: the pool channel stops at its byte capacity, the rest get
  503, and what was accepted is served when a worker comes.
- A deploy and a ``kill -9``: nothing lost or reordered in the deploy, connections move
  to the next worker after the kill, sockets stay open.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from rel_harness import HERE, REDIS_URL, ProcessDeployment, redis_reachable
from support.redis_server import RedisServer
from support.waiting import deadline, wait_until, wait_until_sync
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

Deploy = Callable[..., ProcessDeployment]
pytestmark = pytest.mark.timeout(240)


# -- helpers ----------------------------------------------------------------------------


class Member:
    """A room member: collects what it receives and how its connection ended."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.got: list[str] = []
        self.closed: int | None = None
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                self.got.append(frame if isinstance(frame, str) else frame.decode())
        except ConnectionClosed as exc:
            self.closed = exc.rcvd.code if exc.rcvd else 1006
        else:
            self.closed = self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()
        await asyncio.gather(self.task, return_exceptions=True)


async def join(port: int, room: str, count: int) -> list[Member]:
    """``count`` members of ``room``, each joined (its first post reached everyone so far)."""
    members: list[Member] = []
    for index in range(count):
        member = Member(await connect(f"ws://127.0.0.1:{port}/ws/room/{room}", open_timeout=deadline(30)))
        members.append(member)
        hello = f"hello-{index}"
        # A member has joined once its own post comes back to it through the group.
        await member.ws.send(hello)
        await wait_until(lambda m=member, h=hello: h in m.got, what=f"member {index} to join")  # type: ignore[misc]
    return members


def status_rows(deployment: ProcessDeployment) -> list[dict[str, Any]]:
    """What every running process answers ``switchboard status`` (one row each)."""
    result = subprocess.run(
        [sys.executable, "-m", "switchboard", "status", "--once", "--json", "--settings", "rel_settings"],
        cwd=HERE, env=deployment.env, capture_output=True, text=True, timeout=deadline(60), check=False,
    )
    lines = result.stdout.strip().splitlines()
    return list(json.loads(lines[-1])["processes"]) if lines else []


def status_drops(deployment: ProcessDeployment) -> dict[str, int]:
    """The drops every running process reports (``switchboard status``), summed by reason."""
    drops: dict[str, int] = {}
    for row in status_rows(deployment):
        for reason, count in (row.get("drops") or {}).items():
            drops[reason] = drops.get(reason, 0) + count
    return drops


def worker_problems(deployment: ProcessDeployment) -> list[str]:
    """Consumer crashes and tracebacks in the processes' logs."""
    problems, _expected = deployment.new_log_problems()
    text = "\n".join(deployment.log(name) for name in list(deployment.processes))
    crashes = [line for line in text.splitlines() if "raised" in line and "consumer" in line]
    return problems + crashes


@pytest.fixture
def marks(tmp_path: Path) -> Path:
    directory = tmp_path / "marks"
    directory.mkdir()
    return directory


@contextlib.contextmanager
def stopped(pid: int) -> Iterator[None]:
    """SIGSTOP a process for the block (it reads nothing meanwhile); SIGCONT it after."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


# -- item 7: memberships -----------------------------------------------------------------


async def test_redis_restart_restores_every_room_membership(
    deploy: Deploy, private_redis: Callable[..., RedisServer]
) -> None:
    """20 members in a room; Redis is killed and started again (no persistence: it comes
    back empty). The gateway notices, re-adds all 20 memberships, and every room message
    after that reaches every member. Before the fix they got none of them."""
    server = private_redis()
    deployment = deploy(server.url, REL_GATEWAY_OPTIONS=json.dumps({"membership_check_interval": 0.2}))
    members = await join(deployment.http_port, "lobby", 20)
    try:
        server.kill()
        server.start()
        await asyncio.to_thread(deployment.wait_http)  # the layer works again for a request
        await wait_until(
            lambda: "restored 20 group membership(s)" in deployment.log("gateway"), what="the gateway to restore the room"
        )
        posts = [f"after-{n}" for n in range(25)]
        for post in posts:
            await members[3].ws.send(post)
        for index, member in enumerate(members):
            await wait_until(
                lambda m=member: [t for t in m.got if t.startswith("after-")] == posts,  # type: ignore[misc]
                what=f"member {index} to get every post, in order",
            )
        assert all(member.closed is None for member in members)
        # The processes' own membership (the status group) came back as well.
        await wait_until(
            lambda: asyncio.to_thread(lambda: sorted(row["kind"] for row in status_rows(deployment)) == ["gateway", "worker"]),
            what="switchboard status to see both processes again",
        )
        assert worker_problems(deployment) == []
    finally:
        for member in members:
            await member.close()


async def test_open_sockets_outlive_group_expiry_and_closed_ones_leave(
    deploy: Deploy, private_redis: Callable[..., RedisServer]
) -> None:
    """group_expiry of 2 s: sockets open for three times that are still in their room (the
    gateway refreshes them); one that closes leaves it, although its consumer never calls
    group_discard (rel_app's room leaves that to the gateway)."""
    server = private_redis()
    prefix = "sb-rel-expiry:"
    deployment = deploy(
        server.url,
        REL_REDIS_PREFIX=prefix,
        REL_LAYER_OPTIONS=json.dumps({"group_expiry": 2}),
        REL_GATEWAY_OPTIONS=json.dumps({"membership_check_interval": 0.2}),
    )
    members = await join(deployment.http_port, "long", 5)
    raw = redis.Redis.from_url(server.url)
    try:
        joined = time.monotonic()
        await wait_until(lambda: time.monotonic() - joined > 6, timeout=30, what="three group_expiry periods")
        await members[0].ws.send("still here")
        for index, member in enumerate(members):
            await wait_until(lambda m=member: "still here" in m.got, what=f"member {index} to get the post")  # type: ignore[misc]
        assert raw.zcard(f"{prefix}group:room.long") == 5
        await members[4].close()
        await wait_until(lambda: raw.zcard(f"{prefix}group:room.long") == 4, what="the closed member to leave")
        await members[0].ws.send("four left")
        for member in members[:4]:
            await wait_until(lambda m=member: "four left" in m.got, what="the post to the four")  # type: ignore[misc]
    finally:
        raw.close()
        for member in members:
            await member.close()


# -- item 8: a reply list that overflows ---------------------------------------------------


async def test_a_full_reply_list_sheds_and_counts_but_never_crashes_a_consumer(deploy: Deploy, marks: Path) -> None:
    """The gateway stops reading (SIGSTOP) while a room of 10 gets a burst of 40 posts: 400
    replies for a reply list of 10 messages (``gateway.*`` capacity lowered). Every reply
    either reaches its client or is counted as shed once it waited ``reply_wait``; no
    consumer raises, nothing is closed with 1011, every socket stays open."""
    if not redis_reachable():
        pytest.skip("Redis is not reachable on 127.0.0.1:6379")
    deployment = deploy(
        REDIS_URL,
        REL_MARK_DIR=str(marks),
        REL_LAYER_OPTIONS=json.dumps({"channel_capacity": {"gateway.*": 10, "switchboard.*": 10000, "worker.*": 10000}}),
        REL_WORKER_OPTIONS=json.dumps({"reply_wait": 0.2}),
    )
    members = await join(deployment.http_port, "storm", 10)
    deployment.new_log_problems()  # from here on
    try:
        await members[0].ws.send("burst:40")
        await wait_until(lambda: (marks / "burst-armed").exists(), what="the worker to get the burst")
        with stopped(deployment.pid("gateway")):
            (marks / "go").touch()
            await wait_until(lambda: "reply(s) shed" in deployment.log("worker0"), what="the worker to shed")
        expected = 40 * len(members)

        def accounted() -> bool:
            arrived = sum(1 for member in members for text in member.got if text.startswith("burst-"))
            return arrived + status_drops(deployment).get("worker.replies_shed", 0) == expected

        await wait_until(lambda: asyncio.to_thread(accounted), timeout=120, what="every reply arrived or counted")
        arrived = sum(1 for member in members for text in member.got if text.startswith("burst-"))
        assert 0 < arrived < expected
        for member in members:  # what arrived is in order
            burst = [int(text.split("-")[1]) for text in member.got if text.startswith("burst-")]
            assert burst == sorted(burst)
        # The room still works, and nobody was closed.
        await members[1].ws.send("after the storm")
        for member in members:
            await wait_until(lambda m=member: "after the storm" in m.got, what="the post after the storm")  # type: ignore[misc]
        assert all(member.closed is None for member in members)
        assert worker_problems(deployment) == []
    finally:
        for member in members:
            await member.close()


# -- item 9: bytes ------------------------------------------------------------------------


def post(port: int, body: bytes, timeout: float) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", "/upload", body=body, headers={"Content-Type": "application/octet-stream"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def pool_bytes(client: redis.Redis, prefix: str) -> tuple[int, int]:
    """(messages, bytes) stored in the http pool channel now."""
    items = client.lrange(f"{prefix}switchboard.http", 0, -1)
    return len(items), sum(len(item) for item in items)


async def test_large_bodies_with_no_worker_stop_at_the_byte_capacity(
    deploy: Deploy, private_redis: Callable[..., RedisServer]
) -> None:
    """20 POSTs of 1 MiB while no worker runs, byte capacity of ``switchboard.*`` 5 MiB: the
    pool holds at most 5 MiB (4 requests), the other 16 get 503 (counted), and the 4 are
    answered once a worker starts. Before, every request was stored: 20 MiB here, 301 MB
    for 300 requests.

    ``body_chunk_size`` 2 MiB makes each body one event, as a deployment with large chunks
    has it: with the default 64 KiB chunks only a body's first chunk goes to the pool
    before a worker claims it, and the gateway's ``max_buffered_body_bytes`` bounds the
    rest (tests/reliability/test_rel_attacks_http.py)."""
    server = private_redis()
    prefix = "sb-rel-bytes:"
    cap = 5 * 1024 * 1024
    deployment = deploy(
        server.url,
        workers=0,
        wait=False,
        REL_REDIS_PREFIX=prefix,
        REL_HTTP_OPTIONS=json.dumps(
            {"max_body_size": 2 * 1024 * 1024, "body_chunk_size": 2 * 1024 * 1024, "response_timeout": 120}
        ),
        REL_LAYER_OPTIONS=json.dumps({"channel_byte_capacity": {"switchboard.*": cap}}),
    )
    raw = redis.Redis.from_url(server.url)
    body = os.urandom(1024 * 1024)
    try:
        wait_until_sync(lambda: port_listening(deployment.http_port), what="the gateway to listen")
        requests = [asyncio.ensure_future(asyncio.to_thread(post, deployment.http_port, body, deadline(180))) for _ in range(20)]
        refused: list[tuple[int, bytes]] = []

        def sixteen_refused() -> bool:
            refused[:] = [task.result() for task in requests if task.done()]
            return len(refused) >= 16

        await wait_until(sixteen_refused, timeout=120, what="16 requests to be refused")
        assert [status for status, _ in refused] == [503] * 16
        messages, held = pool_bytes(raw, prefix)
        assert messages == 4 and held <= cap
        assert status_drops(deployment).get("layer.full", 0) >= 16
        deployment.start("worker0", "worker")
        answers = await asyncio.gather(*requests)
        served = [answer for answer in answers if answer[0] == 200]
        assert served == [(200, b"ok %d" % len(body))] * 4
        assert pool_bytes(raw, prefix) == (0, 0)
        assert await asyncio.to_thread(post, deployment.http_port, b"small", deadline(30)) == (200, b"ok 5")
    finally:
        raw.close()


def port_listening(port: int) -> bool:
    import socket

    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


# -- item 11: deploys and dead workers -----------------------------------------------------


class Talker:
    """An echo socket on ``/ws/pid`` sending numbered messages; records ``(pid, n)`` answers."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.sent = 0
        self.answers: list[tuple[int, int]] = []
        self.closed: int | None = None
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                pid, _, number = str(frame).partition(":")
                self.answers.append((int(pid), int(number)))
        except ConnectionClosed as exc:
            self.closed = exc.rcvd.code if exc.rcvd else 1006

    async def talk(self, running: asyncio.Event) -> None:
        while running.is_set():
            self.sent += 1
            await self.ws.send(str(self.sent))
            await asyncio.sleep(0.05)


async def test_deploy_loses_nothing_and_a_killed_workers_sockets_move_on(deploy: Deploy) -> None:
    if not redis_reachable():
        pytest.skip("Redis is not reachable on 127.0.0.1:6379")
    deployment = deploy(REDIS_URL, workers=1)
    talkers = [Talker(await connect(f"ws://127.0.0.1:{deployment.http_port}/ws/pid", open_timeout=deadline(30)))
               for _ in range(10)]
    running = asyncio.Event()
    running.set()
    talking = [asyncio.ensure_future(t.talk(running)) for t in talkers]
    try:
        first = deployment.pid("worker0")
        await wait_until(lambda: all(t.answers for t in talkers), what="every socket to be served")
        deployment.start("worker1", "worker")
        second = deployment.pid("worker1")
        # A rolling deploy: the first worker hands every socket over and exits.
        stop = asyncio.ensure_future(asyncio.to_thread(deployment.stop, "worker0"))
        assert await stop == 0
        await wait_until(lambda: all(t.answers[-1][0] == second for t in talkers), what="every socket on the new worker")
        for talker in talkers:  # nothing lost, nothing reordered across the handover
            numbers = [n for _pid, n in talker.answers]
            assert numbers == list(range(1, len(numbers) + 1))
        # kill -9 the second worker with a third running: the sockets move to the third.
        deployment.start("worker2", "worker")
        third = deployment.pid("worker2")
        os.kill(second, signal.SIGKILL)
        await wait_until(lambda: all(t.answers[-1][0] == third for t in talkers), what="every socket on the third worker")
        running.clear()
        await asyncio.gather(*talking)
        for talker in talkers:
            numbers = [n for _pid, n in talker.answers]
            assert numbers == sorted(numbers)  # order kept; what the dead worker held is lost
            assert {pid for pid, _n in talker.answers} == {first, second, third}
            assert talker.closed is None
        assert "missed its heartbeats" in deployment.log("gateway")
    finally:
        running.clear()
        for talker in talkers:
            await talker.ws.close()
            await asyncio.gather(talker.reader, return_exceptions=True)
