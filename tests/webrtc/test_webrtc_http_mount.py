"""The HTTP plugin's hook for in-gateway endpoints (``Gateway.mount``), which signaling uses.

Requests and WebSockets under a mounted path are served by the mounted ASGI app inside
the gateway, with uvicorn's own scope/receive/send; everything else still goes to the
workers.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.client import connect as ws_connect

from .conftest import http


async def mounted_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers HTTP with its scope's path and echoes WebSocket text, without any worker."""
    if scope["type"] == "http":
        body = json.dumps({"mounted": scope["path"], "method": scope["method"]}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})
    elif scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        message = await receive()
        await send({"type": "websocket.send", "text": "mounted:" + message.get("text", "")})
        await send({"type": "websocket.close"})


async def worker_http_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The worker side: proves which requests still reach the workers."""
    await receive()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"from the worker"})


async def test_mounted_paths_are_served_in_the_gateway(stack: Any) -> None:
    running = await stack(worker_http_app, protocols=("http",))
    running.gateway.mount("/hooks", mounted_app, owner="test")
    for path in ("/hooks", "/hooks/deeper/path"):
        status, _, body = await http(running.base_url + path, method="GET", headers={})
        assert status == 200 and json.loads(body) == {"mounted": path, "method": "GET"}
    # Not under the mount (a longer name is not a sub-path): the workers answer.
    for path in ("/hooksx", "/other/"):
        status, _, body = await http(running.base_url + path, method="GET", headers={})
        assert status == 200 and body == b"from the worker"
    assert running.gateway.stats.events_sent == 2  # only the two worker requests crossed the layer


async def test_mounted_websocket_is_served_in_the_gateway(stack: Any) -> None:
    running = await stack(worker_http_app, protocols=("http",))
    running.gateway.mount("/hooks", mounted_app, owner="test")
    async with ws_connect(running.base_url.replace("http://", "ws://") + "/hooks/ws") as socket:
        await socket.send("ping")
        assert await asyncio.wait_for(socket.recv(), 5) == "mounted:ping"
    assert running.gateway.stats.events_sent == 0
