"""Layers by alias: ``CHANNEL_LAYERS`` as Channels reads it, and Switchboard's own setting.

A process has one layer its gateway and worker run on: the ``"default"`` alias. It comes
from ``SWITCHBOARD["LAYER"]`` when that is set, else from ``CHANNEL_LAYERS["default"]``,
else the in-memory layer. Other ``CHANNEL_LAYERS`` aliases are built on first use, as
Channels builds them, for code that names them (``get_channel_layer("analytics")``,
``channel_layer_alias = "analytics"``).

A ``BACKEND`` is either Switchboard's short form (``"memory"``, ``"redis"``, or
``"module:StorageClass"``; ``CONFIG`` split between the layer and its storage) or, as in
Channels, the dotted path of a layer class built with ``CONFIG`` as keyword arguments.
Channels' and channels_redis's class paths name Switchboard's layers of the same API
(``layers/compat.py``), whether or not those packages are installed: the gateway must run
on a Switchboard layer, and a project's settings should not have to change to get one.

The cache of built layers is dropped when ``CHANNEL_LAYERS`` or ``SWITCHBOARD`` changes
(``override_settings`` in tests), as Channels' is.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, overload

if TYPE_CHECKING:
    from .core import ChannelLayer

DEFAULT_CHANNEL_LAYER = "default"

_COMPAT = "switchboard.gateway.layers.compat"
#: Class paths of Channels and channels_redis (and their renamed Switchboard paths) -> ours.
KNOWN_BACKENDS = {
    "channels.layers.InMemoryChannelLayer": f"{_COMPAT}.InMemoryChannelLayer",
    "switchboard.layers.InMemoryChannelLayer": f"{_COMPAT}.InMemoryChannelLayer",
    "channels_redis.core.RedisChannelLayer": f"{_COMPAT}.RedisChannelLayer",
    "switchboard_redis.core.RedisChannelLayer": f"{_COMPAT}.RedisChannelLayer",
    "channels_redis.pubsub.RedisPubSubChannelLayer": f"{_COMPAT}.RedisPubSubChannelLayer",
    "switchboard_redis.pubsub.RedisPubSubChannelLayer": f"{_COMPAT}.RedisPubSubChannelLayer",
}


class InvalidChannelLayerError(ValueError):
    """A ``CHANNEL_LAYERS`` entry cannot be used (no BACKEND, not importable, no TEST_CONFIG)."""


def is_short_form(backend: str) -> bool:
    """``"memory"``, ``"redis"`` or ``"module:Storage"``: Switchboard's own backend names."""
    return backend in ("memory", "redis") or ":" in backend


def import_backend(path: str) -> Any:
    """The class a dotted ``BACKEND`` names (Channels' and channels_redis's map to ours)."""
    path = KNOWN_BACKENDS.get(path, path)
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise InvalidChannelLayerError(f"BACKEND {path!r} is not a dotted path to a layer class")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidChannelLayerError(f"Cannot import BACKEND {path!r}: {exc}") from exc
    try:
        return getattr(module, attr)
    except AttributeError:
        raise InvalidChannelLayerError(f"Cannot import BACKEND {path!r}: {module_name} has no {attr}") from None


def make_layer(entry: Mapping[str, Any], config_key: str = "CONFIG", *, name: str = DEFAULT_CHANNEL_LAYER) -> Any:
    """Build the layer a settings entry (``{"BACKEND": ..., "CONFIG": {...}}``) describes."""
    if not isinstance(entry, Mapping):
        raise InvalidChannelLayerError(f"channel layer {name!r} must be a mapping, not {type(entry).__name__}")
    entry = {str(key).upper(): value for key, value in entry.items()}
    if "ROUTING" in entry:
        raise InvalidChannelLayerError(f"ROUTING key found for {name}: routing belongs in the ASGI application now")
    backend = entry.get("BACKEND", "memory")
    if not isinstance(backend, str):
        raise InvalidChannelLayerError(f"BACKEND of {name!r} must be a string")
    config = dict(entry.get(config_key) or {})
    if is_short_form(backend):
        from . import build_layer

        return build_layer({"BACKEND": backend, "CONFIG": config})
    return import_backend(backend)(**config)


def settings_configs() -> dict[str, Any]:
    """Every configured alias: ``CHANNEL_LAYERS``, with ``SWITCHBOARD["LAYER"]`` as default."""
    try:
        from django.conf import settings

        configured = settings.configured
    except ImportError:  # pragma: no cover - Django is a dependency
        configured = False
    configs: dict[str, Any] = {}
    if configured:
        configs.update(getattr(settings, "CHANNEL_LAYERS", None) or {})
        switchboard = {str(key).upper(): value for key, value in (getattr(settings, "SWITCHBOARD", None) or {}).items()}
        if switchboard.get("LAYER"):
            configs[DEFAULT_CHANNEL_LAYER] = switchboard["LAYER"]
    configs.setdefault(DEFAULT_CHANNEL_LAYER, {"BACKEND": "memory"})
    return configs


class ChannelLayerManager:
    """Channels' ``channel_layers``: builds each alias's layer on first use and keeps it."""

    def __init__(self) -> None:
        self.backends: dict[str, Any] = {}
        try:
            from django.core.signals import setting_changed

            setting_changed.connect(self._reset_backends)
        except ImportError:  # pragma: no cover
            pass

    def _reset_backends(self, setting: str, **kwargs: Any) -> None:
        if setting in ("CHANNEL_LAYERS", "SWITCHBOARD"):
            self.backends = {}

    @property
    def configs(self) -> dict[str, Any]:
        return settings_configs()

    def make_backend(self, name: str) -> Any:
        return make_layer(self.configs[name], name=name)

    def make_test_backend(self, name: str) -> Any:
        """The alias's layer built from its ``TEST_CONFIG`` (InvalidChannelLayerError without one)."""
        entry = self.configs[name]
        if "TEST_CONFIG" not in entry:
            raise InvalidChannelLayerError(f"No TEST_CONFIG specified for {name}")
        return make_layer(entry, "TEST_CONFIG", name=name)

    def __getitem__(self, name: str) -> Any:
        if name not in self.backends:
            self.backends[name] = self.make_backend(name)
        return self.backends[name]

    def __contains__(self, name: object) -> bool:
        return name in self.configs

    def set(self, name: str, layer: Any) -> Any:
        """Replace alias ``name``'s layer (tests swap one in); returns the one it replaced."""
        old = self.backends.get(name)
        self.backends[name] = layer
        return old


channel_layers = ChannelLayerManager()

#: The layer a gateway or worker process runs on, installed by it (``set_channel_layer``):
#: the default alias is that layer, whatever settings say, for as long as it is installed.
_installed: ChannelLayer | None = None


def set_channel_layer(layer: ChannelLayer | None) -> None:
    """Install ``layer`` as this process's default layer (the gateway and worker do this)."""
    global _installed
    _installed = layer


def installed_layer() -> ChannelLayer | None:
    return _installed


@overload
def get_channel_layer() -> ChannelLayer: ...


@overload
def get_channel_layer(alias: str) -> Any: ...


def get_channel_layer(alias: str = DEFAULT_CHANNEL_LAYER) -> Any:
    """The layer of ``alias``: the process's own for ``"default"``; None for an unknown alias."""
    if alias == DEFAULT_CHANNEL_LAYER and _installed is not None:
        return _installed
    if alias not in channel_layers:
        return None
    return channel_layers[alias]  # a backend's own errors (even a KeyError) are not hidden
