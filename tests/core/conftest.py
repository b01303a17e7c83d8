"""Fixtures shared by the core tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from switchboard.gateway.layers import ChannelLayer, build_layer, set_channel_layer


@pytest.fixture
async def layer() -> AsyncIterator[ChannelLayer]:
    """The process-wide in-memory layer, with short blocking reads so workers stop fast.

    (test_gateway_worker.py keeps its own, with the default block timeout.)
    """
    layer = build_layer({"CONFIG": {"block_timeout": 0.05}})
    set_channel_layer(layer)
    yield layer
    set_channel_layer(None)
    await layer.close()
