"""Channels' import path ``channels.layers``: layers by alias and the layer classes.

``get_channel_layer()`` is the process's layer (the one its gateway or worker runs on);
``get_channel_layer("alias")`` another ``CHANNEL_LAYERS`` entry, None if there is none.
See :mod:`switchboard.gateway.layers.aliases` for how settings are read.
"""

from switchboard.gateway.layers.aliases import (
    DEFAULT_CHANNEL_LAYER,
    ChannelLayerManager,
    InvalidChannelLayerError,
    channel_layers,
    get_channel_layer,
)
from switchboard.gateway.layers.base import BaseChannelLayer
from switchboard.gateway.layers.compat import InMemoryChannelLayer
from switchboard.gateway.layers.core import ChannelFull, ChannelLayer

__all__ = [
    "DEFAULT_CHANNEL_LAYER",
    "BaseChannelLayer",
    "ChannelFull",
    "ChannelLayer",
    "ChannelLayerManager",
    "InMemoryChannelLayer",
    "InvalidChannelLayerError",
    "channel_layers",
    "get_channel_layer",
]
