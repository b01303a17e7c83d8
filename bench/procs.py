"""Server subprocesses: start, wait for readiness, measure CPU and memory, stop.

CPU and peak memory come straight from ``/proc`` (``utime+stime`` and ``VmHWM``) rather
than from polling, so a short burst is not missed and no extra package is needed. The
benchmark is Linux-only anyway: it is about one concrete 2-core machine.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcSpec:
    """How to start one server process of a system."""

    role: str
    argv: list[str]
    cwd: Path
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ProcUsage:
    """CPU seconds (user+system) and peak resident memory of one process tree."""

    cpu_seconds: float
    peak_rss_bytes: int


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (all threads), from ``/proc/PID/task/*/children``."""
    kids: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                kids.extend(int(x) for x in Path(f"/proc/{pid}/task/{task}/children").read_text().split())
            except OSError:
                continue
    except OSError:
        pass
    return kids


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (uvicorn ``--workers`` forks, for instance)."""
    seen: list[int] = []
    stack = [pid]
    while stack:
        current = stack.pop()
        if current in seen:
            continue
        seen.append(current)
        stack.extend(_children(current))
    return seen


def read_usage(pid: int) -> ProcUsage | None:
    """CPU seconds and ``VmHWM`` of one process, or None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    # Fields after the command name, which may contain spaces, start after the last ')'.
    fields_after = stat.rsplit(")", 1)[1].split()
    utime, stime = int(fields_after[11]), int(fields_after[12])
    peak = 0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            peak = int(line.split()[1]) * 1024
            break
    return ProcUsage((utime + stime) / _CLOCK_TICKS, peak)


def machine_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine, all cores (``/proc/stat``), for deltas."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return float("nan")
    # user nice system idle iowait irq softirq steal ...: everything but idle and iowait.
    values = [int(v) for v in first[1:9]]
    busy = sum(values) - values[3] - values[4]
    return busy / _CLOCK_TICKS


def tree_usage(pids: Iterable[int]) -> ProcUsage:
    """Summed CPU and summed peak RSS of the given processes and their descendants."""
    cpu = 0.0
    peak = 0
    for root in pids:
        for pid in process_tree(root):
            usage = read_usage(pid)
            if usage is not None:
                cpu += usage.cpu_seconds
                peak += usage.peak_rss_bytes
    return ProcUsage(cpu, peak)


def run_delay_seconds(pids: Iterable[int]) -> float:
    """Seconds the threads of these processes (and descendants) were runnable but not running.

    The second field of ``/proc/PID/task/TID/schedstat``: time spent waiting on a run
    queue for a core. Beside the CPU a process used, it says how much of its latency was
    the machine's (another process had the core), not its own work.
    """
    waited = 0
    for root in pids:
        for pid in process_tree(root):
            try:
                tasks = os.listdir(f"/proc/{pid}/task")
            except OSError:
                continue
            for task in tasks:
                try:
                    waited += int(Path(f"/proc/{pid}/task/{task}/schedstat").read_text().split()[1])
                except (OSError, IndexError, ValueError):
                    continue
    return waited / 1e9


class ServerProcess:
    """One started server process, its log file, and a clean way to stop it."""

    def __init__(self, spec: ProcSpec, log_path: Path) -> None:
        self.spec = spec
        self.log_path = log_path
        self.killed = False
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "wb")  # closed in stop()
        env = {**os.environ, **spec.env}
        self.popen = subprocess.Popen(
            spec.argv,
            cwd=spec.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: a stop reaches forked workers too
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM the process group, SIGKILL it after ``timeout``; returns the exit code.

        Safe to call twice. ``killed`` tells afterwards whether SIGKILL was needed.
        """
        if self._log.closed:
            return self.popen.returncode
        try:
            if self.alive():
                os.killpg(self.pid, signal.SIGTERM)
                try:
                    self.popen.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.killed = True
                    os.killpg(self.pid, signal.SIGKILL)
                    self.popen.wait(5)
            # Forked children that outlived their parent still belong to the group.
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        finally:
            self._log.close()
        return self.popen.returncode


def stop_together(procs: Sequence[ServerProcess], timeout: float = 10.0) -> list[str]:
    """SIGTERM every process group at once, then wait for each; a note per unclean stop.

    A split system's gateway and workers each drain for a second or more; stopping them
    one after the other added those up for every split-mode measurement of a run.
    """
    began = time.monotonic()
    for proc in procs:
        if proc.alive():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    notes = []
    for proc in procs:
        was_alive = proc.alive()
        code = proc.stop(timeout)  # waits; its own SIGTERM is a no-op for a process already stopping
        took = time.monotonic() - began
        if proc.killed:
            notes.append(f"{proc.spec.role} ignored SIGTERM for {timeout:.0f}s and was killed")
        elif was_alive and code not in (0, -15):
            notes.append(f"{proc.spec.role} exited with {code} on SIGTERM")
        elif was_alive and took > 3:
            notes.append(f"{proc.spec.role} took {took:.1f}s to stop")
    return notes


def wait_for_port(host: str, port: int, timeout: float, procs: Iterable[ServerProcess] = ()) -> None:
    """Poll until ``host:port`` accepts TCP, failing fast if a server process has died."""
    deadline = time.monotonic() + timeout
    procs = list(procs)
    while True:
        for proc in procs:
            if not proc.alive():
                raise RuntimeError(f"{proc.spec.role} exited with {proc.popen.returncode} before listening:\n{proc.log_tail()}")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout:.0f}s") from None
            time.sleep(0.1)


def listening_sockets(host: str, port: int) -> int:
    """How many sockets listen on ``host:port`` (IPv4), from ``/proc/net/tcp``.

    With SO_REUSEPORT every gateway process has its own listening socket on the shared
    port, so this counts the gateways that are up, where a connect would reach any one.
    """
    wanted = f"{socket.htonl(int.from_bytes(socket.inet_aton(host), 'big')):08X}:{port:04X}"
    count = 0
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return 0
    for line in lines:
        fields = line.split()
        if len(fields) > 3 and fields[3] == "0A" and fields[1] in (wanted, f"00000000:{port:04X}"):
            count += 1
    return count


def wait_for_listeners(host: str, port: int, count: int, timeout: float, procs: Iterable[ServerProcess] = ()) -> None:
    """Poll until ``count`` sockets listen on ``host:port``, failing fast if a server died."""
    deadline = time.monotonic() + max(0.0, timeout)
    procs = list(procs)
    while listening_sockets(host, port) < count:
        for proc in procs:
            if not proc.alive():
                raise RuntimeError(f"{proc.spec.role} exited with {proc.popen.returncode} before listening:\n{proc.log_tail()}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{listening_sockets(host, port)} of {count} processes listening on {host}:{port}")
        time.sleep(0.1)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (each system gets a fresh one)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
