"""``manage.py rungateway``: the same as ``switchboard gateway`` with this project's settings."""

from __future__ import annotations

import os
from typing import Any

from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = "Run the Switchboard gateway process (see switchboard gateway --help)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("args", nargs="*", help="extra arguments for switchboard gateway")

    def handle(self, *args: Any, **options: Any) -> None:
        from switchboard.gateway.cli import main

        argv = ["gateway", "--settings", os.environ["DJANGO_SETTINGS_MODULE"], "--log-level", "INFO", *args]
        raise SystemExit(main(argv))
