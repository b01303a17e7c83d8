"""uvicorn's websockets-sansio protocol, leaner per idle connection.

uvicorn keeps, for the whole life of every WebSocket, an ``asyncio.Queue`` for the ASGI
``receive`` (four deques up front, ~2.3 KiB), an ``asyncio.Event`` for write flow
control (~0.4 KiB with its deque), and the handshake request and response objects
(their header structures, ~2 KiB), which nothing reads once the handshake is done. With
10,000 idle WebSockets that is ~45 MB of the gateway. This subclass swaps the queue and
the event for single-consumer equivalents that allocate only while something waits, and
drops the handshake objects once the handshake completed. Framing, limits and the
protocol itself stay uvicorn's and websockets'.

Both replacements bind the loop once: ``asyncio.Queue`` and ``asyncio.Event`` ask for the
running loop on every wait, which is a ``getpid()`` system call each (``_LoopBoundMixin``),
per frame received and per frame sent.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from ._http_common import Mailbox


class _Flag:
    """``asyncio.Event``'s set/clear/wait, with waiters allocated only while someone waits."""

    __slots__ = ("_loop", "_set", "_waiters")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._set = False
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        if self._set:
            return
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> bool:
        if self._set:
            return True
        waiter = self._loop.create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
            return True
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)


class LeanWebSocketsSansIOProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` WebSocket protocol with smaller per-connection state."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = Mailbox(self.loop)  # type: ignore[assignment]
        writable = _Flag(self.loop)
        if self.writable.is_set():
            writable.set()
        self.writable = writable  # type: ignore[assignment]

    async def send(self, message: Any) -> None:
        await super().send(message)
        if self.handshake_complete and getattr(self, "response", None) is not None:
            # Only the handshake (and a 500 before it) reads these; free them.
            self.request = None  # type: ignore[assignment]
            self.response = None  # type: ignore[assignment]
