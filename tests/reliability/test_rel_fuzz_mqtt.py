"""Fuzz: MQTT — random topics and payloads through the real broker, malformed publishes from a consumer.

Why both directions: inbound, the gateway is a subscriber that any publisher on the broker
can reach; outbound, a buggy consumer can hand it any dict. specs/mqtt.md says a bad
message must be counted and dropped and "never costs the session". Inbound inputs go
through the real Mosquitto (a publisher on ``<prefix>/in/<random>``) and are each followed
by a probe, so an answered message, an oversize drop and the probe are told apart;
outbound inputs are sent to the session's reply channel exactly as a consumer's ``send``
would, and every one must land in exactly one outbound counter.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rel_clients import MqttClient
from rel_fuzz import end_batch, fuzz_settings
from rel_harness import MOSQUITTO_PORT, MQTT_MAX_PAYLOAD, FuzzLedger, FuzzTarget
from support.waiting import wait_until_sync

from switchboard.protocols.mqtt import OUTBOUND_COUNTERS

PAYLOADS = st.one_of(st.binary(max_size=300), st.integers(MQTT_MAX_PAYLOAD - 2, MQTT_MAX_PAYLOAD + 3000).map(lambda n: b"p" * n))
TOPIC_TEXT = st.text(st.characters(blacklist_categories=["Cs", "Cc"], blacklist_characters="+#"), max_size=60)


@pytest.fixture
def mqtt(fuzz_target: FuzzTarget) -> Iterator[MqttClient]:
    """A publisher/subscriber on the shared broker, listening to the consumer's answers."""
    if fuzz_target.mqtt_prefix is None:
        pytest.skip("Mosquitto is not reachable on 127.0.0.1:1883")
    client = MqttClient(MOSQUITTO_PORT)
    client.subscribe(f"{fuzz_target.mqtt_prefix}/out")
    yield client
    client.close()


def test_random_topics_and_payloads_are_delivered_or_counted(
    fuzz_target: FuzzTarget, fuzz_ledger: FuzzLedger, mqtt: MqttClient
) -> None:
    """Within ``max_payload_size``: reaches the consumer (its answer comes back); over: dropped."""
    fuzz_target.begin()
    prefix = fuzz_target.mqtt_prefix
    before = fuzz_target.stats("mqtt")
    oversize = 0

    @fuzz_settings(80)
    @given(suffix=TOPIC_TEXT, payload=PAYLOADS, qos=st.integers(0, 2))
    def one(suffix: str, payload: bytes, qos: int) -> None:
        nonlocal oversize
        topic = f"{prefix}/in/{suffix}"
        mqtt.publish(topic, payload, qos)
        mqtt.publish(f"{prefix}/in/probe", b"")
        answers = []
        while True:
            _, data = mqtt.get()
            answer = json.loads(data)
            answers.append(answer)
            if answer == {"topic": f"{prefix}/in/probe", "size": 0}:
                break
        if len(payload) > MQTT_MAX_PAYLOAD:
            oversize += 1
            assert answers == [{"topic": f"{prefix}/in/probe", "size": 0}], answers
            fuzz_ledger.record("mqtt", fuzz_target.name, "inbound over max_payload_size: dropped, counted")
        else:
            assert answers[0] == {"topic": topic, "size": len(payload)}, answers
            fuzz_ledger.record("mqtt", fuzz_target.name, "inbound within limits: delivered")

    one()
    after = fuzz_target.stats("mqtt")
    if before is not None and after is not None:
        assert after["dropped_oversize"] - before["dropped_oversize"] == oversize
        assert after["connected"] == 1 and after["disconnects"] == before["disconnects"]
    end_batch(fuzz_target, fuzz_ledger)


VALUES = st.one_of(st.none(), st.booleans(), st.integers(-5, 70000), st.text(max_size=10), st.binary(max_size=10),
                   st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2))


@st.composite
def consumer_message(draw: st.DrawFn, prefix: str) -> dict[str, Any]:
    """What a buggy consumer might send to the session's reply channel."""
    message: dict[str, Any] = {"type": draw(st.sampled_from(["mqtt.publish"] * 4 + ["mqtt.subscribe", "mqtt.unsubscribe",
                                                                                     "mqtt.message", "mqtt.bogus"]))}
    topic_kind = draw(st.sampled_from(["junk", "wildcard", "empty", "control", "too long", "not a str", "absent"]))
    junk = f"{prefix}/junk/{draw(TOPIC_TEXT)}"
    topic: Any = {
        "junk": junk, "wildcard": junk + draw(st.sampled_from(["/#", "/+", "#", "/a#", "/+x"])), "empty": "",
        "control": junk + draw(st.sampled_from(["\x00", "\x01", "\x7f", "\u0085", "\ufffe"])),
        "too long": junk + "t" * 65536, "not a str": draw(VALUES), "absent": None,
    }[topic_kind]
    if topic is not None:
        message["topic"] = topic
    for key in ("payload", "qos", "retain", "properties"):
        if draw(st.booleans()):
            message[key] = draw(st.one_of(VALUES, st.binary(min_size=MQTT_MAX_PAYLOAD + 1, max_size=MQTT_MAX_PAYLOAD + 2))
                                if key == "payload" else VALUES)
    return message


def test_malformed_consumer_messages_are_counted_and_never_cost_the_session(
    fuzz_target: FuzzTarget, fuzz_ledger: FuzzLedger, mqtt: MqttClient
) -> None:
    """Each consumer message ends in exactly one outbound counter; the session stays up."""
    gateway = fuzz_target.inprocess
    if gateway is None:
        pytest.skip("needs the in-process gateway: the test writes to the session's reply channel")
    fuzz_target.begin()
    prefix = str(fuzz_target.mqtt_prefix)
    assert gateway.gateway is not None and gateway.layer is not None
    layer = gateway.layer
    (channel,) = [c.channel for c in gateway.gateway.connections.values() if c.protocol == "mqtt"]
    before = gateway.stats("mqtt")
    sent = 0

    @fuzz_settings(150)
    @given(message=consumer_message(prefix))
    def one(message: dict[str, Any]) -> None:
        nonlocal sent
        counts = gateway.stats("mqtt")
        try:
            gateway.call(lambda: layer.send(channel, message))
        except (OverflowError, TypeError, ValueError) as exc:
            # msgpack cannot carry it (ints beyond 64 bits): the consumer's send raises.
            outcome = f"consumer {message['type']}: refused by the layer ({type(exc).__name__})"
            fuzz_ledger.record("mqtt", fuzz_target.name, outcome)
            return
        sent += 1
        def moved() -> list[str]:
            """Outbound counters that changed (subscribe_refused comes later, from the broker)."""
            now = gateway.stats("mqtt")
            return [name for name in OUTBOUND_COUNTERS if name != "subscribe_refused" and now[name] != counts[name]]

        wait_until_sync(lambda: bool(moved()), what="the message to be counted")
        (counter,) = moved()
        assert counter != "outbound_errors", f"the plugin failed on {message!r}"
        fuzz_ledger.record("mqtt", fuzz_target.name, f"consumer {message['type']}: {counter}")

    one()
    after = gateway.stats("mqtt")
    assert after["connected"] == 1 and after["disconnects"] == before["disconnects"]
    assert sum(after[n] - before[n] for n in OUTBOUND_COUNTERS if n != "subscribe_refused") == sent
    # The session still carries a valid publish from a consumer.
    gateway.call(lambda: layer.send(channel, {"type": "mqtt.publish", "topic": f"{prefix}/out", "payload": b'{"ok": 1}'}))
    while mqtt.get()[1] != b'{"ok": 1}':
        pass
    end_batch(fuzz_target, fuzz_ledger)
