"""The layer classes Channels and channels_redis users name in ``CHANNEL_LAYERS``.

Each is a :class:`ChannelLayer` (the same core the gateway and workers use) built with the
constructor of the class it stands for, so ``"BACKEND": "...InMemoryChannelLayer"`` and
``RedisChannelLayer(hosts=[...], capacity=...)`` keep meaning what they meant:

* :class:`InMemoryChannelLayer` — Channels' in-memory layer: the in-memory storage, plus
  ``channels`` and ``groups`` to look inside it as Channels' tests do.
* :class:`RedisChannelLayer` — channels_redis's layer: the Redis storage under the
  ``prefix`` (default ``"asgi"``), ``hosts`` in every channels_redis form, and
  ``close_pools()``.
* :class:`RedisPubSubChannelLayer` — channels_redis's pub/sub layer, on the same Redis
  lists: everything pub/sub delivers is delivered, plus messages sent before a reader
  listens (a list keeps them until they expire). The gateway needs lists; a project that
  picked pub/sub for speed gets Switchboard's batched lists instead (docs/porting-from-channels.md).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from .core import INTERNAL_CAPACITIES, ChannelLayer, LayerOptions, unpack
from .memory import MemoryStorage
from .names import split_local
from .redis import RedisStorage


def _options(
    expiry: float, group_expiry: float, capacity: int, channel_capacity: Mapping[Any, int] | None, extra: dict[str, Any]
) -> LayerOptions:
    core = {name: extra.pop(name) for name in list(extra) if name in LayerOptions.__dataclass_fields__}
    # The project's patterns first (first match wins), then Switchboard's own channels',
    # which a Channels project does not know to configure but a gateway needs.
    capacities = dict(channel_capacity or {})
    for pattern, value in INTERNAL_CAPACITIES.items():
        capacities.setdefault(pattern, value)
    return LayerOptions(expiry=expiry, group_expiry=group_expiry, capacity=capacity, channel_capacity=capacities, **core)


class _ChannelsView(MutableMapping[str, Any]):
    """``InMemoryChannelLayer.channels``: channel name -> what waits for it, as Channels shows it.

    Channels' in-memory layer keeps one queue per channel; ours keeps one list per
    storage key, and one key for all of a process's local channels (``"specific.x!"``).
    This view shows channel names either way: a key's list for ordinary channels, and each
    local channel that has messages waiting or a reader waiting. Deleting a channel drops
    what waits for it.
    """

    def __init__(self, layer: ChannelLayer, storage: MemoryStorage) -> None:
        self.layer = layer
        self.storage = storage

    def _local(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for key, local in self.layer._local_readers.items():
            for channel in set(local.buffers) | set(local.waiters):
                found[channel] = local.buffers.get(channel, collections.deque())
            for item in self.storage._lists.get(key, ()):
                _expires, suffixes, _message = unpack(item)
                for suffix in suffixes or ():
                    found.setdefault(key + suffix, collections.deque())
        for key, items in self.storage._lists.items():
            if key.endswith("!") and key not in self.layer._local_readers:
                for item in items:
                    for suffix in unpack(item)[1] or ():
                        found.setdefault(key + suffix, collections.deque())
        return found

    def _snapshot(self) -> dict[str, Any]:
        plain = {key: items for key, items in self.storage._lists.items() if not key.endswith("!")}
        return {**plain, **self._local()}

    def __getitem__(self, channel: str) -> Any:
        return self._snapshot()[channel]

    def __setitem__(self, channel: str, value: Any) -> None:
        raise TypeError("channels is a view of the layer; send() to add messages")

    def __delitem__(self, channel: str) -> None:
        key, suffix = split_local(channel)
        if suffix is None:
            del self.storage._lists[key]
            self.storage._touched.pop(key, None)
            return
        local = self.layer._local_readers.get(key)
        if local is None or local.buffers.pop(channel, None) is None:
            raise KeyError(channel)

    def __iter__(self) -> Iterator[str]:
        return iter(self._snapshot())

    def __len__(self) -> int:
        return len(self._snapshot())


class InMemoryChannelLayer(ChannelLayer):
    """Channels' ``InMemoryChannelLayer``: the in-memory layer, Channels' constructor.

    Messages cross it packed, as they would cross Redis, so a message that could not be
    sent in production fails in tests too (Channels' layer passes Python objects through).
    """

    def __init__(
        self,
        expiry: float = 60,
        group_expiry: float = 86400,
        capacity: int = 100,
        channel_capacity: Mapping[Any, int] | None = None,
        **kwargs: Any,
    ) -> None:
        options = _options(expiry, group_expiry, capacity, channel_capacity, kwargs)
        if kwargs:
            raise TypeError(f"InMemoryChannelLayer got unknown options: {', '.join(sorted(kwargs))}")
        super().__init__(MemoryStorage(), options)

    @property
    def channels(self) -> _ChannelsView:
        assert isinstance(self.storage, MemoryStorage)
        return _ChannelsView(self, self.storage)

    @property
    def groups(self) -> dict[str, dict[str, float]]:
        """Group name -> {channel: time added}; a group with no member is gone."""
        assert isinstance(self.storage, MemoryStorage)
        return self.storage._groups


class RedisChannelLayer(ChannelLayer):
    """channels_redis's ``RedisChannelLayer``: the Redis layer, channels_redis's constructor.

    ``prefix`` names the keys (``"asgi"`` -> ``asgi:...``, as channels_redis's); ``hosts``
    takes every channels_redis form (layers/hosts.py); ``symmetric_encryption_keys`` seals
    messages with Fernet. Other keywords are Redis storage options (``socket_timeout``...).
    """

    def __init__(
        self,
        hosts: Any = None,
        prefix: str = "asgi",
        expiry: float = 60,
        group_expiry: float = 86400,
        capacity: int = 100,
        channel_capacity: Mapping[Any, int] | None = None,
        symmetric_encryption_keys: list[str] | None = None,
        serializer_format: str = "msgpack",
        **kwargs: Any,
    ) -> None:
        kwargs["symmetric_encryption_keys"] = symmetric_encryption_keys
        kwargs["serializer_format"] = serializer_format
        options = _options(expiry, group_expiry, capacity, channel_capacity, kwargs)
        storage_prefix = prefix if prefix.endswith(":") else prefix + ":"
        super().__init__(RedisStorage(hosts, prefix=storage_prefix, **kwargs), options)
        self.prefix = prefix

    @property
    def hosts(self) -> list[str]:
        assert isinstance(self.storage, RedisStorage)
        return list(self.storage.hosts)

    def _group_key(self, group: str) -> bytes:
        """The Redis key holding ``group``'s members (channels_redis's helper)."""
        assert isinstance(self.storage, RedisStorage)
        return self.storage._group_key(group).encode("utf-8")

    async def close_pools(self) -> None:
        """Close the Redis connections of the running event loop (channels_redis's API).

        Call it at the end of an ``async_to_sync`` block that used the layer: that loop is
        about to close, and its connections with it. Anything this loop's readers had
        already taken stays readable from the next loop.
        """
        for local in list(self._local_readers.values()):
            await local.close()
        assert isinstance(self.storage, RedisStorage)
        await self.storage.close()

    async def wait_received(self) -> None:
        """channels_redis waits here for receive tasks to settle; ours settle by themselves."""


class RedisPubSubChannelLayer(RedisChannelLayer):
    """channels_redis's ``RedisPubSubChannelLayer``, on Switchboard's Redis lists.

    Takes any msgpack-able message, as the pub/sub layer does (not only dicts).
    """

    require_dict_messages = False

    def __init__(self, hosts: Any = None, prefix: str = "asgi", channel_layer: Any = None, **kwargs: Any) -> None:
        # on_disconnect / on_reconnect callbacks belong to pub/sub connections; lists
        # reconnect on their own.
        kwargs.pop("on_disconnect", None)
        kwargs.pop("on_reconnect", None)
        super().__init__(hosts, prefix, **kwargs)

    @property
    def _layers(self) -> dict[asyncio.AbstractEventLoop, Any]:
        """Connections per event loop; an entry goes when its loop closes."""
        assert isinstance(self.storage, RedisStorage)
        return self.storage._loops

    @property
    def _shards(self) -> list[Any]:
        """The running loop's connection to each server (``._redis``: its redis-py client)."""
        assert isinstance(self.storage, RedisStorage)
        return [_ShardView(shard.client) for shard in self.storage._shards()]


class _ShardView:
    def __init__(self, client: Any) -> None:
        self._redis = client
