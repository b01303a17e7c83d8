"""Backpressure, not memory growth: floods in both directions of a WebSocket.

Why: a gateway holds thousands of sockets; one client that sends faster than its consumer
handles, or reads slower than its consumer writes, must cost a bounded amount of memory
and end in a stated policy (a counted drop, or a close code), never in the process
growing until the kernel kills it with everyone else's connections. The assertions are on
memory (RSS from /proc, against generous fixed ceilings) and queue lengths, never on time.

Where the code does not bound a buffer, the test is a strict xfail naming that buffer; the
fix is described in docs/reliability.md ("Core fixes needed").
"""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from rel_clients import frame_bytes, ws_handshake
from rel_harness import REDIS_URL, InProcessGateway, ProcessDeployment, redis_reachable, rss_bytes
from support.waiting import deadline, wait_until_sync
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

Deploy = Callable[..., ProcessDeployment]
MiB = 1024 * 1024
#: Growth allowed over the baseline: generous (a few MiB are plenty for one connection),
#: but far below what the floods push through (192 MiB and 256 MiB).
CEILING = 100 * MiB


class PeakRss:
    """Samples a process's RSS in a thread until stopped; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.baseline = rss_bytes(pid)
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                self.peak = max(self.peak, rss_bytes(self.pid))
            except (OSError, AssertionError):
                return

    @property
    def growth(self) -> int:
        return self.peak - self.baseline

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.growth


@pytest.fixture
def redis_url() -> str:
    """The shared Redis (the floods need a real layer between two processes)."""
    if not redis_reachable():
        pytest.skip("Redis is not reachable on 127.0.0.1:6379")
    return REDIS_URL


def test_client_flooding_a_slow_consumer_costs_the_gateway_bounded_memory(deploy: Deploy, redis_url: str) -> None:
    """192 MiB sent as fast as possible to a consumer that takes 0.2 s per message.

    The gateway reads the next frame only once the previous event is on the layer
    (uvicorn pauses reading until the bridge takes the message), so its memory stays flat
    whatever the client does. The worker queues at most ``max_instance_backlog`` (1,000)
    events for the instance, then closes the client with 1013: its memory is bounded too.
    """
    deployment = deploy(redis_url)
    closed_with: int | None = None
    with connect(f"ws://127.0.0.1:{deployment.http_port}/ws/slow", open_timeout=10, max_size=None) as ws:
        ws.send(b"warm-up")
        gateway = PeakRss(deployment.pid("gateway"))
        worker = PeakRss(deployment.pid("worker0"))
        payload = b"f" * (32 * 1024)
        try:
            for _ in range(6000):
                ws.send(payload)
            ws.ping().wait(deadline(30))  # every frame before the ping has been read by the gateway
        except ConnectionClosed as exc:
            closed_with = exc.rcvd.code if exc.rcvd is not None else None
        gateway_growth, worker_growth = gateway.stop(), worker.stop()
    print(f"flood in: gateway RSS +{gateway_growth / MiB:.1f} MiB, worker RSS +{worker_growth / MiB:.1f} MiB, "
          f"closed with {closed_with}")
    deployment.stop("worker0", sig=signal.SIGKILL)  # its backlog is 1,000 sleeps of 0.2 s: no drain
    assert gateway_growth < CEILING, f"gateway grew by {gateway_growth / MiB:.0f} MiB"
    assert worker_growth < CEILING, f"worker grew by {worker_growth / MiB:.0f} MiB"
    assert closed_with == 1013
    deployment.check_alive()


def test_client_flooding_a_slow_consumer_is_bounded_by_the_layer_capacity() -> None:
    """20,000 messages to a slow consumer: the worker's backlog stays bounded.

    An instance holds at most ``max_instance_backlog`` events (``SWITCHBOARD["WORKER"]``,
    default 1,000); past it the worker refuses the connection's events (counted) and
    closes the flooding client with 1013, "try again later" (specs/layer.md, Backpressure).
    """
    gateway = InProcessGateway({"http": {"bind": ["127.0.0.1:0"], "max_frame_size": 1024}}).start()
    peak = 0
    closed_with: int | None = None
    try:
        assert gateway.worker is not None
        worker = gateway.worker

        async def backlog() -> int:
            return max((instance.queue.qsize() for instance in worker.instances.values()), default=0)

        with connect(f"ws://127.0.0.1:{gateway.http_port}/ws/slow", open_timeout=deadline(10)) as ws:
            try:
                for index in range(20_000):
                    ws.send(b"m")
                    if index % 500 == 0:
                        peak = max(peak, gateway.call(backlog))
                ws.ping().wait(deadline(30))
            except Exception as exc:  # a closed connection is the policy we look for
                closed_with = getattr(getattr(exc, "rcvd", None), "code", None)
            peak = max(peak, gateway.call(backlog))
    finally:
        gateway.stop()
    print(f"flood in: peak instance backlog {peak} events, closed with {closed_with}")
    # 1,000 events, plus the disconnect, which always reaches the app.
    assert peak <= 1_001, f"the worker queued {peak} events for one slow instance (policy: close 1013 past 1,000)"
    assert closed_with == 1013


def test_slow_reading_client_costs_the_gateway_bounded_memory(deploy: Deploy, redis_url: str, tmp_path: Path) -> None:
    """A consumer streams 256 MiB to a client that reads nothing: the gateway must not hold it all.

    Bounded behaviour would be: the reply channel fills (the consumer's send raises
    ``ChannelFull``, counted), or the gateway closes the slow client (1008/1013) and
    counts it; either way its RSS stays near the baseline.
    """
    marks = tmp_path / "marks"
    marks.mkdir()
    deployment = deploy(redis_url, REL_MARK_DIR=str(marks))
    sock, _ = ws_handshake(deployment.http_port, "/ws/stream")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        gateway = PeakRss(deployment.pid("gateway"))
        sock.sendall(frame_bytes(1, b"4096:65536"))  # then never read
        try:
            wait_until_sync(lambda: gateway.peak - gateway.baseline > CEILING or (marks / "stream-done").exists(), 120,
                     "the stream to end or the gateway to pass the ceiling")
            if (marks / "stream-done").exists():
                deployment.check_alive()
        finally:
            growth = gateway.stop()
        print(f"slow reader: gateway RSS +{growth / MiB:.1f} MiB")
        assert growth < CEILING, f"the gateway buffered {growth / MiB:.0f} MiB for one slow reader"
    finally:
        sock.close()
