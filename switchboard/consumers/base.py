"""The generic consumers: one instance per connection, one handler per message type.

``AsyncConsumer`` and ``SyncConsumer`` keep the Django Channels contract: ``as_asgi()``
gives an ASGI application building a fresh instance per scope, and each message is
dispatched to the method named after its ``type`` (``websocket.receive`` ->
``websocket_receive``).

Where Switchboard differs is the consumer's channel. Under a gateway, the scope carries
``reply_channel``: the connection's own channel on the gateway, which forwards any
non-protocol message (a group message) back to the worker as an event of the same
connection. Such a consumer's ``channel_name`` *is* the reply channel and everything
arrives through ``receive``; it must not read the channel itself. Only without a reply
channel (named-channel consumers, tests) does the consumer make a channel of its own and
read it alongside ``receive``.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, cast

from asgiref.sync import async_to_sync
from django.core.exceptions import ImproperlyConfigured

from switchboard.gateway.layers import ChannelLayer, get_channel_layer

from .asgi import Message, Receive, Scope, Send
from .db import database_sync_to_async
from .dispatch import Source, dispatch_from
from .exceptions import StopConsumer

DEFAULT_CHANNEL_LAYER = "default"

#: What an ``ordered`` consumer sends to be pinned to its worker (specs/layer.md).
CLAIM_TYPE = "switchboard.claim"


def handler_name(message: Message) -> str:
    """The method name for a message: its ``type`` with dots turned into underscores.

    A type whose *method name* would start with an underscore is refused (ValueError, as
    Channels' ``get_handler_name`` does), so that no message, whoever sent it to a group,
    can reach a private or dunder method: the check runs on the name after the mapping,
    because ``.secret`` becomes ``_secret`` and ``..init..`` becomes ``__init__``.
    """
    message_type = message.get("type")
    if not isinstance(message_type, str) or not message_type:
        raise ValueError(f"Message has no valid 'type' key: {str(message)[:200]}")
    name = message_type.replace(".", "_")
    if name.startswith("_"):
        raise ValueError(f"Malformed type in message (leading underscore): {message_type[:100]!r}")
    return name


class ConsumerApp:
    """The ASGI application ``as_asgi()`` returns: a new consumer instance per scope.

    ``consumer_class`` and ``consumer_initkwargs`` stay inspectable (routers use them to
    spot a consumer class passed where an application was expected; test tools too).
    """

    _asgi_single_callable = True  # tells asgiref's guarantee_single_callable not to wrap us

    def __init__(self, consumer_class: type[AsyncConsumer], initkwargs: dict[str, Any]) -> None:
        self.consumer_class = consumer_class
        self.consumer_initkwargs = initkwargs
        self.__name__ = consumer_class.__name__
        self.__qualname__ = consumer_class.__qualname__
        self.__doc__ = consumer_class.__doc__
        self.__module__ = consumer_class.__module__

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        consumer = self.consumer_class(**self.consumer_initkwargs)
        await consumer(scope, receive, send)

    def __repr__(self) -> str:
        return f"<{self.__qualname__}.as_asgi({self.consumer_initkwargs!r})>"


class AsyncConsumer:
    """Base consumer: dispatches each message to the coroutine named after its type."""

    _sync: ClassVar[bool] = False

    #: The ``CHANNEL_LAYERS`` alias of the layer to use; None to run without one (no
    #: groups, no channel of its own). Under a gateway the consumer's channel is its
    #: connection's reply channel, which lives on the process's own layer, so there the
    #: process layer is used whatever the alias (docs/porting-from-channels.md).
    channel_layer_alias: ClassVar[str | None] = DEFAULT_CHANNEL_LAYER

    #: Groups a websocket consumer joins on connect and leaves on disconnect.
    groups: list[str] = []

    #: Ask for ordered handling of a connection that is not sticky by itself (a UDP
    #: socket, an MQTT session, SMTP): before its first message the instance sends
    #: ``{"type": "switchboard.claim"}`` and the worker pins the connection to itself, so
    #: from the claim on its events stop spreading over the workers and are handled one
    #: at a time, in order, by this instance (docs/ordering.md). Sticky connections
    #: (WebSockets, HTTP requests) are ordered anyway; for them this changes nothing.
    ordered: bool = False

    scope: Scope
    # Typed as always present, as handlers use them (``self.channel_layer.group_send``).
    # They are None only when the consumer opted out (``channel_layer_alias = None``);
    # ``channel_name`` is then None too unless the scope has a reply channel.
    channel_layer: ChannelLayer
    channel_name: str
    base_send: Any  # the ASGI send; wrapped by async_to_sync in sync consumers

    def __init__(self, **kwargs: Any) -> None:
        for key, value in kwargs.items():
            setattr(self, key, value)
        # An instance's own list, so appending to it never leaks into other connections.
        self.groups = list(self.groups or [])

    @classmethod
    def as_asgi(cls, **initkwargs: Any) -> ConsumerApp:
        """An ASGI app building ``cls(**initkwargs)`` for every scope.

        Keyword names must be existing class attributes, so a typo fails at import time
        of the routing module instead of silently setting an unused attribute.
        """
        for key in initkwargs:
            if not hasattr(cls, key):
                raise TypeError(f"{cls.__name__}.as_asgi() got {key!r}, which is not an attribute of the class")
        return ConsumerApp(cls, dict(initkwargs))

    def get_channel_layer(self) -> ChannelLayer | None:
        """The layer this consumer uses, or None when ``channel_layer_alias`` is None."""
        if self.channel_layer_alias is None:
            return None
        if isinstance(getattr(self, "scope", {}).get("reply_channel"), str):
            return get_channel_layer()
        layer: ChannelLayer | None = get_channel_layer(self.channel_layer_alias)
        return layer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run this instance for one connection until a handler raises ``StopConsumer``."""
        self.scope = scope
        self.base_send = async_to_sync(send) if self._sync else send
        layer = self.get_channel_layer()
        reply_channel = scope.get("reply_channel")
        channel_name: str | None = None
        sources: list[Source] = [receive]
        if isinstance(reply_channel, str):
            # The gateway forwards group messages for this channel into ``receive``.
            channel_name = reply_channel
        elif layer is not None:
            channel_name = await layer.new_channel()
            sources.append(functools.partial(layer.receive, channel_name))
        self.channel_layer = cast(ChannelLayer, layer)
        self.channel_name = cast(str, channel_name)
        handle: Callable[[Message], Awaitable[None]] = self.dispatch
        if self.ordered and isinstance(reply_channel, str):
            handle = self._claim_first(send)
        try:
            await dispatch_from(sources, handle)
        except StopConsumer:
            pass

    def _claim_first(self, send: Send) -> Callable[[Message], Awaitable[None]]:
        """``dispatch`` preceded, once, by the claim that pins the connection to this worker.

        The claim goes through the raw ASGI ``send`` (the worker intercepts it; it never
        reaches the client) before the first handler runs, so it reaches the gateway ahead
        of any reply. Without a reply channel there is no gateway to pin to: no claim.
        """
        claimed = False

        async def handle(message: Message) -> None:
            nonlocal claimed
            if not claimed:
                claimed = True
                await send({"type": CLAIM_TYPE})
            await self.dispatch(message)

        return handle

    def find_handler(self, message: Message) -> Callable[[Message], Any]:
        name = handler_name(message)
        handler = getattr(self, name, None)
        if handler is None or not callable(handler):
            raise ValueError(f"No handler for message type {message['type']} (define {type(self).__name__}.{name})")
        return handler

    async def dispatch(self, message: Message) -> None:
        """Run the handler for ``message``; ValueError when the consumer has none."""
        await self.find_handler(message)(message)

    async def send(self, message: Message) -> None:
        """Send an ASGI message to the connection."""
        await self.base_send(message)

    # -- groups (used by the websocket consumers) ------------------------------------

    def _group_target(self) -> tuple[ChannelLayer, str]:
        layer: ChannelLayer | None = getattr(self, "channel_layer", None)
        channel: str | None = getattr(self, "channel_name", None)
        if layer is None or channel is None:
            raise ImproperlyConfigured(
                f"{type(self).__name__} has groups {self.groups!r} but no channel layer (channel_layer_alias is None?)"
            )
        return layer, channel

    async def join_groups(self) -> None:
        """Add this consumer's channel to every group in ``groups``."""
        if not self.groups:
            return
        layer, channel = self._group_target()
        for group in self.groups:
            await layer.group_add(group, channel)

    async def leave_groups(self) -> None:
        """Remove this consumer's channel from every group in ``groups``."""
        if not self.groups:
            return
        layer, channel = self._group_target()
        for group in self.groups:
            await layer.group_discard(group, channel)


class SyncConsumer(AsyncConsumer):
    """Consumer whose handlers are plain functions, run in Django's sync thread.

    Each handler runs through ``database_sync_to_async``, so it may use the ORM and
    block; ``send()`` is synchronous. Use ``async_to_sync(self.channel_layer.group_send)``
    and friends for the layer.
    """

    _sync = True

    async def dispatch(self, message: Message) -> None:
        handler = self.find_handler(message)
        await database_sync_to_async(handler)(message)

    def send(self, message: Message) -> None:  # type: ignore[override]
        """Send an ASGI message to the connection (blocks this thread until handed over)."""
        self.base_send(message)
