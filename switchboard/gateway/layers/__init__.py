"""Channel layers: the shared message bus between gateways and workers.

``get_channel_layer()`` returns the process-wide layer configured in settings, the same
call Django Channels users make; ``get_channel_layer("alias")`` another ``CHANNEL_LAYERS``
alias (``aliases.py``).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from .aliases import (
    DEFAULT_CHANNEL_LAYER,
    ChannelLayerManager,
    InvalidChannelLayerError,
    channel_layers,
    get_channel_layer,
    is_short_form,
    make_layer,
    set_channel_layer,
)
from .base import BaseChannelLayer
from .core import ChannelFull, ChannelLayer, LayerClosed, LayerOptions, LayerStats, Message, Receiver
from .memory import MemoryStorage
from .names import InvalidName, check_channel_name, check_group_name

__all__ = [
    "DEFAULT_CHANNEL_LAYER",
    "BaseChannelLayer",
    "ChannelFull",
    "ChannelLayer",
    "ChannelLayerManager",
    "InvalidChannelLayerError",
    "InvalidName",
    "LayerClosed",
    "LayerOptions",
    "LayerStats",
    "MemoryStorage",
    "Message",
    "Receiver",
    "build_layer",
    "channel_layers",
    "check_channel_name",
    "check_group_name",
    "get_channel_layer",
    "make_layer",
    "set_channel_layer",
]

_BACKENDS = {
    "memory": "switchboard.gateway.layers.memory:MemoryStorage",
    "redis": "switchboard.gateway.layers.redis:RedisStorage",
}


def build_layer(config: Mapping[str, Any] | None = None) -> ChannelLayer:
    """Build a layer from ``{"BACKEND": "memory"|"redis"|"module:StorageClass", "CONFIG": {...}}``.

    ``CONFIG`` keys that are :class:`LayerOptions` fields tune the core; the rest go to the
    storage backend (e.g. ``hosts`` for Redis). A Channels-style ``BACKEND`` (the dotted
    path of a layer class, ``"channels_redis.core.RedisChannelLayer"``) is built as
    Channels builds it (``aliases.make_layer``) and must be a Switchboard layer.
    """
    config = dict(config or {})
    backend = str(config.get("BACKEND", "memory"))
    if not is_short_form(backend):
        layer = make_layer(config)
        if not isinstance(layer, ChannelLayer):
            raise InvalidChannelLayerError(
                f"BACKEND {backend!r} is not a Switchboard channel layer: gateways and workers run on "
                "switchboard.layers.InMemoryChannelLayer, switchboard_redis.core.RedisChannelLayer or a ChannelLayer subclass"
            )
        return layer
    options = dict(config.get("CONFIG", {}))
    path = _BACKENDS.get(backend, backend)
    module_name, _, attr = path.partition(":")
    storage_class = getattr(importlib.import_module(module_name), attr)
    core_names = {f.name for f in fields(LayerOptions)}
    core = {k: v for k, v in options.items() if k in core_names}
    rest = {k: v for k, v in options.items() if k not in core_names}
    return ChannelLayer(storage_class(**rest), LayerOptions(**core))
