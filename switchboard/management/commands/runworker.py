"""``manage.py runworker``: the same as ``switchboard worker`` with this project's settings."""

from __future__ import annotations

import os
from typing import Any

from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Run the Switchboard worker process (see switchboard worker --help)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("args", nargs="*", help="extra arguments for switchboard worker")

    def handle(self, *args: Any, **options: Any) -> None:
        from switchboard.gateway.cli import main

        argv = ["worker", "--settings", os.environ["DJANGO_SETTINGS_MODULE"], "--log-level", "INFO", *args]
        raise SystemExit(main(argv))
