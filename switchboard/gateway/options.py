"""The command-line options of every Switchboard command, defined once.

``switchboard gateway | worker | run | status | deadletters | console`` and ``manage.py
rungateway | runworker`` take the same options: :func:`add_options` adds them to any argparse parser (Django's
``CommandParser`` is one), so the two entry points cannot drift apart.

Overrides (``--bind``, ``--udp-bind``, ``--smtp-bind``, ``--set SECTION.KEY=VALUE``,
``--access-log``) change the loaded configuration in :func:`apply_overrides`; they are
checked like settings are, before any socket opens. Values given to ``--set`` are read as
TOML values (``8000``, ``true``, ``["a", "b"]``, ``"text"``), a bare word that is not
TOML as a string (``127.0.0.1:9999``), and ``none`` / ``null`` as None: the same types a
``switchboard.toml`` would give.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tomllib
from collections.abc import Sequence
from typing import Any, NoReturn

from . import logs
from .config import ConfigError, GatewayOptions, MetricsOptions, SwitchboardConfig, WorkerOptions, parse_bind, parse_options

#: Commands that run a gateway or a worker (and so take serving options).
SERVING = ("gateway", "worker", "run")
#: Commands that run protocol plugins (and so take listening options).
LISTENING = ("gateway", "run")
#: Sections ``--set`` can change.
SET_SECTIONS = ("protocols", "worker", "gateway", "metrics")

COMMAND_HELP = {
    "gateway": "run the protocol servers (gateway process)",
    "worker": "run consumers (worker process)",
    "run": "gateway and worker in one process on the in-memory layer (development)",
    "status": "show the running gateways and workers (through the channel layer)",
    "console": "serve the operator's web console (through the channel layer; docs/console.md)",
}


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (and exit code 2), not usage + error.

    The usage block argparse prints before an error runs to many lines for these
    commands and buries the one line that says what is wrong; ``--help`` shows it.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def bind_address(text: str) -> str:
    """An argparse ``type``: ``host:port``, checked now, so a typo never reaches a socket."""
    try:
        parse_bind(text, where="")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).lstrip(": ")) from None
    return text


def process_count(text: str) -> int:
    """``--processes``: a whole number of worker processes, at least 1."""
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of processes, got {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {count}")
    return count


def assignment(text: str) -> tuple[list[str], Any]:
    """An argparse ``type`` for ``--set SECTION.KEY=VALUE``: the key path and the parsed value."""
    key, sep, raw = text.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise argparse.ArgumentTypeError(f"{text!r} must be SECTION.KEY=VALUE, e.g. protocols.udp.bind=127.0.0.1:9999")
    section = parts[0].lower()
    if section not in SET_SECTIONS:
        raise argparse.ArgumentTypeError(f"{key!r}: the first part must be one of {', '.join(SET_SECTIONS)}")
    wanted = "protocols.<plugin>.<option>" if section == "protocols" else f"{section}.<option>"
    if (section == "protocols" and len(parts) < 3) or (section != "protocols" and len(parts) != 2):
        raise argparse.ArgumentTypeError(f"{key!r} must be {wanted}")
    return [section, *parts[1:]], parse_value(raw)


def parse_value(raw: str) -> Any:
    """A ``--set`` value: TOML when it parses as a TOML value, ``none``/``null`` as None, else text."""
    text = raw.strip()
    if text.lower() in ("none", "null"):
        return None
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return raw


def add_options(parser: argparse.ArgumentParser, command: str, *, django: bool = False) -> None:
    """Add the options of ``command`` to ``parser``.

    ``django``: the parser is a management command's, which has its own ``--settings``
    and ``--pythonpath`` (and ``--version``, Django's).
    """
    if not django:
        parser.add_argument("--settings", help="Django settings module (else DJANGO_SETTINGS_MODULE)")
        parser.add_argument("--pythonpath", help="directory to add to sys.path (default: the current one)")
    parser.add_argument("--config", metavar="FILE", help="TOML config file, instead of settings.SWITCHBOARD")
    parser.add_argument(
        "--log-level",
        default=os.environ.get("SWITCHBOARD_LOG_LEVEL", "INFO"),
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
        help="DEBUG, INFO (default), WARNING, ERROR or CRITICAL (else SWITCHBOARD_LOG_LEVEL)",
    )
    parser.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        help="text (default) or json: one JSON object per line (else SWITCHBOARD_LOG_FORMAT)",
    )
    if command in SERVING:
        parser.add_argument(
            "--metrics-bind",
            default=os.environ.get("SWITCHBOARD_METRICS_BIND"),
            metavar="HOST:PORT",
            help="serve Prometheus metrics of this process here, or 'off' "
            "(default: METRICS bind, or worker_bind for a worker; else SWITCHBOARD_METRICS_BIND)",
        )
        parser.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            type=assignment,
            metavar="SECTION.KEY=VALUE",
            help="override one setting, e.g. protocols.udp.bind=127.0.0.1:9998, protocols.http.max_body_size=1048576, "
            'worker.drain_timeout=5 (repeatable; values are TOML: 8000, true, ["a", "b"]; none for None)',
        )
    if command in LISTENING:
        _add_listening_options(parser)
    if command == "worker":
        parser.add_argument("channels", nargs="*", help="only consume these named channels (no connections)")
        parser.add_argument(
            "--processes",
            type=process_count,
            default=1,
            metavar="N",
            help="run N worker processes, one per core you give Django (default 1); "
            "SIGTERM drains them, SIGHUP replaces them one at a time (docs/cli.md)",
        )
    if command == "run":
        _add_development_options(parser)
    if command == "status":
        parser.add_argument("--once", action="store_true", help="print one snapshot and exit (1 if nobody answered)")
        parser.add_argument("--json", action="store_true", help="machine-readable output: one JSON object per snapshot")
        parser.add_argument("--wait", type=float, default=2.0, help="seconds to collect answers with --once (default 2)")
        parser.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes when live (default 1)")
    if command == "console":
        parser.add_argument(
            "--bind",
            metavar="HOST:PORT",
            type=bind_address,
            default=os.environ.get("SWITCHBOARD_CONSOLE_BIND"),
            help="where to serve it (default: CONSOLE bind, 127.0.0.1:9180; else SWITCHBOARD_CONSOLE_BIND); "
            "anywhere but loopback it needs a token or a staff session",
        )


def _add_listening_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bind",
        action="append",
        type=bind_address,
        metavar="HOST:PORT",
        help="HTTP/WebSocket address, instead of the http plugin's bind (repeatable; [::1]:8000 for IPv6)",
    )
    parser.add_argument(
        "--udp-bind",
        action="append",
        type=bind_address,
        metavar="HOST:PORT",
        help="UDP address, instead of the udp plugin's bind (repeatable)",
    )
    parser.add_argument(
        "--smtp-bind", type=bind_address, metavar="HOST:PORT", help="SMTP address, instead of the smtp plugin's bind"
    )
    parser.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="log one line per HTTP request and WebSocket handshake (default: on in run, else the http plugin's access_log)",
    )


def _add_development_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--reload",
        action="store_true",
        help="restart when a .py, .html or .toml file changes (development only; needs watchfiles)",
    )
    parser.add_argument(
        "--reload-dir",
        action="append",
        metavar="DIR",
        help="directory to watch with --reload (repeatable; default: the current one)",
    )
    parser.add_argument(
        "--nostatic",
        action="store_true",
        help="do not serve static files (served by default when DEBUG is on, as runserver does)",
    )
    parser.add_argument("--insecure", action="store_true", help="serve static files even when DEBUG is off")


def build_parser(version: str) -> argparse.ArgumentParser:
    """The ``switchboard`` command line: one subcommand per process kind."""
    parser = OneLineParser(
        prog="switchboard",
        description="Multi-protocol gateway for Django: protocol servers (gateway) and consumers (worker).",
        epilog="Quick start: switchboard run --settings mysite.settings   (see switchboard COMMAND --help)",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=version)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in ("run", "gateway", "worker", "status", "console"):
        add_options(sub.add_parser(command, help=COMMAND_HELP[command], allow_abbrev=False), command)
    from .deadletters import add_parser as add_deadletters

    add_deadletters(sub, lambda action: add_options(action, "deadletters"))
    return parser


# -- overrides --------------------------------------------------------------------------


def apply_overrides(config: SwitchboardConfig, args: argparse.Namespace, command: str) -> None:
    """Apply the command line's overrides to ``config``; ConfigError names the bad one.

    ``--set`` goes first, in order (the last of two for one key wins), then the dedicated
    flags. Setting an option of a plugin that is not configured enables it, as a
    ``[protocols.<name>]`` table in TOML would; the plugin's options are then checked
    like any configuration (:func:`~switchboard.gateway.plugins.check_protocols`).
    """
    for path, value in getattr(args, "overrides", None) or []:
        _set(config, path, value)
    if command not in LISTENING:
        return
    if args.bind:
        config.protocols.setdefault("http", {})["bind"] = list(args.bind)
    if args.udp_bind:
        config.protocols.setdefault("udp", {})["bind"] = list(args.udp_bind)
    if args.smtp_bind:
        config.protocols.setdefault("smtp", {})["bind"] = args.smtp_bind
    http = config.protocols.get("http")
    if args.access_log is not None:
        config.protocols.setdefault("http", {})["access_log"] = args.access_log
    elif command == "run" and http is not None and "access_log" not in http:
        http["access_log"] = True  # a development server shows its requests, as runserver does


def _set(config: SwitchboardConfig, path: Sequence[str], value: Any) -> None:
    section, *keys = path
    where = f"--set {'.'.join(path)}"
    if section == "protocols":
        name, *option = keys
        target = config.protocols.setdefault(name, {})
        for key in option[:-1]:
            child = target.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{where}: {key} is not a table of options")
            target = child
        target[option[-1]] = value
        return
    (key,) = keys
    if section == "worker":
        known = {field.name for field in dataclasses.fields(WorkerOptions)}
        if key not in known:
            raise ConfigError(f"{where}: unknown option {key}; known: {', '.join(sorted(known))}")
        config.worker = {**config.worker, key: value}
        WorkerOptions.from_config(config.worker)
    elif section == "gateway":
        config.gateway = parse_options(GatewayOptions, {**_fields(config.gateway), key: value}, where="GATEWAY")
    elif section == "metrics":
        config.metrics = parse_options(MetricsOptions, {**_fields(config.metrics), key: value}, where="METRICS")


def _fields(options: Any) -> dict[str, Any]:
    return {field.name: getattr(options, field.name) for field in dataclasses.fields(options) if field.init}
