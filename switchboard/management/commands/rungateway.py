"""``manage.py rungateway``: ``switchboard gateway`` with this project's settings and all its options."""

from __future__ import annotations

from ._cli_options import CliCommand


class Command(CliCommand):
    help = "Run the Switchboard gateway process (same options as switchboard gateway)."
    command = "gateway"
