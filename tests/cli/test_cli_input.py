"""Bad command lines and impossible set-ups: one clear line on stderr, exit code 2, no socket opened.

Each case runs ``python -m switchboard`` as a user would. The "no socket" cases run the
command line through a wrapper that reports every ``bind()`` the process makes, with a
metrics endpoint and every listener configured: a refusal must come before any of them.
"""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
from support.processes import redis_reachable
from support.waiting import deadline

from switchboard import __version__

from .conftest import HERE, REDIS_URL, cli_env, run_cli

# Runs the CLI with every bind() reported on stdout, so a test sees whether any socket opened.
BIND_SPY = """
import socket, sys
_bind = socket.socket.bind
def bind(self, address):
    print("BIND", address, flush=True)
    return _bind(self, address)
socket.socket.bind = bind
from switchboard.gateway.cli import main
sys.exit(main(sys.argv[1:]))
"""


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{text}"
    return lines[0]


def run_spied(*args: str, **env: str) -> tuple[int, str, str]:
    """``switchboard <args>`` through :data:`BIND_SPY`: exit code, stdout (with BIND lines), stderr."""
    result = subprocess.run(
        [sys.executable, "-c", BIND_SPY, *args],
        cwd=HERE, env=cli_env(**env), capture_output=True, text=True, timeout=deadline(60),
    )
    return result.returncode, result.stdout, result.stderr


def test_bare_command_prints_the_help_and_succeeds() -> None:
    result = run_cli()
    assert result.returncode == 0, result.stderr
    for command in ("run", "gateway", "worker", "status"):
        assert f"\n    {command} " in result.stdout
    assert result.stderr == ""


def test_version_names_switchboard_django_and_python() -> None:
    import django

    result = run_cli("--version")
    assert result.returncode == 0
    line = one_line(result.stdout)
    assert line.startswith(f"switchboard {__version__} (Django {django.get_version()}")
    assert f"Python {sys.version.split()[0]}" in line


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["run", "--bogus"], "unrecognized arguments: --bogus"),
        (["launch"], "invalid choice: 'launch'"),
        (["run", "--bind", "8000"], "argument --bind: bind '8000' must be host:port"),
        (["gateway", "--bind", "127.0.0.1:http"], "argument --bind: bind '127.0.0.1:http' has a bad port"),
        (["run", "--udp-bind", "127.0.0.1:70000"], "argument --udp-bind: bind '127.0.0.1:70000' port out of range"),
        (["run", "--set", "protocols.udp"], "must be SECTION.KEY=VALUE"),
        (["run", "--set", "layer.backend=redis"], "the first part must be one of protocols, worker, gateway, metrics"),
        (["worker", "--bind", "127.0.0.1:8000"], "unrecognized arguments: --bind"),
        (["run", "--log-level", "chatty"], "argument --log-level: invalid choice: 'CHATTY'"),
    ],
)
def test_bad_command_lines_are_one_line_and_exit_2(args: list[str], expected: str) -> None:
    code, stdout, stderr = run_spied(*args, "--settings", "cli_settings", "--metrics-bind", "127.0.0.1:0")
    assert code == 2
    line = one_line(stderr)
    assert line.startswith("switchboard") and expected in line, line
    assert "--help" in line
    assert "BIND" not in stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--set", "protocols.http.max_body_sise=1"], "PROTOCOLS.http: unknown option(s) max_body_sise; known: access_log,"),
        (["--set", "protocols.http.max_body_size=lots"], "PROTOCOLS.http.max_body_size: expected an integer, got 'lots'"),
        (["--set", "protocols.telnet.bind=127.0.0.1:23"], "unknown protocol plugin 'telnet'; known: http, "),
        (["--set", "worker.drain_timout=1"], "--set worker.drain_timout: unknown option drain_timout; known:"),
        (["--set", "gateway.claim_timeout=-1"], "GATEWAY: claim_timeout must be > 0"),
        (["--set", "protocols.udp.bind=[]"], "PROTOCOLS.udp: bind: give at least one 'host:port' address"),
    ],
)
def test_bad_overrides_stop_before_any_socket_opens(args: list[str], expected: str) -> None:
    code, stdout, stderr = run_spied("run", "--settings", "cli_settings", "--metrics-bind", "127.0.0.1:0", *args)
    assert code == 2, stderr
    line = one_line(stderr)
    assert line.startswith("switchboard: configuration error: ") and expected in line, line
    assert "BIND" not in stdout


@pytest.mark.parametrize("command", ["gateway", "worker"])
def test_gateway_or_worker_alone_on_the_in_memory_layer_is_refused(command: str) -> None:
    code, stdout, stderr = run_spied(command, "--settings", "cli_settings", "--metrics-bind", "127.0.0.1:0")
    assert code == 2
    line = one_line(stderr)
    assert f"switchboard {command} runs apart" in line and "in-memory" in line
    assert "`switchboard run`" in line and "redis://" in line  # both ways out
    assert "BIND" not in stdout


@pytest.mark.parametrize("command", ["gateway", "worker", "status"])
def test_a_layer_that_cannot_be_built_is_one_line(command: str) -> None:
    code, stdout, stderr = run_spied(command, "--settings", "cli_settings", CLI_REDIS_URL="localhost:6379")
    assert code == 2
    assert "configuration error: LAYER: Redis host must be a URL" in one_line(stderr)
    assert "BIND" not in stdout


def test_a_settings_module_that_does_not_import_is_one_line() -> None:
    result = run_cli("run", "--settings", "no_such_project.settings")
    assert result.returncode == 2
    line = one_line(result.stderr)
    assert "cannot set Django up with settings 'no_such_project.settings': No module named 'no_such_project'" in line
    assert "--pythonpath" in line


def test_no_configuration_at_all_is_one_line() -> None:
    env = cli_env()
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = run_cli("run", env=env)
    assert result.returncode == 2
    assert "no configuration: pass --settings" in one_line(result.stderr)


@pytest.mark.parametrize("listener", ["http", "udp", "smtp"])
def test_a_port_in_use_is_one_line_and_exit_2(listener: str) -> None:
    kind = socket.SOCK_DGRAM if listener == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as taken:
        taken.bind(("127.0.0.1", 0))
        if kind == socket.SOCK_STREAM:
            taken.listen()
        port = taken.getsockname()[1]
        address = f"127.0.0.1:{port}"
        flag = {"http": "--bind", "udp": "--udp-bind", "smtp": "--smtp-bind"}[listener]
        result = run_cli("run", "--settings", "cli_settings", flag, address)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("switchboard:")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert str(port) in errors[0]
    assert "ddress already in use" in errors[0]  # "Address" (http, udp) or "address" (smtp)


def test_management_commands_take_the_same_options() -> None:
    # runworker --log-level used to fail; now every option of `switchboard worker` works,
    # and reaches the same checks (here: the in-memory layer refusal).
    env = cli_env(DJANGO_SETTINGS_MODULE="cli_settings")
    result = run_management(
        "runworker", "--log-level", "DEBUG", "--metrics-bind", "off", "--set", "worker.drain_timeout=2", env=env
    )
    assert result.returncode == 2
    assert "switchboard worker runs apart" in one_line(result.stderr)
    result = run_management("rungateway", "--bind", "127.0.0.1:1", "--set", "protocols.http.max_body_sise=1", env=env)
    assert result.returncode == 2
    assert "switchboard gateway runs apart" in one_line(result.stderr)


@pytest.mark.redis
@pytest.mark.skipif(not redis_reachable(), reason="Redis is not reachable on 127.0.0.1:6379")
def test_management_gateway_checks_overrides_before_any_socket_opens() -> None:
    env = cli_env(DJANGO_SETTINGS_MODULE="cli_settings", CLI_REDIS_URL=REDIS_URL)
    result = run_management("rungateway", "--set", "protocols.http.max_body_sise=1", env=env)
    assert result.returncode == 2
    assert "PROTOCOLS.http: unknown option(s) max_body_sise" in one_line(result.stderr)


def run_management(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``django-admin <args>`` (``python -m django``), as ``manage.py <args>`` would run."""
    return subprocess.run(
        [sys.executable, "-m", "django", *args], cwd=HERE, env=env, capture_output=True, text=True, timeout=deadline(60)
    )
