"""CHANNEL_LAYERS, aliases and channels_redis's options, as a Channels project has them."""

from __future__ import annotations

import asyncio
import os
import secrets
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.test import override_settings
from support.processes import redis_reachable

from switchboard.exceptions import ChannelFull, InvalidChannelLayerError
from switchboard.gateway.config import from_django_settings
from switchboard.gateway.layers import build_layer
from switchboard.gateway.layers.hosts import redis_hosts
from switchboard.gateway.layers.memory import MemoryStorage
from switchboard.gateway.layers.redis import RedisStorage
from switchboard.layers import BaseChannelLayer, InMemoryChannelLayer, channel_layers, get_channel_layer
from switchboard_redis.core import RedisChannelLayer

pytestmark = pytest.mark.timeout(60)

REDIS_URL = os.environ.get("SWITCHBOARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def require_redis() -> None:
    parts = urlsplit(REDIS_URL)
    if not redis_reachable(parts.hostname or "127.0.0.1", parts.port or 6379):
        pytest.skip(f"Redis is not reachable at {REDIS_URL}")


def test_channel_layers_aliases_and_override_settings_reset() -> None:
    layers = {
        "default": {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 7}},
        "analytics": {"BACKEND": "switchboard.layers.InMemoryChannelLayer", "TEST_CONFIG": {"expiry": 5}},
    }
    with override_settings(CHANNEL_LAYERS=layers):
        default = get_channel_layer()
        assert isinstance(default, InMemoryChannelLayer) and default.capacity == 7
        assert get_channel_layer() is default  # built once per alias
        assert get_channel_layer("analytics") is not default
        assert get_channel_layer("missing") is None
        assert channel_layers.make_test_backend("analytics").expiry == 5
        with pytest.raises(InvalidChannelLayerError, match="TEST_CONFIG"):
            channel_layers.make_test_backend("default")
    assert channel_layers.backends == {}  # the setting changed back: cache dropped


def test_backend_errors_are_not_hidden() -> None:
    with override_settings(CHANNEL_LAYERS={"default": {"BACKEND": "no.such.module.Layer"}}):
        with pytest.raises(InvalidChannelLayerError, match="Cannot import"):
            channel_layers.make_backend("default")
    bad_option = {"BACKEND": "switchboard.layers.InMemoryChannelLayer", "CONFIG": {"nope": 1}}
    with override_settings(CHANNEL_LAYERS={"default": bad_option}):
        with pytest.raises(TypeError, match="nope"):
            channel_layers.make_backend("default")


def test_gateway_config_takes_channel_layers_when_switchboard_has_no_layer() -> None:
    redis_entry = {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [("127.0.0.1", 6379)]}}
    with override_settings(CHANNEL_LAYERS={"default": redis_entry}, SWITCHBOARD={}):
        config = from_django_settings()
        assert config.layer == {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [("127.0.0.1", 6379)]}}
        layer = build_layer(config.layer)
        assert isinstance(layer, RedisChannelLayer) and layer.hosts == ["redis://127.0.0.1:6379"]
    memory_entry = {"BACKEND": "channels.layers.InMemoryChannelLayer", "CONFIG": {"capacity": 9}}
    with override_settings(CHANNEL_LAYERS={"default": memory_entry}, SWITCHBOARD={}):
        assert from_django_settings().layer == {"BACKEND": "memory", "CONFIG": {"capacity": 9}}
    with override_settings(CHANNEL_LAYERS={"default": memory_entry}, SWITCHBOARD={"LAYER": {"BACKEND": "redis"}}):
        assert from_django_settings().layer["BACKEND"] == "redis"  # SWITCHBOARD wins


def test_a_gateway_refuses_a_layer_that_is_not_switchboards() -> None:
    with pytest.raises(InvalidChannelLayerError, match="not a Switchboard channel layer"):
        build_layer({"BACKEND": "switchboard.layers.BaseChannelLayer"})


@pytest.mark.parametrize(
    ("hosts", "urls", "options"),
    [
        (None, ["redis://127.0.0.1:6379/0"], {}),
        (["redis://:pw@h:6380/2"], ["redis://:pw@h:6380/2"], {}),
        ([("h", 6379), ["h2", 6380]], ["redis://h:6379", "redis://h2:6380"], {}),
        ([{"address": "rediss://h:6379", "ssl_cert_reqs": None}], ["rediss://h:6379"], {"ssl_cert_reqs": None}),
        ([{"address": ("h", 1)}], ["redis://h:1"], {}),
        ([{"host": "h", "port": 6390, "db": 3, "password": "p@ss"}], ["redis://:p%40ss@h:6390/3"], {}),
        ([{"host": "::1", "port": 6379}], ["redis://[::1]:6379/0"], {}),
        (
            [{"sentinels": [("s1", 26379), ("s2", 26380)], "master_name": "mymaster", "sentinel_kwargs": {"password": "x"}}],
            ["redis+sentinel://s1:26379,s2:26380/mymaster/0"],
            {"sentinel_kwargs": {"password": "x"}},
        ),
        ([{"sentinels": [("s", 26379)], "master_name": "m", "db": 2}], ["redis+sentinel://s:26379/m/2"], {}),
        (["redis+cluster://h:7000", "redis+cluster://h:7001"], ["redis+cluster://h:7000", "redis+cluster://h:7001"], {}),
    ],
)
def test_channels_redis_hosts_forms(hosts: Any, urls: list[str], options: dict[str, Any]) -> None:
    assert redis_hosts(hosts) == (urls, options)


@pytest.mark.parametrize(
    ("hosts", "error"),
    [
        ([], "no Redis hosts"),
        (["h:6379"], "must be a URL"),
        ([{"sentinels": [("h", 26379)]}], "master_name"),
        ([{"sentinels": "h:26379", "master_name": "m"}], "sentinels"),
        ([{"address": "redis://a", "password": "x"}, {"address": "redis://b", "password": "y"}], "different connection options"),
        ([("h", "6379")], "pair"),
    ],
)
def test_bad_hosts_are_refused_with_the_reason(hosts: Any, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        redis_hosts(hosts)


def test_base_channel_layer_name_rules_are_typeerrors_with_channels_wording() -> None:
    base = BaseChannelLayer()
    assert base.require_valid_channel_name("chat.room!abc") and base.require_valid_group_name("chat")
    for check, kind in ((base.require_valid_channel_name, "Channel"), (base.require_valid_group_name, "Group")):
        for bad in ("¯\\_(ツ)_/¯", "a" * 101, 5):
            with pytest.raises(TypeError, match=base.invalid_name_error.format(kind)):
                check(bad)
    assert base.non_local_name("x.y!z") == "x.y!" and base.non_local_name("x.y") == "x.y"


async def test_in_memory_layer_shows_channels_and_groups_as_channels_does() -> None:
    layer = InMemoryChannelLayer(capacity=2)
    await layer.send("plain", {"type": "m"})
    assert list(layer.channels) == ["plain"]
    await layer.receive("plain")
    assert len(layer.channels) == 0  # an emptied channel is gone
    local = await layer.new_channel()
    waiter = asyncio.ensure_future(layer.receive(local))
    while local not in layer.channels:
        await asyncio.sleep(0.01)  # a waiting reader shows its channel
    await layer.send(local, {"type": "hi"})
    assert await asyncio.wait_for(waiter, 5) == {"type": "hi"}
    await layer.group_add("g", "plain")
    assert set(layer.groups) == {"g"}
    await layer.group_discard("g", "plain")
    assert layer.groups == {}
    await layer.send("plain", {"type": "1"})
    await layer.send("plain", {"type": "2"})
    with pytest.raises(ChannelFull):
        await layer.send("plain", {"type": "3"})
    await layer.close()


async def test_in_memory_layer_keeps_switchboard_channel_capacities() -> None:
    """A Channels project configures no capacity for the gateway's channels; they keep ours."""
    layer = InMemoryChannelLayer(capacity=3, channel_capacity={"tiny": 1})
    assert layer.get_capacity("tiny") == 1 and layer.get_capacity("other") == 3
    assert layer.get_capacity("switchboard.websocket") == 10000
    assert isinstance(layer.storage, MemoryStorage)
    await layer.close()


@pytest.mark.redis
async def test_redis_channel_layer_encrypts_and_keeps_channels_redis_key_names() -> None:
    require_redis()
    prefix = f"sbtest-dropin-{secrets.token_hex(4)}"
    sealed = RedisChannelLayer(hosts=[REDIS_URL], prefix=prefix, symmetric_encryption_keys=["new-key", "old-key"])
    old = RedisChannelLayer(hosts=[REDIS_URL], prefix=prefix, symmetric_encryption_keys=["old-key"])
    plain = RedisChannelLayer(hosts=[REDIS_URL], prefix=prefix)
    try:
        assert sealed._group_key("room") == f"{prefix}:group:room".encode()
        await sealed.send("secret.channel", {"type": "m", "card": "4111"})
        assert isinstance(sealed.storage, RedisStorage)
        raw = await _raw_items(sealed.storage, "secret.channel")
        assert raw and all(b"4111" not in item for item in raw)  # sealed at rest
        assert await asyncio.wait_for(sealed.receive("secret.channel"), 10) == {"type": "m", "card": "4111"}
        await old.send("secret.channel", {"type": "rotated"})  # sealed with the old key
        assert await asyncio.wait_for(sealed.receive("secret.channel"), 10) == {"type": "rotated"}
        await plain.send("secret.channel", {"type": "unsealed"})  # no key opens it: dropped, counted
        await sealed.send("secret.channel", {"type": "after"})
        assert await asyncio.wait_for(sealed.receive("secret.channel"), 10) == {"type": "after"}
        assert sealed.stats.corrupt == 1
    finally:
        await sealed.flush()
        for layer in (sealed, old, plain):
            await layer.close_pools()


async def _raw_items(storage: RedisStorage, key: str) -> list[bytes]:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(storage.hosts[storage.shard_index(key)])
    try:
        return list(await client.lrange(storage.prefix + key, 0, -1))
    finally:
        await client.aclose()
