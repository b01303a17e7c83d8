"""A channel layer installed as the process layer for one test: one helper for every suite.

Consumers, ``get_channel_layer()`` and the plugins' in-process stacks all reach the layer
installed with ``set_channel_layer``; a test that builds its own must install it, and
uninstall and close it afterwards, or the next test inherits a closed layer. Each
suite's ``layer`` fixture is this helper with the configuration it needs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from switchboard.gateway.layers import ChannelLayer, build_layer, set_channel_layer

__all__ = ["MEMORY", "installed_layer"]

#: The in-memory layer with short blocking reads, so workers and readers stop fast.
MEMORY: dict[str, Any] = {"BACKEND": "memory", "CONFIG": {"block_timeout": 0.05}}


@asynccontextmanager
async def installed_layer(config: Mapping[str, Any] | None = None) -> AsyncIterator[ChannelLayer]:
    """A fresh layer built from ``config`` (:data:`MEMORY` by default), installed as the
    process layer while the block runs, then uninstalled and closed."""
    layer = build_layer(dict(MEMORY if config is None else config))
    set_channel_layer(layer)
    try:
        yield layer
    finally:
        set_channel_layer(None)
        await layer.close()
