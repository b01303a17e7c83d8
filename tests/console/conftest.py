"""Fixtures for the console tests: an in-process ``switchboard run`` with the console mounted.

Django is configured here exactly as the other unit-test directories do it (no apps, an
in-memory SQLite database), so whichever directory's conftest runs first, the settings are
the same. The in-process stack runs the real CLI wiring (``cli._run_both``) on the test's
loop and is reached over real sockets: urllib and http.client for HTTP and the event
streams, the ``websockets`` client for WebSockets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from support.django_settings import configure as configure_django

configure_django()

from console_helpers import Stack, run_stack
from support.processes import pytest_runtest_makereport as pytest_runtest_makereport


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    async with run_stack() as running:
        yield running
