"""``manage.py check`` reports bad Switchboard settings; rungateway/runworker take every CLI option."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.management import CommandError
from django.test import override_settings

from switchboard.checks import check_switchboard_settings
from switchboard.management.commands import rungateway, runworker


def ids(settings: dict[str, Any]) -> list[str]:
    with override_settings(**settings):
        return [message.id or "" for message in check_switchboard_settings()]


def test_valid_settings_pass() -> None:
    assert ids({"SWITCHBOARD": {"PROTOCOLS": {"http": {"bind": ["127.0.0.1:8000"]}}}}) == []


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"SWITCHBOARD": {"PROTOCOLZ": {}}}, ["switchboard.E001"]),
        ({"SWITCHBOARD": {"PROTOCOLS": {"gopher": {}}}}, ["switchboard.E002"]),
        ({"SWITCHBOARD": {"PROTOCOLS": {"http": {"bnd": ["127.0.0.1:1"]}}}}, ["switchboard.E003"]),
        ({"SWITCHBOARD": {"PROTOCOLS": {"udp": {"bind": "nonsense"}}}}, ["switchboard.E003"]),
        ({"SWITCHBOARD": {"LAYER": {"BACKEND": "redis", "CONFIG": {"hosts": ["localhost:6379"]}}}}, ["switchboard.E004"]),
        ({"SWITCHBOARD": {}, "CHANNEL_LAYERS": {"default": {"BACKEND": "nowhere.Layer"}}}, ["switchboard.E004"]),
        ({"SWITCHBOARD": {"APPLICATION": "no_such_module.application"}}, ["switchboard.E005"]),
        (
            {
                "SWITCHBOARD": {"LAYER": {"BACKEND": "memory"}},
                "CHANNEL_LAYERS": {"default": {"BACKEND": "switchboard.layers.InMemoryChannelLayer"}},
            },
            ["switchboard.W001"],
        ),
    ],
)
def test_problems_have_check_ids(settings: dict[str, Any], expected: list[str]) -> None:
    assert ids(settings) == expected


@pytest.fixture
def executed(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    """What the commands hand to the CLI's ``execute()`` (the CLI itself is tested elsewhere).

    The parsed options go over as they are, not as a command line rebuilt from them: a
    rebuilt one cannot say ``--bind`` twice, ``--no-access-log`` or a typed ``--set``.
    """
    calls: list[tuple[str, dict[str, Any]]] = []

    def execute(command: str, args: Any, argv: Any = None) -> int:
        calls.append((command, vars(args)))
        return 0

    monkeypatch.setattr("switchboard.gateway.cli.execute", execute)
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "mysite.settings")
    return calls


def run(command_module: Any, *args: str) -> None:
    command = command_module.Command()
    parser = command.create_parser("manage.py", command_module.__name__.rsplit(".", 1)[-1])
    options = vars(parser.parse_args(list(args)))
    options["skip_checks"] = True  # the project checks are another test's; other suites' apps may linger
    with pytest.raises(SystemExit) as exited:
        command.execute(*options.pop("args", ()), **options)
    assert exited.value.code == 0


def test_runworker_takes_every_worker_option(executed: list[tuple[str, dict[str, Any]]]) -> None:
    """Regression: ``runworker --log-level DEBUG`` failed (Django did not know the option)."""
    run(runworker, "--log-level", "DEBUG", "--log-format", "json", "--metrics-bind", "off",
        "--set", "worker.drain_timeout=5", "thumbnails", "reports")
    ((command, options),) = executed
    assert command == "worker"
    assert (options["log_level"], options["log_format"], options["metrics_bind"]) == ("DEBUG", "json", "off")
    assert options["overrides"] == [(["worker", "drain_timeout"], 5)]
    assert options["channels"] == ["thumbnails", "reports"]


def test_rungateway_takes_every_gateway_option(executed: list[tuple[str, dict[str, Any]]]) -> None:
    run(rungateway, "--config", "switchboard.toml", "--log-level", "WARNING", "--bind", "127.0.0.1:1",
        "--bind", "[::1]:1", "--no-access-log")
    ((command, options),) = executed
    assert command == "gateway"
    assert (options["config"], options["log_level"], options["access_log"]) == ("switchboard.toml", "WARNING", False)
    assert options["bind"] == ["127.0.0.1:1", "[::1]:1"]
    with pytest.raises((CommandError, SystemExit)):
        run(rungateway, "--no-such-option")
