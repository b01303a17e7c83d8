"""What a gateway or worker process knows about itself, sampled on its event loop.

Metrics (``gateway/metrics.py``) and ``switchboard status`` (``gateway/status.py``) read
the same thing: the stats objects the core already keeps (``GatewayStats``,
``WorkerStats``, ``layer.stats``, ``plugin.stats()``) plus a few gauges counted from live
state (open connections per protocol, queued events). Nothing here touches the hot path:
the core bumps plain integers as it always did, and this module copies them.

Why a periodic snapshot on the loop, rather than reading the objects at scrape time from
the metrics server's thread: the stats dicts and the connection table are mutated by the
loop, and iterating a dict while another thread grows it raises. Copying them on the loop
every ``interval`` (default 1 s) is race-free, costs one pass over the connection table per
interval (about a millisecond for 10,000 connections), and means a scrape never waits on
the loop. The snapshot's age is itself a signal: it grows when the loop is blocked.

The :class:`Observer` is the one background service per process. On its own
process-local prefix ``switchboard.process.<token>!`` it

- answers ``switchboard.status.request`` messages (sent to the group
  ``switchboard.status``) with a ``switchboard.status`` message (specs/layer.md, Status);
- probes the layer: every interval it sends ``switchboard.probe`` to itself and reports
  how long ``layer.send`` took and how long the message took to come back.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from .. import __version__
from .figures import cpu_seconds, protocol_totals, refusal_counts, rss_bytes
from .figures import is_plugin_drop as is_plugin_drop
from .layers import ChannelLayer, LayerClosed, Message, Receiver
from .tap import TAP_REQUEST, Taps

if TYPE_CHECKING:
    from .plugins import ProtocolPlugin
    from .server import Gateway
    from .worker import Worker

logger = logging.getLogger("switchboard.observer")

#: Every process answering ``switchboard status`` is a member of this group.
STATUS_GROUP: Final = "switchboard.status"
STATUS: Final = "switchboard.status"
STATUS_REQUEST: Final = "switchboard.status.request"
PROBE: Final = "switchboard.probe"


@dataclass(frozen=True)
class Snapshot:
    """A copy of one process's counters and gauges at ``time`` (never mutated after creation)."""

    time: float
    layer: dict[str, int]
    gateway: dict[str, int] | None = None
    #: Open gateway connections (reply channels) by protocol (scope type).
    connections: dict[str, int] = field(default_factory=dict)
    #: Events waiting in the gateway for a worker's claim.
    held: int = 0
    #: Gateway connections a worker holds a claim on, and how many workers hold claims.
    claimed: int = 0
    claiming_workers: int = 0
    #: Messages the gateway's reply reader has popped but not handed out (None: unknown).
    gateway_buffered: int | None = None
    #: Plugin name -> ``plugin.stats()``, and which of those keys are gauges, not counters.
    plugins: dict[str, dict[str, int]] = field(default_factory=dict)
    plugin_gauges: dict[str, frozenset[str]] = field(default_factory=dict)
    #: Plugin name -> the protocols (scope types) it serves: how its standard counters read.
    plugin_protocols: dict[str, tuple[str, ...]] = field(default_factory=dict)
    worker: dict[str, int] | None = None
    #: Running consumer instances, events queued to them, connections this worker claims.
    instances: int = 0
    queued: int = 0
    worker_claimed: int = 0
    claim_gateways: int = 0
    #: The Django pool (consumers/thread_pool.py): threads allowed to run, its size, and
    #: requests waiting for a thread; None before the worker served a sync Django view.
    django_pool: dict[str, int] | None = None
    #: Scope type -> cumulative handler-time bucket counts (gateway/latency.py).
    handler_times: dict[str, list[int]] = field(default_factory=dict)
    #: Scope type -> sum of those handler times, seconds.
    handler_sums: dict[str, float] = field(default_factory=dict)


class ProcessView:
    """The objects one process runs, attached as they start; :meth:`snapshot` copies them.

    ``kind`` is ``"gateway"``, ``"worker"`` or ``"run"`` (both in one process). ``stopping``
    is the event that stops the process, so status can tell "draining" from "running".
    """

    def __init__(
        self,
        kind: str,
        layer: ChannelLayer,
        *,
        gateway: Gateway | None = None,
        plugins: Sequence[ProtocolPlugin[Any]] = (),
        worker: Worker | None = None,
        stopping: asyncio.Event | None = None,
    ) -> None:
        self.kind = kind
        self.layer = layer
        self.gateway = gateway
        self.plugins = list(plugins)
        self.worker = worker
        self.stopping = stopping
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.started = time.time()

    @property
    def id(self) -> str:
        """The gateway's id (the ``<id>`` of ``gateway.<id>!``), else the worker's."""
        if self.gateway is not None:
            return self.gateway.id
        if self.worker is not None:
            return self.worker.id
        return f"{self.host}-{self.pid}"

    @property
    def state(self) -> str:
        return "stopping" if self.stopping is not None and self.stopping.is_set() else "running"

    def snapshot(self) -> Snapshot:
        """Copy every counter and gauge. Call on the loop that runs the gateway and worker."""
        values: dict[str, Any] = {"time": time.time(), "layer": self.layer.stats.as_dict()}
        gateway = self.gateway
        if gateway is not None:
            # Every protocol a started plugin serves is listed, at zero when idle, so a
            # metric series does not vanish between connections.
            by_protocol = collections.Counter(dict.fromkeys((t for p in self.plugins for t in p.scope_types), 0))
            held = 0
            for connection in gateway.connections.values():
                by_protocol[connection.protocol] += 1
                if connection.held:
                    held += len(connection.held)
            receiver: Receiver | None = getattr(gateway, "_receiver", None)  # read-only; see docs/observability.md
            values.update(
                gateway=gateway.stats.as_dict(),
                connections=dict(by_protocol),
                held=held,
                claimed=sum(len(claims) for claims in gateway.worker_claims.values()),
                claiming_workers=len(gateway.worker_claims),
                gateway_buffered=receiver.pending() if receiver is not None else None,
            )
        if self.plugins:
            plugins: dict[str, dict[str, int]] = {}
            gauges: dict[str, frozenset[str]] = {}
            for plugin in self.plugins:
                try:
                    stats = plugin.stats()
                except Exception:  # one broken plugin must not hide every other number
                    logger.exception("stats() of protocol %s failed", plugin.name)
                    continue
                plugins[plugin.name] = stats
                # Membership tests, not iteration: some plugins count from another thread.
                gauges[plugin.name] = frozenset(key for key in stats if key not in plugin.counters)
            values.update(
                plugins=plugins,
                plugin_gauges=gauges,
                plugin_protocols={plugin.name: tuple(plugin.scope_types) for plugin in self.plugins},
            )
        worker = self.worker
        if worker is not None:
            # Imported here: only a worker has Django's handler to serve.
            from switchboard.consumers.django_http import RUNTIME

            instances = list(worker.instances.values())
            values.update(
                worker=worker.stats.as_dict(),
                instances=len(instances),
                queued=sum(instance.queue.qsize() for instance in instances),
                worker_claimed=sum(len(claims) for claims in worker.claims.values()),
                claim_gateways=len(worker.claims),
                handler_times={name: times.as_list() for name, times in list(worker.handler_times.items())},
                handler_sums={name: times.total for name, times in list(worker.handler_times.items())},
                django_pool=RUNTIME.figures(),
            )
        return Snapshot(**values)


def drop_counts(snapshot: Snapshot) -> dict[tuple[str, str], int]:
    """Lost messages by ``(component, reason)``; each loss is counted once, where it happened.

    ``layer``: a full channel refused a send (``full``) or a group member
    (``group_dropped_full``); a message was read after its expiry (``expired``) or could
    not be decoded (``corrupt``); a durable channel refused a message as too large
    (``durable_too_large``; dead letters are kept, not lost, so they are not drops).
    ``gateway``: a reply reached a closed connection (``replies_orphaned``) or the layer
    raised on an event (``events_failed``). ``worker``:
    a non-envelope on a pool channel (``bad_messages``), an event past an instance's
    backlog bound (``events_dropped_backlog``), a reply the gateway had no room for
    (``replies_shed``) or the layer raised on (``replies_failed``), an event queued to an
    instance that ended because its gateway gave the connection to another worker
    (``events_dropped_taken_back``). Plugins: see :func:`is_plugin_drop`.
    """
    drops: dict[tuple[str, str], int] = {}
    for reason in ("full", "group_dropped_full", "expired", "corrupt", "durable_too_large"):
        drops["layer", reason] = snapshot.layer.get(reason, 0)
    if snapshot.gateway is not None:
        for reason in ("replies_orphaned", "events_failed"):
            drops["gateway", reason] = snapshot.gateway.get(reason, 0)
    if snapshot.worker is not None:
        for reason in ("bad_messages", "events_dropped_backlog", "replies_shed", "replies_failed", "events_dropped_taken_back"):
            drops["worker", reason] = snapshot.worker.get(reason, 0)
    for name, stats in snapshot.plugins.items():
        gauges = snapshot.plugin_gauges.get(name, frozenset())
        for counter, value in stats.items():
            if counter not in gauges and is_plugin_drop(counter):
                drops[name, counter] = value
    return drops


def status_message(view: ProcessView, snapshot: Snapshot) -> Message:
    """The ``switchboard.status`` message for ``snapshot`` (specs/layer.md, Status)."""
    message: Message = {
        "type": STATUS,
        "id": view.id,
        "kind": view.kind,
        "host": view.host,
        "pid": view.pid,
        "started": view.started,
        "time": snapshot.time,
        "state": view.state,
        "connections": {protocol: n for protocol, n in snapshot.connections.items() if n},
        "drops": {f"{component}.{reason}": n for (component, reason), n in drop_counts(snapshot).items() if n},
        "layer": {"sent": snapshot.layer.get("sent", 0), "received": snapshot.layer.get("received", 0)},
        "version": __version__,
        "cpu": cpu_seconds(),
        "rss": rss_bytes(),
    }
    if snapshot.gateway is not None and view.gateway is not None:
        stats = snapshot.gateway
        message["gateway"] = {
            "id": view.gateway.id,
            "events_in": stats.get("events_sent", 0),
            "events_out": stats.get("replies_delivered", 0),
            "held": snapshot.held,
            "claimed": snapshot.claimed,
            "claims": stats.get("claims", 0),
            "workers_lost": stats.get("workers_lost", 0),
            "plugins": sorted(snapshot.plugins),
            "protocols": {
                protocol: {"open": snapshot.connections.get(protocol, 0), **totals}
                for protocol, totals in protocol_totals(snapshot.plugins, snapshot.plugin_protocols).items()
            },
            "refusals": refusal_counts(snapshot.plugins, snapshot.plugin_gauges, snapshot.plugin_protocols),
            "plugin_protocols": {name: list(types) for name, types in snapshot.plugin_protocols.items()},
        }
    if snapshot.worker is not None and view.worker is not None:
        stats = snapshot.worker
        message["worker"] = {
            "id": view.worker.id,
            "events_in": stats.get("events", 0) + stats.get("named_messages", 0),
            # WorkerStats has no reply counter yet; filled in once it has one.
            "events_out": stats.get("replies"),
            "instances": snapshot.instances,
            "queued": snapshot.queued,
            "claimed": snapshot.worker_claimed,
            "claims": stats.get("claims", 0),
            "failed": stats.get("instances_failed", 0),
            "channels": [*view.worker.listen_channels(), view.worker.local_prefix],
            "handler_times": snapshot.handler_times,
        }
    return message


ProbeHook = Callable[[float], None]


class Observer:
    """The per-process service behind metrics and ``switchboard status``.

    Every ``interval`` it refreshes :attr:`latest` (what metrics read), and, when
    ``probe`` is on, sends one ``switchboard.probe`` to its own channel: the time
    ``layer.send`` took goes to ``on_send``, the time until the probe is read back to
    ``on_roundtrip``, and how late the loop woke from its sleep to ``on_lag``.

    Why a probe and not a timer around every ``layer.send``: a wrapper would sit on the
    hottest path and miss sends that bypass it (``send_many``, group sends, coalesced
    batches); a probe costs one message per interval and measures what every message
    pays — the write (including any batching wait), the blocking read's delivery and the
    reader's scheduling on this loop. It samples rather than counts, so rare spikes
    shorter than the interval can be missed; the loop-lag histogram covers the most
    common cause of those.

    With ``status`` on, the process joins the group ``switchboard.status`` with
    ``switchboard.process.<token>!status`` (re-added well within ``group_expiry``, and
    discarded on stop) and answers each ``switchboard.status.request``. Requests are
    pulled, not pushed: nothing is sent while nobody runs ``switchboard status``, and a
    status command killed without cleaning up leaves no group member behind for every
    process to keep writing to.
    """

    def __init__(
        self,
        view: ProcessView,
        *,
        interval: float = 1.0,
        status: bool = True,
        probe: bool = True,
        on_send: ProbeHook | None = None,
        on_roundtrip: ProbeHook | None = None,
        on_lag: ProbeHook | None = None,
    ) -> None:
        self.view = view
        self.layer = view.layer
        self.interval = interval
        self.status = status
        self.probe = probe
        self.on_send = on_send
        self.on_roundtrip = on_roundtrip
        self.on_lag = on_lag
        self.prefix = f"switchboard.process.{secrets.token_hex(6)}!"
        self.status_channel = self.prefix + "status"
        self.probe_channel = self.prefix + "probe"
        self.latest: Snapshot | None = None
        self.requests_answered = 0
        self._receiver: Receiver | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def refresh(self) -> Snapshot:
        self.latest = snapshot = self.view.snapshot()
        return snapshot

    def start(self) -> None:
        """Start the read and tick tasks on the running loop (callable from sync code)."""
        if self._tasks:
            return
        self.refresh()
        loop = asyncio.get_running_loop()
        if self.status or self.probe:
            self._receiver = self.layer.receiver([self.prefix])
            self._tasks.append(loop.create_task(self._read(self._receiver), name="observer-read"))
        self._tasks.append(loop.create_task(self._tick(), name="observer-tick"))

    async def stop(self) -> None:
        """Leave the status group and stop; call before the layer closes."""
        tick = [task for task in self._tasks if task.get_name() == "observer-tick"]
        for task in tick:
            task.cancel()
        await asyncio.gather(*tick, return_exceptions=True)
        if self.status and self._tasks:
            try:
                await self.layer.group_discard(STATUS_GROUP, self.status_channel)
            except Exception as exc:
                logger.warning("could not leave %s: %r", STATUS_GROUP, exc)
        if self._receiver is not None:
            await self._receiver.close()
        worker = self.view.worker
        if worker is not None and worker.tap is not None:
            await worker.tap.close()
            worker.tap = None
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def _group_refresh_interval(self) -> float:
        return max(min(self.layer.group_expiry / 3, 3600.0), self.interval)

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        rejoin_at = 0.0
        while True:
            try:
                self.refresh()
            except Exception:  # a bug here must not stop the probe or leave metrics frozen silently
                logger.exception("taking a stats snapshot failed")
            if self.status:
                try:
                    # A Redis restart (or flush) deletes the membership: the marker, gone
                    # with it, says so, and this process joins again at once rather than
                    # staying invisible to ``switchboard status`` until the next refresh.
                    if await self.layer.storage.keep_marker(self.status_channel, max(30.0, 30 * self.interval)):
                        rejoin_at = 0.0
                except Exception as exc:
                    logger.debug("status marker check failed: %r", exc)
            if self.status and loop.time() >= rejoin_at:
                try:
                    await self.layer.group_add(STATUS_GROUP, self.status_channel)
                    rejoin_at = loop.time() + self._group_refresh_interval()
                except Exception as exc:
                    logger.warning("could not join %s (status will not see this process): %r", STATUS_GROUP, exc)
            if self.probe:
                await self._send_probe()
            before = loop.time()
            await asyncio.sleep(self.interval)
            if self.on_lag is not None:
                self.on_lag(max(loop.time() - before - self.interval, 0.0))

    async def _send_probe(self) -> None:
        started = time.perf_counter()
        try:
            await self.layer.send(self.probe_channel, {"type": PROBE, "sent": started})
        except Exception as exc:
            logger.warning("layer probe failed: %r", exc)
            return
        if self.on_send is not None:
            self.on_send(time.perf_counter() - started)

    async def _read(self, receiver: Receiver) -> None:
        while True:
            try:
                batch = await receiver.get_batch()
            except LayerClosed:
                return
            for channel, message in batch:
                message_type = message.get("type")
                if message_type == PROBE and channel == self.probe_channel:
                    sent = message.get("sent")
                    if isinstance(sent, float) and self.on_roundtrip is not None:
                        self.on_roundtrip(time.perf_counter() - sent)
                elif message_type == STATUS_REQUEST and self.status:
                    await self._answer(message)
                elif message_type == TAP_REQUEST and self.status:
                    self._tap(message)

    def _tap(self, request: Message) -> None:
        """A console wants a live tail (gateway/tap.py): workers that read it install one."""
        worker = self.view.worker
        if worker is None:
            return
        protocol, channel = request.get("protocol"), request.get("channel")
        if protocol not in worker.protocols and channel not in worker.channels:
            return
        taps = worker.tap
        if taps is None:

            def gone(empty: Taps) -> None:
                if worker.tap is empty:
                    worker.tap = None

            taps = Taps(self.layer, worker.id, on_empty=gone)
        if taps.request(request):
            worker.tap = taps
        else:
            logger.info("malformed live tail request ignored: keys %s", sorted(request))

    async def _answer(self, request: Message) -> None:
        reply_channel = request.get("reply_channel")
        if not isinstance(reply_channel, str):
            logger.warning("status request without a reply_channel ignored")
            return
        try:
            answer = status_message(self.view, self.refresh())
        except Exception:
            logger.exception("building a status answer failed")
            return
        try:
            await self.layer.send(reply_channel, answer)
            self.requests_answered += 1
        except Exception as exc:  # a full or bad reply channel is the requester's problem
            logger.info("could not answer a status request on %s: %r", reply_channel, exc)
