"""The shared option parser and how overrides change a configuration (in-process, no sockets)."""

from __future__ import annotations

import argparse

import pytest

from switchboard.gateway import banner, logs
from switchboard.gateway.config import ConfigError, from_mapping
from switchboard.gateway.layers import build_layer
from switchboard.gateway.options import add_options, apply_overrides, build_parser, parse_value


def parse(*argv: str) -> argparse.Namespace:
    return build_parser("test").parse_args(list(argv))


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("8000", 8000),
        ("2.5", 2.5),
        ("true", True),
        ('["127.0.0.1:1", "[::1]:2"]', ["127.0.0.1:1", "[::1]:2"]),
        ('"quoted text"', "quoted text"),
        ("127.0.0.1:9999", "127.0.0.1:9999"),  # not TOML: the text itself
        ("mqtt://broker:1883", "mqtt://broker:1883"),
        ("none", None),
        ("NULL", None),
        ("", ""),
    ],
)
def test_set_values_read_as_toml_then_text(raw: str, value: object) -> None:
    assert parse_value(raw) == value


def test_bind_flags_replace_the_plugins_binds_and_enable_a_missing_plugin() -> None:
    config = from_mapping({"PROTOCOLS": {"http": {"bind": ["127.0.0.1:8000"], "max_body_size": 5}}})
    args = parse("gateway", "--bind", "0.0.0.0:8080", "--bind", "[::1]:8080", "--udp-bind", "127.0.0.1:9998",
                 "--smtp-bind", "127.0.0.1:2526")
    apply_overrides(config, args, "gateway")
    assert config.protocols["http"] == {"bind": ["0.0.0.0:8080", "[::1]:8080"], "max_body_size": 5}
    assert config.protocols["udp"] == {"bind": ["127.0.0.1:9998"]}
    assert config.protocols["smtp"] == {"bind": "127.0.0.1:2526"}


def test_set_changes_any_section_in_order_and_the_dedicated_flags_win() -> None:
    config = from_mapping({"PROTOCOLS": {"http": {}, "mqtt": {"tls": {"ca_file": "a"}}}, "WORKER": {"mine": 1}})
    args = parse(
        "run",
        "--set", "protocols.http.bind=127.0.0.1:1",
        "--set", "protocols.http.max_body_size=10",
        "--set", "protocols.http.max_body_size=20",
        "--set", "protocols.mqtt.tls.ca_file=b",
        "--set", "worker.drain_timeout=3",
        "--set", "gateway.claim_timeout=0.5",
        "--set", "metrics.bind=127.0.0.1:9100",
        "--bind", "127.0.0.1:2",
    )
    apply_overrides(config, args, "run")
    assert config.protocols["http"]["bind"] == ["127.0.0.1:2"]
    assert config.protocols["http"]["max_body_size"] == 20
    assert config.protocols["mqtt"] == {"tls": {"ca_file": "b"}}
    assert config.worker == {"mine": 1, "drain_timeout": 3}
    assert config.gateway.claim_timeout == 0.5 and config.gateway.drain_timeout == 10.0
    assert config.metrics.bind == "127.0.0.1:9100"


def test_set_refuses_unknown_worker_options_and_bad_values() -> None:
    with pytest.raises(ConfigError, match=r"--set worker\.nope: unknown option nope"):
        apply_overrides(from_mapping({}), parse("run", "--set", "worker.nope=1"), "run")
    with pytest.raises(ConfigError, match=r"GATEWAY\.worker_timeout: expected a number"):
        apply_overrides(from_mapping({}), parse("run", "--set", "gateway.worker_timeout=soon"), "run")
    with pytest.raises(ConfigError, match="not a table"):
        apply_overrides(from_mapping({"PROTOCOLS": {"mqtt": {"tls": 1}}}), parse("run", "--set", "protocols.mqtt.tls.x=1"), "run")


@pytest.mark.parametrize(
    ("command", "configured", "flag", "expected"),
    [
        ("run", {}, [], True),  # a development server shows its requests
        ("run", {"access_log": False}, [], False),  # unless the settings say otherwise
        ("run", {}, ["--no-access-log"], False),
        ("gateway", {}, [], None),  # the plugin's default (off)
        ("gateway", {}, ["--access-log"], True),
        ("gateway", {"access_log": True}, ["--no-access-log"], False),
    ],
)
def test_access_log_is_on_in_run_unless_configured(command: str, configured: dict[str, bool], flag: list[str],
                                                   expected: bool | None) -> None:
    config = from_mapping({"PROTOCOLS": {"http": dict(configured)}})
    apply_overrides(config, parse(command, *flag), command)
    assert config.protocols["http"].get("access_log") == expected


def test_one_parser_serves_the_cli_and_the_management_commands() -> None:
    """What `manage.py rungateway` adds: the same options, without --settings/--pythonpath (Django's)."""
    for command in ("gateway", "worker"):
        cli, management = argparse.ArgumentParser(), argparse.ArgumentParser()
        add_options(cli, command)
        add_options(management, command, django=True)
        names = {action.dest for action in cli._actions}
        assert {action.dest for action in management._actions} == names - {"settings", "pythonpath"}
        assert {"bind", "overrides", "log_level", "metrics_bind"} & names


def test_banner_layer_line_masks_passwords() -> None:
    logs.register_secrets([])
    layer = build_layer({"BACKEND": "redis", "CONFIG": {"hosts": ["redis://default:s3cret-pw@127.0.0.1:6379/7"], "prefix": "p:"}})
    text = banner.layer_text(layer)
    assert text == "redis redis://default:***@127.0.0.1:6379/7 (key prefix 'p:')"
    assert banner.layer_text(build_layer({"BACKEND": "memory"})) == "in-memory (this process only)"


def test_pwd_is_not_taken_for_a_password() -> None:
    # The shell's working directory is named like a secret ("pwd"); masking it masked
    # every path under the project in tracebacks.
    assert logs.environment_secrets({"PWD": "/home/me/site", "OLDPWD": "/home/me", "DB_PWD": "hunter22"}) == {"hunter22"}
