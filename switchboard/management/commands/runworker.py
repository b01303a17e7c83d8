"""``manage.py runworker [channel ...]``: ``switchboard worker`` with this project's settings and all its options."""

from __future__ import annotations

from ._cli_options import CliCommand


class Command(CliCommand):
    help = "Run a Switchboard worker process (same options as switchboard worker)."
    command = "worker"
