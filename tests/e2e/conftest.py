"""End-to-end fixtures: the example project run as real OS processes.

Two modes, and every e2e test runs in both:
- ``split``: ``switchboard gateway`` + ``switchboard worker`` (connections only) +
  ``switchboard worker thumbnails`` (the named channel only) processes over the real Redis
  on 127.0.0.1:6379 (skipped with a reason when Redis is not reachable);
- ``run``: ``switchboard run``, one process on the in-memory layer.

Each deployment has its own SQLite database (``SWITCHBOARD_EXAMPLE_DB``), a copy of one
migrated once per test session with the users the tests log in as.
"""

from __future__ import annotations

import html
import http.client
import http.cookiejar
import os
import re
import secrets
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.processes import ModeDeployment, free_tcp_port, process_env, redis_reachable
from support.waiting import deadline

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "chatsite"
HERE = Path(__file__).resolve().parent
REDIS_URL = os.environ.get("SWITCHBOARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

#: Users in every deployment's database: username -> password.
USERS = {"alice": "alice-password", "bob": "bob-password"}


@dataclass
class Deployment(ModeDeployment):
    """Processes of one running example deployment, and how to reach it."""

    settings_module = "e2e_settings"
    cwd = EXAMPLE
    log_tail = 4000

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def origin(self) -> str:
        """The ``Origin`` a browser on the site's own pages sends."""
        return self.base_url

    def wait_ready(self, timeout: float = 30) -> None:
        """Wait until a plain Django view answers through the gateway (so a worker is up)."""

        def answers() -> bool:
            try:
                with urllib.request.urlopen(self.base_url + "/api/echo/?ready=1", timeout=deadline(5)) as response:
                    return bool(response.status == 200)
            except (OSError, http.client.HTTPException):  # not listening yet, or no worker yet
                return False

        self.wait_until_sync(answers, timeout, "a Django view to answer through the gateway")


    def login(self, username: str) -> str:
        """Log in as one of ``USERS``; the session cookie's value."""
        session = self.try_login(username, USERS[username])
        assert session, f"could not log in as {username}"
        return session

    def try_login(self, username: str, password: str) -> str | None:
        """Log in through Django's login view as a browser does; the session cookie, if any.

        GET the page (the CSRF cookie, and the token from the form), POST the credentials
        with both, follow the redirect: the cookie jar then holds the session cookie.
        """
        jar = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
        with opener.open(self.base_url + "/accounts/login/", timeout=deadline(15)) as response:
            page = response.read().decode()
        match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
        assert match is not None, "no CSRF token in the login form"
        form = {"username": username, "password": password, "csrfmiddlewaretoken": html.unescape(match[1])}
        with opener.open(self.base_url + "/accounts/login/", urllib.parse.urlencode(form).encode(), timeout=15) as response:
            assert response.status == 200
            landed = response.url
        sessions = [cookie.value for cookie in jar if cookie.name == "sessionid" and cookie.value]
        if not sessions:
            assert landed.endswith("/accounts/login/"), f"no session, yet redirected to {landed}"
            return None
        assert landed == self.base_url + "/", f"logged in but not redirected home: {landed}"
        return str(sessions[0])


def _env(port: int, mode: str, prefix: str, db: Path) -> dict[str, str]:
    env = process_env(
        [EXAMPLE, HERE],
        SWITCHBOARD_EXAMPLE_DB=str(db),
        SWITCHBOARD_HTTP_BIND=f"127.0.0.1:{port}",
        SWITCHBOARD_UDP_BIND="127.0.0.1:0",
        SWITCHBOARD_SMTP_BIND="127.0.0.1:0",
        SWITCHBOARD_RESPONSE_TIMEOUT="10",
    )
    env.pop("SWITCHBOARD_REDIS_URL", None)
    env.pop("DJANGO_DEBUG", None)  # the example as shipped: DEBUG off
    if mode == "split":
        env["SWITCHBOARD_REDIS_URL"] = REDIS_URL
        env["SWITCHBOARD_REDIS_PREFIX"] = prefix
    return env


@pytest.fixture(scope="session")
def example_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example's database, migrated and with the test users: made once, copied per deployment.

    ``manage.py migrate`` and ``createchatuser`` as a user would run them, in one process.
    """
    db = tmp_path_factory.mktemp("e2e-db") / "template.sqlite3"
    env = _env(0, "run", "", db)
    script = "; ".join([
        "import django",
        "from django.core.management import call_command",
        "django.setup()",
        "call_command('migrate', verbosity=0, interactive=False)",
        *(f"call_command('createchatuser', {name!r}, password={password!r}, verbosity=0)" for name, password in USERS.items()),
    ])
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=EXAMPLE,
        env={**env, "DJANGO_SETTINGS_MODULE": "e2e_settings"},
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, f"migrating the example database failed:\n{result.stderr.decode(errors='replace')}"
    return db


@pytest.fixture(params=["split", "run"], scope="module")
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, example_database: Path
) -> Iterator[Deployment]:
    """The example deployed in ``split`` (gateway + workers over Redis) or ``run`` mode.

    One deployment per module and mode: the tests share it, which is also a check that
    each bad input leaves the gateway serving the tests after it.
    """
    mode = request.param
    tmp_path = tmp_path_factory.mktemp(f"e2e-{mode}")
    if mode == "split" and not redis_reachable():
        pytest.skip("Redis is not reachable on 127.0.0.1:6379 (start it: see .ci/run)")
    port = free_tcp_port()
    prefix = f"sb-e2e-{secrets.token_hex(4)}:"
    db = tmp_path / "example.sqlite3"
    shutil.copyfile(example_database, db)
    deployment = Deployment(mode, port, _env(port, mode, prefix, db), tmp_path)
    if mode == "split":
        deployment.start("gateway", "gateway")
        # Connections only: named channels go to their own worker, so a test can tell
        # which process did a background task.
        deployment.start("worker", "worker", env={"SWITCHBOARD_E2E_CONNECTIONS_ONLY": "1"})
        deployment.start("thumbnails", "worker", "thumbnails")
    else:
        deployment.start("run", "run")
    try:
        deployment.wait_ready()
        yield deployment
    finally:
        deployment.stop_all()
        # Shown by pytest only when a test of this module failed.
        print(deployment.logs())
