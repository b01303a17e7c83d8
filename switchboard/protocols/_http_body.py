"""Reading a request body from uvicorn in chunks: size, time and memory bounds.

A body used to be read whole before anything went to a worker, with no read timeout:
300 clients each withholding the last byte of a 1 MB body held 300 MB of the gateway for
as long as they liked. Now the body is read as a stream of chunks of about
``body_chunk_size`` bytes, each sent on as soon as it is full (specs/http.md: ``http.request``
with ``more_body``), so the gateway holds at most one unfinished chunk per request. Three
bounds apply while reading:

- ``max_body_size`` (413), checked against ``Content-Length`` first and then as bytes arrive;
- ``body_timeout`` (408): the client must keep sending; the longest wait for the next piece;
- ``max_buffered_body_bytes``: what all requests together may hold in the gateway. Past it
  a new body is refused (503) and bodies already streaming wait (:class:`BodyReader`).

Flow control is uvicorn's: it stops reading a client's socket once about 64 KiB of body
wait unread, and resumes when ``receive()`` is called; so the gateway reads a chunk only
when it is ready to pass it on, and a fast client waits in its TCP window, not in memory.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import ctypes.util
import enum
import logging
import time
from collections.abc import Callable

from ._http_common import Receive

logger = logging.getLogger("switchboard.protocols.http")


class BodyProblem(enum.Enum):
    """Why reading a body stopped before its end, with the status the client gets."""

    TOO_LARGE = 413
    TIMEOUT = 408
    BUSY = 503
    GONE = 0  # the client disconnected: nobody to answer


class BodyBudget:
    """The request-body bytes one gateway holds at once, across all requests.

    Bytes are counted as they are read from uvicorn and given back once the layer has
    taken the chunk holding them. After a burst of bodies (``trim_above`` bytes or more
    held since memory was last returned) has gone quiet for ``trim_delay`` seconds, the C
    allocator is asked to return freed memory to the system (:func:`release_free_memory`):
    body chunks, the layer's encoded copies of them and uvicorn's read buffers are large
    allocations, and glibc otherwise keeps the heap they grew, for good.
    """

    __slots__ = ("_last_give", "_release", "_trim_above", "_trim_delay", "_trim_handle", "_waiters", "limit", "peak", "used")

    def __init__(
        self, limit: int, *, trim_above: int = 4 * 1024 * 1024, trim_delay: float = 1.0, release: Callable[[], None] | None = None
    ) -> None:
        self.limit = limit
        self.used = 0
        #: The most held since memory was last returned (what a trim may give back).
        self.peak = 0
        self._trim_above = trim_above
        #: Seconds without body bytes given back before memory is returned (so not mid-burst).
        self._trim_delay = trim_delay
        self._release = release if release is not None else release_free_memory
        self._trim_handle: asyncio.TimerHandle | None = None
        self._last_give = 0.0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def full(self) -> bool:
        return self.used >= self.limit

    def take(self, size: int) -> None:
        """Count ``size`` bytes read (callers read only while not :attr:`full`)."""
        self.used += size
        if self.used > self.peak:
            self.peak = self.used

    def give(self, size: int) -> None:
        self.used -= size
        waiters = self._waiters
        while waiters and self.used < self.limit:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
        if self.peak >= self._trim_above:
            loop = asyncio.get_running_loop()
            self._last_give = loop.time()
            if self._trim_handle is None:
                self._trim_handle = loop.call_at(self._last_give + self._trim_delay, self._trim)

    async def room(self) -> None:
        """Wait until the budget is not full (first come, first served)."""
        while self.full:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if not waiter.done():
                    waiter.cancel()
                    self._waiters.remove(waiter)

    def _trim(self) -> None:
        loop = asyncio.get_running_loop()
        quiet_at = self._last_give + self._trim_delay
        if loop.time() < quiet_at:  # bodies still moving: look again once they have paused
            self._trim_handle = loop.call_at(quiet_at, self._trim)
            return
        self._trim_handle = None
        self.peak = self.used
        self._release()

    def close(self) -> None:
        if self._trim_handle is not None:
            self._trim_handle.cancel()
            self._trim_handle = None


_trim: Callable[[int], int] | None = None
_trim_checked = False
_last_trim = 0.0
#: At most one trim per this many seconds: it walks the whole heap (a few ms on a big one).
_TRIM_INTERVAL = 0.5


def release_free_memory() -> None:
    """Give freed heap memory back to the system: glibc's ``malloc_trim(0)``, if there is one.

    Python hands allocations this large to the C allocator, and glibc raises its mmap
    threshold after the first large free, so later chunks come from the heap, which does
    not shrink by itself while anything small lives above them. ``malloc_trim`` returns
    the free pages wherever they are. Other C libraries (musl, macOS): nothing to do.
    """
    global _trim, _trim_checked, _last_trim
    if not _trim_checked:
        _trim_checked = True
        name = ctypes.util.find_library("c")
        try:
            trim = ctypes.CDLL(name).malloc_trim if name else None
        except (OSError, AttributeError):
            trim = None
        if trim is not None:
            trim.argtypes = [ctypes.c_size_t]
            trim.restype = ctypes.c_int
        _trim = trim
    now = time.monotonic()
    if _trim is None or now - _last_trim < _TRIM_INTERVAL:
        return
    _last_trim = now
    _trim(0)
    logger.debug("returned freed memory to the system in %.1f ms", (time.monotonic() - now) * 1000)


class BodyReader:
    """Reads one request's body from uvicorn's ``receive`` in chunks of about ``chunk_size``.

    Reading goes on only while the gateway's :class:`BodyBudget` has room. A request that
    would start its body when the budget is full is refused (503: the gateway is busy);
    one already streaming sends on what it holds and waits for room instead, for up to
    ``timeout``, like a client waiting on a slow server: so a burst is slowed, not failed,
    and no request can wait while holding bytes another needs.
    """

    __slots__ = ("_arrived", "_budget", "_held", "_receive", "chunk_size", "done", "max_size", "size", "timeout")

    def __init__(
        self,
        receive: Receive,
        *,
        budget: BodyBudget,
        chunk_size: int,
        max_size: int,
        timeout: float | None,
        arrived: Callable[[], bool] | None = None,
    ) -> None:
        self._receive = receive
        #: Whether the rest of the body is already with uvicorn (``receive`` will not wait):
        #: then no timer is armed for it, which is most requests with a body.
        self._arrived = arrived
        self._budget = budget
        self.chunk_size = chunk_size
        self.max_size = max_size
        #: Seconds to wait for each piece of the body; None: the request has no body
        #: (no Content-Length or Transfer-Encoding), so there is nothing to wait or budget for.
        self.timeout = timeout
        #: Bytes read so far.
        self.size = 0
        #: True once the last piece has been read.
        self.done = False
        self._held = 0

    async def next_chunk(self) -> bytes | BodyProblem:
        """The next chunk: ``chunk_size`` bytes or more, unless it ends the body (or the
        budget is full: then what was read so far, to be sent on before reading more).

        Its bytes stay counted in the budget until :meth:`release` (call it once the chunk
        has been handed on); on a problem everything this reader holds is given back.
        """
        parts: list[bytes] = []
        gathered = 0
        budget = self._budget
        while not self.done and gathered < self.chunk_size:
            if self.timeout is not None and budget.full:
                if parts:
                    break  # send on what we hold, then wait
                if self.size == 0:
                    return self._fail(BodyProblem.BUSY)  # a new body while the gateway is full
                try:
                    async with asyncio.timeout(self.timeout):
                        await budget.room()
                except TimeoutError:
                    return self._fail(BodyProblem.BUSY)
            try:
                if self.timeout is None or (self._arrived is not None and self._arrived()):
                    message = await self._receive()
                else:
                    async with asyncio.timeout(self.timeout):
                        message = await self._receive()
            except TimeoutError:
                return self._fail(BodyProblem.TIMEOUT)
            if message["type"] == "http.disconnect":
                return self._fail(BodyProblem.GONE)
            piece = message.get("body", b"")
            self.done = not message.get("more_body", False)
            if not piece:
                continue
            self.size += len(piece)
            if self.size > self.max_size:
                return self._fail(BodyProblem.TOO_LARGE)
            budget.take(len(piece))
            self._held += len(piece)
            parts.append(piece)
            gathered += len(piece)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def drain(self, seconds: float, max_bytes: int) -> None:
        """Read and discard the rest of the body, for up to ``seconds`` and ``max_bytes``.

        Before the gateway answers a body it will not take (413, 503) and closes: closing
        with the client's bytes unread makes the kernel send a reset, which can destroy the
        answer before the client reads it. Nothing is kept or counted; past either bound
        the answer goes out anyway.
        """
        if self.done or self.timeout is None:
            return
        left = max_bytes
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while left > 0:
                    message = await self._receive()
                    left -= len(message.get("body", b""))
                    if message["type"] == "http.disconnect" or not message.get("more_body", False):
                        self.done = True
                        return

    def release(self) -> None:
        """Give back what the chunks read so far counted (they are on the layer now, or dropped)."""
        if self._held:
            held, self._held = self._held, 0
            self._budget.give(held)

    def _fail(self, problem: BodyProblem) -> BodyProblem:
        self.release()
        return problem
