"""Django settings for the in-process test suites: one definition, configured once.

pytest runs every suite in one process, and Django can be configured only once per
process: whichever suite's conftest is imported first decides the settings for all of
them. So every suite's conftest calls :func:`configure` with the same base settings, and
the order in which suites run (``pytest tests/auth tests/observability`` or the reverse)
cannot change what any test sees. What a test needs beyond the base (apps such as auth and
sessions, ``CHANNEL_LAYERS``, ``SWITCHBOARD``) it switches on with ``override_settings``.

Settings modules of the OS-process deployments (``*_settings.py`` beside the suites) are
another matter: each process loads its own, and they stay where they are.
"""

from __future__ import annotations

from typing import Any

import django
from django.conf import settings

__all__ = ["base_settings", "configure"]


def base_settings(**overrides: Any) -> dict[str, Any]:
    """The settings every in-process suite shares, with ``overrides`` on top.

    No apps and an in-memory SQLite database: a test that needs models installs them and
    creates the test database itself (tests/auth does), so no suite pays for it otherwise.
    """
    values: dict[str, Any] = {
        "DEBUG": False,
        "SECRET_KEY": "switchboard-tests",
        "INSTALLED_APPS": [],
        "DATABASES": {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        "USE_TZ": True,
    }
    values.update(overrides)
    return values


def configure(**overrides: Any) -> None:
    """Configure Django with :func:`base_settings` unless a suite imported earlier did.

    ``overrides`` exist for a suite that truly needs other process-wide settings; because
    the first suite to run wins, they must agree with what is configured already, or the
    result would depend on the order of the command line. A disagreement fails loudly here
    (use ``override_settings`` in the tests instead) rather than silently in a test.
    """
    wanted = base_settings(**overrides)
    if not settings.configured:
        settings.configure(**wanted)
        django.setup()
        return
    differ = sorted(name for name in overrides if getattr(settings, name, None) != wanted[name])
    if differ:
        raise RuntimeError(
            f"Django is already configured with other values for {', '.join(differ)}: another suite ran first. "
            "Switch them on per test with django.test.override_settings instead."
        )
