"""The UDP plugin in-process: real sockets on loopback, gateway core and worker, memory layer.

Workers here run plain ASGI apps (no consumer classes) so these tests pin the plugin's
contract with the layer: what it sends, what it accepts back, and every drop counted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from pathlib import Path
from typing import Any

import pytest
from support.waiting import wait_until

from switchboard.gateway.config import ConfigError
from switchboard.gateway.envelope import pool_channel
from switchboard.gateway.layers import ChannelLayer, build_layer, set_channel_layer
from switchboard.gateway.layers.core import ChannelLayer as CoreLayer
from switchboard.gateway.layers.core import LayerOptions
from switchboard.gateway.layers.memory import MemoryStorage
from switchboard.gateway.plugins import build_plugins
from switchboard.gateway.server import Gateway
from switchboard.gateway.specs import (
    GATEWAY_TO_WORKER,
    WORKER_TO_GATEWAY,
    spec_for,
    validate_envelope,
    validate_message,
    validate_scope,
)
from switchboard.protocols.udp import UdpPlugin, check_address

from .conftest import UdpClient, assert_counts_add_up, ipv6_available, udp_options

Scope = dict[str, Any]


async def upper_app(scope: Scope, receive: Any, send: Any) -> None:
    """Echo every datagram in upper case, checking scope and events against the spec."""
    validate_scope(scope)
    while True:
        event = await receive()
        validate_message(event, direction=GATEWAY_TO_WORKER)
        reply = {"type": "udp.send", "data": event["data"].upper(), "address": event["client"]}
        validate_message(reply, direction=WORKER_TO_GATEWAY)
        await send(reply)


# -- inbound and outbound, the happy path ----------------------------------------------


async def test_echo_ipv4(stack: Any, client: UdpClient) -> None:
    running = await stack(app=upper_app)
    client.send(b"hello", running.address)
    data, source = await client.receive()
    assert data == b"HELLO"
    assert source[:2] == running.address  # the reply leaves through the socket it came in on
    stats = running.plugin.stats()
    assert stats["messages_in"] == stats["delivered"] == stats["messages_out"] == 1
    assert_counts_add_up(stats)


async def test_event_and_scope_cross_the_layer_as_specified(stack: Any, layer: ChannelLayer, client: UdpClient) -> None:
    running = await stack()  # no worker: read the pool channel ourselves
    client.send(b"\x00\xffbinary", running.address)
    envelope = await asyncio.wait_for(layer.receive(pool_channel("udp")), 5)
    validate_envelope(envelope)
    assert envelope["event"] == {"type": "udp.datagram", "data": b"\x00\xffbinary", "client": list(client.address)}
    scope = envelope["scope"]
    assert scope["type"] == "udp" and scope["server"] == list(running.address)
    assert scope["reply_channel"] == envelope["connection"]
    assert scope["asgi"]["spec_version"] == "1.0"


async def test_empty_datagram_is_delivered(stack: Any, layer: ChannelLayer) -> None:
    running = await stack()
    # A plain socket: asyncio's transports silently skip empty sends.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as plain:
        plain.sendto(b"", running.address)
    envelope = await asyncio.wait_for(layer.receive(pool_channel("udp")), 5)
    assert envelope["event"]["data"] == b""
    validate_envelope(envelope)


async def test_echo_ipv6(stack: Any) -> None:
    if not ipv6_available():
        pytest.skip("IPv6 loopback (::1) is not available on this machine")
    running = await stack(app=upper_app, bind=["[::1]:0"])
    host, port = running.address
    assert host == "::1" and port > 0
    client = await UdpClient.open("::1")
    try:
        client.send(b"six", ("::1", port))
        data, source = await client.receive()
    finally:
        client.close()
    assert data == b"SIX" and source[:2] == ("::1", port)


async def test_several_binds_each_a_connection_replies_from_the_right_socket(stack: Any, client: UdpClient) -> None:
    running = await stack(app=upper_app, bind=["127.0.0.1:0", "127.0.0.1:0"])
    first, second = running.plugin.bound_addresses
    assert first != second
    assert len({listener.connection.channel for listener in running.plugin.listeners}) == 2
    for address in (first, second):
        client.send(b"which", address)
        data, source = await client.receive()
        assert data == b"WHICH" and source[:2] == address


async def test_many_peers_share_one_instance_and_get_their_own_replies(stack: Any) -> None:
    running = await stack(app=upper_app)
    clients = [await UdpClient.open() for _ in range(5)]
    try:
        for index, peer in enumerate(clients):
            peer.send(b"peer%d" % index, running.address)
        for index, peer in enumerate(clients):
            assert (await peer.receive())[0] == b"PEER%d" % index
    finally:
        for peer in clients:
            peer.close()
    assert running.worker is not None and running.worker.stats.instances_started == 1


# -- limits and bad input ---------------------------------------------------------------


async def test_oversized_datagram_dropped_counted_and_socket_keeps_serving(stack: Any, client: UdpClient) -> None:
    running = await stack(app=upper_app, max_datagram_size=100)
    client.send(b"x" * 101, running.address)
    await wait_until(lambda: running.plugin.stats()["dropped_oversize"] == 1, what="the oversize drop")
    client.send(b"y" * 100, running.address)
    assert (await client.receive())[0] == b"Y" * 100
    stats = running.plugin.stats()
    assert stats["messages_in"] == 2 and stats["delivered"] == 1 and stats["dropped_oversize"] == 1
    assert_counts_add_up(stats)


BAD_REPLIES: list[tuple[str, dict[str, Any]]] = [
    ("data is str", {"type": "udp.send", "data": "text", "address": None}),
    ("no address", {"type": "udp.send", "data": b"x"}),
    ("address not a pair", {"type": "udp.send", "data": b"x", "address": ["127.0.0.1"]}),
    ("port is str", {"type": "udp.send", "data": b"x", "address": ["127.0.0.1", "9"]}),
    ("port is bool", {"type": "udp.send", "data": b"x", "address": ["127.0.0.1", True]}),
    ("port 0", {"type": "udp.send", "data": b"x", "address": ["127.0.0.1", 0]}),
    ("port too big", {"type": "udp.send", "data": b"x", "address": ["127.0.0.1", 70000]}),
    ("host name", {"type": "udp.send", "data": b"x", "address": ["localhost", 9]}),
    ("ipv6 on ipv4 socket", {"type": "udp.send", "data": b"x", "address": ["::1", 9]}),
    ("empty data", {"type": "udp.send", "data": b"", "address": ["127.0.0.1", 9]}),
    ("wrong direction", {"type": "udp.datagram", "data": b"x", "client": ["127.0.0.1", 9]}),
    ("unknown type", {"type": "udp.broadcast", "data": b"x"}),
]


async def test_malformed_udp_send_replies_are_dropped_counted_and_logged(
    stack: Any, client: UdpClient, caplog: pytest.LogCaptureFixture
) -> None:
    secret = b"SECRET-PAYLOAD"

    async def bad_app(scope: Scope, receive: Any, send: Any) -> None:
        while True:
            event = await receive()
            for _, message in BAD_REPLIES:
                message = dict(message)
                if message.get("address") is None and "address" in message:
                    message["address"] = event["client"]
                await send(message)
            await send({"type": "udp.send", "data": secret * 10, "address": event["client"]})  # oversize
            await send({"type": "udp.send", "data": b"still fine", "address": event["client"]})

    caplog.set_level(logging.WARNING, logger="switchboard.protocols.udp")
    running = await stack(app=bad_app, max_datagram_size=100)
    client.send(b"go", running.address)
    assert (await client.receive())[0] == b"still fine"
    assert await client.nothing_within(0.2)
    stats = running.plugin.stats()
    assert stats["replies_invalid"] == len(BAD_REPLIES)
    assert stats["send_dropped_oversize"] == 1
    assert stats["messages_out"] == 1
    logged = caplog.text
    # Reasons are logged (one line per key at fault per second)...
    assert "key 'data' must be bytes" in logged and "missing required key 'address'" in logged and "travels" in logged
    assert secret.decode() not in logged  # ...payloads are not


@pytest.mark.parametrize(("why", "message"), BAD_REPLIES, ids=[why for why, _ in BAD_REPLIES])
def test_each_bad_reply_is_refused_by_the_spec_or_the_address_check(why: str, message: dict[str, Any]) -> None:
    message = dict(message)
    if message.get("address") is None and "address" in message:
        message["address"] = ["127.0.0.1", 9]
    try:
        validate_message(message, direction=WORKER_TO_GATEWAY)
    except ValueError:
        return
    if not message["data"]:
        return  # empty payloads are refused by the plugin (transports skip them silently)
    assert check_address(message["address"], socket.AF_INET) is not None, why


def test_spec_examples_are_valid() -> None:
    for type_name in ("udp", "udp.datagram", "udp.send"):
        spec = spec_for(type_name)
        assert spec.examples
    for example in spec_for("udp.send").examples:
        validate_message(example, direction=WORKER_TO_GATEWAY)
        assert check_address(example["address"], socket.AF_INET6 if ":" in example["address"][0] else socket.AF_INET) is None


async def test_datagram_without_sender_address_is_counted_not_raised(stack: Any, client: UdpClient) -> None:
    running = await stack(app=upper_app)
    running.plugin.listeners[0].on_datagram(b"orphan", None)  # what uvloop reports for AF_UNSPEC
    client.send(b"fine", running.address)
    assert (await client.receive())[0] == b"FINE"
    stats = running.plugin.stats()
    assert stats["dropped_no_address"] == 1
    assert_counts_add_up(stats)


async def test_consumer_exception_does_not_stop_the_socket(stack: Any, client: UdpClient) -> None:
    async def flaky_app(scope: Scope, receive: Any, send: Any) -> None:
        event = await receive()
        if event["data"] == b"boom":
            raise RuntimeError("on purpose")
        await send({"type": "udp.send", "data": b"ok", "address": event["client"]})

    running = await stack(app=flaky_app)
    client.send(b"boom", running.address)
    await wait_until(lambda: running.worker.stats.instances_failed == 1, what="the failed instance")
    client.send(b"next", running.address)
    assert (await client.receive())[0] == b"ok"


# -- back-pressure: bounded everywhere, every drop counted ------------------------------


async def test_full_worker_pool_channel_drops_are_counted() -> None:
    layer = build_layer({"BACKEND": "memory", "CONFIG": {"channel_capacity": {"switchboard.*": 5}}})
    set_channel_layer(layer)
    gateway = Gateway(layer)
    await gateway.start()
    plugin = UdpPlugin(udp_options(receive_buffer_size=1024 * 1024))
    await plugin.start(gateway)
    client = await UdpClient.open()
    try:
        for index in range(50):
            client.send(b"%d" % index, plugin.bound_addresses[0])
        await wait_until(lambda: plugin.stats()["messages_in"] == 50 and plugin.stats()["queued"] == 0, what="50 datagrams")
        stats = plugin.stats()
        assert stats["delivered"] == 5
        assert stats["events_full"] == 45
        assert gateway.stats.events_dropped_full == 45
        assert_counts_add_up(stats)
    finally:
        client.close()
        await plugin.stop(1)
        await gateway.stop()
        set_channel_layer(None)
        await layer.close()


class GatedStorage(MemoryStorage):
    """Memory storage whose pushes to worker pool channels wait for ``gate``: a stuck layer."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()

    async def push(self, key: str, item: bytes, capacity: int, ttl: float, max_bytes: int | None = None) -> bool:
        if key.startswith("switchboard."):
            await self.gate.wait()
        return await super().push(key, item, capacity, ttl, max_bytes)


async def test_stuck_layer_fills_the_bounded_queue_then_drops(caplog: pytest.LogCaptureFixture) -> None:
    storage = GatedStorage()
    layer = CoreLayer(storage, LayerOptions())
    gateway = Gateway(layer)
    await gateway.start()
    plugin = UdpPlugin(udp_options(queue_size=10, layer_senders=2, receive_buffer_size=1024 * 1024))
    await plugin.start(gateway)
    client = await UdpClient.open()
    try:
        for index in range(100):
            client.send(b"%d" % index, plugin.bound_addresses[0])
        await wait_until(lambda: plugin.stats()["messages_in"] == 100, what="100 datagrams")
        stats = plugin.stats()
        # Memory stays bounded: 10 queued + 2 in the senders' hands; the rest are dropped.
        assert stats["queued"] == 12
        assert stats["dropped_queue_full"] == 88
        assert_counts_add_up(stats)
        assert "queue full" in caplog.text
        assert caplog.text.count("queue full") < 5  # rate-limited, not one line per drop
        storage.gate.set()
        await wait_until(lambda: plugin.stats()["queued"] == 0, what="the queue to drain")
        stats = plugin.stats()
        assert stats["delivered"] == 12
        assert_counts_add_up(stats)
    finally:
        client.close()
        storage.gate.set()
        await plugin.stop(1)
        await gateway.stop()
        await layer.close()


async def test_queue_is_bounded_in_bytes_too() -> None:
    storage = GatedStorage()
    layer = CoreLayer(storage, LayerOptions())
    gateway = Gateway(layer)
    await gateway.start()
    plugin = UdpPlugin(udp_options(queue_bytes=1000, max_datagram_size=1000, layer_senders=1))
    await plugin.start(gateway)
    client = await UdpClient.open()
    try:
        for _ in range(10):
            client.send(b"x" * 300, plugin.bound_addresses[0])
        await wait_until(lambda: plugin.stats()["messages_in"] == 10, what="10 datagrams")
        stats = plugin.stats()
        # One in the sender's hands (no longer in the queue's bytes), three queued (900 bytes).
        assert stats["queued"] == 4 and stats["dropped_queue_full"] == 6
        assert plugin.listeners[0].queued_bytes == 900
        assert_counts_add_up(stats)
    finally:
        client.close()
        storage.gate.set()
        await plugin.stop(1)
        await gateway.stop()
        await layer.close()
    assert plugin.listeners[0].queued_bytes == 0


async def test_stop_drains_what_it_can_and_counts_the_rest_as_shutdown_drops(tmp_path: Path) -> None:
    storage = GatedStorage()
    layer = CoreLayer(storage, LayerOptions())
    gateway = Gateway(layer)
    await gateway.start()
    stats_file = tmp_path / "stats.json"
    plugin = UdpPlugin(udp_options(queue_size=10, layer_senders=1, stats_file=str(stats_file)))
    await plugin.start(gateway)
    client = await UdpClient.open()
    try:
        for index in range(5):
            client.send(b"%d" % index, plugin.bound_addresses[0])
        await wait_until(lambda: plugin.stats()["messages_in"] == 5, what="5 datagrams")
        await plugin.stop(0.1)  # the layer never accepts: the drain times out
    finally:
        client.close()
        storage.gate.set()
        await gateway.stop()
        await layer.close()
    stats = plugin.stats()
    assert stats["dropped_shutdown"] == 5 and stats["queued"] == 0
    assert_counts_add_up(stats)
    assert json.loads(stats_file.read_text()) == stats
    assert all(not listener.connection.open for listener in plugin.listeners)


async def test_replies_are_dropped_not_buffered_while_the_socket_is_paused(stack: Any, client: UdpClient) -> None:
    running = await stack()
    listener = running.plugin.listeners[0]
    listener.writing_paused = True  # what the transport's pause_writing() sets past send_buffer_limit
    listener.deliver({"type": "udp.send", "data": b"x", "address": list(client.address)})
    listener.writing_paused = False
    listener.deliver({"type": "udp.send", "data": b"y", "address": list(client.address)})
    assert (await client.receive())[0] == b"y"
    stats = running.plugin.stats()
    assert stats["send_dropped_backpressure"] == 1 and stats["messages_out"] == 1


async def test_replies_after_stop_are_counted_not_sent(stack: Any) -> None:
    running = await stack()
    listener = running.plugin.listeners[0]
    await running.stop()
    listener.deliver({"type": "udp.send", "data": b"late", "address": ["127.0.0.1", 9]})
    assert running.plugin.stats()["send_dropped_closed"] == 1


async def test_stats_logged_at_info_on_stop(stack: Any, client: UdpClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="switchboard.protocols.udp")
    running = await stack(app=upper_app)
    client.send(b"a", running.address)
    await client.receive()
    await running.stop()
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("udp stats: "))
    logged = json.loads(line.removeprefix("udp stats: "))
    assert logged["messages_in"] == logged["delivered"] == logged["messages_out"] == 1


# -- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({}, "bind"),
        ({"bind": []}, "at least one"),
        ({"bind": ["nonsense"]}, "host:port"),
        ({"bind": ["127.0.0.1:99999"]}, "out of range"),
        ({"bind": ["127.0.0.1:0"], "max_datagram_size": 0}, "max_datagram_size"),
        ({"bind": ["127.0.0.1:0"], "max_datagram_size": 70000}, "max_datagram_size"),
        ({"bind": ["127.0.0.1:0"], "queue_size": 0}, "queue_size"),
        ({"bind": ["127.0.0.1:0"], "queue_bytes": 100}, "queue_bytes"),
        ({"bind": ["127.0.0.1:0"], "layer_senders": 0}, "layer_senders"),
        ({"bind": ["127.0.0.1:0"], "receive_buffer_size": -1}, "receive_buffer_size"),
        ({"bind": ["127.0.0.1:0"], "max_datagram_size": "big"}, "integer"),
        ({"bind": ["127.0.0.1:0"], "max_datagram_sise": 10}, "unknown option"),
    ],
)
def test_bad_config_is_refused_before_any_socket_opens(raw: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        build_plugins({"udp": raw})


def test_a_single_bind_string_is_accepted() -> None:
    (plugin,) = build_plugins({"udp": {"bind": "127.0.0.1:0"}})
    assert plugin.options.bind == ["127.0.0.1:0"]


async def test_bind_failure_is_a_clear_error_and_leaks_nothing(layer: ChannelLayer) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        gateway = Gateway(layer)
        await gateway.start()
        plugin = UdpPlugin(udp_options(bind=["127.0.0.1:0", f"127.0.0.1:{port}"]))
        with pytest.raises(ConfigError, match="cannot bind"):
            await plugin.start(gateway)
        await gateway.stop()
    assert gateway.connections == {}  # the first socket's connection was closed again


async def test_reuse_port_lets_two_gateways_share_a_port(layer: ChannelLayer) -> None:
    gateway = Gateway(layer)
    await gateway.start()
    first = UdpPlugin(udp_options(reuse_port=True))
    await first.start(gateway)
    port = first.bound_addresses[0][1]
    second = UdpPlugin(udp_options(bind=[f"127.0.0.1:{port}"], reuse_port=True))
    await second.start(gateway)
    assert second.bound_addresses == first.bound_addresses
    await second.stop(1)
    await first.stop(1)
    await gateway.stop()


async def test_receive_buffer_size_is_applied(stack: Any) -> None:
    running = await stack(receive_buffer_size=256 * 1024)
    sock = running.plugin.listeners[0].transport.get_extra_info("socket")
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= 256 * 1024
