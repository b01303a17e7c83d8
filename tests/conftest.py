"""What every suite shares at the pytest level: the per-test timeout follows the one knob.

``SWITCHBOARD_TEST_TIMEOUT_SCALE`` scales every deadline a test waits on
(:mod:`support.waiting`); the per-test timeout of pytest-timeout (``timeout`` in
pyproject.toml, or a test's ``@pytest.mark.timeout``) is the outermost of those deadlines,
so it is scaled by the same knob. Left at 1, nothing changes.
"""

from __future__ import annotations

import pytest
from support.waiting import deadline


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if deadline(1) == 1:
        return
    try:
        default = float(config.getini("timeout") or 0)
    except ValueError:  # pytest-timeout not installed: no per-test timeout to scale
        return
    for item in items:
        marker = item.get_closest_marker("timeout")
        seconds = float(marker.args[0]) if marker is not None and marker.args else default
        if seconds > 0:
            # In front of any other timeout marker: pytest-timeout reads the closest one.
            item.add_marker(pytest.mark.timeout(deadline(seconds)), append=False)
