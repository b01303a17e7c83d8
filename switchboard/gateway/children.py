"""A server process another ``switchboard`` process runs: started, signalled, stopped the clean way.

Two supervisors share it: ``switchboard run --reload`` (gateway/reload.py: one child,
restarted on code changes) and ``switchboard worker --processes N``
(gateway/supervisor.py: N worker children, restarted when they die). Each child is the
same command line again, with an environment variable telling it that it is the child,
so it serves instead of supervising. Stopping is always SIGTERM first, the path on
which a gateway or worker drains, and a kill only after ``timeout``.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence

logger = logging.getLogger("switchboard.children")


class ChildProcess:
    """One child server process (at most one at a time per object)."""

    def __init__(self, command: Sequence[str], *, name: str = "the server") -> None:
        self.command = list(command)
        self.name = name
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def start(self, env: Mapping[str, str], *, pass_fds: Sequence[int] = ()) -> None:
        """Start the command with ``env`` (what says it is the child) added to this process's environment."""
        self.process = subprocess.Popen(self.command, env={**os.environ, **env}, pass_fds=tuple(pass_fds))

    def poll(self) -> int | None:
        """The exit code once it has exited (negative: the signal that ended it), else None."""
        return None if self.process is None else self.process.poll()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        """Send ``signum`` if it is still running."""
        if self.running():
            assert self.process is not None
            self.process.send_signal(signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)

    def stop(self, timeout: float) -> int | None:
        """SIGTERM, wait up to ``timeout`` seconds, then kill; its exit code (None if never started)."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("%s did not stop within %.0fs of SIGTERM; killing it", self.name, timeout)
                process.kill()
                process.wait()
        return process.returncode


def describe_exit(code: int) -> str:
    """``exit code 3`` or ``signal SIGKILL``, for a log line."""
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"exit code {code}"
