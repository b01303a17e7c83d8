"""Faults survived with real processes and services: Redis restarts, a killed worker, a gateway stop.

Why real processes: each fault is a process dying or a socket breaking, which an
in-process test can only imitate. Every test starts ``switchboard gateway`` and
``switchboard worker`` OS processes (``rel_settings.py``), injects the fault with a signal
or by killing a service, and asserts what a client sees: that nothing it was told had been
accepted is lost, and that every connection gets a defined outcome. The MQTT broker
restart is covered by tests/mqtt/test_mqtt_restart.py and not repeated here.
"""

from __future__ import annotations

import contextlib
import http.client
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from rel_harness import REDIS_URL, ProcessDeployment, port_open, redis_reachable
from support.redis_server import RedisServer
from support.waiting import deadline, wait_until_sync
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

Deploy = Callable[..., ProcessDeployment]


def echo(ws: ClientConnection, text: str, timeout: float = 2.0) -> str | None:
    """Send ``text``; the answer, or None if none came within ``timeout`` (a retry loop's step)."""
    ws.send(text)
    try:
        answer = ws.recv(timeout)
    except TimeoutError:
        return None
    return str(answer)


def until_answered(ws: ClientConnection, text: str, within: float = 30.0) -> tuple[str, int]:
    """Send ``text`` (numbered) until one is answered; the answer and how many went unanswered."""
    lost = 0
    limit = deadline(within)
    end = time.monotonic() + limit
    while time.monotonic() < end:
        answer = echo(ws, f"{text}-{lost}")
        if answer is not None:
            return answer, lost
        lost += 1
    raise AssertionError(f"no answer to {text!r} within {limit:.0f}s")


def test_redis_restart_keeps_websockets_open_and_messages_resume(
    deploy: Deploy, private_redis: Callable[..., RedisServer]
) -> None:
    """Kill the layer's Redis under connected clients, start it again on the same port.

    Idle clients stay connected (the gateway holds the sockets and answers pings without
    Redis); once Redis is back every message is echoed again, on the same connections. A
    client that sends *during* the outage is told so: its message cannot reach a worker and
    the gateway closes it with 1013 (try again later), never silently dropping it.
    """
    redis = private_redis()
    deployment = deploy(redis.url)
    url = f"ws://127.0.0.1:{deployment.http_port}/ws/echo"
    with contextlib.ExitStack() as stack:
        clients = [
            stack.enter_context(connect(url, open_timeout=deadline(10), ping_interval=0.5, ping_timeout=deadline(5)))
            for _ in range(3)
        ]
        eager = stack.enter_context(connect(url, open_timeout=deadline(10)))
        for index, ws in enumerate([*clients, eager]):
            assert echo(ws, f"before-{index}", timeout=deadline(10)) == f"before-{index}"
        redis.kill()
        # While Redis is down: a message has nowhere to go -> 1013, said to the client.
        eager.send("during the outage")
        with pytest.raises(ConnectionClosed) as closed:
            eager.recv(30)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        # The idle clients' keepalive pings are answered by the gateway meanwhile.
        for ws in clients:
            ws.ping().wait(deadline(5))
        redis.start()
        deployment.wait_http()  # a request went through the layer: the gateway has reconnected
        for index, ws in enumerate(clients):
            # Every message sent once the layer is back is answered: nothing is lost.
            assert echo(ws, f"after-{index}", timeout=deadline(30)) == f"after-{index}"
        for ws in clients:
            assert echo(ws, "steady", timeout=deadline(10)) == "steady"
        deployment.check_alive()


def test_worker_killed_mid_message_hands_the_connection_to_another_worker(deploy: Deploy) -> None:
    """SIGKILL the worker holding a WebSocket while it is inside a handler; another runs.

    What the code does (and docs/reliability.md states): the connection stays open. Events
    sent to the dead worker before the gateway notices (``worker_timeout``, 1 s without
    heartbeats) are lost, at-most-once, like the message the worker died handling; after
    that the surviving worker *resumes* the connection (replays connect, swallows the
    accept) and answers every later message.
    """
    if not redis_reachable():
        pytest.skip("Redis is not reachable on 127.0.0.1:6379")
    deployment = deploy(REDIS_URL, workers=2)
    pids = {deployment.pid("worker0"): "worker0", deployment.pid("worker1"): "worker1"}
    with connect(f"ws://127.0.0.1:{deployment.http_port}/ws/hold", open_timeout=deadline(10)) as ws:
        first = echo(ws, "who", timeout=deadline(10))
        assert first is not None
        holder = int(first.split(":", 1)[0])
        assert holder in pids
        ws.send("hold")  # the holder is now inside the handler, for good
        deployment.stop(pids[holder], sig=signal.SIGKILL)
        answer, unanswered = until_answered(ws, "after the kill", within=40)
        survivor = int(answer.split(":", 1)[0])
        assert survivor != holder and survivor in pids
        with contextlib.suppress(TimeoutError):
            while True:  # a late answer to an earlier try, if any: read it before going on
                ws.recv(2)
        # Later messages are all answered, by the survivor, on the same connection.
        for index in range(5):
            assert echo(ws, f"later-{index}", timeout=deadline(10)) == f"{survivor}:later-{index}"
    print(f"messages unanswered while the gateway had not noticed the kill: {unanswered}")
    deployment.check_alive()


def test_gateway_sigterm_drains_a_request_in_flight_and_refuses_new_ones(deploy: Deploy, tmp_path: Path) -> None:
    """SIGTERM the gateway while a slow view runs: the request completes with 200.

    Meanwhile the listening socket is closed, so a new connection is refused, and the
    gateway exits 0 once the request is done (well within its drain time).
    """
    if not redis_reachable():
        pytest.skip("Redis is not reachable on 127.0.0.1:6379")
    marks = tmp_path / "marks"
    marks.mkdir()
    deployment = deploy(REDIS_URL, REL_MARK_DIR=str(marks))
    result: dict[str, object] = {}

    def slow_request() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", deployment.http_port, timeout=deadline(30))
        try:
            connection.request("GET", "/slow?s=3")
            response = connection.getresponse()
            result["status"], result["body"] = response.status, response.read()
        except Exception as exc:
            result["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=slow_request)
    thread.start()
    wait_until_sync(lambda: (marks / "slow-started").exists(), what="the slow view to start")
    deployment.processes["gateway"].send_signal(signal.SIGTERM)
    wait_until_sync(lambda: not port_open(deployment.http_port), what="the gateway to stop listening")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", deployment.http_port), timeout=2).close()
    thread.join(30)
    assert result.get("status") == 200 and result.get("body") == b"slow done", result
    assert deployment.processes["gateway"].wait(deadline(20)) == 0
