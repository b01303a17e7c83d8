"""Consumers of the failover deployments; they run in the worker processes.

``RoomConsumer`` is a chat room: every text a client sends goes to the room's group (at
most once) and, as a task, to the durable ``chatlog`` channel (``durability: replicated``).
A post whose task send returned is *acknowledged*: its id goes to a set on a plain Redis
(``FAILOVER_LOG_URL``), apart from the topology under test, and ``ChatLogConsumer`` adds
the ids it handles to another. The test checks acknowledged ⊆ handled after a failover.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import redis.asyncio as aioredis
from django.urls import URLPattern, path

from switchboard.consumers import AsyncConsumer, AsyncWebsocketConsumer

logger = logging.getLogger("failover")

_records: aioredis.Redis | None = None


def records() -> aioredis.Redis:
    """This process's client of the records' Redis (one per process; a worker has one loop).

    Its pool waits for a free connection: redis-py 8.2's plain pool raises
    ``MaxConnectionsError`` beyond 100 connections in use, which a burst of posts in one
    worker reached, killing the consumer instance (and closing its client with 1011).
    """
    global _records
    if _records is None:
        pool = aioredis.BlockingConnectionPool.from_url(os.environ["FAILOVER_LOG_URL"], max_connections=32, timeout=None)
        _records = aioredis.Redis(connection_pool=pool)
    return _records


def record_key(name: str) -> str:
    return os.environ.get("FAILOVER_PREFIX", "sb-failover:") + name


class RoomConsumer(AsyncWebsocketConsumer):
    """``/room/<room>/``: what one client sends, every member of the room receives."""

    @classmethod
    def routes(cls) -> list[URLPattern]:
        return [path("room/<str:room>/", cls.as_asgi())]

    async def connect(self) -> None:
        self.room = str(self.scope["url_route"]["kwargs"]["room"])
        await self.channel_layer.group_add(self.room, self.channel_name)
        await self.accept()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        post = text_data or ""
        try:
            await self.channel_layer.group_send(self.room, {"type": "chat.message", "text": post})
        except Exception as exc:
            # At most once: the layer counted the member channels it could not reach
            # (send_failed), or the send itself when the room's members could not be read
            # (group_send_failed); the room goes on rather than the instance dying with it.
            logger.warning("group send of %s failed: %r", post, exc)
        try:
            await self.channel_layer.send("chatlog", {"type": "chat.log", "id": post})
        except Exception as exc:
            # Not acknowledged (primary gone, or no replica confirmed it): a real source
            # would retry; here it is simply not counted as acknowledged.
            logger.info("chat log of %s not acknowledged: %r", post, exc)
            return
        await records().sadd(record_key("acked"), post)

    async def chat_message(self, event: dict[str, Any]) -> None:
        await self.send(text_data=event["text"])


class ChatLogConsumer(AsyncConsumer):
    """The durable ``chatlog`` channel: records each post id it handled (idempotent: a set)."""

    async def chat_log(self, message: dict[str, Any]) -> None:
        await records().sadd(record_key("handled"), message["id"])
