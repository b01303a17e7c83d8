"""The group memberships of a gateway's connections, kept true in the channel layer.

A consumer joins a group with its ``channel_name``, which is its connection's reply
channel on the gateway (``gateway.<id>!<token>``); the membership then lives in the layer
(a Redis sorted set) with nothing behind it. Three things used to go wrong there:

* **Redis restarts** (without persistence, or a flush, or a failover to a replica that
  was behind) silently deleted every membership: connected chat clients got no room
  message again, with no close and no log.
* **``group_expiry``** (24 h): a socket open longer silently left its groups.
* **Closed connections** stayed members until ``group_expiry`` when the consumer did not
  (or could not: it was killed) discard them.

Only the gateway knows which connections are still there, so it keeps their memberships:
the layer tells it of every ``group_add`` / ``group_discard`` of its connections (a
``switchboard.group_add`` / ``switchboard.group_discard`` notice on the reply channel),
and this keeper then

* keeps a marker of its own in the layer and renews it every ``check_interval``; when the
  marker is gone, the layer lost its data: it re-adds every membership of every open
  connection at once (one batched call per server), logs it and counts it;
* refreshes all of them every ``group_expiry / 4``, so an open connection never expires;
* discards a connection's memberships when it closes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from .envelope import GROUP_ADD
from .layers import ChannelLayer, Message

if TYPE_CHECKING:
    from .server import Connection, GatewayStats

logger = logging.getLogger("switchboard.gateway")

#: A discard notice this soon after a restore or refresh started is applied again: the
#: restore may have re-added the membership after the consumer's discard reached the layer.
_RESTORE_RACE = 10.0


class Memberships:
    """Keeps the memberships of one gateway's connections alive (see module docstring)."""

    def __init__(self, layer: ChannelLayer, owner: str, stats: GatewayStats, *, check_interval: float = 1.0) -> None:
        self.layer = layer
        self.marker = owner
        self.stats = stats
        self.check_interval = check_interval
        # Renewed every check: it can only vanish with the layer's data (or this process
        # stalling for 30 checks, after which a restore is harmless anyway).
        self.marker_ttl = max(30.0, 30 * check_interval)
        self.refresh_interval = max(check_interval, layer.group_expiry / 4)
        self._stale: dict[str, list[str]] = {}
        self._flushing: asyncio.Task[None] | None = None
        self._restored_at = -math.inf
        self._task: asyncio.Task[None] | None = None

    # -- notices and closes (from the gateway's reply loop) --------------------------

    def noticed(self, connection: Connection | None, channel: str, message: Message) -> None:
        """A ``switchboard.group_add`` / ``group_discard`` notice for ``channel`` arrived."""
        group = message.get("group")
        if not isinstance(group, str):
            return
        if message.get("type") == GROUP_ADD:
            if connection is not None and connection.open:
                if connection.groups is None:
                    connection.groups = set()
                connection.groups.add(group)
            else:
                # The connection closed before the notice came: nobody else will drop it.
                self._discard_soon(group, channel)
            return
        if connection is not None and connection.groups is not None:
            connection.groups.discard(group)
        if time.monotonic() - self._restored_at < _RESTORE_RACE:
            self._discard_soon(group, channel)

    def closed(self, connection: Connection) -> None:
        """``connection`` closed: its memberships go (the consumer may not say so itself)."""
        for group in connection.groups or ():
            self._discard_soon(group, connection.channel)
        connection.groups = None

    def _discard_soon(self, group: str, channel: str) -> None:
        """Queue a discard; everything queued in one loop pass goes in one batched call."""
        self._stale.setdefault(group, []).append(channel)
        if self._flushing is None or self._flushing.done():
            self._flushing = asyncio.get_running_loop().create_task(self._flush_discards())

    async def _flush_discards(self) -> None:
        while self._stale:
            stale, self._stale = self._stale, {}
            try:
                await self.layer.group_discard_many(stale)
            except Exception as exc:
                # Redis away: they expire with group_expiry instead (nothing re-adds them).
                logger.warning("could not drop %d membership(s) of closed connections: %r", _count(stale), exc)

    # -- the watch loop -------------------------------------------------------------

    async def start(self, connections: Callable[[], Iterable[Connection]]) -> None:
        """Set the marker (so any later loss is seen), then watch in the background."""
        try:
            await self.layer.storage.keep_marker(self.marker, self.marker_ttl)
        except Exception as exc:
            logger.warning("could not set the membership marker %s: %r", self.marker, exc)
        self._task = asyncio.get_running_loop().create_task(self._watch(connections), name="gateway-memberships")

    async def stop(self) -> None:
        """Stop watching; finish dropping the memberships of connections closed so far."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._flushing is not None:
            await asyncio.gather(self._flushing, return_exceptions=True)
        await self._flush_discards()

    async def _watch(self, connections: Callable[[], Iterable[Connection]]) -> None:
        loop = asyncio.get_running_loop()
        next_refresh = loop.time() + self.refresh_interval
        while True:
            await asyncio.sleep(self.check_interval)
            try:
                lost = await self.layer.storage.keep_marker(self.marker, self.marker_ttl)
            except Exception as exc:  # the layer is away; the next check will tell
                logger.debug("membership check failed: %r", exc)
                continue
            try:
                if lost:
                    self.stats.layer_data_lost += 1
                    count, groups = await self.restore(connections())
                    self.stats.memberships_restored += count
                    # INFO when there was nothing to restore (say the layer was down when
                    # this gateway started, so its marker was never set).
                    logger.log(
                        logging.WARNING if count else logging.INFO,
                        "the channel layer lost its data (a Redis restart or flush?): restored %d group membership(s)"
                        " of this gateway's connections in %d group(s)",
                        count,
                        groups,
                    )
                    next_refresh = loop.time() + self.refresh_interval
                elif loop.time() >= next_refresh:
                    count, _groups = await self.restore(connections())
                    self.stats.memberships_refreshed += count
                    next_refresh = loop.time() + self.refresh_interval
            except Exception as exc:
                logger.warning("could not restore or refresh group memberships: %r", exc)

    async def restore(self, connections: Iterable[Connection]) -> tuple[int, int]:
        """Add every membership of ``connections`` again (fresh ``group_expiry``); (memberships, groups)."""
        by_group: dict[str, list[str]] = {}
        for connection in connections:
            if connection.open and connection.groups:
                for group in connection.groups:
                    by_group.setdefault(group, []).append(connection.channel)
        if not by_group:
            return 0, 0
        self._restored_at = time.monotonic()
        await self.layer.group_add_many(by_group)
        return _count(by_group), len(by_group)


def _count(memberships: dict[str, Any]) -> int:
    return sum(len(channels) for channels in memberships.values())
