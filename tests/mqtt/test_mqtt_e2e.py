"""The MQTT plugin end to end: real gateway and worker OS processes, real Mosquitto.

``split``: ``switchboard gateway`` + ``switchboard worker`` over Redis; ``run``: one
``switchboard run`` process on the in-memory layer. The clients are plain paho clients,
as a device would be; the consumers are ordinary Django consumers behind a TopicRouter
(``mqtt_e2e_routing.py``).
"""

from __future__ import annotations

from typing import Any

import pytest
from mqtt_helpers import publish_until_reply
from support.waiting import wait_until_sync

pytestmark = [pytest.mark.e2e, pytest.mark.mosquitto]


@pytest.mark.parametrize("mode", ["split", "run"])
def test_request_reply_and_topic_routing(mode: str, deploy: Any, broker_url: str, mqtt_client: Any, prefix: str) -> None:
    deployment = deploy(mode, broker_url, prefix)
    client = mqtt_client()
    client.subscribe(f"{prefix}/resp/+")
    client.subscribe(f"{prefix}/out/#")
    deployment.wait_online()

    client.publish(f"{prefix}/req/1", b"hello")
    reply = client.get(20)
    assert (reply.topic, reply.payload) == (f"{prefix}/resp/1", b"echo:hello")

    # Two filters, two consumers (one of them sync), one long-lived router instance.
    client.publish(f"{prefix}/sensors/kitchen/temp", b"21.46")
    client.publish(f"{prefix}/cmd/lights/off", b"", qos=1)
    got = {(m.topic, m.payload) for m in (client.get(), client.get())}
    assert got == {
        (f"{prefix}/out/temp/kitchen", b"21.5"),
        (f"{prefix}/out/cmd", f"{prefix}/cmd/# {prefix}/cmd/lights/off".encode()),
    }
    stats = deployment.gateway_stats()
    assert stats["delivered"] == stats["messages_in"] == 3
    assert stats["messages_out"] == 3  # the replies (the status messages do not count)


def test_runtime_subscribe_from_a_consumer(deploy: Any, broker_url: str, mqtt_client: Any, prefix: str) -> None:
    deployment = deploy("split", broker_url, prefix)
    client = mqtt_client()
    client.subscribe(f"{prefix}/resp/+")
    client.subscribe(f"{prefix}/out/extra")
    deployment.wait_online()
    client.publish(f"{prefix}/req/1", f"sub {prefix}/extra/#")
    assert client.get(20).payload == f"echo:sub {prefix}/extra/#".encode()
    reply = publish_until_reply(client, f"{prefix}/extra/anything", b"dynamic")
    assert (reply.topic, reply.payload) == (f"{prefix}/out/extra", b"extra:dynamic")
    stats = deployment.gateway_stats()
    assert stats["subscribed"] == 1 and stats["subscriptions"] == 4


def test_bad_input_is_dropped_counted_and_serving_goes_on(
    deploy: Any, broker_url: str, mqtt_client: Any, prefix: str
) -> None:
    deployment = deploy("split", broker_url, prefix)
    client = mqtt_client()
    client.subscribe(f"{prefix}/resp/+")
    client.subscribe(f"{prefix}/out/#")
    client.subscribe(f"{prefix}-victim/#")
    deployment.wait_online()

    client.publish(f"{prefix}/req/1", b"x" * 2000, qos=1)  # over max_payload_size: dropped in the gateway
    client.publish(f"{prefix}/sensors/hall/temp", b"not a number")  # the consumer raises, logged
    client.publish(f"{prefix}/sensors/küche/temp", b"20")  # non-ASCII topics are fine
    client.publish(f"{prefix}/req/2", b"boom")  # the consumer raises, logged
    client.publish(f"{prefix}/req/3", b"badpub")  # a wildcard publish: dropped by the gateway
    client.publish(f"{prefix}/req/5", f"to {prefix}-victim/commands/open-door")  # outside publish_topics
    client.publish(f"{prefix}/req/4", b"\x00\xff binary is fine")

    replies = {m.topic: m.payload for m in (client.get(20) for _ in range(4))}
    assert replies == {
        f"{prefix}/out/temp/küche": b"20.0",
        f"{prefix}/resp/3": b"echo:badpub",
        f"{prefix}/resp/5": f"echo:to {prefix}-victim/commands/open-door".encode(),
        f"{prefix}/resp/4": b"echo:\x00\xff binary is fine",
    }
    assert client.messages.empty()
    stats = deployment.gateway_stats()
    assert stats["dropped_oversize"] == 1
    assert stats["replies_invalid"] == 1
    assert stats["publish_dropped_topic"] == 1
    assert stats["delivered"] == 6 and stats["disconnects"] == 0
    worker_log = (deployment.log_dir / "worker.log").read_text()
    assert "TemperatureConsumer failed" in worker_log and "EchoConsumer failed" in worker_log


def test_broker_restart_gateway_resubscribes_and_keeps_serving(
    deploy: Any, private_broker: Any, mqtt_client: Any, prefix: str
) -> None:
    deployment = deploy("split", private_broker.url, prefix)
    client = mqtt_client(private_broker.port)
    client.subscribe(f"{prefix}/resp/+")
    client.subscribe(f"{prefix}/out/extra")
    deployment.wait_online(private_broker.port)
    client.publish(f"{prefix}/req/1", f"sub {prefix}/extra/#")
    assert client.get(20).payload == f"echo:sub {prefix}/extra/#".encode()
    assert publish_until_reply(client, f"{prefix}/extra/x", b"before").payload == b"extra:before"

    private_broker.kill()
    wait_until_sync(lambda: not client.connected.is_set(), what="the test client to notice")
    private_broker.start()  # same port, a fresh broker: no sessions, no subscriptions
    wait_until_sync(lambda: client.connected.is_set(), what="the test client to reconnect")

    # Served again only once the gateway has reconnected and subscribed everything again,
    # configured filters and the runtime one.
    reply = publish_until_reply(client, f"{prefix}/req/2", b"after", timeout=20)
    assert (reply.topic, reply.payload) == (f"{prefix}/resp/2", b"echo:after")
    reply = publish_until_reply(client, f"{prefix}/extra/y", b"after", timeout=20)
    assert (reply.topic, reply.payload) == (f"{prefix}/out/extra", b"extra:after")
    deployment.check_alive()
    stats = deployment.gateway_stats()
    assert stats["connects"] >= 2 and stats["disconnects"] >= 1
