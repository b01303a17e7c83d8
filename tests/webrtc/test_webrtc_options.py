"""Options are validated before anything starts; start-up refuses what cannot work."""

from __future__ import annotations

from typing import Any

import pytest

from switchboard.gateway.config import ConfigError, parse_options
from switchboard.gateway.layers import ChannelLayer
from switchboard.gateway.plugins import build_plugins, load_plugin_class
from switchboard.gateway.server import Gateway
from switchboard.protocols._webrtc_signaling import SignalingError, origin_headers, parse_offer
from switchboard.protocols.webrtc import WebrtcOptions, WebrtcPlugin


def options(**raw: Any) -> WebrtcOptions:
    return parse_options(WebrtcOptions, raw, where="PROTOCOLS.webrtc")


def test_builtin_registry_finds_the_plugin() -> None:
    assert load_plugin_class("webrtc") is WebrtcPlugin
    (plugin,) = build_plugins({"webrtc": {}})
    assert plugin.name == "webrtc" and plugin.scope_types == ("webrtc",)
    defaults = plugin.options
    assert defaults.path == "/webrtc/offer" and defaults.ice_servers == [] and defaults.max_message_size == 65536


def test_defaults_never_contact_a_public_stun_server() -> None:
    # aiortc's own default (iceServers=None) is Google's STUN server.
    assert options().rtc_configuration().iceServers == []


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ({"path": "webrtc"}, "must start with '/'"),
        ({"path": "/webrtc/"}, "not end with '/'"),
        ({"max_peers": 0}, "max_peers must be at least 1"),
        ({"max_message_size": -1}, "max_message_size must be at least 1"),
        ({"connect_timeout": 0}, "connect_timeout must be a positive"),
        ({"peer_idle_timeout": -5}, "peer_idle_timeout must be a positive"),
        ({"ice_host_addresses": ["localhost"]}, "not an IP address literal"),
        ({"ice_host_addresses": []}, "at least one address"),
        ({"ice_servers": [{"url": "stun:x"}]}, "unknown key"),
        ({"ice_servers": [{"urls": "http://stun.example.com"}]}, "invalid scheme"),
        ({"ice_servers": [{"urls": []}]}, "non-empty list"),
        ({"ice_servers": [{"urls": "turn:turn.example.com"}]}, "needs a username and a credential"),
        ({"max_peer": 3}, "unknown option"),
        ({"max_peers": "3"}, "expected an integer"),
    ],
)
def test_bad_options_are_config_errors(raw: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        options(**raw)


def test_good_ice_servers() -> None:
    parsed = options(
        ice_servers=[
            {"urls": "stun:stun.example.com:3478"},
            {"urls": ["turn:turn.example.com?transport=tcp"], "username": "u", "credential": "p"},
        ]
    )
    servers = parsed.rtc_configuration().iceServers
    assert servers is not None and [s.username for s in servers] == [None, "u"]


async def test_start_refuses_without_the_http_plugin(layer: ChannelLayer) -> None:
    gateway = Gateway(layer)
    plugin = WebrtcPlugin(options())
    gateway.plugins = [plugin]  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="needs the http plugin"):
        await plugin.start(gateway)
    assert gateway.find_mount("/webrtc/offer") is None


async def test_start_refuses_a_path_already_mounted(layer: ChannelLayer) -> None:
    gateway = Gateway(layer)
    gateway.mount("/webrtc/offer", object(), owner="sms")
    with pytest.raises(ConfigError, match="sms has it"):
        await WebrtcPlugin(options()).start(gateway)


def test_parse_offer() -> None:
    assert parse_offer(b'{"type": "offer", "sdp": "v=0"}') == "v=0"
    for bad in (b"", b"null", b'{"type": "offer", "sdp": 5}', b'{"type": "offer", "sdp": "  "}'):
        with pytest.raises(SignalingError) as info:
            parse_offer(bad)
        assert info.value.status == 400


def cors(origin: bytes) -> list[tuple[bytes, bytes]]:
    return [(b"access-control-allow-origin", origin), (b"vary", b"origin")]


@pytest.mark.parametrize(
    ("headers", "allowed", "expected"),
    [
        ([], (), []),  # no Origin: not a browser
        ([(b"origin", b"http://gw:8000"), (b"host", b"gw:8000")], (), []),
        ([(b"origin", b"http://GW:8000"), (b"host", b"gw:8000")], (), []),
        ([(b"origin", b"http://gw:8001"), (b"host", b"gw:8000")], (), None),
        ([(b"origin", b"null"), (b"host", b"gw:8000")], (), None),
        ([(b"origin", b"https://a.example"), (b"host", b"gw")], ("https://a.example",), cors(b"https://a.example")),
        ([(b"origin", b"https://b.example"), (b"host", b"gw")], ("*",), cors(b"https://b.example")),
    ],
)
def test_origin_policy(headers: list[tuple[bytes, bytes]], allowed: tuple[str, ...], expected: Any) -> None:
    assert origin_headers({"headers": headers}, allowed) == expected
