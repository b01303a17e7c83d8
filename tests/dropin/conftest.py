"""Fixtures for the drop-in (Channels API) tests: Django settings as the other unit suites.

Django is configured here exactly as the other unit-test directories do it, so whichever
directory's conftest runs first, the settings are the same; what a test needs beyond
that (CHANNEL_LAYERS, SWITCHBOARD) it sets with ``override_settings``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from support.django_settings import configure as configure_django

configure_django()

from switchboard.gateway.layers import ChannelLayer, build_layer, set_channel_layer


@pytest.fixture
async def memory_layer() -> AsyncIterator[ChannelLayer]:
    """A fresh in-memory layer installed as the process layer for one test."""
    layer = build_layer({"BACKEND": "memory", "CONFIG": {"block_timeout": 0.05}})
    set_channel_layer(layer)
    try:
        yield layer
    finally:
        set_channel_layer(None)
        await layer.close()
