"""Broker failures: restarts, failover between brokers, publishes while disconnected.

These use a private mosquitto on a free port (never the shared one on 1883), killed with
SIGKILL and started again on the same port, as a crash and a restart would.
"""

from __future__ import annotations

from typing import Any

from mqtt_helpers import apublish_until_reply, free_port
from support.waiting import wait_until

Message = dict[str, Any]


async def echo_app(scope: Message, receive: Any, send: Any) -> None:
    """Answers ``<p>/req/<n>`` on ``<p>/resp/<n>``; a payload ``sub <filter>`` subscribes."""
    while True:
        event = await receive()
        prefix, _, number = event["topic"].rpartition("/req/")
        text = event["payload"].decode()
        if text.startswith("sub "):
            await send({"type": "mqtt.subscribe", "topic": text[4:]})
        await send({"type": "mqtt.publish", "topic": f"{prefix}/resp/{number or 'x'}", "payload": b"echo:" + event["payload"]})


async def test_broker_restart_resubscribes_and_keeps_serving(
    serve: Any, mqtt_client: Any, private_broker: Any, prefix: str
) -> None:
    stack = await serve(echo_app, brokers=[private_broker.url], subscriptions=[f"{prefix}/req/+"])
    client = mqtt_client(private_broker.port)
    client.subscribe(f"{prefix}/resp/+")
    client.subscribe(f"{prefix}/late/resp/+")
    client.publish(f"{prefix}/req/1", b"before")
    assert (await client.aget()).payload == b"echo:before"
    # A runtime subscription, made before the restart, must survive it too.
    client.publish(f"{prefix}/req/2", f"sub {prefix}/late/req/+")
    assert (await client.aget()).payload == f"echo:sub {prefix}/late/req/+".encode()
    await wait_until(lambda: f"{prefix}/late/req/+" in stack.plugin.subscriptions())

    private_broker.kill()
    await wait_until(lambda: not stack.plugin.connected, what="the gateway to notice the broker is gone")
    private_broker.start()  # same port, empty broker: no sessions, no subscriptions
    await wait_until(lambda: stack.plugin.connected, what="the gateway to reconnect")
    await wait_until(lambda: client.connected.is_set(), what="the test client to reconnect")

    reply = await apublish_until_reply(client, f"{prefix}/req/3", b"after")
    assert reply.topic == f"{prefix}/resp/3" and reply.payload == b"echo:after"
    reply = await apublish_until_reply(client, f"{prefix}/late/req/4", b"late")
    assert reply.topic == f"{prefix}/late/resp/4" and reply.payload == b"echo:late"
    stats = stack.plugin.stats()
    assert stats["connects"] >= 2 and stats["disconnects"] >= 1


async def test_qos1_publishes_while_disconnected_are_sent_after_reconnect(
    serve: Any, mqtt_client: Any, private_broker: Any, prefix: str
) -> None:
    stack = await serve(None, brokers=[private_broker.url])
    private_broker.kill()
    await wait_until(lambda: not stack.plugin.connected)
    stack.plugin.deliver({"type": "mqtt.publish", "topic": f"{prefix}/kept", "payload": b"q1", "qos": 1})
    stack.plugin.deliver({"type": "mqtt.publish", "topic": f"{prefix}/lost", "payload": b"q0", "qos": 0})
    stats = stack.plugin.stats()
    assert stats["publish_queued"] == 1 and stats["publish_dropped_disconnected"] == 1
    private_broker.start()
    client = mqtt_client(private_broker.port)
    client.subscribe(f"{prefix}/#")  # before the gateway is back, so the resend is seen
    await wait_until(lambda: stack.plugin.connected, what="the gateway to reconnect")
    message = await client.aget()
    assert (message.topic, message.payload) == (f"{prefix}/kept", b"q1")


async def test_queued_publish_bound_is_counted(serve: Any, private_broker: Any, prefix: str) -> None:
    stack = await serve(None, brokers=[private_broker.url], max_queued_messages=3)
    private_broker.kill()
    await wait_until(lambda: not stack.plugin.connected)
    for number in range(5):
        stack.plugin.deliver({"type": "mqtt.publish", "topic": f"{prefix}/q", "payload": str(number), "qos": 1})
    stats = stack.plugin.stats()
    assert stats["publish_queued"] == 3 and stats["publish_dropped_queue_full"] == 2


async def test_failover_to_the_next_broker(serve: Any, mqtt_client: Any, private_broker: Any, prefix: str) -> None:
    dead = f"mqtt://127.0.0.1:{free_port()}"  # nothing listens there
    stack = await serve(echo_app, brokers=[dead, private_broker.url], subscriptions=[f"{prefix}/req/+"])
    await wait_until(lambda: stack.plugin.connected, what="a connection to the second broker")
    assert stack.plugin.broker.url == private_broker.url
    assert stack.plugin.stats()["connect_failures"] >= 1
    client = mqtt_client(private_broker.port)
    client.subscribe(f"{prefix}/resp/+")
    reply = await apublish_until_reply(client, f"{prefix}/req/1", b"hi")
    assert reply.payload == b"echo:hi"


async def test_start_without_a_broker_serves_once_it_appears(
    serve: Any, mqtt_client: Any, private_broker: Any, prefix: str
) -> None:
    private_broker.kill()
    stack = await serve(echo_app, brokers=[private_broker.url], subscriptions=[f"{prefix}/req/+"], connect_timeout=0.5)
    assert not stack.plugin.connected  # start returned anyway; paho keeps trying
    private_broker.start()
    await wait_until(lambda: stack.plugin.connected, what="the first connection")
    client = mqtt_client(private_broker.port)
    client.subscribe(f"{prefix}/resp/+")
    reply = await apublish_until_reply(client, f"{prefix}/req/1", b"hi")
    assert reply.payload == b"echo:hi"
