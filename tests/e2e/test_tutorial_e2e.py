"""The ported Channels tutorial (examples/tutorial) run as a deployment, unchanged but for its imports.

Two modes: ``run`` (``switchboard run``, the in-memory layer from ``CHANNEL_LAYERS``) and
``split`` (``manage.py rungateway`` + ``manage.py runworker --log-level DEBUG --log-format json`` over Redis,
configured as channels_redis's ``RedisChannelLayer`` in ``CHANNEL_LAYERS``). Real clients
load the room page and chat over WebSockets. The tutorial's own test suite
(``manage.py test chat``) runs too, on each layer.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import websockets
from support.processes import ModeDeployment, free_tcp_port, process_env, redis_reachable
from support.waiting import deadline, eventually

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "examples" / "tutorial"
REDIS_URL = os.environ.get("SWITCHBOARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
WAIT = deadline(20)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def require_redis() -> None:
    host_port = REDIS_URL.split("//", 1)[1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    if not redis_reachable(host or "127.0.0.1", int(port or 6379)):
        pytest.skip(f"Redis is not reachable at {REDIS_URL}; split mode needs it")


@dataclass
class TutorialDeployment(ModeDeployment):
    """The tutorial project's processes; split mode goes through its manage.py commands."""

    settings_module = "mysite.settings"
    cwd = TUTORIAL

    def start_mode(self) -> None:
        if self.mode == "split":
            self.start_manage("gateway", "rungateway")
            # Options of switchboard worker, through manage.py (they failed there before).
            self.start_manage("worker", "runworker", "--log-level", "DEBUG", "--log-format", "json")
        else:
            self.start("run", "run")

    def start_manage(self, name: str, *args: str) -> None:
        with open(self.log_dir / f"{name}.log", "ab") as log:
            self.processes[name] = subprocess.Popen(
                [sys.executable, "manage.py", *args], cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def room_page(self, room: str) -> str:
        with urllib.request.urlopen(f"{self.base_url}/chat/{room}/", timeout=deadline(10)) as response:
            return str(response.read().decode())


def tutorial_env(port: int, tmp_path: Path, redis_prefix: str | None) -> dict[str, str]:
    variables = {"TUTORIAL_HTTP_BIND": f"127.0.0.1:{port}", "TUTORIAL_DB": str(tmp_path / "db.sqlite3")}
    if redis_prefix is not None:
        variables.update(TUTORIAL_REDIS_URL=REDIS_URL, TUTORIAL_REDIS_PREFIX=redis_prefix)
    return process_env([TUTORIAL], **variables)


@pytest.fixture(params=["split", "run"])
def tutorial(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TutorialDeployment]:
    mode = str(request.param)
    if mode == "split":
        require_redis()
    port = free_tcp_port()
    prefix = f"sbtest-tutorial-{secrets.token_hex(4)}" if mode == "split" else None
    deployment = TutorialDeployment(mode=mode, port=port, env=tutorial_env(port, tmp_path, prefix), log_dir=tmp_path)
    deployment.start_mode()
    try:
        yield deployment
    finally:
        deployment.stop_all()
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(deployment.logs())


async def chat(deployment: TutorialDeployment, room: str) -> None:
    url = f"ws://127.0.0.1:{deployment.port}/ws/chat/{room}/"
    origin = deployment.base_url
    async with websockets.connect(url, origin=origin) as alice, websockets.connect(url, origin=origin) as bob:  # type: ignore[arg-type]
        await alice.send(json.dumps({"message": "hello from alice"}))
        for client in (alice, bob):
            assert json.loads(await asyncio.wait_for(client.recv(), WAIT)) == {"message": "hello from alice"}
        await bob.send(json.dumps({"message": "hi alice"}))
        for client in (alice, bob):
            assert json.loads(await asyncio.wait_for(client.recv(), WAIT)) == {"message": "hi alice"}
    # Another site's page cannot open the socket (AllowedHostsOriginValidator).
    with pytest.raises(websockets.InvalidStatus):
        async with websockets.connect(url, origin="http://evil.example"):  # type: ignore[arg-type]
            pass


async def test_tutorial_room_page_and_chat(tutorial: TutorialDeployment) -> None:
    def page_ready() -> str | None:
        tutorial.check_alive()
        try:
            return tutorial.room_page("lobby")
        except OSError:
            return None

    page = await eventually(page_ready, "the room page is served", WAIT)
    assert '"room-name"' in page and "/ws/chat/" in page

    async def chat_works() -> None:
        await chat(tutorial, "lobby")

    # The worker may come up after the gateway (split mode): retry until a first chat works.
    last: Exception | None = None
    for _attempt in range(int(WAIT)):
        try:
            await chat_works()
            break
        except (AssertionError, TimeoutError, OSError, websockets.WebSocketException) as exc:
            last = exc
            tutorial.check_alive()
            await asyncio.sleep(1)
    else:
        raise AssertionError(f"the tutorial chat never worked: {last!r}\n{tutorial.logs()}")
    if tutorial.mode == "split":
        # runworker's --log-format json took effect: every line is a JSON object.
        lines = [line for line in tutorial.log("worker").splitlines() if line.strip()]
        assert lines and all(json.loads(line)["message"] for line in lines), lines[:3]


@pytest.mark.parametrize("layer", ["memory", "redis"])
def test_tutorial_test_suite_passes(layer: str, tmp_path: Path) -> None:
    """``manage.py test chat``: the tutorial's own tests, on the in-memory and Redis layers."""
    prefix = None
    if layer == "redis":
        require_redis()
        prefix = f"sbtest-tutorial-tests-{secrets.token_hex(4)}"
    env = tutorial_env(free_tcp_port(), tmp_path, prefix)
    result = subprocess.run(
        [sys.executable, "manage.py", "test", "chat", "-v", "2"],
        cwd=TUTORIAL,
        env=env,
        capture_output=True,
        text=True,
        timeout=deadline(180),
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert "Ran 6 tests" in output and "OK" in output
