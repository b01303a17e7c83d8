"""What the line-protocol tests share: a real TCP client, options, the stack and deployment shapes.

A module of its own (not conftest.py) so test modules can import it by a name no other
suite uses: several ``conftest`` modules are collected in one run of the whole suite.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from support.processes import ModeDeployment
from support.stacks import PluginStack
from support.waiting import deadline
from switchboard_lineproto import LineOptions, LinePlugin

from switchboard.gateway.config import parse_options

HERE = Path(__file__).resolve().parent
DISTRIBUTION = HERE.parent
#: Tests written for this plugin use Redis database 14 only (a prefix of their own too).
REDIS_URL = os.environ.get("LINE_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
WAIT = deadline(20)  # safety net: a broken path fails the test instead of hanging it


class LineClient:
    """A TCP connection that sends and reads lines, each wait bounded by :data:`WAIT`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, address: tuple[str, int]) -> LineClient:
        reader, writer = await asyncio.open_connection(*address, limit=2**22)
        return cls(reader, writer)

    async def send(self, *lines: str | bytes, ending: bytes = b"\n") -> None:
        for line in lines:
            self.writer.write((line.encode() if isinstance(line, str) else line) + ending)
        await self.writer.drain()

    async def line(self) -> str:
        """The next line, without its terminator; AssertionError at the end of the stream."""
        async with asyncio.timeout(WAIT):
            raw = await self.reader.readline()
        if not raw.endswith(b"\n"):
            raise AssertionError(f"the server closed the connection (partial: {raw!r})")
        return raw.decode().rstrip("\r\n")

    async def closed(self) -> bytes:
        """Wait for the server to close; what it sent before that."""
        async with asyncio.timeout(WAIT):
            return await self.reader.read()

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


def line_options(**raw: Any) -> LineOptions:
    """Options as the config gives them (through the real validation)."""
    raw.setdefault("bind", ["127.0.0.1:0"])
    return parse_options(LineOptions, raw, where="PROTOCOLS.lineproto")


class Stack(PluginStack):
    """The line plugin + gateway core + a worker running the test echo, on one in-memory layer."""

    @property
    def plugin(self) -> LinePlugin:
        return self.plugin_of(LinePlugin)

    @property
    def address(self) -> tuple[str, int]:
        return self.plugin.bound_addresses[0]


@dataclass
class Deployment(ModeDeployment):
    """``switchboard run``, or ``gateway`` + ``worker`` over Redis, serving lines on ``port``."""

    settings_module = "lineproto_settings"
    cwd = HERE

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def stats_file(self) -> Path:
        return Path(self.env["LINE_TEST_STATS_FILE"])
