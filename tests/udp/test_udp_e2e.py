"""UDP end to end: real OS processes, a real UDP client, counts checked across processes.

Every test runs twice: ``split`` (``switchboard gateway`` + ``switchboard worker`` over the
real Redis) and ``run`` (one ``switchboard run`` process on the in-memory layer). The
gateway writes its final counters to a stats file when it stops; the worker writes how
many datagrams its consumer handled when it exits (``udp_routing.py``).
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from support.waiting import deadline

from .conftest import Deployment, UdpClient, assert_counts_add_up, wait_ready

pytestmark = pytest.mark.e2e

BURST = 10_000


async def drain_echoes(client: UdpClient, echoes: set[bytes], quiet: float = 1.0, timeout: float = 40) -> None:
    """Collect echoes until none arrives for ``quiet`` seconds (the worker is idle)."""
    end = time.monotonic() + deadline(timeout)
    while time.monotonic() < end:
        try:
            data, _ = await client.receive(timeout=quiet)
        except TimeoutError:
            return
        echoes.add(data)
    raise AssertionError(f"echoes still arriving after {timeout}s")


async def query_handled(deployment: Deployment, client: UdpClient, echoes: set[bytes], nonce: int) -> int:
    """Ask the consumer how many datagrams it has handled (answers to older queries are ignored).

    Resent only when no answer came within 3 s: the worker is idle by now, so a resend means
    a lost datagram, not a slow one still in flight.
    """
    query = b"stats?%d" % nonce
    for _ in range(10):
        client.send(query, deployment.address)
        end = time.monotonic() + deadline(3.0)
        while time.monotonic() < end:
            try:
                data, _ = await client.receive(timeout=max(0.01, end - time.monotonic()))
            except TimeoutError:
                break
            if data.startswith(b"handled="):
                count, _, answered = data.removeprefix(b"handled=").partition(b";")
                if answered == b"%d" % nonce:
                    return int(count)
            else:
                echoes.add(data)
    raise AssertionError(f"the consumer never answered {query!r}\n{deployment.logs()}")


async def wait_quiet(deployment: Deployment, client: UdpClient, echoes: set[bytes], timeout: float = 40) -> int:
    """Wait until the worker has caught up: two answers in a row with nothing new between."""
    await drain_echoes(client, echoes)
    end = time.monotonic() + deadline(timeout)
    previous = (-1, -1)
    nonce = 0
    while time.monotonic() < end:
        deployment.check_alive()
        nonce += 1
        handled = await query_handled(deployment, client, echoes, nonce)
        current = (handled, len(echoes))
        # The query itself is one more handled datagram, so "nothing new" is +1.
        if current == (previous[0] + 1, previous[1]):
            return handled
        previous = current
        await asyncio.sleep(0.3)
    raise AssertionError(f"the worker did not catch up within {timeout}s\n{deployment.logs()}")


def stop_all(deployment: Deployment) -> None:
    """Gateway first (its plugin writes the stats file), then the worker (handled file)."""
    assert deployment.stop(deployment.gateway_name()) == 0, deployment.logs()
    if "worker" in deployment.processes:
        assert deployment.stop("worker") == 0, deployment.logs()


async def test_echo_end_to_end(deployment: Deployment) -> None:
    client = await UdpClient.open()
    try:
        await wait_ready(deployment, client)
        for word in (b"alpha", b"beta", b"\x00binary\xff"):
            client.send(word, deployment.address)
            assert await client.receive(timeout=10) == (word.upper(), deployment.address)
    finally:
        client.close()
    stop_all(deployment)
    stats = deployment.read_json(deployment.stats_file)
    assert_counts_add_up(stats)
    assert stats["delivered"] >= 4 and stats["messages_out"] >= 4  # the ready ping(s) and 3 words


async def test_garbage_and_oversized_input_do_not_stop_the_gateway(deployment: Deployment) -> None:
    client = await UdpClient.open()
    try:
        await wait_ready(deployment, client)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as raw:
            raw.sendto(b"", deployment.address)  # empty: valid UDP, echoed as empty (not sendable)
            raw.sendto(b"\xff" * 65507, deployment.address)  # the largest IPv4 payload
        client.send(b"after", deployment.address)
        assert (await client.receive(timeout=10))[0] in (b"AFTER", b"\xff" * 65507)
    finally:
        client.close()
    stop_all(deployment)
    stats = deployment.read_json(deployment.stats_file)
    assert_counts_add_up(stats)
    assert stats["replies_invalid"] >= 1  # the consumer's echo of the empty datagram


async def test_burst_of_10000_datagrams_counted_end_to_end(deployment: Deployment) -> None:
    client = await UdpClient.open()
    sock = client.transport.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    echoes: set[bytes] = set()
    try:
        await wait_ready(deployment, client)
        for index in range(BURST):
            client.send(b"burst-%05d" % index, deployment.address)
            if index % 200 == 199:
                await asyncio.sleep(0)  # let echoes in, so the client's own buffer is not the limit
        handled_seen = await wait_quiet(deployment, client, echoes)
    finally:
        client.close()
    stop_all(deployment)

    gateway = deployment.read_json(deployment.stats_file)
    handled = deployment.read_json(deployment.handled_file)["datagrams"]
    burst_echoes = {data for data in echoes if data.startswith(b"BURST-")}
    print(f"{deployment.mode}: gateway {gateway}; consumer handled {handled}; burst echoes {len(burst_echoes)}/{BURST}")

    # What the gateway saw adds up exactly: each datagram delivered or dropped for a reason.
    assert gateway["queued"] == 0
    assert_counts_add_up(gateway)
    assert gateway["messages_in"] >= gateway["delivered"] > 0
    # The worker handled exactly what the gateway delivered (it had caught up before stop).
    assert handled == gateway["delivered"]
    assert handled >= handled_seen
    # Echoes are a subset of what was delivered (UDP on loopback may drop; never invent).
    assert 0 < len(burst_echoes) <= gateway["delivered"]
    assert gateway["messages_out"] <= handled
