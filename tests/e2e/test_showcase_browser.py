"""The example as a person meets it: headless Chromium on the front page, the chat, the live
feed and the WebRTC page, through a real gateway and workers.

Split mode over Redis (gateway + connection worker + ``thumbnails`` worker; one
``switchboard run`` when Redis is absent), DEBUG on as the README runs it, MQTT against the
local Mosquitto when it answers. The browser is driven over the DevTools protocol
(tests/support/cdp.py). The terminal commands the front page shows are run as a user
would paste them (``bash -c``), and each must show up in the browser's live feed.

Screenshots of each page are written to ``$SWITCHBOARD_SCREENSHOTS`` when it is set
(docs/img/ holds the ones the docs show: ``SWITCHBOARD_SCREENSHOTS=docs/img``), else to
the test's temporary directory.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from support.cdp import CHROMIUM, Chromium
from support.processes import free_tcp_port, free_udp_port, redis_reachable
from support.waiting import deadline

from .conftest import ROOT, Deployment, _env

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"),
]

WAIT = deadline(30)


def mosquitto_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 1883), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, example_database: Path) -> Iterator[Deployment]:
    mode = "split" if redis_reachable() else "run"
    tmp_path = tmp_path_factory.mktemp(f"showcase-{mode}")
    db = tmp_path / "example.sqlite3"
    shutil.copyfile(example_database, db)
    port = free_tcp_port()
    env = _env(port, mode, f"sb-showcase-{secrets.token_hex(4)}:", db)
    # Real ports, so the commands the page shows reach the gateway; DEBUG on, as the
    # README's command runs the example (the stylesheet is served with it).
    env.update(
        SWITCHBOARD_UDP_BIND=f"127.0.0.1:{free_udp_port()}",
        SWITCHBOARD_SMTP_BIND=f"127.0.0.1:{free_tcp_port()}",
        DJANGO_DEBUG="1",
    )
    if mosquitto_reachable():
        env["SWITCHBOARD_MQTT_BROKER"] = "mqtt://127.0.0.1:1883"
    deployment = Deployment(mode, port, env, tmp_path)
    if mode == "split":
        deployment.start("gateway", "gateway")
        deployment.start("worker", "worker", env={"SWITCHBOARD_E2E_CONNECTIONS_ONLY": "1"})
        deployment.start("thumbnails", "worker", "thumbnails")
    else:
        deployment.start("run", "run")
    try:
        deployment.wait_ready()
        yield deployment
    finally:
        deployment.stop_all()
        print(deployment.logs())


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Chromium]:
    chromium = await Chromium.launch(tmp_path / "profile")
    try:
        yield chromium
    finally:
        await chromium.close()
        print("--- chromium ---\n" + chromium.logs())


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    configured = os.environ.get("SWITCHBOARD_SCREENSHOTS")
    return (ROOT / configured) if configured else tmp_path / "screenshots"


async def open_page(browser: Chromium, url: str) -> str:
    """A new tab showing ``url``, loaded; its DevTools session."""
    session = await browser.open_page("about:blank")
    await browser.navigate(session, url, 30)
    return session


def write_file(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


async def save(browser: Chromium, session: str, path: Path) -> None:
    await asyncio.to_thread(write_file, path, await browser.screenshot(session))


def status_of(url: str, data: bytes | None = None) -> int:
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


async def feed_has(browser: Chromium, feed: str, protocol: str, text: str) -> None:
    """Wait until the feed page shows an event of ``protocol`` whose text contains ``text``."""
    check = (
        f"window.feed.received.some((e) => e.protocol === {json.dumps(protocol)} "
        f"&& e.text.includes({json.dumps(text)}))"
    )
    await browser.wait_for(feed, check, 30)


def run_command(command: str) -> str:
    """A command from the page, as pasted into a shell; its output."""
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=WAIT)
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result.stdout


async def test_the_showcase_in_a_browser(site: Deployment, browser: Chromium, screenshots: Path) -> None:
    base = site.base_url
    # The front page links every demo and shows a command for every other protocol.
    home = await open_page(browser, base + "/")
    links = await browser.evaluate(home, "[...document.querySelectorAll('a')].map((a) => a.getAttribute('href'))")
    for href in ("/chat/lobby/", "/feed/", "/longpoll/lobby/", "/events/lobby/", "/chat/lobby/webrtc/", "/admin/"):
        assert href in links
    commands = await browser.evaluate(
        home, "Object.fromEntries([...document.querySelectorAll('.command')].map("
        "(c) => [c.dataset.protocol, c.querySelector('code')?.textContent ?? null]))",
    )
    assert set(commands) == {"udp", "email", "mqtt", "sms"}
    assert commands["udp"] and commands["email"] and commands["sms"]
    assert (commands["mqtt"] is not None) == ("SWITCHBOARD_MQTT_BROKER" in site.env)
    styled = await browser.evaluate(home, "getComputedStyle(document.querySelector('header.top')).display")
    assert styled == "flex", "the stylesheet must be served"

    # Log in as a person does: the form, then back on the front page with a log-out button.
    await browser.navigate(home, base + "/accounts/login/?next=/")
    await browser.evaluate(home, """(() => {
        document.querySelector('#id_username').value = 'alice';
        document.querySelector('#id_password').value = 'alice-password';
        document.querySelector('main form').submit(); })()""")
    await browser.wait_for(home, "location.pathname === '/' && !!document.querySelector('#logout')", 30)
    assert await browser.evaluate(home, "document.querySelector('#username').textContent") == "alice"

    # The live feed, open while everything else happens.
    feed = await open_page(browser, base + "/feed/")
    await browser.wait_for(feed, "document.querySelector('#status')?.textContent === 'connected'", 30)

    # The chat: connection light, a post with the poster's name, which the feed shows too.
    chat = await open_page(browser, base + "/chat/lobby/")
    await browser.wait_for(chat, "document.querySelector('#status')?.textContent === 'connected'", 30)
    await browser.evaluate(chat, """(() => {
        document.querySelector('#message').value = 'hello from the browser';
        document.querySelector('#form').requestSubmit(); })()""")
    await browser.wait_for(chat, "[...document.querySelectorAll('#log li')].some((li) => "
                                 "li.textContent === 'alicehello from the browser')", 30)
    await feed_has(browser, feed, "websocket", "alice in lobby: hello from the browser")

    # WebRTC: a data channel to the gateway; its posts carry the user name now.
    await browser.call("Browser.grantPermissions", {"origin": base, "permissions": ["audioCapture"]})
    webrtc = await open_page(browser, base + "/chat/lobby/webrtc/")
    await browser.wait_for(webrtc, "!!window.webrtcChat", 30)
    assert await browser.evaluate(webrtc, "window.webrtcChat.ready", 30) is True
    await browser.evaluate(webrtc, "window.webrtcChat.send('over a data channel')")
    assert await browser.evaluate(webrtc, "window.webrtcChat.waitFor('over a data channel')", 30) is True
    await browser.wait_for(chat, "[...document.querySelectorAll('#log li')].some((li) => "
                                 "li.textContent === 'aliceover a data channel')", 30)
    await feed_has(browser, feed, "webrtc", "alice in lobby: over a data channel")
    assert await browser.evaluate(webrtc, "document.querySelector('#status').textContent") == "connected"

    # Every terminal command on the front page, pasted into a shell, reaches the feed.
    assert "HELLO SWITCHBOARD" in run_command(commands["udp"])
    await feed_has(browser, feed, "udp", "hello switchboard")
    run_command(commands["email"])
    await feed_has(browser, feed, "email", "Hello lobby")
    await browser.wait_for(chat, "[...document.querySelectorAll('#log li')].some((li) => "
                                 "li.textContent.includes('Hello lobby'))", 30)
    assert "open 9:00-17:00" in run_command(commands["sms"])  # TwiML, answered inline
    await feed_has(browser, feed, "sms", "+15005550006: hours")
    if commands["mqtt"]:
        room = f"room{secrets.token_hex(3)}"
        run_command(commands["mqtt"].replace("/kitchen/", f"/{room}/"))
        await feed_has(browser, feed, "mqtt", f"{room}/temp: 21.5")

    # A background task from the front page: queued by a view, made by the named-channel worker.
    await browser.navigate(home, base + "/")
    await browser.evaluate(home, "document.querySelector('#thumbnail').requestSubmit()")
    await browser.wait_for(home, "document.querySelector('#thumbnail-status').textContent.includes('made by')", 30)
    await feed_has(browser, feed, "channel", "'Ada Lovelace'")

    await save(browser, home, screenshots / "showcase-index.png")
    await save(browser, feed, screenshots / "showcase-feed.png")
    await save(browser, chat, screenshots / "showcase-chat.png")
    await save(browser, webrtc, screenshots / "showcase-webrtc.png")

    # Log out from the chat page: back on the front page, logged out.
    await browser.evaluate(chat, "document.querySelector('#logout').click()")
    await browser.wait_for(chat, "location.pathname === '/' && !!document.querySelector('#login')", 30)

    # The admin is wired up and styled (its own static files).
    await browser.navigate(home, base + "/admin/login/?next=/admin/")
    assert await browser.evaluate(home, "!!document.querySelector('#login-form')") is True
    assert status_of(base + "/static/admin/css/base.css") == 200


def test_bad_room_names_are_refused_before_anything_starts(site: Deployment) -> None:
    # The pages answer 404, and so does WebRTC signaling (path_pattern): no peer is made,
    # nothing reaches a worker (which used to fail there with a traceback after a 200).
    for page in ("/chat/no%20such/", "/chat/no%20such/webrtc/", "/longpoll/no%20such/"):
        assert status_of(site.base_url + page) == 404
    offer = json.dumps({"type": "offer", "sdp": "v=0\r\n"}).encode()
    assert status_of(site.base_url + "/webrtc/offer/no%20such/", offer) == 404
    assert status_of(site.base_url + "/webrtc/offer/lobby/extra/", offer) == 404
    assert status_of(site.base_url + "/webrtc/offer/lobby/", offer) == 400  # the room is fine; the SDP is not
    assert "Traceback" not in site.logs()
