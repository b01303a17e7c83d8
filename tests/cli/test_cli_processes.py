"""``switchboard worker --processes N``: N workers from one command, looked after.

Two layers of tests, both with real processes and real signals:

- the supervisor's rules, with a stand-in child (``supervised_child.py``) that records
  what happens to it in an events file: a start-up failure stops the command with the
  child's code, a death is restarted, SIGTERM drains all and exits 0, a child that will
  not stop is killed, SIGHUP replaces them one at a time and a bad replacement leaves the
  others serving;
- the real command over Redis beside a gateway: two workers serving, each with its own
  metrics port, one killed and replaced while requests keep being answered.

Waits are for conditions (support.waiting), never for a time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from support.processes import free_tcp_port, redis_reachable
from support.waiting import deadline, wait_until_sync

from switchboard.gateway import supervisor
from switchboard.gateway.options import process_count

from .conftest import HERE, REDIS_URL, CliDeployment, run_cli

CHILD = HERE / "supervised_child.py"
ROOT = HERE.parents[1]


# -- the supervisor's rules, with stand-in children --------------------------------------


@dataclass
class Supervised:
    """A ``WorkerSupervisor`` of stand-in children, in a process of its own."""

    process: subprocess.Popen[bytes]
    events_path: Path
    log_path: Path

    def events(self) -> list[tuple[str, int, int]]:
        """``(event, slot, pid)`` in the order the children wrote them."""
        if not self.events_path.exists():
            return []
        rows = []
        for line in self.events_path.read_text().splitlines():
            name, slot, pid = line.split()
            rows.append((name, int(slot), int(pid)))
        return rows

    def pids(self, name: str, slot: int | None = None) -> list[int]:
        return [pid for event, s, pid in self.events() if event == name and (slot is None or s == slot)]

    def serving(self) -> dict[int, int]:
        """Slot -> pid of the children that said they serve and have not stopped (nor died)."""
        now: dict[int, int] = {}
        for event, slot, pid in self.events():
            if event == "ready":
                now[slot] = pid
            elif event == "stopped" and now.get(slot) == pid:
                del now[slot]
        return {slot: pid for slot, pid in now.items() if psutil.pid_exists(pid) and _alive(pid)}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait(self, predicate: Callable[[], object], what: str) -> None:
        try:
            wait_until_sync(lambda: bool(predicate()), what=what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nevents: {self.events()}\nlog:\n{self.log()}") from None

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def replace_all(self) -> dict[int, int]:
        """SIGHUP, and wait until a new child serves in every slot; the old ``serving()``."""
        old = self.serving()
        self.signal(signal.SIGHUP)
        self.wait(
            lambda: len(self.serving()) == len(old) and not set(self.serving().values()) & set(old.values()),
            "a new child serving in every slot",
        )
        return old

    def exit_code(self, timeout: float = 30) -> int:
        try:
            return self.process.wait(deadline(timeout))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the supervisor did not exit\nevents: {self.events()}\nlog:\n{self.log()}") from None


#: The ``supervise`` fixture: ``supervise(processes=2, stop_timeout=30.0, **child_env)``.
StartSupervisor = Callable[..., Supervised]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def supervise(tmp_path: Path) -> Iterator[StartSupervisor]:
    """Start a supervisor of ``processes`` stand-in children with ``env``; kill what is left at the end."""
    started: list[Supervised] = []

    def start(processes: int = 2, stop_timeout: float = 30.0, **env: str) -> Supervised:
        events = tmp_path / "events.txt"
        log_path = tmp_path / "supervisor.log"
        program = textwrap.dedent(
            f"""
            import logging, sys
            from switchboard.gateway.supervisor import WorkerSupervisor
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
            sys.exit(WorkerSupervisor([sys.executable, {str(CHILD)!r}], {processes}, stop_timeout={stop_timeout}).run())
            """
        )
        child_env = {**os.environ, "CHILD_EVENTS": str(events), "PYTHONPATH": str(ROOT), **env}
        child_env.pop(supervisor.PROCESS_ENV, None)
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-c", program], env=child_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        running = Supervised(process, events, log_path)
        started.append(running)
        return running

    yield start
    for running in started:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait()
        for _event, _slot, pid in running.events():
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_the_workers_start_and_sigterm_drains_them_all_with_exit_0(supervise: StartSupervisor) -> None:
    running = supervise(processes=3)
    running.wait(lambda: len(running.serving()) == 3, "three children serving")
    assert sorted(running.serving()) == [1, 2, 3]
    pids = list(running.serving().values())
    running.signal(signal.SIGTERM)
    assert running.exit_code() == 0
    assert sorted(running.pids("stopped")) == sorted(pids)  # each drained on its SIGTERM
    assert not any(_alive(pid) for pid in pids)


def test_a_child_that_fails_to_start_stops_the_command_with_its_exit_code(supervise: StartSupervisor) -> None:
    running = supervise(processes=2, CHILD_FAIL_SLOT="2")
    assert running.exit_code() == 3
    assert "worker process 2" in running.log() and "before it was serving: stopping" in running.log()
    assert running.pids("failed", 2) and len(running.pids("started", 2)) == 1  # not restarted in a loop
    assert not any(_alive(pid) for pid in running.pids("started"))


def test_a_child_that_dies_is_started_again_in_its_place(supervise: StartSupervisor) -> None:
    running = supervise(processes=2)
    running.wait(lambda: len(running.serving()) == 2, "two children serving")
    first = running.serving()
    os.kill(first[1], signal.SIGKILL)
    running.wait(lambda: running.serving().get(1) not in (None, first[1]), "a new child in slot 1")
    assert running.serving()[2] == first[2]  # the other one was left alone
    assert "worker process 1" in running.log() and "exited with signal SIGKILL; starting another" in running.log()
    running.signal(signal.SIGINT)  # Control-C, as to a terminal's process group: a clean stop too
    assert running.exit_code() == 0


def test_a_child_that_will_not_stop_is_killed_after_the_stop_timeout(supervise: StartSupervisor) -> None:
    running = supervise(processes=2, stop_timeout=1.0, CHILD_IGNORE_TERM="1")
    running.wait(lambda: len(running.serving()) == 2, "two children serving")
    pids = list(running.serving().values())
    running.signal(signal.SIGTERM)
    assert running.exit_code() == 1  # not a clean stop: say so
    assert "killing them" in running.log()
    assert not any(_alive(pid) for pid in pids)


def test_a_second_signal_kills_the_workers_at_once(supervise: StartSupervisor) -> None:
    running = supervise(processes=2, stop_timeout=600.0, CHILD_IGNORE_TERM="1")
    running.wait(lambda: len(running.serving()) == 2, "two children serving")
    running.signal(signal.SIGTERM)
    running.wait(lambda: "stopping the workers" in running.log(), "the stop to begin")
    running.signal(signal.SIGTERM)
    assert running.exit_code(timeout=30) == 1  # long before the 600 s stop timeout
    assert "second signal, killing the workers" in running.log()


def test_sighup_replaces_the_workers_one_at_a_time(supervise: StartSupervisor) -> None:
    running = supervise(processes=2)
    running.wait(lambda: len(running.serving()) == 2, "two children serving")
    old = running.replace_all()
    new = running.serving()
    order = [(event, slot, pid) for event, slot, pid in running.events() if pid in set(old.values()) | set(new.values())]
    assert order[-6:] == [
        ("stopped", 1, old[1]),  # slot 1 drains first...
        ("started", 1, new[1]),
        ("ready", 1, new[1]),  # ...and is serving again
        ("stopped", 2, old[2]),  # before slot 2 is touched: one slot down at a time, never both
        ("started", 2, new[2]),
        ("ready", 2, new[2]),
    ]
    assert "all 2 worker processes replaced" in running.log()
    running.signal(signal.SIGTERM)
    assert running.exit_code() == 0


def test_a_worker_that_will_not_stop_for_its_replacement_is_killed(supervise: StartSupervisor) -> None:
    running = supervise(processes=2, stop_timeout=1.0, CHILD_IGNORE_TERM="1")
    running.wait(lambda: len(running.serving()) == 2, "two children serving")
    running.replace_all()
    assert running.log().count("still running 1s after SIGTERM: killing it") == 2
    assert not running.pids("stopped")  # none drained: each was killed, and the replacement went on


def test_a_replacement_that_fails_to_start_leaves_the_others_serving(supervise: StartSupervisor, tmp_path: Path) -> None:
    flag = tmp_path / "bad-deploy"
    running = supervise(processes=2, CHILD_FAIL_FLAG=str(flag))
    running.wait(lambda: len(running.serving()) == 2, "two children serving")
    old = running.serving()
    flag.write_text("the new code does not import")
    running.signal(signal.SIGHUP)
    running.wait(lambda: running.pids("failed", 1), "the new slot 1 child to fail")
    running.wait(lambda: "replacement stopped" in running.log(), "the replacement to end")
    assert running.serving() == {2: old[2]}  # slot 2 was never stopped
    flag.unlink()  # the deploy is fixed: slot 1's restarts succeed again
    running.wait(lambda: len(running.serving()) == 2, "slot 1 serving again")
    assert running.serving()[2] == old[2]
    running.signal(signal.SIGTERM)
    assert running.exit_code() == 0


# -- the real command, over Redis, beside a gateway -----------------------------------------


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=deadline(10)) as response:
            return response.status == 200
    except OSError:  # refused, or an HTTP error status
        return False


def worker_children(supervisor_pid: int) -> list[int]:
    """The supervisor's live children (one that exits while we look is not one)."""
    return [child.pid for child in psutil.Process(supervisor_pid).children() if _alive(child.pid)]


@pytest.mark.redis
@pytest.mark.skipif(not redis_reachable(), reason="Redis is not reachable on 127.0.0.1:6379")
def test_two_worker_processes_serve_and_one_killed_is_replaced(deployment: CliDeployment) -> None:
    deployment.env["CLI_REDIS_URL"] = REDIS_URL
    metrics = free_tcp_port()
    while not _port_free(metrics + 1):
        metrics = free_tcp_port()
    deployment.start("gateway", "gateway", "--metrics-bind", "off")
    workers = deployment.start("workers", "worker", "--processes", "2", "--metrics-bind", f"127.0.0.1:{metrics}")
    ports = (metrics, metrics + 1)
    deployment.wait_until_sync(
        lambda: all(answers(f"http://127.0.0.1:{port}/metrics") for port in ports), 60, "both workers' metrics endpoints"
    )
    deployment.wait_until_sync(lambda: answers(deployment.base_url + "/"), 60, "the gateway to answer")
    assert all(answers(deployment.base_url + "/") for _ in range(20))
    children = worker_children(workers.pid)
    assert len(children) == 2
    os.kill(children[0], signal.SIGKILL)
    deployment.wait_until_sync(
        lambda: len(worker_children(workers.pid)) == 2 and children[0] not in worker_children(workers.pid),
        60,
        "a new worker process in place of the killed one",
    )
    deployment.wait_until_sync(
        lambda: all(answers(f"http://127.0.0.1:{port}/metrics") for port in ports), 60, "both metrics endpoints again"
    )
    assert all(answers(deployment.base_url + "/") for _ in range(20))
    assert deployment.stop("workers") == 0  # SIGTERM: both drain, the command exits 0
    assert not any(_alive(pid) for pid in worker_children_or_none(children))
    log = deployment.log("workers")
    assert "exited with signal SIGKILL; starting another" in log
    assert log.count("running: worker") == 3  # two banners, then the replacement's
    assert "Traceback" not in log


@pytest.mark.redis
@pytest.mark.skipif(not redis_reachable(), reason="Redis is not reachable on 127.0.0.1:6379")
def test_workers_whose_supervisor_was_killed_stop_by_themselves(deployment: CliDeployment) -> None:
    deployment.env["CLI_REDIS_URL"] = REDIS_URL
    workers = deployment.start("workers", "worker", "--processes", "2", "--metrics-bind", "off")
    deployment.wait_until_sync(lambda: deployment.log("workers").count("is serving") == 2, 60, "two workers serving")
    children = worker_children(workers.pid)
    assert len(children) == 2
    os.kill(workers.pid, signal.SIGKILL)  # it cannot pass anything on: the workers must notice
    workers.wait()
    deployment.processes.pop("workers")
    wait_until_sync(lambda: not any(_alive(pid) for pid in children), 60, "the orphaned workers to stop")
    log = deployment.log("workers")
    assert log.count(f"the worker supervisor (pid {workers.pid}) is gone: stopping this worker") == 2
    assert "Traceback" not in log


def worker_children_or_none(pids: list[int]) -> list[int]:
    return [pid for pid in pids if psutil.pid_exists(pid)]


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# -- the parts that need no process ------------------------------------------------------


def test_each_child_serves_metrics_on_its_own_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(supervisor.PROCESS_ENV, raising=False)
    assert supervisor.child_metrics_bind("127.0.0.1:9101") == "127.0.0.1:9101"  # not a child
    for index, port in ((1, 9101), (2, 9102), (4, 9104)):
        monkeypatch.setenv(supervisor.PROCESS_ENV, f"{index}/4")
        assert supervisor.child_metrics_bind("127.0.0.1:9101") == f"127.0.0.1:{port}"
    assert supervisor.child_metrics_bind("[::1]:9101") == "[::1]:9104"
    assert supervisor.child_metrics_bind("127.0.0.1:0") == "127.0.0.1:0"  # any free port: each gets its own
    assert supervisor.child_metrics_bind(None) is None


async def test_a_child_stops_when_its_parent_is_no_longer_its_supervisor(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    stop = asyncio.Event()
    monkeypatch.setenv(supervisor.SUPERVISOR_ENV, str(os.getppid()))
    watch = asyncio.get_running_loop().create_task(supervisor.stop_when_orphaned(stop, interval=0.01))
    await asyncio.sleep(0.05)
    assert not stop.is_set() and not watch.done()  # its supervisor is there: it serves on
    watch.cancel()
    monkeypatch.setenv(supervisor.SUPERVISOR_ENV, str(os.getpid()))  # not our parent: as after a re-parenting
    await asyncio.wait_for(supervisor.stop_when_orphaned(stop, interval=0.01), deadline(10))
    assert stop.is_set()
    monkeypatch.delenv(supervisor.SUPERVISOR_ENV)
    await supervisor.stop_when_orphaned(asyncio.Event())  # no supervisor: returns at once, never stops it


def test_the_process_count_is_a_whole_number_of_at_least_one() -> None:
    assert process_count("3") == 3
    for bad in ("0", "-1", "two", "1.5"):
        with pytest.raises(Exception, match=r"at least 1|whole number"):
            process_count(bad)


def test_a_bad_process_count_is_one_clear_error() -> None:
    result = run_cli("worker", "--processes", "0", "--settings", "cli_settings")
    assert result.returncode == 2
    assert "--processes: must be at least 1, got 0" in result.stderr


def test_bad_settings_stop_the_command_once_not_in_a_restart_loop() -> None:
    result = run_cli("worker", "--processes", "2", "--settings", "no_such_settings_module")
    assert result.returncode == 2
    assert "cannot set Django up with settings 'no_such_settings_module'" in result.stderr
    assert "before it was serving: stopping" in result.stderr
