"""``switchboard run --reload``: restart the server when a source file changes (development only).

As uvicorn's ``--reload`` and Django's autoreloader do, a supervisor process watches the
files (with watchfiles, uvicorn's watcher: inotify/FSEvents through Rust, no polling) and
runs the real server as a child, the same command line again; on a change it stops the
child the clean way (SIGTERM) and starts a new one. The child knows it is one from an
environment variable (as Django's ``RUN_MAIN``), so it serves instead of supervising, and
drains for at most a second so a browser's open event stream does not hold up a reload.

A child that fails to start (a syntax error in a consumer) is reported and the supervisor
waits for the next change, so fixing the file is enough. Ports are bound by the child:
between two children the port is briefly closed, which is fine for development and is
why this is not a production feature (deploys are docs/deploys.md).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from .children import ChildProcess, describe_exit
from .config import ConfigError

if TYPE_CHECKING:
    from .config import SwitchboardConfig

logger = logging.getLogger("switchboard.reload")

#: Set in the child's environment: "serve, do not supervise".
CHILD_ENV = "SWITCHBOARD_RELOADER_CHILD"
#: What a change to restarts for: code, templates (Django caches them) and TOML config.
WATCHED_SUFFIXES = (".py", ".html", ".toml")
#: Seconds a child may drain when stopped for a reload (it holds the ports meanwhile).
CHILD_DRAIN_TIMEOUT = 1.0
#: Seconds to wait for a child after SIGTERM before killing it.
STOP_TIMEOUT = 10.0


def is_child() -> bool:
    """Whether this process is the server a reloader started (and so must not start one)."""
    return os.environ.get(CHILD_ENV) == "1"


def shorten_drains(config: SwitchboardConfig) -> None:
    """Drain for at most :data:`CHILD_DRAIN_TIMEOUT` when stopped, so reloads are quick.

    Applied before the command line's ``--set``, so ``--set gateway.drain_timeout=...``
    still wins.
    """
    config.gateway.drain_timeout = min(config.gateway.drain_timeout, CHILD_DRAIN_TIMEOUT)
    worker_drain = config.worker.get("drain_timeout", CHILD_DRAIN_TIMEOUT)
    if isinstance(worker_drain, (int, float)) and not isinstance(worker_drain, bool):
        config.worker = {**config.worker, "drain_timeout": min(worker_drain, CHILD_DRAIN_TIMEOUT)}


def source_filter(extra: Sequence[str] = ()) -> Any:
    """A watchfiles filter: :data:`WATCHED_SUFFIXES` and ``extra`` files, outside ``.git``, ``.venv``..."""
    import watchfiles

    extra_paths = {str(Path(path).resolve()) for path in extra}

    class SourceFilter(watchfiles.DefaultFilter):
        def __call__(self, change: watchfiles.Change, path: str) -> bool:
            if not super().__call__(change, path):
                return False
            return path.endswith(WATCHED_SUFFIXES) or str(Path(path).resolve()) in extra_paths

    return SourceFilter()


def supervise(argv: Sequence[str], directories: Sequence[str], extra: Sequence[str] = ()) -> int:
    """Run ``switchboard <argv>`` as a child and restart it on changes; returns on SIGINT/SIGTERM."""
    try:
        import watchfiles
    except ImportError as exc:
        raise ConfigError(f"--reload needs watchfiles: pip install 'switchboard[reload]' ({exc})") from exc
    paths = [Path(directory).resolve() for directory in directories]
    for path in paths:
        if not path.is_dir():
            raise ConfigError(f"--reload-dir {path}: not a directory")
    stop = threading.Event()
    child = _Child([sys.executable, "-m", "switchboard", *argv])

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        # Control-C reaches the server from the terminal already (one process group); a
        # second SIGINT could land after its handlers are gone and print a traceback.
        # Anything else (SIGTERM from kill or a process manager) is passed on.
        stop.set()
        if signum != signal.SIGINT:
            child.signal(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    logging.getLogger("watchfiles").setLevel(logging.WARNING)  # "1 change detected": ours names the files
    logger.info(
        "reloader %d: restarting on changes to %s files in %s (watchfiles)",
        os.getpid(),
        ", ".join(f"*{suffix}" for suffix in WATCHED_SUFFIXES),
        ", ".join(map(str, paths)),
    )
    try:
        child.start()
        for changes in watchfiles.watch(
            *paths,
            watch_filter=source_filter(extra),
            stop_event=stop,
            raise_interrupt=False,
            yield_on_timeout=True,
            rust_timeout=500,
        ):
            if stop.is_set():
                break
            if not changes:
                child.report_exit()
                continue
            changed = sorted({os.path.relpath(path) for _change, path in changes})
            more = f" and {len(changed) - 5} more" if len(changed) > 5 else ""
            logger.info("changes in %s%s: restarting", ", ".join(changed[:5]), more)
            child.stop()
            child.start()
    finally:
        child.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


class _Child(ChildProcess):
    """The server process, its exit (a failed start, most likely) reported once."""

    def __init__(self, command: list[str]) -> None:
        super().__init__(command)
        self._reported = False

    def start(self, env: Mapping[str, str] | None = None, *, pass_fds: Sequence[int] = ()) -> None:
        super().start({CHILD_ENV: "1", **(env or {})}, pass_fds=pass_fds)
        self._reported = False

    def report_exit(self) -> None:
        """Say once that the server exited on its own (it failed to start, most likely)."""
        code = self.poll()
        if code is not None and not self._reported:
            self._reported = True
            logger.warning("the server exited with %s; waiting for a change to start it again", describe_exit(code))

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        code = super().stop(timeout)
        self.process = None
        return code
