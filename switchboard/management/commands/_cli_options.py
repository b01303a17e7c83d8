"""``manage.py rungateway`` / ``runworker`` take every option ``switchboard gateway`` / ``worker`` takes.

The options are the CLI's own argparse actions (``gateway/cli.py: build_parser``), added
to Django's command parser, so the two can never drift apart: ``runworker --log-level
DEBUG thumbnails`` means what ``switchboard worker --log-level DEBUG thumbnails`` means.
Django's own options (``--settings``, ``--pythonpath``, ``--verbosity``...) stay Django's;
the settings module Django runs with is passed on.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

# Options Django's BaseCommand defines itself, with the same meaning.
_DJANGO_OWNS = {"help", "settings", "pythonpath"}


def cli_actions(command: str) -> list[argparse.Action]:
    from switchboard.gateway.cli import build_parser

    parser = build_parser()
    subparsers = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    sub = subparsers.choices[command]
    return [action for action in sub._actions if action.dest not in _DJANGO_OWNS]


class CliCommand(BaseCommand):
    """A management command that runs ``switchboard <command>`` with Django's settings."""

    command = ""

    def add_arguments(self, parser: CommandParser) -> None:
        for action in cli_actions(self.command):
            parser._add_action(action)

    def handle(self, *args: Any, **options: Any) -> None:
        from switchboard.gateway.cli import main

        argv = [self.command, "--settings", os.environ["DJANGO_SETTINGS_MODULE"]]
        positionals: list[str] = []
        for action in cli_actions(self.command):
            value = options.get(action.dest)
            if not action.option_strings:
                positionals.extend(value or [])
            elif isinstance(action, argparse._StoreTrueAction):
                if value:
                    argv.append(action.option_strings[0])
            elif value is not None and value != action.default:
                argv.extend([action.option_strings[0], str(value)])
        raise SystemExit(main([*argv, *positionals]))
