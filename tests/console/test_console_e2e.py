"""The console end to end: 1 gateway + 2 workers over Redis, five protocols, headless Chromium.

Real everything: ``switchboard gateway``/``worker``/``console`` OS processes, Redis, the
Mosquitto broker, and clients of each protocol (urllib, websockets, a UDP socket,
paho-mqtt, smtplib). Chromium (Debian's, driven over the DevTools protocol) opens the
console and the test reads the figures off the page:

1. the counts the page shows are what the test sent (within a refresh or two), and a live
   tail shows the datagrams; screenshots go to the test's directory (and to docs/img/
   with ``SWITCHBOARD_CONSOLE_SCREENSHOTS=docs/img``);
2. a console bound to a non-loopback address answers 401 without a token, and the page
   asks to sign in;
3. on the gateway's own port (the console mounted in the site), Django sessions decide:
   staff may look, the ``switchboard.manage`` permission may act, others get 403;
4. a worker killed with SIGKILL leaves the page within its heartbeat timeout.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import websockets
from console_helpers import READ_TOKEN, bearer, get_json, http_request
from support import cdp
from support.processes import ProcessDeployment, free_port, free_udp_port, process_env, redis_reachable
from support.waiting import deadline, eventually

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
REDIS_URL = os.environ.get("SWITCHBOARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
MQTT_HOST, MQTT_PORT = "127.0.0.1", 1883
WORKER_TIMEOUT = 3.0  # console_settings.py
INTERVAL = 0.5

pytestmark = [pytest.mark.e2e, pytest.mark.redis, pytest.mark.mosquitto]

if cdp.CHROMIUM is None:
    pytest.skip("chromium is not installed (apt-get install chromium)", allow_module_level=True)


def _mqtt_reachable() -> bool:
    try:
        with socket.create_connection((MQTT_HOST, MQTT_PORT), timeout=1):
            return True
    except OSError:
        return False


@dataclass
class Cluster(ProcessDeployment):
    env: dict[str, str]
    log_dir: Path
    http_port: int
    udp_port: int
    smtp_port: int
    console_port: int
    public_port: int
    mqtt_prefix: str
    sessions: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    settings_module = "console_settings"
    cwd = HERE

    def console(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.console_port}{path}"

    def frame(self) -> dict[str, Any] | None:
        frame: dict[str, Any] | None = get_json(self.console("/api/frame"))["frame"]
        return frame

    def django(self, code: str) -> str:
        """Run ``code`` with Django set up on the test's settings and database; its stdout."""
        script = "import django; django.setup()\n" + code
        done = subprocess.run(
            [sys.executable, "-c", script], cwd=self.cwd, env={**self.env, "DJANGO_SETTINGS_MODULE": self.settings_module},
            capture_output=True, text=True, timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not redis_reachable():
        pytest.skip("Redis is not reachable on 127.0.0.1:6379")
    if not _mqtt_reachable():
        pytest.skip("the MQTT broker is not reachable on 127.0.0.1:1883")
    base = tmp_path_factory.mktemp("console-e2e")
    ports = {"http": free_port(), "udp": free_udp_port(), "smtp": free_port(), "console": free_port(), "public": free_port()}
    prefix = f"sb-console-{secrets.token_hex(4)}"
    env = process_env(
        [HERE, ROOT],
        CONSOLE_E2E_REDIS_URL=REDIS_URL,
        CONSOLE_E2E_REDIS_PREFIX=f"{prefix}:",
        CONSOLE_E2E_HTTP_BIND=f"127.0.0.1:{ports['http']}",
        CONSOLE_E2E_UDP_BIND=f"127.0.0.1:{ports['udp']}",
        CONSOLE_E2E_SMTP_BIND=f"127.0.0.1:{ports['smtp']}",
        CONSOLE_E2E_MQTT_PREFIX=prefix,
        CONSOLE_E2E_CONSOLE_BIND=f"127.0.0.1:{ports['console']}",
        CONSOLE_E2E_DB=str(base / "site.sqlite3"),
    )
    log_dir = base / "logs"
    log_dir.mkdir()
    cluster = Cluster(env, log_dir, ports["http"], ports["udp"], ports["smtp"], ports["console"], ports["public"], prefix)
    try:
        cluster.sessions = json.loads(cluster.django(_USERS))
        cluster.start("gateway", "gateway")
        cluster.start("worker-a", "worker")
        cluster.start("worker-b", "worker")
        cluster.start("console", "console")
        cluster.start("console-public", "console", "--bind", f"0.0.0.0:{ports['public']}")

        def all_up() -> bool:
            cluster.check_alive()
            frame = cluster.frame()
            kinds = sorted(p["kind"] for p in (frame or {}).get("processes", []))
            return kinds == ["gateway", "worker", "worker"]

        asyncio.run(eventually(all_up, "1 gateway and 2 workers on the console", timeout=90))
        yield cluster
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.stop_all()


# Migrate, make three users, log each in with Django's own test client: their session keys.
_USERS = """
import json
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.test import Client

call_command("migrate", verbosity=0)
staff = User.objects.create_user("staff", password="pw-staff", is_staff=True)
manager = User.objects.create_user("manager", password="pw-manager", is_staff=True)
manager.user_permissions.add(Permission.objects.get(content_type__app_label="switchboard", codename="manage"))
User.objects.create_user("plain", password="pw-plain")
sessions = {}
for name in ("staff", "manager", "plain"):
    client = Client()
    assert client.login(username=name, password="pw-" + name)
    sessions[name] = client.cookies["sessionid"].value
print(json.dumps(sessions))
"""


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Any]:
    chromium = await cdp.Chromium.launch(tmp_path / "profile")
    try:
        yield chromium
    finally:
        await chromium.close()


# -- traffic ----------------------------------------------------------------------------


def _udp(cluster: Cluster, count: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(deadline(10))
        for n in range(count):
            sock.sendto(b"datagram %d" % n, ("127.0.0.1", cluster.udp_port))
            assert sock.recvfrom(2048)[0] == b"DATAGRAM %d" % n


def _mqtt(cluster: Cluster, count: int) -> None:
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"console-e2e-{secrets.token_hex(3)}")
    client.connect(MQTT_HOST, MQTT_PORT)
    client.loop_start()
    try:
        for n in range(count):
            client.publish(f"{cluster.mqtt_prefix}/in/sensor{n}", b"21.5", qos=1).wait_for_publish(deadline(10))
    finally:
        client.loop_stop()
        client.disconnect()


def _mail(cluster: Cluster, count: int) -> None:
    with smtplib.SMTP("127.0.0.1", cluster.smtp_port, timeout=deadline(20)) as smtp:
        for n in range(count):
            smtp.sendmail("alice@example.org", ["inbox@console.test"], f"Subject: hello {n}\r\n\r\nbody {n}\r\n")


def _http(cluster: Cluster, count: int) -> None:
    for _ in range(count):
        status, _headers, body = http_request(f"http://127.0.0.1:{cluster.http_port}/hello")
        assert (status, body) == (200, b"hello")


async def _websocket(cluster: Cluster, count: int) -> None:
    async with websockets.connect(f"ws://127.0.0.1:{cluster.http_port}/ws/") as ws:
        for n in range(count):
            await ws.send(f"m{n}")
            assert await asyncio.wait_for(ws.recv(), deadline(20)) == f"echo:m{n}"


def _totals(frame: dict[str, Any] | None) -> dict[str, dict[str, int]]:
    protocols = (frame or {}).get("protocols", {})
    return {name: {k: protocols[name][k] for k in ("in", "out", "opened")} for name in protocols}


# -- the page -----------------------------------------------------------------------------

_FIGURES = """(() => {
  const out = {};
  for (const card of document.querySelectorAll('[data-protocol]')) {
    const figures = {};
    for (const node of card.querySelectorAll('[data-figure]')) figures[node.dataset.figure] = node.textContent;
    out[card.dataset.protocol] = figures;
  }
  return out;
})()"""


async def _viewport(browser: Any, session: str) -> None:
    await browser.call("Emulation.setDeviceMetricsOverride",
                       {"width": 1400, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session)


async def _screenshot(browser: Any, session: str, path: Path, *, publish: bool = True) -> None:
    metrics = await browser.call("Page.getLayoutMetrics", {}, session)
    size = metrics.get("cssContentSize") or metrics["contentSize"]
    shot = await browser.call("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": 1400, "height": min(int(size["height"]), 4000), "scale": 1},
    }, session)
    await asyncio.to_thread(_save, path, base64.b64decode(shot["data"]), publish)


def _save(path: Path, png: bytes, publish: bool) -> None:
    path.write_bytes(png)
    folder = os.environ.get("SWITCHBOARD_CONSOLE_SCREENSHOTS")
    if folder and publish:
        (ROOT / folder / path.name).write_bytes(png)


async def test_the_page_shows_what_was_sent(cluster: Cluster, browser: Any, tmp_path: Path) -> None:
    # The MQTT plugin subscribes once connected: publish until one arrives, then count from there.
    async def mqtt_flowing() -> bool:
        await asyncio.to_thread(_mqtt, cluster, 1)
        await asyncio.sleep(INTERVAL)
        return _totals(await asyncio.to_thread(cluster.frame)).get("mqtt", {}).get("in", 0) > 0

    for _ in range(60):
        if await mqtt_flowing():
            break
    await asyncio.sleep(2 * INTERVAL)  # let any probe still on its way land in the baseline
    before = _totals(await asyncio.to_thread(cluster.frame))

    sent = {"http": 4, "websocket": 3, "udp": 5, "mqtt": 2, "email": 2}
    await asyncio.to_thread(_http, cluster, sent["http"])
    await _websocket(cluster, sent["websocket"])
    await asyncio.to_thread(_udp, cluster, sent["udp"])
    await asyncio.to_thread(_mqtt, cluster, sent["mqtt"])
    await asyncio.to_thread(_mail, cluster, sent["email"])

    def base(protocol: str, key: str) -> int:
        return before.get(protocol, {}).get(key, 0)

    expected = {
        "http": {"in": base("http", "in") + 4, "out": base("http", "out") + 4},
        "websocket": {"in": base("websocket", "in") + 3, "out": base("websocket", "out") + 3,
                      "opened": base("websocket", "opened") + 1},
        "udp": {"in": base("udp", "in") + 5, "out": base("udp", "out") + 5},
        "mqtt": {"in": base("mqtt", "in") + 2},
        "email": {"in": base("email", "in") + 2, "opened": base("email", "opened") + 1},
    }

    session = await browser.open_page(cluster.console("/"))
    await _viewport(browser, session)
    await browser.wait_for(session, "document.querySelectorAll('[data-protocol]').length >= 5", timeout=30)

    async def page_matches() -> bool:
        shown = await browser.evaluate(session, _FIGURES)
        return all(shown.get(p, {}).get(k) == f"{v:,}" for p, figures in expected.items() for k, v in figures.items())

    end = time.monotonic() + deadline(20)
    while not await page_matches():
        assert time.monotonic() < end, (expected, await browser.evaluate(session, _FIGURES))
        await asyncio.sleep(0.1)

    rows = await browser.evaluate(session, "[...document.querySelectorAll('#processes tbody tr')].map(r => r.dataset.kind)")
    assert sorted(rows) == ["gateway", "worker", "worker"]
    channels = await browser.evaluate(session, "[...document.querySelectorAll('#channels tbody tr')].map(r => r.dataset.channel)")
    assert {"switchboard.http", "switchboard.udp", "switchboard.mqtt", "switchboard.email"} <= set(channels)
    assert await browser.evaluate(session, "document.querySelector('#link').dataset.state") == "live"

    # A live tail of UDP, started from the page (it is paused until asked).
    assert await browser.evaluate(session, "document.getElementById('tail-state').textContent") == "paused"
    await browser.evaluate(session, "(() => { const s = document.getElementById('tail-target'); s.value = 'protocol=udp';"
                                    " document.getElementById('tail-toggle').click(); return true; })()")
    end = time.monotonic() + deadline(20)
    while await browser.evaluate(session, "document.querySelectorAll('#tail li.in').length") < 2:
        assert time.monotonic() < end, await browser.evaluate(session, "document.getElementById('tail').textContent")
        await asyncio.to_thread(_udp, cluster, 1)
        await asyncio.sleep(0.3)
    tail = await browser.evaluate(session, "document.getElementById('tail').textContent")
    assert "udp.datagram" in tail and "udp.send" in tail

    await _screenshot(browser, session, tmp_path / "console.png")


async def test_a_non_loopback_bind_wants_credentials(cluster: Cluster, browser: Any, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{cluster.public_port}"
    await eventually(lambda: http_request(url + "/")[0] == 200, "the public console")
    status, headers, _body = await asyncio.to_thread(http_request, url + "/api/frame")
    assert status == 401 and headers["www-authenticate"].startswith("Bearer")
    assert (await asyncio.to_thread(http_request, url + "/api/stream"))[0] == 401
    assert (await asyncio.to_thread(http_request, url + "/api/frame", headers=bearer("guess-guess-guess-guess")))[0] == 401
    viewer = await asyncio.to_thread(get_json, url + "/api/frame", bearer(READ_TOKEN))
    assert viewer["access"] == {**viewer["access"], "who": "token viewer", "manage": False}

    session = await browser.open_page(url + "/")
    await _viewport(browser, session)
    login = "document.getElementById('login')"
    await browser.wait_for(session, f"{login} !== null && !{login}.hidden", timeout=20)
    assert await browser.evaluate(session, "document.querySelector('#link').textContent") == "sign in needed"
    # Signing in with the token in the page's form opens the console.
    await browser.evaluate(session, f"(() => {{ document.getElementById('token').value = '{READ_TOKEN}';"
                                    " document.getElementById('login-form').requestSubmit(); return true; })()")
    await browser.wait_for(session, "document.querySelectorAll('#processes tbody tr').length >= 3", timeout=20)
    assert "token viewer" in await browser.evaluate(session, "document.getElementById('who').textContent")
    await _screenshot(browser, session, tmp_path / "console-signed-in.png", publish=False)


async def test_staff_sessions_on_the_site_mount(cluster: Cluster) -> None:
    url = f"http://127.0.0.1:{cluster.http_port}/console/api/frame"

    def as_user(name: str) -> dict[str, str]:
        return {"Cookie": f"sessionid={cluster.sessions[name]}"}

    status, _headers, body = await asyncio.to_thread(http_request, url, headers=as_user("plain"))
    assert status == 403, body
    staff = await asyncio.to_thread(get_json, url, as_user("staff"))
    assert staff["access"]["who"] == "user staff" and staff["access"]["manage"] is False
    manager = await asyncio.to_thread(get_json, url, as_user("manager"))
    assert manager["access"]["who"] == "user manager" and manager["access"]["manage"] is True

    replay = f"http://127.0.0.1:{cluster.http_port}/console/api/deadletters/replay"
    body_json = json.dumps({"channel": "invoices", "ids": None}).encode()

    def post(name: str, extra: dict[str, str]) -> int:
        headers = {**as_user(name), "Content-Type": "application/json", **extra}
        return http_request(replay, method="POST", body=body_json, headers=headers)[0]

    assert await asyncio.to_thread(post, "staff", {"X-Switchboard-CSRF": staff["access"]["csrf"]}) == 403  # no permission
    assert await asyncio.to_thread(post, "manager", {}) == 403  # no CSRF token
    assert await asyncio.to_thread(post, "manager", {"X-Switchboard-CSRF": staff["access"]["csrf"]}) == 403  # not theirs
    # Past access control: "invoices" is no durable channel of this layer, so it has no dead letters.
    assert await asyncio.to_thread(post, "manager", {"X-Switchboard-CSRF": manager["access"]["csrf"]}) == 404


async def test_a_killed_worker_leaves_the_page_within_its_heartbeat_timeout(cluster: Cluster, browser: Any) -> None:
    session = await browser.open_page(cluster.console("/"))
    victim = cluster.processes["worker-b"].pid
    row = f"document.querySelector('#processes tr[data-pid=\"{victim}\"]')"
    await browser.wait_for(session, f"{row} !== null", timeout=30)
    cluster.processes["worker-b"].send_signal(signal.SIGKILL)
    killed = time.monotonic()
    limit = deadline(WORKER_TIMEOUT + 3 * INTERVAL + 1.0)
    while await browser.evaluate(session, f"{row} !== null"):
        assert time.monotonic() - killed < limit, "the killed worker is still on the page"
        await asyncio.sleep(0.1)
    rows = await browser.evaluate(session, "[...document.querySelectorAll('#processes tbody tr')].map(r => r.dataset.kind)")
    assert sorted(rows) == ["gateway", "worker"]
    cluster.processes.pop("worker-b").wait()
