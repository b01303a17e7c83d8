"""A private ``redis-server`` process on a free loopback port, for tests that stop, kill or
restart their Redis (never the shared server on 6379).

Used by the layer tests (sharding, restarts, replicas), the durable-delivery fault tests
(a server with ``appendfsync always`` killed with SIGKILL mid-stream) and the reliability
suite (a server killed under traffic, one that requires a password).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from .processes import free_tcp_port, redis_reachable
from .waiting import deadline

__all__ = ["RedisServer"]


class RedisServer:
    """A ``redis-server`` child process on a loopback port, with no persistence.

    ``options`` are further ``redis-server`` arguments, after the defaults, so they win
    (``["--appendonly", "yes"]`` for a test of what persistence keeps). The port stays the
    same across :meth:`stop` / :meth:`kill` and :meth:`start`, as a restarted server's would.
    With ``password`` it requires it (``requirepass``) and :attr:`url` carries it.
    """

    def __init__(
        self,
        binary: str,
        workdir: Path,
        options: Sequence[str] = (),
        port: int | None = None,
        *,
        password: str | None = None,
    ) -> None:
        self.binary = binary
        self.port = port if port is not None else free_tcp_port()
        self.workdir = workdir
        self.options = list(options)
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"


    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        # --daemonize no: we keep the child's pid, so we stop exactly this process.
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--daemonize", "no",
                "--dir", str(self.workdir),
                "--logfile", str(self.workdir / "redis.log"),
                *(["--requirepass", self.password] if self.password else []),
                *self.options,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        end = time.monotonic() + deadline(10)
        # redis_reachable waits for +PONG, so a server still loading its AOF is not "up".
        while not redis_reachable(port=self.port, accept_noauth=self.password is not None):
            if self.process.poll() is not None:
                log = (self.workdir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server on port {self.port} exited: {log}")
            if time.monotonic() > end:
                self.stop()
                raise RuntimeError(f"redis-server on port {self.port} did not come up")
            time.sleep(0.02)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def kill(self) -> None:
        """SIGKILL: no shutdown save, only what the server had already written survives."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(10)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
