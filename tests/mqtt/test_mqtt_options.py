"""MQTT options: every mistake stops start-up with a message naming the key."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from switchboard.gateway.config import ConfigError, parse_options
from switchboard.gateway.plugins import build_plugins, load_plugin_class
from switchboard.protocols.mqtt import MqttOptions, MqttPlugin, check_topic_filter, check_topic_name


def parse(**raw: Any) -> MqttOptions:
    return parse_options(MqttOptions, raw, where="PROTOCOLS.mqtt")


def test_registered_under_its_name() -> None:
    assert load_plugin_class("mqtt") is MqttPlugin
    (plugin,) = build_plugins({"mqtt": {}})
    assert isinstance(plugin, MqttPlugin) and plugin.scope_types == ("mqtt",)


def test_defaults_and_normalisation() -> None:
    options = parse(brokers="mqtt://broker.local", subscriptions=["a/+/b", {"topic": "c/#", "qos": 2}], qos=1)
    assert [(b.host, b.port, b.tls) for b in options.broker_list()] == [("broker.local", 1883, False)]
    assert options.subscription_map() == {"a/+/b": 1, "c/#": 2}
    assert parse(brokers=["mqtts://[::1]"]).broker_list()[0][1:] == ("::1", 8883, True)
    assert parse(protocol_version=5).version_label == "5"
    assert parse(protocol_version="3.1.1").version_label == "3.1.1"
    # Consumers may publish nowhere unless publish_topics says where.
    assert parse().publish_topics == [] and not parse().may_publish("any/topic")
    allowed = parse(publish_topics=["app/replies/#", "app/alerts/+"])
    assert allowed.may_publish("app/replies/x/y") and allowed.may_publish("app/alerts/kitchen")
    assert not allowed.may_publish("app/alerts/kitchen/extra") and not allowed.may_publish("victim/commands/open")


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"brokers": []}, "at least one"),
        ({"brokers": ["http://x"]}, "scheme"),
        ({"brokers": ["mqtt://"]}, "no host"),
        ({"brokers": ["mqtt://x:99999"]}, "out of range|port"),
        ({"brokers": ["mqtt://u:secret@x"]}, "credentials"),
        ({"brokers": ["mqtt://x/path"]}, "only scheme"),
        ({"brokers": ["mqtt://a", "mqtts://b"]}, "one scheme"),
        ({"subscriptions": ["a/#/b"]}, "invalid"),
        ({"subscriptions": [""]}, "empty"),
        ({"subscriptions": [{"topic": "a", "qos": 3}]}, "qos"),
        ({"subscriptions": [{"filter": "a"}]}, "unknown key"),
        ({"subscriptions": [{"qos": 1}]}, "topic"),
        ({"subscriptions": [7]}, "matches none|expected"),
        ({"qos": 3}, "qos"),
        ({"protocol_version": "4"}, "protocol_version"),
        ({"session_expiry": 60}, "protocol_version 5"),
        ({"keepalive": 0}, "keepalive"),
        ({"reconnect_min_delay": 5, "reconnect_max_delay": 1}, "reconnect_max_delay"),
        ({"ca_file": "/etc/hostname"}, "mqtts"),
        ({"brokers": ["mqtts://x"], "ca_file": "/no/such/file"}, "not a readable file"),
        ({"brokers": ["mqtts://x"], "key_file": "/etc/hostname"}, "cert_file"),
        ({"tls_insecure": True}, "mqtt://"),
        ({"password": "p"}, "username"),
        ({"status_topic": "a/+"}, "wildcards"),
        ({"publish_topics": ["a/#/b"]}, "publish_topics\\[0\\]"),
        ({"publish_topics": [""]}, "empty"),
        ({"client_id": "bad\x00id"}, "U\\+0000"),
        ({"max_payload_size": -1}, "max_payload_size"),
        ({"subscription": ["a"]}, "unknown option"),
        ({"keepalive": "60"}, "integer"),
    ],
)
def test_bad_options_raise_config_error(raw: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse(**raw)


def test_password_is_never_shown(caplog: pytest.LogCaptureFixture) -> None:
    options = parse(username="gw", password="hunter2")
    assert "hunter2" not in repr(options)
    with caplog.at_level(logging.DEBUG):
        MqttPlugin(options)
    assert "hunter2" not in caplog.text


async def test_stop_without_start_is_harmless(tmp_path: Path) -> None:
    plugin = MqttPlugin(parse(stats_file=str(tmp_path / "stats.json")))
    await plugin.stop(0)
    assert (tmp_path / "stats.json").exists()


@pytest.mark.parametrize("topic", ["a", "a/b/c", "/leading", "trailing/", "é/ü", "$SYS/x", "a b"])
def test_valid_topic_names(topic: str) -> None:
    assert check_topic_name(topic) == topic


@pytest.mark.parametrize(
    "topic", ["", "a/+", "#", "a\x00", "a\x1f", "a\x7f", "a\u0085", "a\ufffe", "a\ud800", b"a", None, "x" * 65536]
)
def test_invalid_topic_names(topic: Any) -> None:
    with pytest.raises(ValueError):
        check_topic_name(topic)


@pytest.mark.parametrize("topic", ["#", "+", "a/+/c", "a/#", "+/+", "$share/g/a/#"])
def test_valid_filters(topic: str) -> None:
    assert check_topic_filter(topic) == topic


@pytest.mark.parametrize("topic", ["", "a#", "a/#/b", "a+/b", "a/b+", "a\x00"])
def test_invalid_filters(topic: str) -> None:
    with pytest.raises(ValueError):
        check_topic_filter(topic)
