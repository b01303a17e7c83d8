"""Configuration parsing and plugin loading: bad config fails at start-up with a clear message."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from switchboard.gateway.config import ConfigError, from_mapping, from_toml, parse_bind, parse_options
from switchboard.gateway.plugins import build_plugins, load_plugin_class


@dataclass
class Options:
    bind: list[str] = field(default_factory=lambda: ["127.0.0.1:1"])
    size: int = 10
    timeout: float = 1.5
    name: str | None = None
    flag: bool = False


def test_parse_options_coerces_and_defaults() -> None:
    options = parse_options(Options, {"bind": "0.0.0.0:9", "timeout": 2, "name": "x"}, where="P.t")
    assert options == Options(bind=["0.0.0.0:9"], size=10, timeout=2.0, name="x", flag=False)


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"sise": 1}, "unknown option(s) sise"),
        ({"size": "10"}, "P.t.size: expected an integer"),
        ({"size": True}, "expected an integer"),
        ({"timeout": "soon"}, "expected a number"),
        ({"flag": "yes"}, "expected true or false"),
        ({"bind": [1]}, "P.t.bind[0]: expected a string"),
    ],
)
def test_parse_options_rejects_bad_values_naming_the_key(raw: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=None) as error:
        parse_options(Options, raw, where="P.t")
    assert fragment in str(error.value)


def test_parse_bind() -> None:
    assert parse_bind("127.0.0.1:80", where="x") == ("127.0.0.1", 80)
    assert parse_bind("[::1]:8000", where="x") == ("::1", 8000)
    assert parse_bind(":8000", where="x") == ("0.0.0.0", 8000)
    for bad in ("nope", "host:port", "h:70000"):
        with pytest.raises(ConfigError):
            parse_bind(bad, where="x")


def test_mapping_rejects_unknown_top_level_keys() -> None:
    with pytest.raises(ConfigError, match=r"unknown SWITCHBOARD keys: PROTOCOL"):
        from_mapping({"PROTOCOL": {}})


def test_toml_config(tmp_path: Path) -> None:
    path = tmp_path / "switchboard.toml"
    path.write_text(
        'application = "site.routing.application"\n'
        '[layer]\nbackend = "redis"\n[layer.config]\nhosts = ["redis://127.0.0.1:6379/0"]\n'
        '[protocols.http]\nbind = ["127.0.0.1:8000"]\n'
    )
    config = from_toml(path)
    assert config.application == "site.routing.application"
    assert config.layer["BACKEND"] == "redis"
    assert config.layer["CONFIG"] == {"hosts": ["redis://127.0.0.1:6379/0"]}
    assert config.protocols == {"http": {"bind": ["127.0.0.1:8000"]}}


def test_toml_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[protocols\n")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        from_toml(path)


def test_unknown_plugin_lists_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown protocol plugin 'carrier-pigeon'.*http"):
        load_plugin_class("carrier-pigeon")


def test_build_plugins_validates_before_start() -> None:
    with pytest.raises(ConfigError, match=r"PROTOCOLS\.http"):
        build_plugins({"http": {"no_such_option": 1}})


def test_gateway_timeouts_are_settings() -> None:
    config = from_mapping({"GATEWAY": {"worker_timeout": 12, "claim_timeout": 0.5}})
    assert (config.gateway.worker_timeout, config.gateway.claim_timeout, config.gateway.drain_timeout) == (12.0, 0.5, 10.0)
    with pytest.raises(ConfigError, match=r"GATEWAY"):
        from_mapping({"GATEWAY": {"worker_timout": 1}})
    with pytest.raises(ConfigError, match=r"claim_timeout must be > 0"):
        from_mapping({"GATEWAY": {"claim_timeout": 0}})


async def test_run_gateway_builds_the_gateway_with_the_configured_timeouts() -> None:
    import asyncio

    from switchboard.gateway.layers import build_layer
    from switchboard.gateway.server import Gateway, run_gateway

    config = from_mapping({"GATEWAY": {"worker_timeout": 7, "claim_timeout": 1.5, "drain_timeout": 3}})
    seen: list[Gateway] = []
    stop = asyncio.Event()

    def started(gateway: Gateway, plugins: list[object]) -> None:
        seen.append(gateway)
        stop.set()

    layer = build_layer()
    await run_gateway(config, layer=layer, stop=stop, started=started)
    await layer.close()
    (gateway,) = seen
    assert (gateway.worker_timeout, gateway.claim_timeout, gateway.drain_timeout) == (7.0, 1.5, 3.0)
