"""Ordering end to end, with TWO worker processes over Redis.

- A WebSocket is sticky: whatever the consumer, its messages are handled in order, one at
  a time, by the one worker that claimed it, however fast the client sends.
- A UDP socket is not: by default its datagrams spread over both workers. With
  ``ordered = True`` the consumer claims the socket on its first datagram and from then on
  one worker handles them all, in order, one at a time.

The consumers log ``pid:number:active`` to Redis lists (``promises_consumers.log_handled``):
who handled each message, in which order, and how many handlers of that log were running
at that moment (1 means no overlap).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest
from support.waiting import deadline
from websockets.asyncio.client import connect

from .conftest import Deployment, free_port, new_deployment, read_log, require_redis

pytestmark = pytest.mark.e2e

MESSAGES = 1_000


@pytest.fixture(scope="module")
def two_workers(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Gateway (http + two UDP sockets: ordered, spread) and two workers, over Redis."""
    require_redis()
    ordered_port, spread_port = free_port(2), free_port(2)  # SOCK_DGRAM
    deployment = new_deployment(
        tmp_path_factory.mktemp("ordering"),
        "split",
        PROMISES_UDP_BINDS=f"127.0.0.1:{ordered_port},127.0.0.1:{spread_port}",
        PROMISES_UDP_ORDERED_PORT=str(ordered_port),
    )
    deployment.udp_ports = {"ordered": ordered_port, "spread": spread_port}
    failed_before = request.session.testsfailed

    async def start() -> None:
        deployment.start("gateway", "gateway")
        await deployment.wait_logged("gateway", "udp listening on")
        deployment.start("worker-a", "worker")
        deployment.start("worker-b", "worker")
        # Both read the pool before any test sends: otherwise "one worker handled it all"
        # would prove nothing.
        await deployment.wait_logged("worker-a", "listening on")
        await deployment.wait_logged("worker-b", "listening on")
        await deployment.wait_ready()

    try:
        asyncio.run(start())
        yield deployment
    finally:
        deployment.stop_all()
        if request.session.testsfailed > failed_before:
            print(deployment.logs())


def worker_pids(deployment: Deployment) -> set[int]:
    return {deployment.pid("worker-a"), deployment.pid("worker-b")}


@pytest.mark.parametrize("route", ["log", "ordered-log"])
async def test_websocket_messages_are_handled_in_order_one_at_a_time(two_workers: Deployment, route: str) -> None:
    name = f"{route}-{secrets.token_hex(4)}"
    async with connect(f"{two_workers.ws_url}/ws/{route}/{name}/") as socket:

        async def send_all() -> None:
            for n in range(MESSAGES):
                await socket.send(str(n))  # as fast as the client can: no waiting for echoes

        sender = asyncio.ensure_future(send_all())
        echoes = [int(await asyncio.wait_for(socket.recv(), 20)) for _ in range(MESSAGES)]
        await sender
    assert echoes == list(range(MESSAGES))
    log = read_log(two_workers, f"ws:{name}")
    assert [number for _, number, _ in log] == list(range(MESSAGES))  # strictly in order
    assert {active for _, _, active in log} == {1}  # never two handlers at once
    pids = {pid for pid, _, _ in log}
    assert len(pids) == 1 and pids <= worker_pids(two_workers)


class UdpClient(asyncio.DatagramProtocol):
    """Collects echoed datagrams."""

    def __init__(self) -> None:
        self.received: list[bytes] = []
        self.arrived = asyncio.Event()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append(data)
        self.arrived.set()


async def udp_client() -> tuple[asyncio.DatagramTransport, UdpClient]:
    transport, protocol = await asyncio.get_running_loop().create_datagram_endpoint(UdpClient, local_addr=("127.0.0.1", 0))
    return transport, protocol


async def send_numbered(transport: asyncio.DatagramTransport, port: int) -> None:
    """``MESSAGES`` numbered datagrams, paced a little so the kernel does not drop them."""
    for n in range(MESSAGES):
        transport.sendto(str(n).encode(), ("127.0.0.1", port))
        if n % 20 == 19:
            await asyncio.sleep(0.005)


async def wait_echoes(client: UdpClient, count: int, quiet: float = 2.0, timeout: float = 30) -> None:
    """Until ``count`` echoes came, or none for ``quiet`` seconds (the rest were dropped)."""
    end = time.monotonic() + deadline(timeout)
    while len(client.received) < count and time.monotonic() < end:
        client.arrived.clear()
        try:
            await asyncio.wait_for(client.arrived.wait(), quiet)
        except TimeoutError:
            return


async def test_ordered_udp_consumer_is_pinned_to_one_worker_and_in_order(two_workers: Deployment) -> None:
    port = two_workers.udp_ports["ordered"]
    transport, client = await udp_client()
    try:
        # The first datagram makes the consumer claim the socket; its echo comes back only
        # after the claim reached the gateway (same reply channel, sent first). Datagrams
        # sent before that could still go to either worker (docs/ordering.md).
        end = time.monotonic() + deadline(15)
        while b"claim" not in client.received:
            assert time.monotonic() < end, f"no echo from the ordered socket\n{two_workers.logs()}"
            transport.sendto(b"claim", ("127.0.0.1", port))
            client.arrived.clear()
            await asyncio.wait([asyncio.ensure_future(client.arrived.wait())], timeout=1)
        client.received.clear()
        await send_numbered(transport, port)
        await wait_echoes(client, MESSAGES)
    finally:
        transport.close()
    log = read_log(two_workers, "udp:ordered")
    numbers = [number for _, number, _ in log]
    print(f"\nordered UDP: {len(numbers)} of {MESSAGES} datagrams arrived and were handled")
    assert len(numbers) >= MESSAGES * 0.9, f"only {len(numbers)} datagrams handled\n{two_workers.logs()}"
    assert numbers == sorted(set(numbers))  # strictly increasing: in order, none twice
    assert {active for _, _, active in log} == {1}
    pids = {pid for pid, _, _ in log}
    assert len(pids) == 1 and pids <= worker_pids(two_workers)


async def test_udp_datagrams_spread_over_both_workers_by_default(two_workers: Deployment) -> None:
    port = two_workers.udp_ports["spread"]
    transport, client = await udp_client()
    try:
        await send_numbered(transport, port)
        await wait_echoes(client, MESSAGES)
    finally:
        transport.close()
    log = read_log(two_workers, "udp:spread")
    per_worker = {pid: sum(1 for p, _, _ in log if p == pid) for pid in worker_pids(two_workers)}
    overlapped = sum(1 for _, _, active in log if active > 1)
    print(f"\nspread UDP: {len(log)} datagrams handled, per worker {sorted(per_worker.values())}, {overlapped} overlapping")
    assert len(log) >= MESSAGES * 0.9
    # Both workers block on the pool channel; Redis hands each push to the one waiting
    # longest, so paced datagrams alternate between them.
    assert all(count > 0 for count in per_worker.values()), per_worker
