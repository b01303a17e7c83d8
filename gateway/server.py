"""The gateway process core: connections, the reply read loop, plugin lifecycle, signals.

Every connection a plugin accepts gets a reply channel ``gateway.<id>!<token>``. One read
loop per gateway process reads the shared ``gateway.<id>!`` list and hands each reply to
its connection: messages of the connection's own protocol (``websocket.send``...) go to the
plugin to write out; any other type (a group message such as ``chat.message``) is
forwarded to the worker pool as an event of that connection, so consumer handlers run
in workers while the connection itself never leaves the gateway.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .config import SwitchboardConfig
from .envelope import pool_channel, wrap
from .layers import ChannelLayer, LayerClosed, Message, build_layer, set_channel_layer
from .plugins import ProtocolPlugin, build_plugins

logger = logging.getLogger("switchboard.gateway")

Deliver = Callable[[Message], None]


@dataclass(eq=False)
class Connection:
    """One client connection (or peer, or session) held by a plugin in this gateway."""

    channel: str
    protocol: str
    scope: dict[str, Any]
    deliver: Deliver
    events_channel: str
    open: bool = True


@dataclass
class GatewayStats:
    """Gateway-level counters (plugins keep their own)."""

    connections_opened: int = 0
    connections_closed: int = 0
    events_sent: int = 0
    events_dropped_full: int = 0
    replies_delivered: int = 0
    replies_forwarded: int = 0
    replies_orphaned: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, int]:
        data = {k: v for k, v in self.__dict__.items() if k != "extra"}
        data.update(self.extra)
        return data


class Gateway:
    """Owns the layer, the reply loop and the connections of one gateway process."""

    def __init__(self, layer: ChannelLayer, *, gateway_id: str | None = None) -> None:
        self.layer = layer
        self.id = gateway_id or secrets.token_hex(6)
        self.reply_prefix = f"gateway.{self.id}!"
        self.connections: dict[str, Connection] = {}
        self.stats = GatewayStats()
        self._receiver = None
        self._reply_task: asyncio.Task[None] | None = None

    # -- connections ----------------------------------------------------------------

    def open_connection(self, scope: dict[str, Any], deliver: Deliver) -> Connection:
        """Register a connection; adds ``reply_channel`` to ``scope`` and returns it.

        ``scope["type"]`` picks the worker pool channel; ``deliver`` is called (on the loop,
        must not block) with each reply of that protocol.
        """
        channel = self.reply_prefix + secrets.token_urlsafe(9)
        scope["reply_channel"] = channel
        protocol = scope["type"]
        connection = Connection(channel, protocol, scope, deliver, pool_channel(protocol))
        self.connections[channel] = connection
        self.stats.connections_opened += 1
        return connection

    def close_connection(self, connection: Connection) -> None:
        """Forget a connection; later replies to it are counted as orphaned."""
        if connection.open:
            connection.open = False
            self.connections.pop(connection.channel, None)
            self.stats.connections_closed += 1

    async def send_event(self, connection: Connection, event: Message) -> None:
        """Send one event of ``connection`` to the worker pool.

        Raises :class:`~switchboard.gateway.layers.ChannelFull` when the pool is at
        capacity; the plugin answers that in its protocol (503, close 1013, counted drop).
        """
        try:
            await self.layer.send(connection.events_channel, wrap(connection.channel, connection.scope, event))
        except Exception:
            self.stats.events_dropped_full += 1
            raise
        self.stats.events_sent += 1

    async def send(self, channel: str, message: Message) -> None:
        """Send to a named channel (``thumbnails``...), outside any connection."""
        await self.layer.send(channel, message)

    # -- reply loop -----------------------------------------------------------------

    async def start(self) -> None:
        self._receiver = self.layer.receiver([self.reply_prefix])
        self._reply_task = asyncio.get_running_loop().create_task(self._reply_loop(), name="gateway-replies")

    async def _reply_loop(self) -> None:
        receiver = self._receiver
        assert receiver is not None
        connections = self.connections
        stats = self.stats
        while True:
            try:
                batch = await receiver.get_batch()
            except LayerClosed:
                return
            forwards = []
            for channel, message in batch:
                connection = connections.get(channel)
                if connection is None:
                    stats.replies_orphaned += 1
                    continue
                message_type = message.get("type")
                if isinstance(message_type, str) and message_type.startswith(connection.protocol + "."):
                    try:
                        connection.deliver(message)
                    except Exception:
                        logger.exception("delivering %s to %s failed", message_type, channel)
                    stats.replies_delivered += 1
                else:
                    forwards.append(self.send_event(connection, message))
                    stats.replies_forwarded += 1
            if forwards:
                for result in await asyncio.gather(*forwards, return_exceptions=True):
                    if isinstance(result, Exception):
                        logger.warning("forwarding a message to the worker pool failed: %r", result)

    async def stop(self) -> None:
        """Stop the reply loop (after plugins drained) and close the layer."""
        if self._receiver is not None:
            await self._receiver.close()
        if self._reply_task is not None:
            await self._reply_task


async def run_gateway(
    config: SwitchboardConfig,
    *,
    layer: ChannelLayer | None = None,
    stop: asyncio.Event | None = None,
    started: Callable[[Gateway, list[ProtocolPlugin[Any]]], None] | None = None,
    drain_timeout: float = 10.0,
) -> None:
    """Run a gateway until ``stop`` is set or SIGTERM/SIGINT arrives, then drain and exit.

    Plugins are built (options validated) before the layer connects or any socket opens.
    """
    plugins = build_plugins(config.protocols)
    if not plugins:
        logger.warning("no protocol plugins enabled (SWITCHBOARD['PROTOCOLS'] is empty)")
    own_layer = layer is None
    if layer is None:
        layer = build_layer(config.layer)
    set_channel_layer(layer)
    stop = stop or asyncio.Event()
    _install_signal_handlers(stop)
    gateway = Gateway(layer)
    await gateway.start()
    started_plugins: list[ProtocolPlugin[Any]] = []
    try:
        for plugin in plugins:
            await plugin.start(gateway)
            started_plugins.append(plugin)
            logger.info("protocol %s started", plugin.name)
        if started is not None:
            started(gateway, started_plugins)
        await stop.wait()
        logger.info("gateway %s stopping: draining for up to %.1fs", gateway.id, drain_timeout)
    finally:
        for plugin in reversed(started_plugins):
            try:
                await plugin.stop(drain_timeout)
            except Exception:
                logger.exception("stopping protocol %s failed", plugin.name)
        await gateway.stop()
        if own_layer:
            await layer.close()


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):
            # Not the main thread (tests, embedded use): the caller owns ``stop``.
            pass
