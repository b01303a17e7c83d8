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

from support.layers import installed_layer

from switchboard.gateway.layers import ChannelLayer


@pytest.fixture
async def memory_layer() -> AsyncIterator[ChannelLayer]:
    """A fresh in-memory layer installed as the process layer for one test."""
    async with installed_layer() as layer:
        yield layer
