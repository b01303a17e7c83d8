"""Running ``python -m switchboard`` as real OS processes from the test suites.

The end-to-end suites (udp, sms, smtp, webrtc, e2e, promises, observability) all deploy a
test project the way an operator would: ``switchboard gateway`` + ``switchboard worker``
over the real Redis, or one ``switchboard run`` process. What they share lives here: free
ports, a Redis probe, and :class:`ProcessDeployment`, which starts the processes with
their output in one log file each, stops them the way production does (SIGTERM, the clean
shutdown path, then a kill if they hang) and shows their logs when a test fails.

What differs per suite (the settings module, the working directory, the environment,
how to tell the deployment is ready) stays in the suite's own conftest, in a subclass.
"""

from __future__ import annotations

import functools
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Generator, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import pytest

from . import waiting

__all__ = [
    "ModeDeployment",
    "ProcessDeployment",
    "free_port",
    "free_tcp_port",
    "free_udp_port",
    "process_env",
    "pytest_runtest_makereport",
    "redis_reachable",
]


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port nothing is bound to right now, for a process that binds it next.

    The socket is closed before the port is used, so another process could take it in
    between; on a test machine that race is rare enough, and it lets a subprocess bind the
    port itself (``--settings`` read it from the environment) like a real deployment does.
    """
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_tcp_port() -> int:
    """A free TCP port on 127.0.0.1 (see :func:`free_port`)."""
    return free_port(socket.SOCK_STREAM)


def free_udp_port() -> int:
    """A free UDP port on 127.0.0.1 (see :func:`free_port`)."""
    return free_port(socket.SOCK_DGRAM)


def redis_reachable(host: str = "127.0.0.1", port: int = 6379, *, accept_noauth: bool = False) -> bool:
    """Whether a Redis server answers ``PING`` there, so split-mode tests skip (not fail) without one.

    ``accept_noauth``: a server that requires a password and refuses before ``AUTH``
    counts as up too. A raw socket rather than a Redis client: the probe must not depend
    on the layer code under test, and must give up within a second.
    """
    answers = (b"+PONG", b"-NOAUTH") if accept_noauth else (b"+PONG",)
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(answers)
    except OSError:
        return False


def process_env(path: Iterable[Path], **variables: str) -> dict[str, str]:
    """The environment for the deployment's processes: this one's, plus ``variables``.

    ``path`` goes in front of ``PYTHONPATH`` (the settings module, the test project, the
    example site: the processes import them the way a deployment would, not through the
    test process's ``sys.path``), and ``PYTHONUNBUFFERED`` makes logs complete even when
    a process is killed.
    """
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*(str(entry) for entry in path), env.get("PYTHONPATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(variables)
    return env


def _limit_files(limit: int) -> None:
    """In the child, before exec: lower its descriptor limit (soft and hard)."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


class ProcessDeployment:
    """Named ``python -m switchboard <args> --settings <module>`` processes, each with a log file.

    A mixin for a suite's deployment dataclass, which declares the ``env``, ``log_dir``
    and ``processes`` fields (in whatever order its constructor calls use) and sets the
    class variables below. The processes get ``env`` as their whole environment (so the
    suite controls ``PYTHONPATH`` and its settings' variables), run in ``cwd``, and write
    stdout and stderr to ``<log_dir>/<name>.log``: a failing test prints :meth:`logs`.
    """

    #: The ``--settings`` module the processes load (found through ``env["PYTHONPATH"]``).
    settings_module: ClassVar[str]
    #: The processes' working directory.
    cwd: ClassVar[Path]
    #: How long :meth:`stop` waits after the signal before it kills the process.
    stop_timeout: ClassVar[float] = 15
    #: How many characters of each log :meth:`logs` shows (the end, where failures are).
    log_tail: ClassVar[int] = 6000

    env: dict[str, str]
    log_dir: Path
    processes: dict[str, subprocess.Popen[bytes]]

    def command_line(self, *args: str) -> list[str]:
        """The command line of ``switchboard <args>`` with this deployment's settings."""
        return [sys.executable, "-m", "switchboard", *args, "--settings", self.settings_module]

    def start(
        self, name: str, *args: str, env: dict[str, str] | None = None, file_limit: int | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``switchboard <args>`` as process ``name`` (``env`` adds to the deployment's).

        ``file_limit`` sets the child's RLIMIT_NOFILE (soft and hard, so it cannot raise it)
        before it runs: attacks on the descriptor limit need a small one.
        """
        with open(self.log_dir / f"{name}.log", "ab") as log:  # the child keeps its own descriptor
            process = subprocess.Popen(
                self.command_line(*args),
                cwd=self.cwd,
                env={**self.env, **(env or {})},
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=None if file_limit is None else functools.partial(_limit_files, file_limit),
            )
        self.processes[name] = process
        return process

    def pid(self, name: str) -> int:
        """The OS process id of process ``name``."""
        return int(self.processes[name].pid)

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout: float | None = None) -> int:
        """Send ``sig`` (SIGTERM: the clean shutdown path) and wait; kill if it hangs. The exit code."""
        process = self.processes.pop(name)
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(self.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return int(process.returncode)

    def stop_all(self) -> None:
        """Stop every process still running, in the order they were started."""
        for name in list(self.processes):
            self.stop(name)

    def log(self, name: str) -> str:
        """The whole log of process ``name`` so far ('' before it wrote anything)."""
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        """The end of every process's log, for a failure message."""
        return "\n".join(
            f"--- {p.name} ---\n{p.read_text(errors='replace')[-self.log_tail:]}" for p in sorted(self.log_dir.glob("*.log"))
        )

    def check_alive(self) -> None:
        """Fail with the logs as soon as a process has exited, instead of waiting out a timeout."""
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}\n{self.logs()}")

    async def wait_until(
        self, predicate: Callable[[], bool | Awaitable[bool]], timeout: float | None = None, what: str = "condition"
    ) -> None:
        """:func:`support.waiting.wait_until` that fails at once when a process exits, with the logs.

        Without the liveness check a crashed gateway costs the whole deadline and the
        failure says only "timed out"; the logs say why.
        """

        def alive_and() -> bool | Awaitable[bool]:
            self.check_alive()
            return predicate()

        try:
            await waiting.wait_until(alive_and, timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None

    def wait_until_sync(self, predicate: Callable[[], bool], timeout: float | None = None, what: str = "condition") -> None:
        """:meth:`wait_until` for plain (non-async) test code."""

        def alive_and() -> bool:
            self.check_alive()
            return predicate()

        try:
            waiting.wait_until_sync(alive_and, timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None


@dataclass
class ModeDeployment(ProcessDeployment):
    """A deployment in ``mode`` ``split`` (gateway + worker over Redis) or ``run`` (one process), reached on ``port``."""

    mode: str
    port: int
    env: dict[str, str]
    log_dir: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start_mode(self) -> None:
        """Start the processes of ``mode``: ``gateway`` + ``worker``, or the one ``run``."""
        if self.mode == "split":
            self.start("gateway", "gateway")
            self.start("worker", "worker")
        else:
            self.start("run", "run")


def split_layer_env(env: dict[str, str], mode: str, variables: str, redis_url: str) -> None:
    """Point a deployment's settings at Redis in ``split`` mode (``<variables>_REDIS_URL`` and
    a fresh ``<variables>_REDIS_PREFIX``); in ``run`` mode leave no Redis URL behind."""
    env.pop(f"{variables}_REDIS_URL", None)
    if mode == "split":
        env[f"{variables}_REDIS_URL"] = redis_url
        env[f"{variables}_REDIS_PREFIX"] = f"sb-{variables.lower()}-{secrets.token_hex(4)}:"


def stop_reporting(deployment: ProcessDeployment, request: pytest.FixtureRequest) -> None:
    """Stop ``deployment``'s processes; print their logs if the test failed.

    Needs :func:`pytest_runtest_makereport` enabled in the suite's conftest.
    """
    deployment.stop_all()
    rep_call = getattr(request.node, "rep_call", None)
    if rep_call is not None and rep_call.failed:
        print(deployment.logs())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item (``item.rep_call``), so teardown knows a test failed.

    A conftest enables it with ``from support.processes import pytest_runtest_makereport as
    pytest_runtest_makereport``; fixtures then print the processes' logs only on failure.
    """
    report = yield
    setattr(item, "rep_" + report.when, report)
    return report
