"""Fixtures shared by the core tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from support.layers import installed_layer

from switchboard.gateway.layers import ChannelLayer


@pytest.fixture
async def layer() -> AsyncIterator[ChannelLayer]:
    """The process-wide in-memory layer, with short blocking reads so workers stop fast.

    (test_gateway_worker.py keeps its own, with the default block timeout.)
    """
    async with installed_layer() as layer:
        yield layer
