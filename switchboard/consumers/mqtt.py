"""MQTT consumers and the topic router.

The gateway's ``mqtt`` plugin opens one connection per broker session, so a worker runs ONE
long-lived application instance for all MQTT traffic of that session (and several workers
may each run one: events are spread over the pool). Consumers here are therefore
stateless between messages: per-device state belongs in the database, a cache or the
layer, never in ``self``.

* :class:`MqttConsumer` / :class:`SyncMqttConsumer`: override ``message_received``; use
  ``publish``, ``subscribe`` and ``unsubscribe``. An exception in ``message_received`` is
  logged with its traceback and the consumer goes on with the next message: one bad
  payload must not end the instance and lose the messages queued behind it. For the
  same reason a full reply channel drops the message (logged; the helper returns False)
  instead of raising, as the UDP consumers do.
* :class:`TopicRouter`: an ASGI app that dispatches ``mqtt.message`` events by topic filter
  to one lazily created, long-lived instance per route::

      application = ProtocolTypeRouter({
          "mqtt": TopicRouter({
              "sensors/+/temp": TemperatureConsumer.as_asgi(),
              "cmd/#": CommandConsumer.as_asgi(),
          }),
      })
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Mapping
from typing import Any

from asgiref.compatibility import guarantee_single_callable
from django.core.exceptions import ImproperlyConfigured
from paho.mqtt.client import topic_matches_sub

from switchboard.gateway.layers import ChannelFull
from switchboard.gateway.layers.durable import DurableMessage, Settlement
from switchboard.gateway.plugins import RateLimitedLog
from switchboard.protocols.mqtt import check_qos, check_topic_filter, check_topic_name

from .asgi import ASGIApp, Message, Receive, Scope, Send
from .base import AsyncConsumer, SyncConsumer
from .exceptions import StopConsumer

logger = logging.getLogger("switchboard.consumers.mqtt")

__all__ = [
    "MqttConsumer",
    "SyncMqttConsumer",
    "TopicRouter",
    "publish_message",
    "subscribe_message",
    "unsubscribe_message",
]


# -- message builders (checked here so a mistake points at the consumer's own line) ---------


def publish_message(
    topic: str,
    payload: bytes | str,
    qos: int | None = None,
    retain: bool = False,
    properties: dict[str, Any] | None = None,
) -> Message:
    """An ``mqtt.publish`` message; ValueError for a topic or QoS the gateway would refuse.

    ``qos=None`` leaves the choice to the gateway's ``qos`` option (0 unless configured).
    """
    check_topic_name(topic)
    if not isinstance(payload, (bytes, str)):
        raise TypeError(f"payload must be bytes or str, got {type(payload).__name__}")
    message: Message = {"type": "mqtt.publish", "topic": topic, "payload": payload, "retain": bool(retain)}
    if qos is not None:
        message["qos"] = check_qos(qos)
    if properties:
        message["properties"] = dict(properties)
    return message


def subscribe_message(topic: str, qos: int | None = None) -> Message:
    """An ``mqtt.subscribe`` message; ValueError for an invalid filter or QoS."""
    message: Message = {"type": "mqtt.subscribe", "topic": check_topic_filter(topic)}
    if qos is not None:
        message["qos"] = check_qos(qos)
    return message


def unsubscribe_message(topic: str) -> Message:
    """An ``mqtt.unsubscribe`` message; ValueError for an invalid filter."""
    return {"type": "mqtt.unsubscribe", "topic": check_topic_filter(topic)}


def _log_full(message: Message) -> None:
    logger.warning("%s on %r dropped: the gateway's reply channel is full", message["type"], message["topic"][:200])


def _arguments(message: Message) -> tuple[str, bytes, int, bool, dict[str, Any]]:
    return (
        message["topic"],
        message["payload"],
        message.get("qos", 0),
        message.get("retain", False),
        message.get("properties") or {},
    )


# -- consumers -------------------------------------------------------------------------------


class MqttConsumer(AsyncConsumer):
    """Async MQTT consumer: override :meth:`message_received`.

    ``self.scope["topic_filter"]`` names the matching route under a :class:`TopicRouter`.
    """

    async def mqtt_message(self, message: Message) -> None:
        try:
            await self.message_received(*_arguments(message))
        except StopConsumer:
            raise
        except Exception:
            logger.exception("%s failed on a message on %r", type(self).__name__, message.get("topic"))

    async def message_received(self, topic: str, payload: bytes, qos: int, retain: bool, properties: dict[str, Any]) -> None:
        """Handle one message; ``properties`` holds MQTT 5 properties (``{}`` on 3.1.1)."""

    async def publish(
        self,
        topic: str,
        payload: bytes | str,
        qos: int | None = None,
        retain: bool = False,
        properties: dict[str, Any] | None = None,
    ) -> bool:
        """Publish through the gateway's session (``qos=None``: the gateway's default).

        False (logged) when the gateway's reply channel is full and the message dropped.
        """
        return await self._send_or_drop(publish_message(topic, payload, qos, retain, properties))

    async def subscribe(self, topic: str, qos: int | None = None) -> bool:
        """Add a filter to the session; the gateway keeps it across reconnects."""
        return await self._send_or_drop(subscribe_message(topic, qos))

    async def unsubscribe(self, topic: str) -> bool:
        """Remove a filter (configured or runtime) from the session."""
        return await self._send_or_drop(unsubscribe_message(topic))

    async def _send_or_drop(self, message: Message) -> bool:
        try:
            await self.send(message)
        except ChannelFull:
            _log_full(message)
            return False
        return True


class SyncMqttConsumer(SyncConsumer):
    """Sync MQTT consumer: ``message_received`` runs in a thread and may use the ORM."""

    def mqtt_message(self, message: Message) -> None:
        try:
            self.message_received(*_arguments(message))
        except StopConsumer:
            raise
        except Exception:
            logger.exception("%s failed on a message on %r", type(self).__name__, message.get("topic"))

    def message_received(self, topic: str, payload: bytes, qos: int, retain: bool, properties: dict[str, Any]) -> None:
        """Handle one message; ``properties`` holds MQTT 5 properties (``{}`` on 3.1.1)."""

    def publish(
        self,
        topic: str,
        payload: bytes | str,
        qos: int | None = None,
        retain: bool = False,
        properties: dict[str, Any] | None = None,
    ) -> bool:
        """Publish through the gateway's session (``qos=None``: the gateway's default).

        False (logged) when the gateway's reply channel is full and the message dropped.
        """
        return self._send_or_drop(publish_message(topic, payload, qos, retain, properties))

    def subscribe(self, topic: str, qos: int | None = None) -> bool:
        """Add a filter to the session; the gateway keeps it across reconnects."""
        return self._send_or_drop(subscribe_message(topic, qos))

    def unsubscribe(self, topic: str) -> bool:
        """Remove a filter (configured or runtime) from the session."""
        return self._send_or_drop(unsubscribe_message(topic))

    def _send_or_drop(self, message: Message) -> bool:
        try:
            self.send(message)
        except ChannelFull:
            _log_full(message)
            return False
        return True


# -- routing ---------------------------------------------------------------------------------


class _Route:
    __slots__ = ("app", "filter")

    def __init__(self, topic_filter: str, app: ASGIApp) -> None:
        self.filter = topic_filter
        self.app = app


class _RouteInstance:
    """One running instance of a route's application and the queue feeding its receive."""

    __slots__ = ("queue", "task")

    def __init__(self, queue: asyncio.Queue[Message], task: asyncio.Task[None]) -> None:
        self.queue = queue
        self.task = task


def _application(app: Any, where: str) -> ASGIApp:
    if isinstance(app, type) and issubclass(app, AsyncConsumer):
        raise ImproperlyConfigured(f"{where}: pass {app.__name__}.as_asgi(), not the {app.__name__} class")
    if not callable(app):
        raise ImproperlyConfigured(f"{where}: {app!r} is not an ASGI application")
    return guarantee_single_callable(app)


class TopicRouter:
    """Routes ``mqtt.message`` events to applications by MQTT topic filter.

    The worker keeps one instance per MQTT connection, so this router is itself a
    long-lived ASGI application: it reads events from ``receive`` and, for each, picks the
    FIRST filter (in the mapping's order) that matches the topic (paho's
    ``topic_matches_sub``). Each route gets one lazily created, long-lived instance of its
    application, fed through its own bounded queue, with ``scope["topic_filter"]`` set; an
    instance that ends or raises is logged and started afresh on the route's next message.

    Any event with a str ``topic`` is routed (so a group message can carry one); an event
    without one, a topic no filter matches, and a message arriving when its route's queue
    is full are logged (rate-limited) and counted in :attr:`stats`, then dropped.

    Durable messages (QoS 1/2 on the durable pool) are settled by the route, not by the
    router: the router takes each one over (``DurableMessage.take``), and it is finished
    when its route's application asks for the next message, failed when that application
    raises (so it is retried), released when the route stops before handling it. They are
    never dropped for a full route queue (the worker's prefetch bounds them already); one
    no route matches is finished (nothing would ever handle it).
    """

    _asgi_single_callable = True  # ASGI 3: asgiref must not wrap us

    def __init__(self, routes: Mapping[str, Any], *, queue_size: int = 1000) -> None:
        if not routes:
            raise ImproperlyConfigured("TopicRouter needs at least one topic filter")
        self.routes: list[_Route] = []
        for topic_filter, app in routes.items():
            try:
                check_topic_filter(topic_filter)
            except ValueError as exc:
                raise ImproperlyConfigured(f"TopicRouter: {exc}") from None
            self.routes.append(_Route(topic_filter, _application(app, f"TopicRouter[{topic_filter!r}]")))
        self.queue_size = queue_size
        self.stats: dict[str, int] = {"routed": 0, "unmatched": 0, "no_topic": 0, "dropped_queue_full": 0, "route_failures": 0}
        self._log = RateLimitedLog(logger, "mqtt")

    def match(self, topic: str) -> _Route | None:
        """The first route whose filter matches ``topic``, or None."""
        for route in self.routes:
            if topic_matches_sub(route.filter, topic):
                return route
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        instances: dict[str, _RouteInstance] = {}
        try:
            while True:
                self._dispatch(await receive(), scope, send, instances)
        finally:
            tasks = [instance.task for instance in instances.values()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _dispatch(self, event: Message, scope: Scope, send: Send, instances: dict[str, _RouteInstance]) -> None:
        topic = event.get("topic")
        settlement = event.take() if isinstance(event, DurableMessage) else None
        if not isinstance(topic, str):
            self.stats["no_topic"] += 1
            self._log.warning("TopicRouter", f"event of type {str(event.get('type'))[:100]!r} has no topic; dropped")
            if settlement is not None:
                settlement.finished()
            return
        route = self.match(topic)
        if route is None:
            self.stats["unmatched"] += 1
            self._log.warning("TopicRouter", f"no route matches topic {topic[:200]!r}; dropped")
            if settlement is not None:
                settlement.finished()
            return
        instance = instances.get(route.filter)
        if instance is None or instance.task.done():
            instance = instances[route.filter] = self._start(route, scope, send)
        if settlement is None and instance.queue.qsize() >= self.queue_size:
            self.stats["dropped_queue_full"] += 1
            self._log.warning("TopicRouter", f"route {route.filter!r} has {self.queue_size} messages waiting; dropped one")
            return
        instance.queue.put_nowait(event)
        self.stats["routed"] += 1

    def _start(self, route: _Route, scope: Scope, send: Send) -> _RouteInstance:
        # Unbounded: _dispatch applies queue_size to at-most-once messages only.
        queue: asyncio.Queue[Message] = asyncio.Queue()
        route_scope = dict(scope)
        route_scope["topic_filter"] = route.filter
        task = asyncio.get_running_loop().create_task(
            self._run(route, route_scope, queue, send), name=f"mqtt-route:{route.filter}"
        )
        return _RouteInstance(queue, task)

    async def _run(self, route: _Route, scope: Scope, queue: asyncio.Queue[Message], send: Send) -> None:
        in_hand: Settlement | None = None

        async def receive() -> Message:
            # The route's app asks for its next message: it is done with the last one.
            nonlocal in_hand
            if in_hand is not None:
                in_hand.finished()
                in_hand = None
            event = await queue.get()
            if isinstance(event, DurableMessage):
                in_hand = event.settlement
            return event

        failure: str | None = None
        cancelled = False
        try:
            await route.app(scope, receive, send)
        except StopConsumer:
            pass
        except asyncio.CancelledError:
            cancelled = True  # the worker stops: what is in hand was not handled
            raise
        except Exception:
            failure = traceback.format_exc()
            self.stats["route_failures"] += 1
            logger.exception("TopicRouter: the application for %r raised; it restarts on the next message", route.filter)
        finally:
            if in_hand is not None:
                if cancelled:
                    in_hand.released()
                elif failure is not None:
                    in_hand.failed(failure)
                else:
                    in_hand.finished()
            while not queue.empty():  # this queue is abandoned: its durable messages go back
                event = queue.get_nowait()
                if isinstance(event, DurableMessage) and event.settlement is not None:
                    event.settlement.released()
