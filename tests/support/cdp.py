"""Just enough of the Chrome DevTools Protocol to drive headless Chromium from a test.

No browser-automation dependency: Chromium prints its DevTools WebSocket URL on stderr,
and the ``websockets`` client (already installed for the HTTP plugin) speaks to it.
Commands are JSON ``{"id", "method", "params", "sessionId"}``; replies carry the same id;
events (no id) are ignored.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from .waiting import deadline

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # containers have a tiny /dev/shm
    "--remote-debugging-port=0",
    # WebRTC on loopback: Chromium leaves 127.0.0.1 out of its ICE candidates unless told,
    # and would hide host addresses behind mDNS names (*.local) the gateway cannot resolve.
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]

_DEVTOOLS_RE = re.compile(r"DevTools listening on (ws://\S+)")


class CdpError(RuntimeError):
    """A command failed, or the page's promise rejected."""


class Chromium:
    """A headless Chromium process and one DevTools connection to it."""

    def __init__(self, process: subprocess.Popen[bytes], log: Path, socket: ClientConnection) -> None:
        self.process = process
        self.log = log
        self.socket = socket
        self._ids = itertools.count(1)

    @classmethod
    async def launch(cls, profile: Path, timeout: float = 30) -> Chromium:
        log = profile.parent / "chromium.log"
        process = _spawn(profile, log)
        try:
            url = await _devtools_url(process, log, timeout)
            socket = await connect(url, max_size=None, open_timeout=deadline(timeout))
        except BaseException:
            process.kill()
            process.wait()
            raise
        return cls(process, log, socket)

    async def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        """Send one command and wait for its reply (events in between are skipped)."""
        command_id = next(self._ids)
        command: dict[str, Any] = {"id": command_id, "method": method, "params": params or {}}
        if session is not None:
            command["sessionId"] = session
        await self.socket.send(json.dumps(command))
        while True:
            reply = json.loads(await self.socket.recv())
            if reply.get("id") != command_id:
                continue
            if "error" in reply:
                raise CdpError(f"{method}: {reply['error']}")
            result: dict[str, Any] = reply["result"]
            return result

    async def open_page(self, url: str) -> str:
        """Open ``url`` in a new tab; returns the DevTools session of that tab."""
        target = await self.call("Target.createTarget", {"url": url})
        attached = await self.call("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        session: str = attached["sessionId"]
        return session

    async def evaluate(self, session: str, expression: str, timeout: float = 20) -> Any:
        """The value of ``expression`` in the page, awaiting it if it is a promise."""
        result = await asyncio.wait_for(
            self.call(
                "Runtime.evaluate",
                {"expression": expression, "awaitPromise": True, "returnByValue": True},
                session,
            ),
            deadline(timeout),
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise CdpError(f"page raised: {text}")
        return result["result"].get("value")

    async def wait_for(self, session: str, expression: str, timeout: float = 20) -> None:
        """Poll until ``expression`` is truthy in the page (e.g. the page has loaded)."""
        limit = deadline(timeout)
        end = time.monotonic() + limit
        while not await self.evaluate(session, expression):
            if time.monotonic() > end:
                raise CdpError(f"{expression!r} still false after {limit:.0f}s")
            await asyncio.sleep(0.05)

    async def navigate(self, session: str, url: str, timeout: float = 30) -> None:
        """Load ``url`` in the tab and wait until the document has loaded."""
        await self.call("Page.navigate", {"url": url}, session)
        await self.wait_for(session, f"location.href === {json.dumps(url)} && document.readyState === 'complete'", timeout)

    async def screenshot(self, session: str, width: int = 1200, timeout: float = 20) -> bytes:
        """A PNG of the whole page (not just the window), ``width`` CSS pixels wide.

        The tab is brought to the front first: headless Chromium paints no frames for a
        background tab, and a capture would wait for one forever.
        """
        await asyncio.wait_for(self.call("Page.bringToFront", {}, session), deadline(timeout))
        await self.call("Emulation.setDeviceMetricsOverride",
                        {"width": width, "height": 600, "deviceScaleFactor": 1, "mobile": False}, session)
        height = await self.evaluate(session, "Math.ceil(document.documentElement.scrollHeight)")
        shot = await asyncio.wait_for(self.call(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True,
             "clip": {"x": 0, "y": 0, "width": width, "height": max(int(height), 1), "scale": 1}},
            session,
        ), deadline(timeout))
        return base64.b64decode(shot["data"])

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.call("Browser.close"), 5)
        except Exception:
            pass
        await self.socket.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def logs(self) -> str:
        return _tail(self.log)


def _spawn(profile: Path, log: Path) -> subprocess.Popen[bytes]:
    assert CHROMIUM is not None
    with open(log, "wb") as stderr:
        return subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:] if log.exists() else ""


async def _devtools_url(process: subprocess.Popen[bytes], log: Path, timeout: float) -> str:
    """Read the DevTools URL Chromium prints on stderr (it picks its own port)."""
    limit = deadline(timeout)
    end = time.monotonic() + limit
    while time.monotonic() < end:
        match = _DEVTOOLS_RE.search(_whole(log))
        if match:
            return match.group(1)
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with {process.returncode}:\n{_tail(log)}")
        await asyncio.sleep(0.05)
    raise RuntimeError(f"chromium printed no DevTools URL in {limit:.0f}s:\n{_tail(log)}")


def _whole(log: Path) -> str:
    return log.read_text(errors="replace")
