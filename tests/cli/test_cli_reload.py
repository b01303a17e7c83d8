"""``switchboard run --reload``: edit a file, the server restarts; break it, fix it, it comes back.

A throw-away project in a temporary directory (as a user's own): the test edits its view
and its routing module and watches what a client gets, through real file-system events
(watchfiles) and a real server process. Waits are for conditions, never for a time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from support.processes import free_tcp_port
from support.waiting import deadline, wait_until_sync

pytest.importorskip("watchfiles")

SETTINGS = """
SECRET_KEY = "reload-tests"
INSTALLED_APPS = ["switchboard"]
ROOT_URLCONF = "rl_urls"
ALLOWED_HOSTS = ["127.0.0.1"]
USE_TZ = True
ASGI_APPLICATION = "rl_routing.application"
SWITCHBOARD = {{"PROTOCOLS": {{"http": {{"bind": ["127.0.0.1:{port}"]}}}}}}
"""
URLS = """
from django.urls import path
import rl_views
urlpatterns = [path("", rl_views.index)]
"""
VIEWS = """
from django.http import HttpResponse
def index(request):
    return HttpResponse("{text}")
"""
ROUTING = """
from django.core.asgi import get_asgi_application
application = get_asgi_application()
"""


def write(path: Path, text: str) -> None:
    path.write_text(textwrap.dedent(text))


class Supervised:
    """The ``switchboard run --reload`` process of the project, its log, and a client."""

    def __init__(self, project: Path, port: int) -> None:
        self.project = project
        self.port = port
        self.log_path = project / "server.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SWITCHBOARD_", "DJANGO_"))}
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "switchboard", "run", "--reload", "--settings", "rl_settings"],
                cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, as a terminal gives it: Control-C is killpg
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self) -> str | None:
        """The page's text, or None while nothing answers."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=deadline(10)) as response:
                return str(response.read().decode())
        except OSError:
            return None

    def wait_for_page(self, text: str) -> None:
        def shows() -> bool:
            assert self.process.poll() is None, f"the reloader exited\n{self.log()}"
            return self.get() == text

        wait_until_sync(shows, 60, f"the page to read {text!r}")

    def servers(self) -> list[psutil.Process]:
        return psutil.Process(self.process.pid).children()


@pytest.fixture
def supervised(tmp_path: Path) -> Iterator[Supervised]:
    port = free_tcp_port()
    write(tmp_path / "rl_settings.py", SETTINGS.format(port=port))
    write(tmp_path / "rl_urls.py", URLS)
    write(tmp_path / "rl_views.py", VIEWS.format(text="v1"))
    write(tmp_path / "rl_routing.py", ROUTING)
    running = Supervised(tmp_path, port)
    try:
        yield running
    finally:
        if running.process.poll() is None:
            children = running.servers()
            running.process.kill()
            running.process.wait()
            for child in children:
                child.kill()
        print(running.log())


def test_reload_restarts_on_edits_survives_a_broken_file_and_stops_cleanly(supervised: Supervised) -> None:
    supervised.wait_for_page("v1")
    first = supervised.servers()
    assert len(first) == 1

    write(supervised.project / "rl_views.py", VIEWS.format(text="v2"))
    supervised.wait_for_page("v2")
    assert "changes in rl_views.py: restarting" in supervised.log()
    assert not first[0].is_running(), "the old server must be gone"

    # A syntax error where the server imports at start: it cannot start, the reloader says
    # so and waits; fixing the file brings the server back, with the new code.
    routing = supervised.project / "rl_routing.py"
    routing.write_text(ROUTING + "\ndef broken(:\n")
    wait_until_sync(lambda: "waiting for a change to start it again" in supervised.log(), 60, "the failed start's report")
    assert "SyntaxError" in supervised.log() or "invalid syntax" in supervised.log()
    write(supervised.project / "rl_views.py", VIEWS.format(text="v3"))
    routing.write_text(ROUTING)
    supervised.wait_for_page("v3")

    servers = supervised.servers()
    assert len(servers) == 1  # one server at a time
    supervised.process.send_signal(signal.SIGTERM)
    assert supervised.process.wait(deadline(30)) == 0
    _gone, alive = psutil.wait_procs(servers, timeout=deadline(10))
    assert not alive, "SIGTERM to the reloader stops its server too"


def test_data_files_do_not_restart_the_server(supervised: Supervised) -> None:
    supervised.wait_for_page("v1")
    (server,) = supervised.servers()
    (supervised.project / "db.sqlite3").write_bytes(b"not watched")
    write(supervised.project / "rl_views.py", VIEWS.format(text="v2"))
    supervised.wait_for_page("v2")
    # One restart, for the .py file: the log names it and not the data file.
    assert supervised.log().count("INFO switchboard.reload") == 2  # "restarting on changes to ..." and one restart
    assert "db.sqlite3" not in supervised.log()
    assert not server.is_running()


def test_control_c_stops_the_reloader_and_its_server_without_a_traceback(supervised: Supervised) -> None:
    supervised.wait_for_page("v1")
    servers = supervised.servers()
    os.killpg(supervised.process.pid, signal.SIGINT)  # what Control-C in the terminal does
    assert supervised.process.wait(deadline(30)) == 0
    _gone, alive = psutil.wait_procs(servers, timeout=deadline(10))
    assert not alive
    assert "Traceback" not in supervised.log() and "KeyboardInterrupt" not in supervised.log()
