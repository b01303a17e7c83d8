"""``manage.py rungateway``: ``switchboard gateway`` with this project's settings.

The options are the ``switchboard`` command's own (gateway/options.py adds them to both
parsers), so ``manage.py rungateway --bind 0.0.0.0:8000 --log-level DEBUG`` means what
it means there.
"""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from switchboard.gateway import cli
from switchboard.gateway.options import add_options


class Command(BaseCommand):
    help = "Run the Switchboard gateway process: the protocol servers (as `switchboard gateway`)."

    def add_arguments(self, parser: CommandParser) -> None:
        add_options(parser, "gateway", django=True)

    def handle(self, *args: Any, **options: Any) -> None:
        raise SystemExit(cli.execute("gateway", argparse.Namespace(**options)))
