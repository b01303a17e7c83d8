"""UDP consumers (async, sync, the example's) behind the real plugin, gateway and worker."""

from __future__ import annotations

import asyncio
import importlib
import sys
import threading
from typing import Any

import pytest
from support.waiting import wait_until

from switchboard.consumers import ProtocolTypeRouter
from switchboard.consumers.udp import AsyncUdpConsumer, SyncUdpConsumer, UdpConsumer, send_message
from switchboard.gateway.layers import ChannelFull

from .conftest import EXAMPLE, UdpClient


def example_consumer() -> Any:
    """``udpdemo.consumers.UppercaseEchoConsumer`` from the example project."""
    if str(EXAMPLE) not in sys.path:
        sys.path.insert(0, str(EXAMPLE))
    return importlib.import_module("udpdemo.consumers").UppercaseEchoConsumer


async def test_example_uppercase_echo_consumer(stack: Any, client: UdpClient) -> None:
    application = ProtocolTypeRouter({"udp": example_consumer().as_asgi()})
    running = await stack(app=application)
    for word in (b"hello", b"world"):
        client.send(word, running.address)
        assert (await client.receive())[0] == word.upper()


async def test_async_consumer_gets_bytes_and_a_client_tuple(stack: Any, client: UdpClient) -> None:
    seen: list[tuple[bytes, Any]] = []

    class Recorder(AsyncUdpConsumer):
        async def datagram_received(self, data: bytes, client: tuple[str, int]) -> None:
            seen.append((data, client))
            assert self.channel_name == self.scope["reply_channel"]
            await self.send_datagram(bytearray(b"got ") + data, client)

    running = await stack(app=ProtocolTypeRouter({"udp": Recorder.as_asgi()}))
    client.send(b"\x00\x01", running.address)
    assert (await client.receive())[0] == b"got \x00\x01"
    assert seen == [(b"\x00\x01", client.address)]


async def test_sync_consumer_runs_in_a_thread(stack: Any, client: UdpClient) -> None:
    threads: list[int] = []

    class SyncEcho(SyncUdpConsumer):
        def datagram_received(self, data: bytes, client: tuple[str, int]) -> None:
            threads.append(threading.get_ident())
            self.send_datagram(data[::-1], client)

    running = await stack(app=ProtocolTypeRouter({"udp": SyncEcho.as_asgi()}))
    client.send(b"abc", running.address)
    assert (await client.receive())[0] == b"cba"
    assert threads and threads[0] != threading.get_ident()


async def test_missing_datagram_received_fails_loudly_and_the_socket_keeps_serving(stack: Any, client: UdpClient) -> None:
    running = await stack(app=ProtocolTypeRouter({"udp": UdpConsumer.as_asgi()}))
    client.send(b"x", running.address)
    await wait_until(lambda: running.worker.stats.instances_failed == 1, what="the NotImplementedError")
    client.send(b"y", running.address)
    await wait_until(lambda: running.worker.stats.instances_failed == 2, what="a fresh instance")
    assert running.plugin.stats()["delivered"] == 2


def test_send_message_refuses_text_and_bad_addresses() -> None:
    assert send_message(memoryview(b"ab"), ("::1", 5)) == {"type": "udp.send", "data": b"ab", "address": ["::1", 5]}
    with pytest.raises(TypeError, match="encode text first"):
        send_message("text", ("127.0.0.1", 5))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="pair"):
        send_message(b"x", "127.0.0.1:5")


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
async def test_send_datagram_reports_a_full_reply_channel_instead_of_raising(sync: bool) -> None:
    results: list[bool] = []

    class Async(AsyncUdpConsumer):
        async def datagram_received(self, data: bytes, client: tuple[str, int]) -> None:
            results.append(await self.send_datagram(data, client))

    class Sync(SyncUdpConsumer):
        def datagram_received(self, data: bytes, client: tuple[str, int]) -> None:
            results.append(self.send_datagram(data, client))

    async def full_send(message: dict[str, Any]) -> None:
        raise ChannelFull("gateway.x!y")

    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "udp", "server": ["127.0.0.1", 1], "reply_channel": "gateway.x!y"}
    app = (Sync if sync else Async).as_asgi()
    task = asyncio.get_running_loop().create_task(app(scope, inbox.get, full_send))
    await inbox.put({"type": "udp.datagram", "data": b"x", "client": ["127.0.0.1", 2]})
    await wait_until(lambda: bool(results), what="the handler")
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert results == [False]


async def test_group_messages_reach_a_udp_consumer_through_its_socket_connection(stack: Any, client: UdpClient) -> None:
    class Alerts(AsyncUdpConsumer):
        async def datagram_received(self, data: bytes, client: tuple[str, int]) -> None:
            assert self.channel_layer is not None and self.channel_name is not None
            await self.channel_layer.group_add("sensors", self.channel_name)
            await self.channel_layer.group_send("sensors", {"type": "sensors.alert", "to": list(client)})

        async def sensors_alert(self, event: dict[str, Any]) -> None:
            await self.send_datagram(b"alert", event["to"])

    running = await stack(app=ProtocolTypeRouter({"udp": Alerts.as_asgi()}))
    client.send(b"subscribe", running.address)
    assert (await client.receive())[0] == b"alert"
    assert running.gateway.stats.replies_forwarded == 1  # the group message went back to the worker
