"""``manage.py runworker``: ``switchboard worker`` with this project's settings.

The options are the ``switchboard`` command's own (gateway/options.py adds them to both
parsers): ``manage.py runworker thumbnails --log-level DEBUG`` as ``switchboard worker``.
"""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from switchboard.gateway import cli
from switchboard.gateway.options import add_options


class Command(BaseCommand):
    help = "Run a Switchboard worker process: the consumers (as `switchboard worker`)."

    def add_arguments(self, parser: CommandParser) -> None:
        add_options(parser, "worker", django=True)

    def handle(self, *args: Any, **options: Any) -> None:
        raise SystemExit(cli.execute("worker", argparse.Namespace(**options)))
