"""``manage.py check`` reports bad Switchboard settings; rungateway/runworker take every CLI option."""

from __future__ import annotations

import os
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
def captured_argv(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """What the commands hand to ``switchboard``'s main() (the CLI itself is tested elsewhere)."""
    calls: list[list[str]] = []

    def main(argv: list[str]) -> int:
        calls.append(argv)
        return 0

    monkeypatch.setattr("switchboard.gateway.cli.main", main)
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


def test_runworker_takes_every_worker_option(captured_argv: list[list[str]]) -> None:
    """Regression: ``runworker --log-level DEBUG`` failed (Django did not know the option)."""
    run(runworker, "--log-level", "DEBUG", "--log-format", "json", "--metrics-bind", "off", "thumbnails", "reports")
    assert captured_argv == [
        ["worker", "--settings", "mysite.settings", "--log-level", "DEBUG", "--log-format", "json", "--metrics-bind", "off",
         "thumbnails", "reports"]
    ]  # fmt: skip


def test_rungateway_takes_every_gateway_option(captured_argv: list[list[str]]) -> None:
    run(rungateway, "--config", "switchboard.toml", "--log-level", "WARNING")
    expected = ["gateway", "--settings", "mysite.settings", "--config", "switchboard.toml", "--log-level", "WARNING"]
    assert captured_argv == [expected]
    with pytest.raises((CommandError, SystemExit)):
        run(rungateway, "--no-such-option")
    assert os.environ["DJANGO_SETTINGS_MODULE"] == "mysite.settings"
