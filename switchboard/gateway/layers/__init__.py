"""Channel layers: the shared message bus between gateways and workers.

``get_channel_layer()`` returns the process-wide layer configured in settings, the same
call Django Channels users make.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from .core import ChannelFull, ChannelLayer, LayerClosed, LayerOptions, LayerStats, Message, Receiver
from .memory import MemoryStorage
from .names import InvalidName, check_channel_name, check_group_name

__all__ = [
    "ChannelFull",
    "ChannelLayer",
    "InvalidName",
    "LayerClosed",
    "LayerOptions",
    "LayerStats",
    "MemoryStorage",
    "Message",
    "Receiver",
    "build_layer",
    "check_channel_name",
    "check_group_name",
    "get_channel_layer",
    "set_channel_layer",
]

_BACKENDS = {
    "memory": "switchboard.gateway.layers.memory:MemoryStorage",
    "redis": "switchboard.gateway.layers.redis:RedisStorage",
}

_current: ChannelLayer | None = None


def build_layer(config: Mapping[str, Any] | None = None) -> ChannelLayer:
    """Build a layer from ``{"BACKEND": "memory"|"redis"|"dotted.path:Class", "CONFIG": {...}}``.

    ``CONFIG`` keys that are :class:`LayerOptions` fields tune the core; the rest go to the
    storage backend (e.g. ``hosts`` for Redis).
    """
    config = dict(config or {})
    backend = str(config.get("BACKEND", "memory"))
    options = dict(config.get("CONFIG", {}))
    path = _BACKENDS.get(backend, backend)
    module_name, _, attr = path.partition(":")
    storage_class = getattr(importlib.import_module(module_name), attr)
    core_names = {f.name for f in fields(LayerOptions)}
    core = {k: v for k, v in options.items() if k in core_names}
    rest = {k: v for k, v in options.items() if k not in core_names}
    return ChannelLayer(storage_class(**rest), LayerOptions(**core))


def set_channel_layer(layer: ChannelLayer | None) -> None:
    """Install ``layer`` as this process's layer (the gateway and worker do this)."""
    global _current
    _current = layer


def get_channel_layer() -> ChannelLayer:
    """The process-wide layer: the one installed, else one built from settings."""
    global _current
    if _current is None:
        from ..config import layer_config_from_settings

        _current = build_layer(layer_config_from_settings())
    return _current
