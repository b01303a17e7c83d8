"""Channels' import path ``channels.exceptions``: every exception a Channels app catches or raises.

The layer's exceptions are the layer's own classes (``ChannelFull`` is what ``send``
raises), so catching them here catches them everywhere.
"""

from switchboard.consumers.exceptions import (
    AcceptConnection,
    DenyConnection,
    MessageTooLarge,
    RequestAborted,
    RequestTimeout,
    RouteNotFound,
    StopConsumer,
)
from switchboard.gateway.layers.aliases import InvalidChannelLayerError
from switchboard.gateway.layers.core import ChannelFull
from switchboard.gateway.layers.names import InvalidName

__all__ = [
    "AcceptConnection",
    "ChannelFull",
    "DenyConnection",
    "InvalidChannelLayerError",
    "InvalidName",
    "MessageTooLarge",
    "RequestAborted",
    "RequestTimeout",
    "RouteNotFound",
    "StopConsumer",
]
