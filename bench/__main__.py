"""Entry point: ``.venv/bin/python -m bench [--quick] [--systems ...] [--scenarios ...]``."""

from bench.cli import entry

entry()
