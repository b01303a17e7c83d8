"""The reliability harness: running gateways to attack, faults to inject, a ledger of inputs.

Two kinds of running gateway:

- :class:`InProcessGateway`: the real gateway core, *every* protocol plugin and a worker
  running ``rel_app`` over the in-memory layer, on an event loop in a background thread.
  The tests stay synchronous (blocking sockets, Hypothesis ``@given``) while the gateway
  serves, exactly as a remote client would see it; and the test can still read the
  plugins' counters and capture every log record the gateway writes.
- :class:`ProcessDeployment`: ``switchboard gateway`` + ``switchboard worker`` as OS
  processes (``rel_settings.py``) over a Redis: the real one on 127.0.0.1:6379 or a
  private ``redis-server`` this suite starts on a free port
  (``support.redis_server.RedisServer``, the ``private_redis`` fixture) so it may kill
  and restart it.

The fixtures that build these live in conftest.py; this module holds the classes so test
modules can import them (a test module must never import ``conftest``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import rel_app
from support import processes
from support.waiting import deadline, wait_until_sync

from switchboard.gateway.layers import ChannelLayer, build_layer
from switchboard.gateway.plugins import ProtocolPlugin, build_plugins
from switchboard.gateway.server import Gateway
from switchboard.gateway.worker import Worker

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
REDIS_URL = os.environ.get("SWITCHBOARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
MOSQUITTO_PORT = 1883
WAIT = deadline(15)  # safety net (scaled): a broken path fails the test instead of hanging it

#: What the sms plugin of every gateway here checks signatures with.
SMS_AUTH_TOKEN = "rel-twilio-token-" + "5f1e" * 4
SMS_PUBLIC_BASE_URL = "https://sms.reliability.test"
SMS_INBOUND_PATH = "/sms/inbound"
SMS_STATUS_PATH = "/sms/status"
SMS_MAX_BODY = 16 * 1024
HTTP_MAX_BODY = 64 * 1024
WS_MAX_FRAME = 64 * 1024
UDP_MAX_DATAGRAM = 8192
SMTP_MAX_MESSAGE = 64 * 1024
WEBRTC_PATH = "/webrtc/offer"
MQTT_MAX_PAYLOAD = 4096

T = TypeVar("T")


# -- small helpers --------------------------------------------------------------------


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A port nothing listens on right now (TCP or UDP)."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_reachable(port: int = 6379, password: str | None = None) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n" if password is None else f"AUTH {password}\r\nPING\r\n".encode())
            return b"+PONG" in sock.recv(64) or (password is not None and b"+PONG" in sock.recv(64))
    except OSError:
        return False


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def mosquitto_reachable() -> bool:
    return port_open(MOSQUITTO_PORT)


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc (what the kernel charges it)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


# -- log capture ----------------------------------------------------------------------

#: Log records that are *expected* under hostile input, each with why. Anything else at
#: ERROR from the gateway's loggers, or any record carrying a traceback, fails a test.
#: (None today: uvicorn's traceback for a client's bad UTF-8 is gone since the gateway's
#: WebSocket protocol checks UTF-8 itself and logs it at DEBUG.)
EXPECTED_LOG_LINES: dict[str, str] = {}
#: Log lines of known bugs (see docs/reliability.md), tolerated by the fuzz batches so they
#: keep checking everything else; each bug has its own strict xfail test. (None open: the
#: WebRTC offer without ``a=mid`` is a 400 now.)
KNOWN_BUG_LOG_LINES: dict[str, str] = {}
_WATCHED_LOGGERS = ("switchboard", "uvicorn", "asyncio", "aiosmtpd", "mail.log")


class LogCapture(logging.Handler):
    """Every WARNING+ record of this process, so a test can look at the ones of its window."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._lock:
            self.records.append(record)

    def mark(self) -> int:
        with self._lock:
            return len(self.records)

    def since(self, mark: int) -> list[logging.LogRecord]:
        with self._lock:
            return list(self.records[mark:])


def problems_in_records(records: list[logging.LogRecord]) -> tuple[list[str], collections.Counter[str]]:
    """Unexpected ERROR/traceback records of the gateway's loggers, and the expected ones counted."""
    problems: list[str] = []
    expected: collections.Counter[str] = collections.Counter()
    for record in records:
        if not record.name.startswith(_WATCHED_LOGGERS):
            continue
        message = record.getMessage()
        if message in EXPECTED_LOG_LINES or message in KNOWN_BUG_LOG_LINES:
            expected[message] += 1
            continue
        if record.levelno >= logging.ERROR or record.exc_info:
            trace = logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
            problems.append(f"{record.levelname} {record.name}: {message}\n{trace}")
    return problems, expected


def problems_in_log_text(text: str) -> tuple[list[str], collections.Counter[str]]:
    """The same judgement for a process's text log (``<time> <LEVEL> <logger> [pid] msg``)."""
    problems: list[str] = []
    expected: collections.Counter[str] = collections.Counter()
    lines = text.splitlines()
    skip_trace = False
    tolerated = [*EXPECTED_LOG_LINES, *KNOWN_BUG_LOG_LINES]
    for index, line in enumerate(lines):
        if any(message in line for message in tolerated):
            expected[next(m for m in tolerated if m in line)] += 1
            skip_trace = True
            continue
        if line.startswith("Traceback"):
            if not skip_trace:
                problems.append("\n".join(lines[max(0, index - 1) : index + 30]))
            continue
        if line[:1].isdigit():
            skip_trace = False
        parts = line.split(" ", 4)
        if len(parts) >= 4 and parts[2] in ("ERROR", "CRITICAL"):
            problems.append(line)
    return problems, expected


# -- the ledger of fuzz inputs --------------------------------------------------------


@dataclass
class FuzzLedger:
    """How many inputs each fuzz test tried, per protocol and target, and what came of them."""

    counts: dict[str, dict[str, collections.Counter[str]]] = field(default_factory=dict)
    expected_logs: collections.Counter[str] = field(default_factory=collections.Counter)

    def record(self, protocol: str, target: str, outcome: str) -> None:
        self.counts.setdefault(protocol, {}).setdefault(target, collections.Counter())[outcome] += 1

    def as_json(self) -> dict[str, Any]:
        return {
            "protocols": {
                protocol: {
                    target: {"tried": sum(outcomes.values()), "outcomes": dict(sorted(outcomes.items()))}
                    for target, outcomes in sorted(targets.items())
                }
                for protocol, targets in sorted(self.counts.items())
            },
            "expected_log_lines": dict(self.expected_logs),
        }


def fuzz_scale(examples: int) -> int:
    """``max_examples`` scaled by ``$REL_FUZZ_SCALE`` (default 1: the CI-sized run)."""
    return max(1, int(examples * float(os.environ.get("REL_FUZZ_SCALE", "1"))))


# -- the in-process gateway -----------------------------------------------------------


def inprocess_protocols(mqtt_prefix: str | None, storage: Path) -> dict[str, dict[str, Any]]:
    """Plugin options of the in-process gateway: every protocol, small limits, fast timeouts."""
    protocols: dict[str, dict[str, Any]] = {
        "http": {
            "bind": ["127.0.0.1:0"],
            "response_timeout": 10,
            "max_body_size": HTTP_MAX_BODY,
            "max_frame_size": WS_MAX_FRAME,
        },
        "udp": {"bind": ["127.0.0.1:0"], "max_datagram_size": UDP_MAX_DATAGRAM},
        "smtp": {
            "bind": "127.0.0.1:0",
            "hostname": "mx.reliability.test",
            "domains": ["example.com"],
            "max_message_size": SMTP_MAX_MESSAGE,
            "storage_path": str(storage),
            "timeout": 30.0,
        },
        "sms": {
            "auth_token": SMS_AUTH_TOKEN,
            "public_base_url": SMS_PUBLIC_BASE_URL,
            "reply_deadline": 2.0,
            "max_body_size": SMS_MAX_BODY,
        },
        # Hundreds of offers from one address: per-address limits off (tests/webrtc covers them).
        "webrtc": {"ice_host_addresses": ["127.0.0.1"], "connect_timeout": 2.0, "max_peers": 500,
                   "max_peers_per_ip": None, "max_offers_per_second_per_ip": None},
    }
    if mqtt_prefix is not None:
        protocols["mqtt"] = {
            "brokers": [f"mqtt://127.0.0.1:{MOSQUITTO_PORT}"],
            "subscriptions": [f"{mqtt_prefix}/in/#"],
            "publish_topics": [f"{mqtt_prefix}/out"],
            "reconnect_min_delay": 0.1,
            "reconnect_max_delay": 0.5,
            "max_payload_size": MQTT_MAX_PAYLOAD,
        }
    return protocols


class InProcessGateway:
    """Gateway core + plugins + a worker on an event loop in a thread (see module docstring)."""

    def __init__(self, protocols: dict[str, dict[str, Any]], *, worker: bool = True) -> None:
        self.protocols = protocols
        self.with_worker = worker
        self.loop = asyncio.new_event_loop()
        self.layer: ChannelLayer | None = None
        self.gateway: Gateway | None = None
        self.worker: Worker | None = None
        self.plugins: dict[str, ProtocolPlugin[Any]] = {}
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="rel-gateway", daemon=True)

    def start(self) -> InProcessGateway:
        self._thread.start()
        if not self._ready.wait(WAIT):
            raise RuntimeError("in-process gateway did not start")
        if self._error is not None:
            raise RuntimeError("in-process gateway failed to start") from self._error
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as exc:  # reported to start() / stop()
            self._error = exc
            self._ready.set()
        finally:
            self.loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        plugins = build_plugins(self.protocols)
        self.layer = build_layer({"BACKEND": "memory", "CONFIG": {"block_timeout": 0.05}})
        self.gateway = Gateway(self.layer)
        self.gateway.plugins = plugins
        await self.gateway.start()
        for plugin in plugins:
            await plugin.start(self.gateway)
            self.plugins[plugin.name] = plugin
        worker_task = None
        worker_stop = asyncio.Event()
        if self.with_worker:
            self.worker = Worker(rel_app.application, self.layer, protocols=rel_app.PROTOCOLS, channels=[])
            worker_task = asyncio.get_running_loop().create_task(self.worker.run(worker_stop, drain_timeout=1))
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            for plugin in reversed(list(self.plugins.values())):
                await plugin.stop(1.0)
            worker_stop.set()
            if worker_task is not None:
                await worker_task
            await self.gateway.stop()
            await self.layer.close()

    def call(self, make: Callable[[], Coroutine[Any, Any, T]], timeout: float = WAIT) -> T:
        """Run a coroutine on the gateway's loop and return its result."""
        future: Future[T] = asyncio.run_coroutine_threadsafe(make(), self.loop)
        return future.result(timeout)

    def stats(self, plugin: str) -> dict[str, int]:
        async def read() -> dict[str, int]:
            return dict(self.plugins[plugin].stats())

        return self.call(read)

    def alive(self) -> bool:
        return self._thread.is_alive() and self._error is None

    @property
    def http_port(self) -> int:
        return int(self.plugins["http"].bound_addresses[0][1])  # type: ignore[attr-defined]

    def stop(self) -> None:
        if self._stop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(WAIT)
        if self._error is not None:
            raise RuntimeError("in-process gateway failed") from self._error


# -- OS processes ---------------------------------------------------------------------


@dataclass
class ProcessDeployment(processes.ProcessDeployment):
    """``switchboard gateway`` / ``worker`` processes with ``rel_settings`` and their logs."""

    env: dict[str, str]
    log_dir: Path
    http_port: int
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    log_offsets: dict[str, int] = field(default_factory=dict)

    settings_module = "rel_settings"
    cwd = HERE
    log_tail = 8000

    def new_log_problems(self) -> tuple[list[str], collections.Counter[str]]:
        """Unexpected ERROR/Traceback lines written by any process since the last call."""
        problems: list[str] = []
        expected: collections.Counter[str] = collections.Counter()
        for path in sorted(self.log_dir.glob("*.log")):
            data = path.read_bytes()
            start = self.log_offsets.get(path.name, 0)
            self.log_offsets[path.name] = len(data)
            found, seen = problems_in_log_text(data[start:].decode(errors="replace"))
            problems += [f"[{path.stem}] {line}" for line in found]
            expected.update(seen)
        return problems, expected

    def wait_http(self, path: str = "/ready", timeout: float = 30) -> None:
        """Wait until an HTTP request through the gateway gets the worker's answer."""
        import http.client

        def ready() -> bool:
            self.check_alive()
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=deadline(5))
                connection.request("GET", path)
                ok = connection.getresponse().status == 200
                connection.close()
                return ok
            except OSError:
                return False

        wait_until_sync(ready, timeout, "the deployment to answer HTTP")


def deployment_env(
    redis_url: str | None, *, protocols: str = "http", prefix: str | None = None, **extra: str
) -> tuple[dict[str, str], int]:
    """Environment for ``rel_settings``; returns it and the HTTP port chosen."""
    http_port = free_port()
    env = dict(os.environ)
    env.update({
        "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT), env.get("PYTHONPATH", "")]),
        "PYTHONUNBUFFERED": "1",
        "REL_PROTOCOLS": protocols,
        "REL_HTTP_BIND": f"127.0.0.1:{http_port}",
        "REL_SMS_AUTH_TOKEN": SMS_AUTH_TOKEN,
    })
    for name in ("REL_REDIS_URL", "REL_REDIS_PREFIX", "REL_HTTP_OPTIONS", "REL_LAYER_OPTIONS", "REL_GATEWAY_OPTIONS",
                 "REL_WORKER_OPTIONS", "SWITCHBOARD_LOG_LEVEL"):
        env.pop(name, None)
    if redis_url is not None:
        env["REL_REDIS_URL"] = redis_url
        env["REL_REDIS_PREFIX"] = prefix or f"sb-rel-{secrets.token_hex(4)}:"
    env.update(extra)
    return env, http_port


# -- the fuzz target: in-process or processes over Redis ------------------------------


@dataclass
class FuzzTarget:
    """One running gateway with every protocol, as the fuzz tests see it."""

    name: str  # "memory" (in-process) or "redis" (OS processes over Redis)
    http_port: int
    udp_address: tuple[str, int]
    smtp_address: tuple[str, int]
    mqtt_prefix: str | None
    inprocess: InProcessGateway | None = None
    deployment: ProcessDeployment | None = None
    log_capture: LogCapture | None = None
    _mark: int = 0

    def stats(self, plugin: str) -> dict[str, int] | None:
        """A plugin's counters (in-process only; None for processes)."""
        return self.inprocess.stats(plugin) if self.inprocess is not None else None

    def check_alive(self) -> None:
        if self.inprocess is not None:
            assert self.inprocess.alive(), "the in-process gateway's loop died"
        if self.deployment is not None:
            self.deployment.check_alive()

    def begin(self) -> None:
        """Start a batch: later log problems are this batch's."""
        if self.log_capture is not None:
            self._mark = self.log_capture.mark()
        if self.deployment is not None:
            self.deployment.new_log_problems()

    def log_problems(self, ledger: FuzzLedger) -> list[str]:
        """Unexpected ERROR/traceback log lines since :meth:`begin` (expected ones are counted)."""
        if self.deployment is not None:
            time.sleep(0.2)  # let the processes flush what the last input caused
            problems, expected = self.deployment.new_log_problems()
        else:
            assert self.log_capture is not None
            problems, expected = problems_in_records(self.log_capture.since(self._mark))
        ledger.expected_logs.update(expected)
        return problems


def split_addresses(deployment: ProcessDeployment) -> tuple[tuple[str, int], tuple[str, int]]:
    env = deployment.env
    udp = env["REL_UDP_BIND"].rsplit(":", 1)
    smtp = env["REL_SMTP_BIND"].rsplit(":", 1)
    return (udp[0], int(udp[1])), (smtp[0], int(smtp[1]))

