"""A private Mosquitto broker on a free loopback port, for tests that kill, restart or configure it.

The system broker on 1883 is shared by every suite and never restarted by tests. The MQTT
suite (restarts, TLS, passwords) and the durable fault tests (a broker that queues plenty
for an offline persistent session) start one of these instead.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
from pathlib import Path

from .processes import free_tcp_port
from .waiting import deadline, wait_until_sync

__all__ = ["MosquittoServer", "mosquitto_binary"]


def mosquitto_binary() -> str | None:
    """The ``mosquitto`` executable, or None when it is not installed (tests skip)."""
    return shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class MosquittoServer:
    """A ``mosquitto`` child process with its own config, log and port.

    ``options`` are extra lines of ``mosquitto.conf``: listener options (TLS files, a
    password file) or broker-wide ones (``max_queued_messages``). ``scheme`` is the one its
    :attr:`url` names (``mqtts`` for a TLS listener); ``anonymous=False`` refuses clients
    without credentials (give a ``password_file`` in ``options``). The port stays the same across
    :meth:`kill` and :meth:`start`, as a restarted broker's would.
    """

    def __init__(self, directory: Path, options: str = "", scheme: str = "mqtt", *, anonymous: bool = True) -> None:
        self.port = free_tcp_port()
        self.directory = directory
        self.scheme = scheme
        self.config = directory / "mosquitto.conf"
        directory.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n{options}allow_anonymous {str(anonymous).lower()}\npersistence false\n"
            f"log_dest file {directory / 'mosquitto.log'}\n"
            # Started as root, mosquitto would switch to its own user and could no longer
            # read the test's private tmp directory (keys, log). Ignored when not root.
            "user root\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start it and wait until it accepts connections (fails with its log if it exits)."""
        process = self.process = subprocess.Popen(
            [mosquitto_binary() or "mosquitto", "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

        def listening() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"private mosquitto on port {self.port} exited: {self.log()}")
            return _port_open(self.port)

        wait_until_sync(listening, 10, f"private mosquitto on port {self.port}")

    def kill(self) -> None:
        """Stop the broker abruptly (SIGKILL), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(deadline(10))
        self.process = None

    def stop(self) -> None:
        """Stop it the clean way (SIGTERM)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(deadline(10))
        self.process = None

    def log(self) -> str:
        """The end of its log, for a failure message."""
        path = self.directory / "mosquitto.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""
