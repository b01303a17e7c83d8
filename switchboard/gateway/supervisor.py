"""``switchboard worker --processes N``: N worker processes from one command, as gunicorn's ``-w``.

A worker runs its Python on one core (the GIL): a site whose views spend their time in
Python (the ORM, templates) needs one worker process per core it gives Django
(docs/http.md, *How many workers*). Without this, that is N service units or N
terminals; with it, one command whose process starts the N workers and looks after them.

Each child is an ordinary worker, the same command line again with
``SWITCHBOARD_WORKER_PROCESS=<i>/<N>`` in its environment (so it serves instead of
supervising): its own channel, claims, heartbeats and drain, exactly as if started by
hand, so everything docs/deploys.md says of workers holds for each. The supervisor
imports neither Django nor the project, and holds no connection.

- **Ready**: a child says it is serving (configuration loaded, application imported,
  layer reachable, metrics bound) by writing one byte on a pipe it inherits
  (``SWITCHBOARD_WORKER_READY_FD``).
- **Start-up failure**: a child that exits before it is ready, while the first set is
  starting, stops the command with that child's exit code (2 for a configuration error):
  every child would fail alike, so restarting would only repeat the error forever, and
  the process manager above should see it (gunicorn does the same: "Worker failed to
  boot").
- **Death**: a child that exits on its own later (killed, out of memory, a crash) is
  started again after :data:`RESTART_DELAY`, doubled for each death within
  :data:`STABLE_SECONDS` of its start, up to :data:`MAX_RESTART_DELAY`.
- **Stop**: SIGTERM or SIGINT is passed on to every child as SIGTERM, on which a worker
  drains (it hands its connections back to their gateways); the command exits when they
  have, 0 if all stopped cleanly. Children still running after ``stop_timeout`` are
  killed, and so are all of them on a second signal.
- **Replace**: SIGHUP replaces the children one at a time, new code and all: the first
  is stopped (it drains, handing its connections to the others), a new one starts in its
  place, and once that one is serving the next is stopped; the others serve throughout,
  as in the rolling deploy of docs/deploys.md. (Stopping before starting, not after,
  keeps each process's metrics port its own.) A new child that fails to start ends the
  replacement; its place keeps being restarted as after a death, the rest serve on.
- **Orphans**: a child whose supervisor is gone (killed with SIGKILL, so it could not
  stop them) stops by itself, draining as on SIGTERM, within :data:`ORPHAN_CHECK`
  seconds: otherwise a process manager that starts the command again would double the
  workers (gunicorn's workers watch their master the same way).
- **Metrics**: child ``i`` (from 1) serves metrics on the configured worker port plus
  ``i - 1``, since N processes cannot share one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import selectors
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType

from .children import ChildProcess, describe_exit

logger = logging.getLogger("switchboard.supervisor")

#: Set in a child's environment: "<index>/<count>", index from 1.
PROCESS_ENV = "SWITCHBOARD_WORKER_PROCESS"
#: Set in a child's environment: the inherited pipe it writes one byte on when serving.
READY_FD_ENV = "SWITCHBOARD_WORKER_READY_FD"
#: Set in a child's environment: the supervisor's pid, which a child checks is still its parent.
SUPERVISOR_ENV = "SWITCHBOARD_WORKER_SUPERVISOR"
#: Seconds between a child's checks that its supervisor is still there.
ORPHAN_CHECK = 1.0
#: Seconds before a child that died is started again (doubled while it keeps dying young).
RESTART_DELAY = 1.0
MAX_RESTART_DELAY = 30.0
#: A child that served this long before it died was healthy: its restart waits RESTART_DELAY.
STABLE_SECONDS = 60.0
#: Seconds children get to stop after SIGTERM before they are killed (a worker's
#: drain_timeout is 10 by default; long views and streams finish within it too).
STOP_TIMEOUT = 60.0
#: Most seconds between two looks at the children.
TICK = 0.25


def is_child() -> bool:
    """Whether this process is one a supervisor started (and so must serve, not supervise)."""
    return PROCESS_ENV in os.environ


def child_index() -> int | None:
    """This process's index among its supervisor's children (from 1), or None."""
    value = os.environ.get(PROCESS_ENV, "")
    index, _, _ = value.partition("/")
    return int(index) if index.isdigit() and int(index) > 0 else None


def notify_ready() -> None:
    """Tell the supervisor (if any) that this worker is serving; once, then the pipe is closed."""
    raw = os.environ.pop(READY_FD_ENV, None)
    if raw is None or not raw.isdigit():
        return
    fd = int(raw)
    try:
        os.write(fd, b".")
    except OSError as exc:  # the supervisor is gone: nothing to tell
        logger.debug("could not tell the supervisor this worker is ready: %s", exc)
    finally:
        try:
            os.close(fd)
        except OSError:
            pass


async def stop_when_orphaned(stop: asyncio.Event, interval: float = ORPHAN_CHECK) -> None:
    """Set ``stop`` (drain and exit, as on SIGTERM) once this child's supervisor is gone.

    A child's parent is its supervisor until the supervisor dies; then the child is
    re-parented (to init, or a subreaper) and ``getppid`` changes.
    """
    raw = os.environ.get(SUPERVISOR_ENV, "")
    if not raw.isdigit():
        return
    supervisor_pid = int(raw)
    while not stop.is_set():
        if os.getppid() != supervisor_pid:
            logger.warning("the worker supervisor (pid %d) is gone: stopping this worker", supervisor_pid)
            stop.set()
            return
        await asyncio.sleep(interval)


def child_metrics_bind(bind: str | None) -> str | None:
    """The metrics address of this child: the configured one, its port plus ``index - 1``.

    Port 0 (any free port) and a process that is no supervisor's child are left alone.
    """
    index = child_index()
    if bind is None or index is None or index == 1:
        return bind
    host, _, port = bind.rpartition(":")
    if not port.isdigit() or int(port) == 0:
        return bind
    return f"{host}:{int(port) + index - 1}"


def child_command(argv: Sequence[str] | None) -> list[str]:
    """The command a child runs: this one again (``switchboard ...``, or ``manage.py runworker ...``)."""
    if argv is not None:
        return [sys.executable, "-m", "switchboard", *argv]
    return [sys.executable, *sys.argv]


@dataclass
class _Slot:
    """One of the N places for a worker process, and what it holds now."""

    index: int
    child: ChildProcess | None = None
    ready_fd: int | None = None
    ready: bool = False
    #: Whether a child of this slot has ever been serving (the first set has started).
    ever_ready: bool = False
    started_at: float = 0.0
    #: Deaths in a row, each within STABLE_SECONDS of its start (sets the restart delay).
    young_deaths: int = 0
    restart_at: float | None = None
    #: Where a replacement (SIGHUP) is in this slot: "stopping" the old child, "starting" the new.
    replacing: str | None = None
    #: When the old child was told to stop for its replacement (killed ``stop_timeout`` later).
    stopping_since: float = 0.0


@dataclass
class WorkerSupervisor:
    """Runs ``processes`` children of ``command`` and looks after them until told to stop."""

    command: list[str]
    processes: int
    stop_timeout: float = STOP_TIMEOUT
    clock: Callable[[], float] = time.monotonic
    slots: list[_Slot] = field(default_factory=list)
    _signals: list[int] = field(default_factory=list)
    _selector: selectors.BaseSelector = field(default_factory=selectors.DefaultSelector)
    #: Slots still to replace, in order, after a SIGHUP.
    _replacing: list[_Slot] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.processes < 1:
            raise ValueError(f"processes must be at least 1, got {self.processes!r}")
        self.slots = [_Slot(index) for index in range(1, self.processes + 1)]

    # -- the main loop ---------------------------------------------------------------

    def run(self) -> int:
        """Start the children and look after them; the command's exit code."""
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        logger.info(
            "worker supervisor %d: %d worker processes (SIGTERM or Control-C drains them, SIGHUP replaces them)",
            os.getpid(),
            self.processes,
        )
        try:
            for slot in self.slots:
                self._start(slot)
            code = self._look_after()
            if code is None:
                code = self._stop_all()
            return code
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._kill_all()
            self._selector.close()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals.append(signum)

    def _look_after(self) -> int | None:
        """Until a stop signal (None) or a start-up failure of the first set (its exit code)."""
        while True:
            while self._signals:
                signum = self._signals.pop(0)
                if signum == signal.SIGHUP:
                    self._begin_replacement()
                else:
                    logger.info("worker supervisor: %s, stopping the workers", signal.Signals(signum).name)
                    return None
            self._wait_for_ready()
            failure = self._reap()
            if failure is not None:
                return failure
            self._restart_due()
            self._advance_replacement()

    def _wait_for_ready(self) -> None:
        timeout = TICK
        due = [slot.restart_at for slot in self.slots if slot.restart_at is not None]
        if due:
            timeout = max(0.0, min(timeout, min(due) - self.clock()))
        if not self._selector.get_map():
            time.sleep(timeout)
            return
        for key, _events in self._selector.select(timeout):
            slot = key.data
            try:
                said = os.read(key.fd, 1)
            except OSError:
                said = b""
            self._drop_fd(slot)
            if not said:
                continue  # closed without a word: it exited, _reap says how
            slot.ready = slot.ever_ready = True
            logger.info("worker process %d (pid %s) is serving", slot.index, slot.child.pid if slot.child else "?")
            if slot.replacing == "starting":
                slot.replacing = None
                self._replaced(slot)

    def _reap(self) -> int | None:
        """Deal with children that exited; the exit code if the first set failed to start."""
        now = self.clock()
        for slot in self.slots:
            child = slot.child
            code = None if child is None else child.poll()
            if child is None or code is None:
                continue
            self._drop_fd(slot)
            slot.child = None
            if slot.replacing == "stopping":
                logger.info(
                    "worker process %d (pid %s) stopped with %s; starting its replacement",
                    slot.index,
                    child.pid,
                    describe_exit(code),
                )
                self._start(slot)
                slot.replacing = "starting"
                continue
            if not slot.ready and self._first_start():
                logger.error(
                    "worker process %d (pid %s) exited with %s before it was serving: stopping",
                    slot.index,
                    child.pid,
                    describe_exit(code),
                )
                self._stop_all()
                return code if code > 0 else 1
            if slot.replacing == "starting":
                logger.error(
                    "the replacement of worker process %d exited with %s before it was serving: "
                    "replacement stopped, the other processes serve on",
                    slot.index,
                    describe_exit(code),
                )
                slot.replacing = None
                self._replacing.clear()
            young = now - slot.started_at < STABLE_SECONDS
            slot.young_deaths = slot.young_deaths + 1 if young else 0
            delay = min(MAX_RESTART_DELAY, RESTART_DELAY * 2 ** max(0, slot.young_deaths - 1))
            slot.restart_at = now + delay
            logger.warning(
                "worker process %d (pid %s) exited with %s; starting another in %.0fs",
                slot.index,
                child.pid,
                describe_exit(code),
                delay,
            )
        return None

    def _first_start(self) -> bool:
        """Whether the first set of children is still starting (not every slot has served yet)."""
        return not all(slot.ever_ready for slot in self.slots)

    def _restart_due(self) -> None:
        now = self.clock()
        for slot in self.slots:
            if slot.child is None and slot.restart_at is not None and slot.restart_at <= now:
                self._start(slot)

    # -- starting and stopping ---------------------------------------------------------

    def _start(self, slot: _Slot) -> None:
        read_fd, write_fd = os.pipe()
        child = ChildProcess(self.command, name=f"worker process {slot.index}")
        try:
            child.start(
                {
                    PROCESS_ENV: f"{slot.index}/{self.processes}",
                    READY_FD_ENV: str(write_fd),
                    SUPERVISOR_ENV: str(os.getpid()),
                },
                pass_fds=(write_fd,),
            )
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        self._selector.register(read_fd, selectors.EVENT_READ, slot)
        slot.child, slot.ready_fd = child, read_fd
        slot.ready = False
        slot.started_at = self.clock()
        slot.restart_at = None

    def _drop_fd(self, slot: _Slot) -> None:
        fd, slot.ready_fd = slot.ready_fd, None
        if fd is None:
            return
        try:
            self._selector.unregister(fd)
        except (KeyError, ValueError):
            pass
        try:
            os.close(fd)
        except OSError:
            pass

    def _stop_all(self) -> int:
        """SIGTERM to every child, wait for them (a second signal, or the timeout, kills); the exit code."""
        children = [slot.child for slot in self.slots if slot.child is not None]
        for child in children:
            child.signal(signal.SIGTERM)
        deadline = self.clock() + self.stop_timeout
        self._signals.clear()
        while any(child.running() for child in children):
            if self._signals:
                logger.warning("worker supervisor: second signal, killing the workers")
                break
            if self.clock() >= deadline:
                logger.warning("workers still running %.0fs after SIGTERM: killing them", self.stop_timeout)
                break
            time.sleep(0.05)
        clean = True
        for child in children:
            if child.running():
                child.kill()
                clean = False
            code = child.process.wait() if child.process is not None else 0
            clean = clean and code in (0, -signal.SIGTERM)
        for slot in self.slots:
            self._drop_fd(slot)
            slot.child = None
        return 0 if clean else 1

    def _kill_all(self) -> None:
        for slot in self.slots:
            if slot.child is not None:
                slot.child.kill()

    # -- replacing (SIGHUP) --------------------------------------------------------------

    def _begin_replacement(self) -> None:
        if self._replacing:
            logger.info("worker supervisor: SIGHUP during a replacement: it goes on")
            return
        logger.info("worker supervisor: SIGHUP, replacing the %d worker processes one at a time", self.processes)
        self._replacing = list(self.slots)

    def _advance_replacement(self) -> None:
        """Stop the next slot's child once the slot before has its new one serving."""
        if not self._replacing:
            return
        slot = self._replacing[0]
        if slot.replacing == "stopping" and slot.child is not None:
            if self.clock() - slot.stopping_since > self.stop_timeout:
                logger.warning(
                    "worker process %d (pid %s) still running %.0fs after SIGTERM: killing it",
                    slot.index,
                    slot.child.pid,
                    self.stop_timeout,
                )
                slot.child.kill()
            return  # _reap starts the new child once it has exited
        if slot.replacing is not None:
            return  # under way: _wait_for_ready ends the step when the new child serves
        if slot.child is not None and not slot.ready:
            return  # still starting: replaced once it serves
        if slot.child is None:
            self._replaced(slot)  # dead and waiting for its restart, which starts the new code anyway
            return
        logger.info("worker process %d (pid %s): stopping it for its replacement (it drains)", slot.index, slot.child.pid)
        slot.replacing = "stopping"
        slot.stopping_since = self.clock()
        slot.child.signal(signal.SIGTERM)

    def _replaced(self, slot: _Slot) -> None:
        """``slot`` needs no more replacing: on to the next, or say the replacement is done."""
        if self._replacing and self._replacing[0] is slot:
            self._replacing.pop(0)
            if not self._replacing:
                logger.info("worker supervisor: all %d worker processes replaced", self.processes)


def supervise(argv: Sequence[str] | None, processes: int) -> int:
    """Run ``processes`` workers, each this command again; returns the command's exit code."""
    return WorkerSupervisor(child_command(argv), processes).run()
