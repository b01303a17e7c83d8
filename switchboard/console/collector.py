"""The console's view of the cluster, refreshed every interval, fanned out to open pages.

Every ``interval`` the collector asks every process for its ``switchboard.status`` (the
request ``switchboard status`` sends), measures the backlog of every channel it learnt of
and the layer's round trip to each storage server, and turns that into a frame
(``frames.py``) and a point of history (``history.py``). Pages subscribe and get each frame
as it is made.

It also runs live tails: while a page watches one, the collector sends a
``switchboard.tap.request`` every :data:`TAP_RENEW` seconds and forwards the workers'
``switchboard.tap.events`` to the pages that asked (gateway/tap.py).

The collector runs whether or not a page is open, so the charts have their history when
one opens: one status request per interval for the whole cluster, one answer per process.
Subscribers have bounded queues; a page that cannot keep up loses frames, never blocks
the collector (the next frame carries everything anyway).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from switchboard.gateway.envelope import pool_channel
from switchboard.gateway.layers import ChannelLayer, Message
from switchboard.gateway.observer import STATUS_GROUP
from switchboard.gateway.status import StatusClient
from switchboard.gateway.tap import TAP_EVENTS, TAP_REQUEST

from .deadletters import DeadLetters
from .frames import Channel, FrameBuilder
from .history import History

logger = logging.getLogger("switchboard.console")

#: Seconds between renewals of a live tail's request, and how long each one lasts.
TAP_RENEW: Final = 5.0
TAP_LIFETIME: Final = 15.0
#: Frames a slow page may have waiting before older ones are dropped.
SUBSCRIBER_QUEUE: Final = 8
#: Longest wait for a backlog or latency measurement, in seconds.
MEASURE_TIMEOUT: Final = 5.0


@dataclass(eq=False)
class Subscription:
    """One page's feed: frames (``kind == "frame"``) or a live tail's events."""

    kind: str
    tap: str | None = None
    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(SUBSCRIBER_QUEUE))
    dropped: int = 0

    def offer(self, item: dict[str, Any]) -> None:
        if self.queue.full():
            self.queue.get_nowait()  # the oldest goes: the newest frame says everything
            self.dropped += 1
        self.queue.put_nowait(item)


def tap_name(protocol: str | None, channel: str | None) -> str:
    return f"protocol:{protocol}" if protocol is not None else f"channel:{channel}"


class Collector:
    """Asks, measures and keeps; see the module docstring."""

    def __init__(
        self,
        layer: ChannelLayer,
        *,
        interval: float = 1.0,
        history: float = 900.0,
        forget_after: float = 5.0,
        deadletters: DeadLetters | None = None,
    ) -> None:
        self.layer = layer
        self.interval = interval
        self.forget_after = max(forget_after, interval * 1.5)
        self.history = History(history, interval)
        self.builder = FrameBuilder(interval=interval)
        self.deadletters = deadletters
        self.frame: dict[str, Any] | None = None
        self.ready = asyncio.Event()
        self._subscriptions: set[Subscription] = set()
        self._client: StatusClient | None = None
        self._taps_renewed: dict[str, float] = {}
        self._warned: set[str] = set()

    # -- subscriptions -----------------------------------------------------------------

    def subscribe(self, kind: str = "frame", tap: str | None = None) -> Subscription:
        subscription = Subscription(kind, tap)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    def watching(self) -> int:
        """Pages subscribed to frames now (what the console's cost depends on)."""
        return sum(1 for s in self._subscriptions if s.kind == "frame")

    # -- the loop ----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Refresh every interval until ``stop`` is set."""
        async with StatusClient(self.layer) as client:
            self._client = client
            tap_channel = client.reply_channel
            while not stop.is_set():
                try:
                    await self._renew_taps(tap_channel)
                    await client.request()
                except Exception as exc:
                    self._warn_once("request", "console: asking for status failed: %r", exc)
                collect = asyncio.ensure_future(client.collect(self.interval, self._other))
                stopping = asyncio.ensure_future(stop.wait())
                await asyncio.wait({collect, stopping}, return_when=asyncio.FIRST_COMPLETED)
                for task in (collect, stopping):
                    task.cancel()
                await asyncio.gather(collect, stopping, return_exceptions=True)
                if stop.is_set():
                    break
                await self.refresh(client.rows(forget_after=self.forget_after))
        self._client = None

    async def refresh(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        """Measure, build and publish one frame from ``rows`` (status answers)."""
        channels, nodes, deadletters = await asyncio.gather(
            self._backlog(rows), self._ping(), self._deadletters(), return_exceptions=False
        )
        now = time.time()
        frame, points = self.builder.build(rows, now=now, channels=channels, nodes=nodes, deadletters=deadletters)
        self.history.add(now, points)
        self.frame = frame
        self.ready.set()
        item = {"frame": frame, "point": self.history.point()}
        for subscription in list(self._subscriptions):
            if subscription.kind == "frame":
                subscription.offer(item)
        return frame

    # -- measurements ------------------------------------------------------------------

    @staticmethod
    def channels_of(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
        """``(channel, kind)`` of every channel the processes named: pools, named, process-local."""
        found: dict[str, str] = {}
        for row in rows:
            gateway, worker = row.get("gateway") or {}, row.get("worker") or {}
            for protocol in sorted(gateway.get("protocols") or {}):
                found.setdefault(pool_channel(protocol), "pool")
            if gateway.get("id"):
                found.setdefault(f"gateway.{gateway['id']}!", "gateway")
            for channel in worker.get("channels") or ():
                if not isinstance(channel, str):
                    continue
                if channel.endswith("!"):
                    found.setdefault(channel, "worker")
                else:
                    found.setdefault(channel, "pool" if channel.startswith("switchboard.") else "named")
        order = {"pool": 0, "named": 1, "gateway": 2, "worker": 3}
        return sorted(found.items(), key=lambda item: (order[item[1]], item[0]))

    async def _backlog(self, rows: Sequence[dict[str, Any]]) -> list[Channel]:
        named = self.channels_of(rows)
        if not named:
            return []
        try:
            async with asyncio.timeout(MEASURE_TIMEOUT):
                measured = await self.layer.backlog([name for name, _kind in named])
        except Exception as exc:
            self._warn_once("backlog", "console: measuring channel backlogs failed: %r", exc)
            return []
        self._warned.discard("backlog")
        return [Channel(name, kind, length, capacity) for (name, kind), (length, capacity) in zip(named, measured)]

    async def _ping(self) -> list[tuple[str, float | None]]:
        try:
            async with asyncio.timeout(MEASURE_TIMEOUT):
                return await self.layer.ping()
        except Exception as exc:
            self._warn_once("ping", "console: measuring the layer's latency failed: %r", exc)
            return []

    async def _deadletters(self) -> dict[str, Any] | None:
        if self.deadletters is None:
            return None
        try:
            async with asyncio.timeout(MEASURE_TIMEOUT):
                return {"channels": await self.deadletters.counts()}
        except Exception as exc:
            self._warn_once("deadletters", "console: counting dead letters failed: %r", exc)
            return {"channels": {}, "error": "unavailable"}

    def _warn_once(self, what: str, message: str, *args: Any) -> None:
        """A failing measurement is logged when it starts failing, not every second."""
        if what not in self._warned:
            self._warned.add(what)
            logger.warning(message, *args)

    # -- live tails --------------------------------------------------------------------

    async def _renew_taps(self, reply_channel: str) -> None:
        wanted = {s.tap for s in self._subscriptions if s.kind == "tail" and s.tap is not None}
        now = time.monotonic()
        for tap in list(self._taps_renewed):
            if tap not in wanted:
                del self._taps_renewed[tap]
        for tap in wanted:
            if now - self._taps_renewed.get(tap, -TAP_RENEW) < TAP_RENEW:
                continue
            self._taps_renewed[tap] = now
            kind, _, name = tap.partition(":")
            until = time.time() + TAP_LIFETIME
            request: Message = {"type": TAP_REQUEST, "reply_channel": reply_channel, "tap": tap, "until": until}
            request[kind] = name
            await self.layer.group_send(STATUS_GROUP, request)

    async def start_tail(self, subscription: Subscription) -> None:
        """Ask the workers at once (not at the next renewal) for a tail a page just opened."""
        client = self._client
        if client is not None and subscription.tap is not None:
            self._taps_renewed.pop(subscription.tap, None)
            await self._renew_taps(client.reply_channel)

    def _other(self, _channel: str, message: Message) -> None:
        if message.get("type") != TAP_EVENTS:
            return
        tap = message.get("tap")
        events = message.get("events")
        if not isinstance(tap, str) or not isinstance(events, list):
            return
        item = {"source": message.get("source"), "events": events, "skipped": message.get("skipped", 0)}
        for subscription in list(self._subscriptions):
            if subscription.kind == "tail" and subscription.tap == tap:
                subscription.offer(item)
