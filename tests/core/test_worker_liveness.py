"""A gateway tells a dead worker from one whose heartbeats wait unread in its reply list.

Heartbeats share the gateway's list with its connections' replies. The gateway judges
silence only by what it has read when a mark it sent itself comes back, so a backlog in
front of the heartbeats can delay the verdict but never make it wrong. Here the gateway's
reading is paused by hand (a backlog it cannot get through), while a fake worker keeps
heartbeating into the list.
"""

from __future__ import annotations

import asyncio
import time

from support.waiting import wait_until

from switchboard.gateway.envelope import CLAIM, HEARTBEAT
from switchboard.gateway.layers import ChannelLayer
from switchboard.gateway.server import Gateway

from .test_gateway_worker import Delivered

WORKER = "worker.f00dfacade00!in"


class PausedReading:
    """Makes ``gateway``'s reply loop stop taking batches until :meth:`resume`."""

    def __init__(self, gateway: Gateway) -> None:
        receiver = gateway._receiver
        assert receiver is not None
        self.open = asyncio.Event()
        self.open.set()
        get_batch = receiver.get_batch

        async def gated(max_messages: int = 256) -> list[tuple[str, dict[str, object]]]:
            await self.open.wait()
            return await get_batch(max_messages)

        receiver.get_batch = gated  # type: ignore[method-assign]

    def pause(self) -> None:
        self.open.clear()

    def resume(self) -> None:
        self.open.set()


async def heartbeats(layer: ChannelLayer, gateway: Gateway, running: asyncio.Event) -> None:
    while running.is_set():
        await layer.send(gateway.control_channel, {"type": HEARTBEAT, "worker": WORKER})
        await asyncio.sleep(0.05)


async def test_heartbeats_behind_a_backlog_never_release_a_live_worker(layer: ChannelLayer) -> None:
    gateway = Gateway(layer, worker_timeout=1.0)
    await gateway.start()
    reading = PausedReading(gateway)
    connection = gateway.open_connection({"type": "websocket", "path": "/"}, Delivered(), sticky=True)
    await layer.send(connection.channel, {"type": CLAIM, "worker": WORKER})
    await wait_until(lambda: connection.worker == WORKER, what="the claim")
    running = asyncio.Event()
    running.set()
    beating = asyncio.ensure_future(heartbeats(layer, gateway, running))
    try:
        reading.pause()
        paused_at = time.monotonic()
        # Silent by the gateway's clock for three timeouts, and a mark sent: but the mark
        # cannot come back while reading is paused, so nothing may be released.
        await wait_until(
            lambda: time.monotonic() - paused_at > 3 * gateway.worker_timeout and gateway._mark_sent is not None,
            what="a silence of three worker timeouts",
        )
        assert connection.worker == WORKER
        assert gateway.stats.workers_lost == 0
        reading.resume()
        # The mark comes back behind the heartbeats that waited: the worker stays.
        await wait_until(lambda: gateway._mark_sent is None and gateway._read_up_to >= paused_at, what="the mark")
        assert connection.worker == WORKER
        assert gateway.stats.workers_lost == 0
        # Now the worker really goes quiet: it is released.
        running.clear()
        await beating
        await wait_until(lambda: gateway.stats.workers_lost == 1, what="the silent worker to be released")
        assert connection.worker is None
    finally:
        running.clear()
        reading.resume()
        await asyncio.gather(beating, return_exceptions=True)
        await gateway.stop()
