"""Parsing received mail in a small pool of child processes, off the gateway's event loop.

Why processes and not threads: MIME parsing is pure-Python CPU work. In a thread it holds
the GIL in turns with the event loop, so one large or hostile message slows every HTTP
request and WebSocket frame of the gateway (before the part limits, six 100,000-part mails
raised HTTP p50 from 16 ms to 0.2 s for two minutes). A child process has its own GIL and
can be *killed*: when the sender hangs up, or a parse outlives ``parse_timeout``, its
process is SIGKILLed at once (a thread cannot be stopped) and a fresh one takes its place.
(Not at a lower priority: on a busy host a niced parser starves, and honest mail then
runs into ``parse_timeout``; the limits already bound what one message costs.)

Why not ``concurrent.futures.ProcessPoolExecutor``: it cannot cancel a running job, and a
worker killed from outside breaks the whole executor (every other job in it fails). Here
each process runs one job at a time and is spoken to over its own stdin/stdout pipes, so
killing one touches no other message.

The wire format is msgpack (already the layer's), one length-prefixed frame per job and
per answer. The event a child builds must cross the layer as msgpack anyway, so what it
can send back is exactly what the gateway could send on.

The child writes large parts into the storage directory itself, under a file-name prefix
unique to the job: when a job is killed half-way, the parent removes that prefix's files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import signal
import struct
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import msgpack

from ._smtp_message import (
    BuiltEvent,
    Envelope,
    HeaderTooLong,
    Limits,
    MessageRefused,
    Storage,
    TooDeep,
    TooManyParts,
    build_event,
)

logger = logging.getLogger("switchboard.protocols.smtp")

_FRAME = struct.Struct(">I")
#: Where the ``switchboard`` package is imported from, put first on the children's path so
#: they run this very code whatever the gateway's working directory and sys.path tricks.
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
_REFUSALS: dict[str, type[MessageRefused]] = {cls.kind: cls for cls in (TooManyParts, TooDeep, HeaderTooLong)}


class ParseTimeout(Exception):
    """The parse took longer than the pool's ``timeout``; its process was killed."""


class ParserFailed(Exception):
    """The parser process died or broke the protocol (a bug, or the OS killed it)."""


class Unparsable(Exception):
    """The email package could not parse the message at all."""


def _frame(obj: Any) -> bytes:
    data = msgpack.packb(obj, use_bin_type=True)
    return _FRAME.pack(len(data)) + data


#: How long a new parser process may take to start (a Python interpreter, on a busy host).
BOOT_TIMEOUT = 60.0


class _Process:
    """One child process and its pipes.

    The child says it is ready (a first frame) once its interpreter has started; until then
    a job waits for it outside ``parse_timeout``, which measures parsing, not start-up.
    """

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.ready = asyncio.get_running_loop().create_task(self._read_ready())
        self.ready.add_done_callback(lambda task: task.cancelled() or task.exception())

    async def _read_ready(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        (size,) = _FRAME.unpack(await stdout.readexactly(_FRAME.size))
        greeting = msgpack.unpackb(await stdout.readexactly(size), raw=False)
        if not (isinstance(greeting, dict) and "ready" in greeting):
            raise ValueError(f"unexpected greeting {greeting!r:.100}")

    async def wait_ready(self) -> None:
        try:
            async with asyncio.timeout(BOOT_TIMEOUT):
                await asyncio.shield(self.ready)
        except TimeoutError:
            raise ParserFailed(f"parser process {self.process.pid} did not start within {BOOT_TIMEOUT:.0f} s") from None
        except (asyncio.IncompleteReadError, ConnectionError, struct.error, ValueError) as exc:
            raise ParserFailed(f"parser process {self.process.pid} failed to start: {exc!r}") from None

    async def call(self, frame: bytes) -> Any:
        """Send one job frame and read the answer frame."""
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None
        stdin.write(frame)
        await stdin.drain()
        (size,) = _FRAME.unpack(await stdout.readexactly(_FRAME.size))
        return msgpack.unpackb(await stdout.readexactly(size), raw=False)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()


class ParserPool:
    """Up to ``processes`` parser processes: one started with the plugin, more when needed.

    The first is started by :meth:`start` so that the first message does not wait for a
    Python interpreter to start (under load, longer than a tight SMTP ``timeout``).

    :meth:`build` waits for a free process (the wait is not part of ``timeout``), hands it
    the message and returns the built event, or raises: :class:`MessageRefused` (a limit),
    ``OSError`` (storing a part failed), :class:`Unparsable`, :class:`ParseTimeout` or
    :class:`ParserFailed`. Cancelling :meth:`build` kills the process doing the job.
    """

    def __init__(self, storage: Storage, *, processes: int, timeout: float) -> None:
        self.storage = storage
        self.processes = processes
        self.timeout = timeout
        self._slots = asyncio.Semaphore(processes)
        self._idle: list[_Process] = []
        self._busy: set[_Process] = set()
        self._reaping: set[asyncio.Task[None]] = set()
        #: Processes started, and killed (timeouts, abandoned parses, failures).
        self.started = 0
        self.killed = 0
        self._closed = False

    async def build(self, content: bytes, envelope: Envelope, *, inline_limit: int, limits: Limits) -> BuiltEvent:
        job = secrets.token_hex(8) + "-"
        frame = _frame(
            {
                "content": content,
                "envelope": asdict(envelope),
                "inline_limit": inline_limit,
                "storage": str(self.storage.directory),
                "prefix": job,
                "limits": asdict(limits),
            }
        )
        async with self._slots:
            if self._closed:
                raise ParserFailed("the parser pool is closed")
            process = self._idle.pop() if self._idle else await self._start()
            self._busy.add(process)
            done = False
            try:
                await process.wait_ready()  # a fresh process is still starting: not parse time
                async with asyncio.timeout(self.timeout):
                    answer = await process.call(frame)
                done = True
            except TimeoutError:
                raise ParseTimeout(self.timeout) from None
            except (asyncio.IncompleteReadError, ConnectionError, struct.error, ValueError) as exc:
                raise ParserFailed(f"parser process {process.process.pid} failed: {exc!r}") from None
            finally:
                self._busy.discard(process)
                if done:
                    self._idle.append(process)
                else:  # killed mid-job: timed out, cancelled (the sender left), or broken
                    self._discard(process, job)
        return _result(answer)

    async def start(self) -> None:
        """Start one process ahead of the first message (spawning returns at once; the
        child's interpreter starts while the gateway goes on)."""
        self._closed = False
        if not self._idle and not self._busy:
            self._idle.append(await self._start())

    def busy_pids(self) -> list[int]:
        """Process ids of the parsers working on a message right now (status, tests)."""
        return [process.process.pid for process in self._busy]

    async def _start(self) -> _Process:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [_PACKAGE_ROOT, env.get("PYTHONPATH")]))
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", __name__,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
            )  # fmt: skip
        except OSError as exc:
            raise ParserFailed(f"cannot start a parser process ({sys.executable}): {exc}") from None
        self.started += 1
        return _Process(process)

    def _discard(self, process: _Process, job: str) -> None:
        """Kill ``process`` now; reap it and remove its job's files in the background."""
        process.kill()
        self.killed += 1
        task = asyncio.get_running_loop().create_task(self._reap(process, job))
        self._reaping.add(task)
        task.add_done_callback(self._reaping.discard)

    async def _reap(self, process: _Process, job: str) -> None:
        """Wait for a killed process, remove its job's files, start a replacement.

        The replacement is started now, not when the next message comes, so that message
        does not wait for an interpreter to start.
        """
        process.ready.cancel()
        await process.process.wait()
        directory = self.storage.directory
        for path in await asyncio.to_thread(lambda: list(directory.glob(job + "*"))):
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                logger.warning("could not remove %s of an abandoned parse: %s", path, exc)
        if self._closed or self._idle or len(self._busy) >= self.processes:
            return
        try:
            replacement = await self._start()
        except ParserFailed as exc:
            logger.warning("%s", exc)
            return
        if self._closed:
            await _end(replacement)
        else:
            self._idle.append(replacement)

    async def close(self) -> None:
        """End every idle process (EOF on its stdin), kill the stragglers, wait for all."""
        self._closed = True
        if self._reaping:
            await asyncio.gather(*self._reaping, return_exceptions=True)
        idle, self._idle = self._idle, []
        await asyncio.gather(*(_end(process) for process in idle))


async def _end(process: _Process) -> None:
    """End an idle process: EOF on its stdin; killed if it does not exit within 5 s."""
    stdin = process.process.stdin
    if stdin is not None:
        stdin.close()
    try:
        await asyncio.wait_for(process.process.wait(), 5)
    except TimeoutError:
        process.kill()
        await process.process.wait()
    process.ready.cancel()


def _result(answer: Any) -> BuiltEvent:
    """The child's answer as a :class:`BuiltEvent`, or the exception it stands for."""
    if not isinstance(answer, dict):
        raise ParserFailed(f"unexpected answer from the parser process: {type(answer).__name__}")
    if "event" in answer:
        return BuiltEvent(answer["event"], [Path(path) for path in answer["stored"]])
    refused = _REFUSALS.get(answer.get("refused", ""))
    if refused is not None:
        raise refused(int(answer["limit"]))
    if answer.get("error") == "storage":
        raise OSError(answer.get("detail", "storage error"))
    raise Unparsable(answer.get("detail", "unparsable"))


# -- the child process ----------------------------------------------------------------


def _answer(job: dict[str, Any]) -> bytes:
    """The answer frame for one job; every outcome is an answer, never an exception."""
    storage = Storage(Path(job["storage"]), prefix=job["prefix"])
    try:
        built = build_event(
            job["content"],
            Envelope(**job["envelope"]),
            inline_limit=job["inline_limit"],
            storage=storage,
            limits=Limits(**job["limits"]),
        )
    except MessageRefused as exc:
        return _frame({"refused": exc.kind, "limit": exc.limit})
    except OSError as exc:
        return _frame({"error": "storage", "detail": str(exc)})
    except RecursionError:
        return _frame({"error": "unparsable", "detail": "RecursionError"})
    except Exception as exc:
        return _frame({"error": "unparsable", "detail": repr(exc)[:500]})
    try:
        return _frame({"event": built.event, "stored": [str(path) for path in built.stored]})
    except (TypeError, ValueError, OverflowError) as exc:  # a value msgpack cannot carry
        built.discard_files()
        return _frame({"error": "unparsable", "detail": repr(exc)[:500]})


def main() -> None:
    """Serve jobs from stdin until it closes; answers go to stdout, nothing else does."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the gateway's to handle
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # a stray print must not corrupt the frames
    sink.write(_frame({"ready": os.getpid()}))
    sink.flush()
    while True:
        header = source.read(_FRAME.size)
        if len(header) < _FRAME.size:
            return  # the gateway closed the pipe: stop
        (size,) = _FRAME.unpack(header)
        sink.write(_answer(msgpack.unpackb(source.read(size), raw=False)))
        sink.flush()


if __name__ == "__main__":
    main()
