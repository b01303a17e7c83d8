"""The console mounted in a ``switchboard run`` process, reached over real sockets.

The page and its assets, the JSON frame after real HTTP and WebSocket traffic, the event
stream, a live tail, bad input, and access from a non-loopback bind (tokens, read-only,
actions with and without the permission).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
from typing import Any

import pytest
import websockets
from console_helpers import READ_TOKEN, WRITE_TOKEN, EventStream, Stack, bearer, get_json, http_get, http_request, run_stack
from support.waiting import eventually

from switchboard.console import serve


async def _traffic(stack: Stack, requests: int, messages: int) -> None:
    for _ in range(requests):
        status, _body = await asyncio.to_thread(http_get, stack.url("/hello"))
        assert status == 200
    async with websockets.connect(f"ws://127.0.0.1:{stack.port}/ws/") as ws:
        for n in range(messages):
            await ws.send(f"m{n}")
            assert await ws.recv() == f"echo:m{n}"


async def test_page_and_assets_work_offline(stack: Stack) -> None:
    status, headers, page = await asyncio.to_thread(http_request, stack.url("/console/"))
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in headers["content-security-policy"]
    text = page.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', text)
    assert assets and all(not asset.startswith(("http:", "https:", "//")) for asset in assets)
    for asset in assets:
        asset_status, _body = await asyncio.to_thread(http_get, stack.url("/console/" + asset))
        assert asset_status == 200, asset
    script = (await asyncio.to_thread(http_get, stack.url("/console/static/console.js")))[1].decode()
    assert "http://" not in script and "https://" not in script  # nothing fetched from the internet
    licence = (await asyncio.to_thread(http_get, stack.url("/console/static/vendor/uPlot.LICENSE.txt")))[1]
    assert b"MIT License" in licence

    def bare_prefix() -> tuple[int, str | None]:
        connection = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=10)
        try:
            connection.request("GET", "/console")
            response = connection.getresponse()
            return response.status, response.getheader("location")
        finally:
            connection.close()

    assert await asyncio.to_thread(bare_prefix) == (308, "/console/")


async def test_frame_shows_what_was_sent(stack: Stack) -> None:
    await _traffic(stack, requests=3, messages=2)

    def settled() -> dict[str, Any] | None:
        frame = stack.frame()["frame"]
        protocols = frame["protocols"] if frame else {}
        if protocols.get("http", {}).get("in") == 3 and protocols.get("websocket", {}).get("in") == 2:
            return frame
        return None

    frame = await eventually(settled, "the frame to show 3 requests and 2 messages")
    assert frame["protocols"]["http"]["out"] == 3
    assert frame["protocols"]["websocket"]["opened"] == 1
    assert frame["protocols"]["http"]["handled"] >= 0
    (process,) = frame["processes"]
    assert process["kind"] == "run" and process["state"] == "running" and process["rss"] > 0
    names = {channel["name"] for channel in frame["channels"]}
    assert {"switchboard.http", "switchboard.websocket"} <= names
    assert frame["layer"]["nodes"] == [{"name": "memory", "latency_ms": 0.0}]
    assert frame["deadletters"] == {"channels": {}}  # durable channels exist; none has dead letters

    def p99_known() -> dict[str, Any] | None:
        protocols = stack.frame()["frame"]["protocols"]
        return protocols if protocols["http"]["p99_ms"] is not None else None

    protocols = await eventually(p99_known, "handler times of the HTTP requests")
    assert protocols["http"]["p99_ms"] > 0
    history = (await asyncio.to_thread(stack.frame))["history"]
    assert len(history["t"]) >= 2 and "http.in" in history["series"]


async def test_event_stream_sends_hello_then_frames(stack: Stack) -> None:
    stream = await asyncio.to_thread(EventStream, "127.0.0.1", stack.port, "/console/api/stream")
    try:
        assert stream.status == 200 and stream.headers["content-type"].startswith("text/event-stream")
        events = await asyncio.to_thread(stream.until, lambda name, _data: name == "frame")
        hello = events[0]
        assert hello[0] == "hello" and hello[1]["access"] == {
            "who": "loopback", "via": "loopback", "manage": False, "csrf": hello[1]["access"]["csrf"]
        }
        more = await asyncio.to_thread(stream.until, lambda name, _data: name == "frame")
        first, second = events[-1][1], more[-1][1]
        assert second["frame"]["time"] > first["frame"]["time"]
        assert set(second["point"]["values"]) >= {"processes", "layer.latency"}
    finally:
        stream.close()


async def test_live_tail_is_paused_until_asked_and_redacted(stack: Stack) -> None:
    stream = await asyncio.to_thread(EventStream, "127.0.0.1", stack.port, "/console/api/tail?protocol=websocket")
    try:
        started = await asyncio.to_thread(stream.until, lambda name, _data: name == "tail-started")
        assert started[-1][1]["tap"] == "protocol:websocket"
        secret = "hunter2-the-password"
        long_text = "y" * 2000

        async def talk() -> None:
            async with websockets.connect(f"ws://127.0.0.1:{stack.port}/ws/") as ws:
                for text in (f"password={secret}", long_text):
                    await ws.send(text)
                    await ws.recv()

        def tailed(name: str, data: Any) -> bool:
            return name == "tail" and any(e["type"] == "websocket.send" and "chars)" in str(e["message"]) for e in data["events"])

        reader = asyncio.ensure_future(asyncio.to_thread(stream.until, tailed))
        # The tap reaches the worker within a refresh; keep talking until its events flow.
        for _ in range(40):
            await talk()
            done, _ = await asyncio.wait({reader}, timeout=0.5)
            if done:
                break
        events = [entry for name, data in await reader if name == "tail" for entry in data["events"]]
    finally:
        stream.close()
    types = {entry["type"] for entry in events}
    assert {"websocket.receive", "websocket.send"} <= types
    dump = json.dumps(events)
    assert secret not in dump and "password=***" in dump
    assert long_text not in dump and "(2000 chars)" in dump
    assert {entry["dir"] for entry in events} == {"in", "out"}


async def test_bad_requests_are_refused_cleanly(stack: Stack) -> None:
    def status_of(path: str, method: str = "GET", **kwargs: Any) -> tuple[int, dict[str, str]]:
        status, headers, _body = http_request(stack.url(path), method=method, **kwargs)
        return status, headers

    assert (await asyncio.to_thread(status_of, "/console/nope"))[0] == 404
    assert (await asyncio.to_thread(status_of, "/console/static/../../etc/passwd"))[0] == 404
    status, headers = await asyncio.to_thread(status_of, "/console/api/frame", "POST", body=b"{}")
    assert status == 405 and headers["allow"] == "GET"
    assert (await asyncio.to_thread(status_of, "/console/" + "a" * 600))[0] == 414
    for query in ("", "protocol=a&channel=b", "protocol=a&protocol=b", "protocol=a%20b", "extra=1&protocol=a"):
        assert (await asyncio.to_thread(status_of, "/console/api/tail?" + query))[0] == 400, query
    # Actions need the permission first: a loopback viewer is read-only.
    assert (await asyncio.to_thread(status_of, "/console/api/deadletters/replay", "POST", body=b"{}"))[0] == 403
    with pytest.raises(websockets.InvalidStatus):
        async with websockets.connect(f"ws://127.0.0.1:{stack.port}/console/api/stream"):
            pass
    status, _ = await asyncio.to_thread(status_of, "/console/api/frame")
    assert status == 200  # the console still answers


class _DeadLetters:
    """A stand-in for the durable store (not yet on main): records what it was asked."""

    def __init__(self) -> None:
        self.letters = {"invoices": ["1-0", "2-0"]}
        self.calls: list[tuple[str, str, Any]] = []

    async def counts(self) -> dict[str, int]:
        return {channel: len(ids) for channel, ids in self.letters.items()}

    async def inspect(self, channel: str, limit: int = 100) -> list[dict[str, Any]]:
        return [{"id": i, "message": {"type": "invoice.created", "password": "pw"}} for i in self.letters.get(channel, [])]

    async def replay(self, channel: str, ids: Any) -> dict[str, int]:
        self.calls.append(("replay", channel, ids))
        replayed = len(self.letters.pop(channel, []))
        return {"replayed": replayed, "left": 0}

    async def drop(self, channel: str, ids: Any) -> dict[str, int]:
        self.calls.append(("drop", channel, ids))
        return {"dropped": len(self.letters.pop(channel, []))}


async def test_non_loopback_bind_needs_credentials_and_the_permission(monkeypatch: pytest.MonkeyPatch) -> None:
    store = _DeadLetters()
    monkeypatch.setattr(serve, "dead_letters_of", lambda layer: store)
    async with run_stack(host="0.0.0.0") as stack:
        frame_url = stack.url("/console/api/frame")
        status, headers, _ = await asyncio.to_thread(http_request, frame_url)
        assert status == 401 and headers["www-authenticate"].startswith("Bearer")
        for path in ("/console/api/stream", "/console/api/tail?protocol=http", "/console/api/deadletters?channel=invoices"):
            assert (await asyncio.to_thread(http_request, stack.url(path)))[0] == 401, path
        assert (await asyncio.to_thread(http_request, frame_url, headers=bearer("not-the-token-at-all")))[0] == 401
        viewer = await asyncio.to_thread(get_json, frame_url, bearer(READ_TOKEN))
        assert viewer["access"]["who"] == "token viewer" and not viewer["access"]["manage"]

        def counted() -> Any:
            return (get_json(frame_url, bearer(READ_TOKEN))["frame"] or {}).get("deadletters")

        await eventually(counted, "dead-letter counts")
        inspected = await asyncio.to_thread(get_json, stack.url("/console/api/deadletters?channel=invoices"), bearer(READ_TOKEN))
        assert [letter["id"] for letter in inspected["letters"]] == ["1-0", "2-0"]
        assert inspected["letters"][0]["message"]["password"] == "***"

        replay = stack.url("/console/api/deadletters/replay")
        good = json.dumps({"channel": "invoices", "ids": None}).encode()
        as_json = {"Content-Type": "application/json"}

        def post(body: bytes, headers: dict[str, str]) -> int:
            return http_request(replay, method="POST", body=body, headers=headers)[0]

        assert await asyncio.to_thread(post, good, as_json) == 401
        assert await asyncio.to_thread(post, good, {**as_json, **bearer(READ_TOKEN)}) == 403  # read-only token
        ops = {**as_json, **bearer(WRITE_TOKEN)}
        assert await asyncio.to_thread(post, good, {**ops, "Origin": "https://evil.example"}) == 403
        assert await asyncio.to_thread(post, b"{not json", ops) == 400
        assert await asyncio.to_thread(post, b"[1, 2]", ops) == 400
        assert await asyncio.to_thread(post, json.dumps({"channel": "bad name!"}).encode(), ops) == 400
        assert await asyncio.to_thread(post, json.dumps({"channel": "invoices", "ids": [1]}).encode(), ops) == 400
        assert await asyncio.to_thread(post, json.dumps({"channel": "invoices", "extra": 1}).encode(), ops) == 400
        assert await asyncio.to_thread(post, good, {**bearer(WRITE_TOKEN), "Content-Type": "text/plain"}) == 400
        assert await asyncio.to_thread(post, b" " * 20000 + good, ops) == 413
        assert store.calls == [] and store.letters == {"invoices": ["1-0", "2-0"]}  # nothing changed so far

        status, _headers, body = await asyncio.to_thread(http_request, replay, method="POST", body=good, headers=ops)
        assert status == 200 and json.loads(body) == {"channel": "invoices", "action": "replay", "replayed": 2, "left": 0}
        assert store.calls == [("replay", "invoices", None)]
