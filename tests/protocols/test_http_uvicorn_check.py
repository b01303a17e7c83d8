"""The start-up check of the uvicorn the HTTP plugin builds on (protocols/_http_uvicorn.py)."""

from __future__ import annotations

import pytest

from switchboard.gateway.config import ConfigError, parse_options
from switchboard.protocols import _http_uvicorn
from switchboard.protocols.http import HttpOptions


def test_the_installed_uvicorn_has_what_the_plugin_needs() -> None:
    _http_uvicorn.check_uvicorn()  # raises UvicornMismatch naming what is missing


def test_a_uvicorn_without_what_the_plugin_needs_stops_start_up_with_one_clear_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _http_uvicorn.check_uvicorn.cache_clear()
    monkeypatch.setitem(
        _http_uvicorn.REQUIRED_ATTRIBUTES, "WebSocketsSansIOProtocol", ("conn", "attribute_no_uvicorn_has")
    )
    monkeypatch.setitem(_http_uvicorn.REQUIRED_METHODS, "Server", ("startup", "method_no_uvicorn_has"))
    try:
        with pytest.raises(ConfigError) as refused:
            parse_options(HttpOptions, {"bind": ["127.0.0.1:0"]}, where="PROTOCOLS.http")
    finally:
        _http_uvicorn.check_uvicorn.cache_clear()
    text = str(refused.value)
    assert "PROTOCOLS.http" in text and "lacks what the http plugin needs" in text
    assert "WebSocketsSansIOProtocol.attribute_no_uvicorn_has" in text and "Server.method_no_uvicorn_has()" in text
    assert "\n" not in text
