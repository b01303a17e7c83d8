"""Consumers the WebRTC tests talk to (in-process and in the e2e worker processes).

``EVENTS`` records what each consumer saw; in-process tests read it, e2e tests ask the
consumer instead (an ``events?`` message is answered with the peer's own record).
"""

from __future__ import annotations

import json
from typing import Any

from switchboard.consumers import DenyConnection
from switchboard.consumers.webrtc import AsyncWebrtcConsumer, JsonWebrtcConsumer, WebrtcConsumer

# (channel_name, event...) tuples, in the order the consumers saw them.
EVENTS: list[tuple[Any, ...]] = []


def events_of(channel_name: str) -> list[tuple[Any, ...]]:
    return [event[1:] for event in EVENTS if event[0] == channel_name]


class EchoConsumer(AsyncWebrtcConsumer):
    """Greets each channel, echoes text upper-cased and bytes reversed, obeys a few commands."""

    groups = ["webrtc-echo"]

    def record(self, *event: Any) -> None:
        EVENTS.append((self.channel_name, *event))

    async def connect(self) -> None:
        self.record("connect", self.scope["path"])

    async def channel_open(self, label: str) -> None:
        self.record("open", label)
        await self.send(label, text=f"open {label}")

    async def channel_message(self, label: str, text: str | None = None, bytes_data: bytes | None = None) -> None:
        self.record("message", label, text, bytes_data)
        if text is not None and text.startswith("!"):
            await self.command(label, text[1:])
        elif text is not None:
            await self.send(label, text=f"{label}:{text.upper()}")
        elif bytes_data is not None:
            await self.send(label, bytes_data=bytes_data[::-1])

    async def command(self, label: str, command: str) -> None:
        if command == "close":
            await self.close()
        elif command == "events":
            # Kind and label/path only: message payloads would not fit in one message.
            await self.send(label, text=json.dumps([[str(e[0]), str(e[1])] for e in events_of(self.channel_name)]))
        elif command == "cookie":
            headers = dict(self.scope["headers"])
            await self.send(label, text=headers.get(b"cookie", b"").decode())
        elif command.startswith("to "):  # send to another label (maybe unknown)
            await self.send(command[3:], text="hello")
        elif command.startswith("big "):
            await self.send(label, text="x" * int(command[4:]))

    async def channel_close(self, label: str) -> None:
        self.record("channel_close", label)

    async def disconnect(self, reason: str) -> None:
        self.record("disconnect", reason)
        # Tell the other echo peers (this one already left the group): how the e2e tests
        # see that the disconnect reached the consumer in another process.
        bye = {"type": "webrtc.datachannel.send", "label": "chat", "text": f"bye {reason}"}
        await self.channel_layer.group_send("webrtc-echo", bye)


class SyncJsonEchoConsumer(JsonWebrtcConsumer):
    """The synchronous JSON flavour: echoes every JSON message wrapped in {"echo": ...}."""

    def receive_json(self, label: str, content: Any) -> None:
        self.send_json(label, {"echo": content, "label": label})

    def invalid_json(self, label: str, text: str | None, bytes_data: bytes | None, error: str) -> None:
        self.send_json(label, {"error": "not JSON"})


class DenyingConsumer(WebrtcConsumer):
    """Refuses every peer in connect() (synchronous flavour)."""

    def connect(self) -> None:
        raise DenyConnection()

    def disconnect(self, reason: str) -> None:
        EVENTS.append((self.channel_name, "disconnect", reason))
