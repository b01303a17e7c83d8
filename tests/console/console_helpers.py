"""Helpers for the console tests: HTTP with headers, and a reader of server-sent events.

Real clients only: urllib for requests, http.client for event streams (it undoes the
chunked transfer encoding; the events are parsed here, by the SSE rules).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from console_tokens import READ_TOKEN, WRITE_TOKEN
from support.processes import free_port
from support.waiting import eventually

from switchboard.gateway import cli
from switchboard.gateway.config import from_mapping
from switchboard.gateway.layers import set_channel_layer


def http_request(
    url: str, *, method: str = "GET", headers: dict[str, str] | None = None, body: bytes | None = None, timeout: float = 10
) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


def http_get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    status, _headers, body = http_request(url, headers=headers)
    return status, body


def get_json(url: str, headers: dict[str, str] | None = None) -> Any:
    status, body = http_get(url, headers)
    assert status == 200, (status, body[:200])
    return json.loads(body)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class EventStream:
    """A blocking reader of one ``text/event-stream`` response."""

    def __init__(self, host: str, port: int, path: str, headers: dict[str, str] | None = None, timeout: float = 30) -> None:
        self.connection = http.client.HTTPConnection(host, port, timeout=timeout)
        self.connection.request("GET", path, headers=headers or {})
        self.response = self.connection.getresponse()
        self.status = self.response.status
        self.headers = {k.lower(): v for k, v in self.response.getheaders()}

    def events(self) -> Iterator[tuple[str, Any]]:
        name, data = "message", []
        while True:
            line = self.response.readline()
            if not line:
                return
            text = line.decode().rstrip("\n")
            if text == "":
                if data:
                    yield name, json.loads("\n".join(data))
                name, data = "message", []
            elif text.startswith("event: "):
                name = text[7:]
            elif text.startswith("data: "):
                data.append(text[6:])

    def until(self, check: Callable[[str, Any], bool], limit: int = 500) -> list[tuple[str, Any]]:
        """Events read until ``check(name, data)`` holds for one (that one included)."""
        seen = []
        for event in self.events():
            seen.append(event)
            if check(*event) or len(seen) >= limit:
                return seen
        raise AssertionError(f"stream ended before the condition held; got {[name for name, _ in seen]}")

    def close(self) -> None:
        self.connection.close()


@dataclass
class Stack:
    """``switchboard run`` (``cli._run_both``) on the test's loop, console at /console/."""

    port: int
    stop: asyncio.Event
    task: asyncio.Task[None]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def frame(self, headers: dict[str, str] | None = None) -> dict[str, Any]:
        return get_json(self.url("/console/api/frame"), headers)


@asynccontextmanager
async def run_stack(host: str = "127.0.0.1", **console: Any) -> AsyncIterator[Stack]:
    """``switchboard run`` with the console mounted at ``/console`` on its HTTP port."""
    port = free_port()
    options = {
        "mount": "/console",
        "interval": 0.2,
        "tokens": [{"name": "viewer", "token": READ_TOKEN}, {"name": "ops", "token": WRITE_TOKEN, "manage": True}],
        **console,
    }
    config = from_mapping(
        {
            "APPLICATION": "console_routing.application",
            "PROTOCOLS": {"http": {"bind": [f"{host}:{port}"]}},
            "CONSOLE": options,
            "METRICS": {"interval": 0.2},
        }
    )
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(cli._run_both(config, argparse.Namespace(metrics_bind=None), stop=stop))
    stack = Stack(port, stop, task)
    try:
        await eventually(lambda: task.done() or http_get(stack.url("/console/"))[0] == 200, "the console")
        if task.done():
            task.result()  # raise what stopped it
        yield stack
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        set_channel_layer(None)
