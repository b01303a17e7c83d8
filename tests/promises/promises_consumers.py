"""Consumers of the promises deployments; they run in the worker processes.

They report what the tests check across processes: which worker (``pid``) handled what,
in which order, and whether two handlers of one connection ever overlapped. Those logs
go to Redis lists (``PROMISES_LOG_REDIS_URL``, keys under ``PROMISES_LOG_PREFIX``) so
the test process can read what every worker did.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import parse_qs

import redis.asyncio as aioredis

from switchboard.consumers import AsyncHttpConsumer, AsyncWebsocketConsumer
from switchboard.consumers.asgi import Receive, Scope, Send
from switchboard.consumers.longpoll import AsyncLongPollConsumer, publish
from switchboard.consumers.udp import AsyncUdpConsumer

PID = os.getpid()
LOG_PREFIX = os.environ.get("PROMISES_LOG_PREFIX", "sb-promises-log:")

#: Long-poll instances of this process holding a request right now (``GET /held/``).
HELD: set[int] = set()

_redis: aioredis.Redis | None = None


def log_redis() -> aioredis.Redis:
    """This process's Redis client for the logs (one per process; the worker has one loop).

    Its pool waits for a free connection rather than raise ``MaxConnectionsError`` (redis-py
    8.2's plain pool does beyond 100 in use) when many handlers log at once.
    """
    global _redis
    if _redis is None:
        url = os.environ.get("PROMISES_LOG_REDIS_URL", "redis://127.0.0.1:6379/0")
        _redis = aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(url, max_connections=32, timeout=None))
    return _redis


async def log_handled(key: str, number: str) -> None:
    """Append ``pid:number:active`` to ``key``; ``active`` counts handlers of ``key`` running.

    ``active`` is incremented on entry and decremented on exit around the append, so a
    value above 1 means two handlers of the same log overlapped (in one worker or two).
    """
    client = log_redis()
    active = await client.incr(f"{LOG_PREFIX}{key}:active")
    await client.rpush(f"{LOG_PREFIX}{key}", f"{PID}:{number}:{active}")
    await client.decr(f"{LOG_PREFIX}{key}:active")


def _json(payload: Any) -> bytes:
    return json.dumps(payload).encode()


class GroupPollConsumer(AsyncLongPollConsumer):
    """Long-poll on ``<group>`` with a ring buffer; counts the requests it holds."""

    history = 100

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            HELD.discard(id(self))

    async def get_groups(self) -> list[str]:
        return [self.scope["url_route"]["kwargs"]["group"]]

    async def poll(self) -> None:
        await super().poll()
        if self.held:
            HELD.add(id(self))

    async def chat_message(self, event: dict[str, Any]) -> None:
        HELD.discard(id(self))
        await self.reply({"message": event["message"]})


class HeldCountConsumer(AsyncHttpConsumer):
    """``GET /held/``: how many long-polls this worker process holds."""

    async def handle(self, body: bytes) -> None:
        await self.send_response(200, _json({"held": len(HELD), "pid": PID}), headers={"Content-Type": "application/json"})


class PublishConsumer(AsyncHttpConsumer):
    """``POST /publish/<group>/`` ``{"message": ..., "buffered": bool, "history": n}``.

    Buffered: through ``longpoll.publish`` (numbered, kept in the ring buffer); else one
    plain ``group_send``. Either way a single send answers every held request.
    """

    async def handle(self, body: bytes) -> None:
        data = json.loads(body or b"{}")
        group = self.scope["url_route"]["kwargs"]["group"]
        message = {"type": "chat.message", "message": data["message"]}
        seq = None
        if data.get("buffered", True):
            seq = await publish(group, message, history=int(data.get("history", 100)))
        else:
            await self.channel_layer.group_send(group, message)
        await self.send_response(200, _json({"seq": seq}), headers={"Content-Type": "application/json"})


class PidConsumer(AsyncHttpConsumer):
    """``GET /pid/?n=...``: which worker answered (readiness, and requests across deploys)."""

    async def handle(self, body: bytes) -> None:
        query = parse_qs(self.scope.get("query_string", b"").decode())
        await self.send_response(200, _json({"pid": PID, "n": query.get("n", [""])[0]}))


class OrderLogConsumer(AsyncWebsocketConsumer):
    """Logs each numbered message (``ws:<name>``) and echoes the number back."""

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        assert text_data is not None
        await log_handled(f"ws:{self.scope['url_route']['kwargs']['name']}", text_data)
        await self.send(text_data=text_data)


class EchoConsumer(AsyncWebsocketConsumer):
    """Echoes ``text|pid|resumed``: who answered, and whether it resumed the connection."""

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        await self.send(text_data=f"{text_data}|{PID}|{int(bool(self.scope.get('resumed')))}")


class _UdpLogConsumer(AsyncUdpConsumer):
    """Logs each numbered datagram under ``udp:<kind>`` and echoes it to the sender."""

    kind = "spread"

    async def datagram_received(self, data: bytes, client: tuple[str, int]) -> None:
        if data.isdigit():
            await log_handled(f"udp:{self.kind}", data.decode())
        await self.send_datagram(data, client)


class OrderedUdpLogConsumer(_UdpLogConsumer):
    """``ordered = True``: the first datagram pins the socket to this worker."""

    kind = "ordered"
    ordered = True


class SpreadUdpLogConsumer(_UdpLogConsumer):
    """The default: datagrams of the socket spread over every worker."""

    kind = "spread"
