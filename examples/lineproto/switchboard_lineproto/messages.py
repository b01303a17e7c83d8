"""Types of every message and scope in ``switchboard_lineproto/lineproto.md``: generated, do not edit.

Made by :mod:`switchboard.gateway.spec_typing` from the spec blocks; regenerate it after
editing the spec (a test fails until you do)::

    python -m switchboard.gateway.spec_typing --spec switchboard_lineproto/lineproto.md --output <this file> --write

``<Protocol>ToWorker`` / ``<Protocol>ToGateway`` are the unions of the
messages travelling each way.
"""

# No ``from __future__ import annotations``: TypedDict reads NotRequired[] at class creation.
from collections.abc import Sequence
from typing import Literal, NotRequired, TypedDict


class LineScopeAsgi(TypedDict):
    """The ``asgi`` of :class:`LineScope`."""

    version: str
    spec_version: NotRequired[str]


class LineScope(TypedDict):
    """``line`` scope: switchboard_lineproto/lineproto.md."""

    type: Literal["line"]
    asgi: LineScopeAsgi
    server: Sequence[str | int]
    client: Sequence[str | int]
    reply_channel: str


class LineCloseEvent(TypedDict):
    """``line.close`` (worker -> gateway): switchboard_lineproto/lineproto.md."""

    type: Literal["line.close"]
    text: NotRequired[str | None]


class LineConnectEvent(TypedDict):
    """``line.connect`` (gateway -> worker): switchboard_lineproto/lineproto.md."""

    type: Literal["line.connect"]


class LineDisconnectEvent(TypedDict):
    """``line.disconnect`` (gateway -> worker): switchboard_lineproto/lineproto.md."""

    type: Literal["line.disconnect"]
    reason: str


class LineReceivedEvent(TypedDict):
    """``line.received`` (gateway -> worker): switchboard_lineproto/lineproto.md."""

    type: Literal["line.received"]
    text: str


class LineSendEvent(TypedDict):
    """``line.send`` (worker -> gateway): switchboard_lineproto/lineproto.md."""

    type: Literal["line.send"]
    text: str


LineToGateway = LineCloseEvent | LineSendEvent
LineToWorker = LineConnectEvent | LineDisconnectEvent | LineReceivedEvent
