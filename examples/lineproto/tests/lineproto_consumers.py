"""The consumer the line-protocol tests talk to, in process and in the OS-process deployments.

An uppercase echo with a few commands that make it misbehave on purpose, so the tests can
see what the gateway does with each kind of reply. ``EVENTS`` records every event the
instances of this process handled (the in-process tests read it).
"""

from __future__ import annotations

from typing import Any

from switchboard_lineproto import LineConsumer

#: Every event handled in this process, in order: (reply channel, event).
EVENTS: list[tuple[str, dict[str, Any]]] = []


class EchoConsumer(LineConsumer):
    """``HELLO`` on connect; each line back in upper case; commands below do other things."""

    async def dispatch(self, message: dict[str, Any]) -> None:
        EVENTS.append((self.channel_name, dict(message)))
        await super().dispatch(message)

    async def connect(self) -> None:
        await self.send_line("HELLO")

    async def receive_line(self, text: str) -> None:
        if text == "QUIT":
            await self.close("BYE")
        elif text == "BAD":  # breaks the spec: text must be a str
            await self.send({"type": "line.send", "text": 42})
        elif text == "WRONGWAY":  # a gateway -> worker type sent back
            await self.send({"type": "line.received", "text": "x"})
        elif text == "TWOLINES":  # the spec allows it, the plugin does not: one line per message
            await self.send({"type": "line.send", "text": "one\ntwo"})
        elif text.startswith("FLOOD "):  # FLOOD <lines> <bytes per line>
            _, count, size = text.split()
            for _ in range(int(count)):
                await self.send_line("x" * int(size))
        else:
            await self.send_line(text.upper())


def disconnects(channel: str | None = None) -> list[str]:
    """The reasons of the ``line.disconnect`` events handled (of one connection, if named)."""
    return [
        event["reason"] for name, event in EVENTS if event["type"] == "line.disconnect" and channel in (None, name)
    ]
