"""The worker process: runs consumers for connection events and named channels.

A worker reads, in one batched loop, the pool channels of the protocols its application
routes (``switchboard.http``, ``switchboard.websocket``...) and the named channels of its
``ChannelNameRouter`` (``thumbnails``...). For each connection it keeps one application
instance (an ASGI ``app(scope, receive, send)`` call fed from a queue), so consumer
state lives as long as the connection, exactly as in Django Channels. Replies go straight
to the connection's reply channel on the gateway that holds it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .envelope import EVENT_TYPE, pool_channel
from .layers import ChannelLayer, LayerClosed, Message

logger = logging.getLogger("switchboard.worker")

ASGIApp = Callable[[dict[str, Any], Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

# Events after which a connection has nothing more to say: no instance is built for them.
_FINAL_EVENTS = frozenset({"http.disconnect", "websocket.disconnect"})


@dataclass
class WorkerStats:
    events: int = 0
    named_messages: int = 0
    instances_started: int = 0
    instances_finished: int = 0
    instances_failed: int = 0
    events_ignored: int = 0
    bad_messages: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        data = {k: v for k, v in self.__dict__.items() if k != "extra"}
        data.update(self.extra)
        return data


class _Instance:
    """One running application instance and the queue that feeds its ``receive``."""

    __slots__ = ("key", "scope", "queue", "task", "response_started", "accepted", "closed")

    def __init__(self, key: str, scope: dict[str, Any]) -> None:
        self.key = key
        self.scope = scope
        self.queue: asyncio.Queue[Message] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None
        self.response_started = False
        self.accepted = False
        self.closed = False


def protocols_of(application: Any) -> list[str]:
    """Scope types an application routes (``ProtocolTypeRouter`` keys), minus ``channel``."""
    mapping = getattr(application, "application_mapping", None)
    if isinstance(mapping, dict):
        return [name for name in mapping if name != "channel"]
    return ["http"]  # a plain ASGI app (Django's own handler) serves HTTP only


def channel_names_of(application: Any) -> list[str]:
    """Named channels an application consumes (its ``ChannelNameRouter`` keys)."""
    mapping = getattr(application, "application_mapping", None)
    if isinstance(mapping, dict):
        channel_router = mapping.get("channel")
        names = getattr(channel_router, "application_mapping", None)
        if isinstance(names, dict):
            return list(names)
    return []


class Worker:
    """Runs application instances for events read from the layer."""

    def __init__(
        self,
        application: ASGIApp,
        layer: ChannelLayer,
        *,
        protocols: Iterable[str] | None = None,
        channels: Iterable[str] | None = None,
    ) -> None:
        self.application = application
        self.layer = layer
        self.protocols = list(protocols_of(application) if protocols is None else protocols)
        self.channels = list(channel_names_of(application) if channels is None else channels)
        self.instances: dict[str, _Instance] = {}
        self.stats = WorkerStats()
        self._receiver = None

    def listen_channels(self) -> list[str]:
        return [pool_channel(p) for p in self.protocols] + self.channels

    async def run(self, stop: asyncio.Event | None = None, drain_timeout: float = 10.0) -> None:
        """Serve until ``stop`` is set; then stop reading and let instances finish."""
        stop = stop or asyncio.Event()
        names = self.listen_channels()
        if not names:
            raise RuntimeError("worker has no channels to listen on: route a protocol or name channels")
        logger.info("worker listening on %s", ", ".join(names))
        receiver = self._receiver = self.layer.receiver(names)
        reader = asyncio.get_running_loop().create_task(self._read_loop(receiver))
        stopper = asyncio.get_running_loop().create_task(stop.wait())
        try:
            await asyncio.wait({reader, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            leftover = await receiver.close()
            for channel, message in leftover:
                self._dispatch(channel, message)
            await reader
            stopper.cancel()
            await self._drain(drain_timeout)

    async def _read_loop(self, receiver: Any) -> None:
        while True:
            try:
                batch = await receiver.get_batch()
            except LayerClosed:
                return
            for channel, message in batch:
                self._dispatch(channel, message)

    def _dispatch(self, channel: str, message: Message) -> None:
        if message.get("type") == EVENT_TYPE:
            self._dispatch_event(message)
        elif channel in self.channels:
            self._dispatch_named(channel, message)
        else:
            self.stats.bad_messages += 1
            logger.warning("message of type %r on %s is not an event envelope; dropped", message.get("type"), channel)

    def _dispatch_event(self, envelope: Message) -> None:
        connection = envelope.get("connection")
        event = envelope.get("event")
        scope = envelope.get("scope")
        if not isinstance(connection, str) or not isinstance(event, dict) or not isinstance(scope, dict):
            self.stats.bad_messages += 1
            logger.warning("malformed event envelope dropped: keys %s", sorted(envelope))
            return
        self.stats.events += 1
        instance = self.instances.get(connection)
        if instance is None:
            if event.get("type") in _FINAL_EVENTS:
                self.stats.events_ignored += 1
                return
            instance = self._start_instance(connection, scope)
        instance.queue.put_nowait(event)

    def _dispatch_named(self, channel: str, message: Message) -> None:
        self.stats.named_messages += 1
        instance = self.instances.get(channel)
        if instance is None:
            instance = self._start_instance(channel, {"type": "channel", "channel": channel})
        instance.queue.put_nowait(message)

    def _start_instance(self, key: str, scope: dict[str, Any]) -> _Instance:
        instance = _Instance(key, scope)
        self.instances[key] = instance
        self.stats.instances_started += 1
        instance.task = asyncio.get_running_loop().create_task(self._run_instance(instance), name=f"instance:{key}")
        return instance

    async def _run_instance(self, instance: _Instance) -> None:
        from switchboard.consumers.exceptions import RouteNotFound, StopConsumer

        async def send(message: Message) -> None:
            await self._send_reply(instance, message)

        try:
            await self.application(dict(instance.scope), instance.queue.get, send)
            self.stats.instances_finished += 1
        except StopConsumer:
            self.stats.instances_finished += 1
        except RouteNotFound as exc:
            self.stats.instances_failed += 1
            logger.info("no route for %s %s: %s", instance.scope.get("type"), instance.scope.get("path"), exc)
            await self._fail(instance, http_status=404, websocket_code=4404)
        except Exception:
            self.stats.instances_failed += 1
            logger.exception("consumer for %s %s raised", instance.scope.get("type"), instance.scope.get("path", instance.key))
            await self._fail(instance, http_status=500, websocket_code=1011)
        finally:
            if self.instances.get(instance.key) is instance:
                del self.instances[instance.key]

    async def _send_reply(self, instance: _Instance, message: Message) -> None:
        message_type = message.get("type")
        if message_type == "http.response.start":
            instance.response_started = True
        elif message_type == "websocket.accept":
            instance.accepted = True
        elif message_type == "websocket.close":
            instance.closed = True
        reply_channel = instance.scope.get("reply_channel")
        if reply_channel is None:
            raise RuntimeError(f"instance {instance.key} has no reply channel to send {message_type!r} to")
        await self.layer.send(reply_channel, message)

    async def _fail(self, instance: _Instance, *, http_status: int, websocket_code: int) -> None:
        """Give the client a defined outcome after a consumer failure."""
        scope_type = instance.scope.get("type")
        if instance.scope.get("reply_channel") is None:
            return
        try:
            if scope_type == "http" and not instance.response_started:
                body = b"Not Found" if http_status == 404 else b"Internal Server Error"
                await self._send_reply(instance, {
                    "type": "http.response.start",
                    "status": http_status,
                    "headers": [[b"content-type", b"text/plain; charset=utf-8"], [b"content-length", str(len(body)).encode()]],
                })
                await self._send_reply(instance, {"type": "http.response.body", "body": body, "more_body": False})
            elif scope_type == "http":
                await self._send_reply(instance, {"type": "http.response.body", "body": b"", "more_body": False})
            elif scope_type == "websocket" and not instance.closed:
                denial = "websocket.http.response" in (instance.scope.get("extensions") or {})
                if not instance.accepted and denial:
                    # Before the handshake completes a close code cannot reach the client;
                    # the ASGI denial-response extension lets it see a real HTTP status.
                    status = 404 if websocket_code == 4404 else 500
                    body = b"Not Found" if status == 404 else b"Internal Server Error"
                    await self._send_reply(instance, {
                        "type": "websocket.http.response.start",
                        "status": status,
                        "headers": [[b"content-type", b"text/plain; charset=utf-8"]],
                    })
                    await self._send_reply(instance, {"type": "websocket.http.response.body", "body": body})
                else:
                    await self._send_reply(instance, {"type": "websocket.close", "code": websocket_code})
        except Exception:
            logger.exception("could not send the failure outcome to %s", instance.key)

    async def _drain(self, timeout: float) -> None:
        tasks = [i.task for i in self.instances.values() if i.task is not None and i.scope.get("type") == "http"]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        for instance in list(self.instances.values()):
            if instance.task is not None and not instance.task.done():
                instance.task.cancel()
        remaining = [i.task for i in self.instances.values() if i.task is not None]
        if remaining:
            await asyncio.gather(*remaining, return_exceptions=True)
