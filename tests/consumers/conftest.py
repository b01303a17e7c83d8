"""Fixtures for the consumer tests: Django settings, an in-memory layer, app runners.

Django is configured here (not via DJANGO_SETTINGS_MODULE) so these tests run alone or
alongside the rest of the suite without any project on the path.
"""

from __future__ import annotations

from typing import Any

import pytest
from support.django_settings import configure as configure_django

configure_django()

from support.asgi_app import AppRunner as AppRunner
from support.asgi_app import layer as layer
from support.asgi_app import run_app as run_app


def websocket_scope(path: str = "/ws/", reply_channel: str | None = None, **extra: Any) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "websocket",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "subprotocols": [],
    }
    if reply_channel is not None:
        scope["reply_channel"] = reply_channel
    scope.update(extra)
    return scope


def http_scope(path: str = "/", method: str = "GET", reply_channel: str | None = None, **extra: Any) -> dict[str, Any]:
    scope: dict[str, Any] = {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
    }
    if reply_channel is not None:
        scope["reply_channel"] = reply_channel
    scope.update(extra)
    return scope


@pytest.fixture
def ws_scope() -> Any:
    return websocket_scope


@pytest.fixture
def web_scope() -> Any:
    return http_scope
