"""Prometheus metrics for gateway and worker processes (``pip install 'switchboard[metrics]'``).

Values come from the :class:`~switchboard.gateway.observer.Observer`'s latest snapshot of
the stats objects the core already keeps, turned into metric families at scrape time by a
custom collector. So the hot path gains no ``inc()`` calls, the core's counters stay the one
source of truth (``switchboard status`` shows the same numbers), and a counter the core
adds later (an ``extra`` key, a new plugin counter) appears without a change here.

The endpoint is prometheus_client's own HTTP server in a daemon thread: a scrape never runs
on the event loop, and the collector only reads an immutable snapshot, so it needs no lock.
The three histograms (layer send, layer round trip, loop lag) are ordinary
``prometheus_client`` histograms fed by the observer's probe; they are thread-safe.

Every metric name and label is listed in docs/observability.md.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable, Mapping
from typing import Final
from wsgiref.simple_server import WSGIServer

from prometheus_client import GCCollector, Histogram, PlatformCollector, ProcessCollector, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from .config import ConfigError, parse_bind
from .figures import ProtocolCounters as ProtocolCounters
from .figures import counter_sum, protocols_of_plugin
from .latency import BOUNDS
from .observer import Observer, Snapshot, drop_counts

logger = logging.getLogger("switchboard.metrics")

# Latency buckets from 100 µs (in-memory layer) to 5 s (a Redis in trouble).
LATENCY_BUCKETS: Final = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


# Help texts of the core counters; a counter not listed gets a generic one.
_HELP: Final[dict[str, str]] = {
    "connections_opened": "Connections registered with the gateway core",
    "connections_closed": "Connections closed in the gateway core",
    "events_sent": "Client events the gateway put on the layer for workers",
    "events_dropped_full": "Events refused because the channel (or the held queue) was full",
    "events_failed": "Events the layer raised on (other than full)",
    "events_retried": "Failed attempts of events a plugin retried and then stored (not lost)",
    "replies_delivered": "Replies handed to a plugin to write to a client",
    "replies_forwarded": "Non-protocol messages forwarded to workers as events",
    "replies_orphaned": "Replies to connections that were already closed",
    "claims": "Connections claimed by a worker",
    "claims_refused": "Claims refused because another live worker held the connection",
    "events_held": "Events held in the gateway while a claim was pending",
    "events": "Connection events handled",
    "named_messages": "Messages on named channels handled",
    "instances_started": "Consumer instances started",
    "instances_finished": "Consumer instances that finished normally",
    "instances_failed": "Consumer instances that raised",
    "events_ignored": "Final events for connections without an instance",
    "bad_messages": "Non-envelope messages on pool channels, dropped",
    "resumed": "Connections resumed from a stopped worker",
    "instances_taken_back": "Instances ended because their gateway judged this worker lost and gave the connection away",
    "events_dropped_taken_back": "Events queued to an instance ended because its connection was taken back",
    "sent": "Messages stored by send",
    "received": "Messages read",
    "full": "Sends refused because the channel was full",
    "group_sent": "Group-send items stored (one per process-local prefix) or delivered locally",
    "group_dropped_full": "Group-send items skipped because the member channel was full",
    "expired": "Messages discarded on read because they had expired",
    "corrupt": "Items that could not be decoded, dropped",
    "local_delivered": "Messages handed to a claimed connection's instance in process (no layer hop)",
    "claims_awaited": "Claim timeouts passed while the claim-asking envelope still waited in the pool",
    "events_dropped_backlog": "Events refused because their instance's backlog was at its bound",
    "backlog_closes": "Connections told to try again later because their instance's backlog was full",
    "events_local": "Messages delivered to instances in process by local delivery",
    "full_bytes": "Sends refused because the channel held its byte capacity (also counted in full)",
    "group_notices_dropped": "Membership notices a connection's gateway had no room for (memberships it will not keep)",
    "send_failed": "Sends the layer's storage failed (Redis down or a primary failing over): at-most-once messages lost",
    "group_send_failed": "Group sends whose member list could not be read (Redis down or failing over): no member got them",
    "replies_shed": "Replies dropped after waiting reply_wait for room in the gateway's full reply list",
    "replies_failed": "Replies the layer raised on (Redis down, the gateway's primary failing over), lost",
    "layer_data_lost": "Times the channel layer lost its data (Redis restarted or flushed) under this gateway",
    "memberships_restored": "Group memberships of open connections added again after the layer lost them",
    "memberships_refreshed": "Group memberships of open connections refreshed before group_expiry",
    "workers_lost": "Workers released because they missed their heartbeats",
    "durable_sent": "Messages stored on durable channels (acknowledged to their source after this)",
    "durable_too_large": "Sends refused because the message was over the durable channel's max_message_size",
    "durable_not_replicated": "Durable sends stored without the replicas asked for in time (source told to retry)",
    "durable_received": "Durable messages read for the first time",
    "durable_redelivered": "Durable messages claimed again (a retry, a lost or stopped worker)",
    "durable_acked": "Durable messages acknowledged (their handler finished)",
    "durable_retried": "Durable deliveries whose handler raised, scheduled for another delivery",
    "durable_released": "Durable deliveries handed back unstarted for another worker",
    "dead_lettered": "Durable messages moved to the dead letters after max_deliveries",
    "dead_letter_full": "Failed durable messages kept pending because the dead letters were full",
    "durable_finished": "Durable deliveries whose handler returned",
    "durable_failed": "Durable deliveries whose handler raised",
}


def _metric_name(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_]", "_", text)


class SwitchboardCollector(Collector):
    """Turns the observer's latest :class:`Snapshot` into metric families at scrape time."""

    def __init__(self, observer: Observer) -> None:
        self.observer = observer

    def collect(self) -> Iterable[Metric]:
        snapshot = self.observer.latest
        view = self.observer.view
        info = InfoMetricFamily("switchboard", "This process", labels=["kind", "id", "host"])
        info.add_metric([view.kind, view.id, view.host], {})
        yield info
        yield GaugeMetricFamily("switchboard_start_time_seconds", "Unix time the process started", value=view.started)
        if snapshot is None:
            return
        yield GaugeMetricFamily(
            "switchboard_snapshot_age_seconds",
            "Seconds since the stats were last copied on the event loop (grows while the loop is blocked)",
            value=max(time.time() - snapshot.time, 0.0),
        )
        yield from self._core("layer", snapshot.layer)
        if snapshot.gateway is not None:
            yield from self._core("gateway", snapshot.gateway)
            yield from self._gateway_gauges(snapshot)
        if snapshot.worker is not None:
            yield from self._core("worker", snapshot.worker)
            yield from self._worker_gauges(snapshot)
            yield from self._handler_times(snapshot)
        if snapshot.plugins:
            yield from self._plugins(snapshot)
        yield from self._protocols(snapshot)
        drops = CounterMetricFamily(
            "switchboard_drops", "Messages lost, each counted once where it was dropped", labels=["component", "reason"]
        )
        for (component, reason), value in sorted(drop_counts(snapshot).items()):
            drops.add_metric([component, reason], value)
        yield drops

    def _core(self, part: str, stats: Mapping[str, int]) -> Iterable[Metric]:
        for key, value in sorted(stats.items()):
            name = f"switchboard_{part}_{_metric_name(key)}"
            yield CounterMetricFamily(name, _HELP.get(key, f"{part} counter {key}"), value=value)

    def _gateway_gauges(self, snapshot: Snapshot) -> Iterable[Metric]:
        open_now = GaugeMetricFamily("switchboard_connections_open", "Open gateway connections", labels=["protocol"])
        for protocol, count in sorted(snapshot.connections.items()):
            open_now.add_metric([protocol], count)
        yield open_now
        yield GaugeMetricFamily("switchboard_gateway_held_events", "Events waiting for a worker's claim", value=snapshot.held)
        yield GaugeMetricFamily(
            "switchboard_gateway_claimed_connections", "Connections a worker holds a claim on", value=snapshot.claimed
        )
        yield GaugeMetricFamily(
            "switchboard_gateway_claiming_workers", "Workers holding claims on this gateway", value=snapshot.claiming_workers
        )
        if snapshot.gateway_buffered is not None:
            yield GaugeMetricFamily(
                "switchboard_gateway_receiver_buffered",
                "Replies read from the layer, not yet routed",
                value=snapshot.gateway_buffered,
            )

    def _worker_gauges(self, snapshot: Snapshot) -> Iterable[Metric]:
        yield GaugeMetricFamily("switchboard_worker_instances", "Running consumer instances", value=snapshot.instances)
        yield GaugeMetricFamily(
            "switchboard_worker_queued_events", "Events waiting in consumer instance queues", value=snapshot.queued
        )
        yield GaugeMetricFamily(
            "switchboard_worker_claimed_connections", "Connections this worker holds a claim on", value=snapshot.worker_claimed
        )
        yield GaugeMetricFamily(
            "switchboard_worker_claim_gateways", "Gateways this worker holds claims with", value=snapshot.claim_gateways
        )
        pool = snapshot.django_pool
        if pool is not None:
            yield GaugeMetricFamily(
                "switchboard_worker_django_threads_running",
                "Threads of the Django pool allowed to run now (grows while views wait on I/O)",
                value=pool["running"],
            )
            yield GaugeMetricFamily("switchboard_worker_django_threads", "Threads in the Django pool", value=pool["threads"])
            yield GaugeMetricFamily(
                "switchboard_worker_django_requests_waiting",
                "Sync Django requests waiting for a pool thread",
                value=pool["waiting"],
            )

    def _handler_times(self, snapshot: Snapshot) -> Iterable[Metric]:
        family = HistogramMetricFamily(
            "switchboard_handler_seconds",
            "Time from handing an event to the application until it asked for the next one (or ended)",
            labels=["protocol"],
        )
        for protocol, counts in sorted(snapshot.handler_times.items()):
            cumulative, buckets = 0, []
            for bound, count in zip([*(repr(b) for b in BOUNDS), "+Inf"], counts):
                cumulative += count
                buckets.append((bound, cumulative))
            family.add_metric([protocol], buckets, snapshot.handler_sums.get(protocol, 0.0))
        yield family

    def _plugins(self, snapshot: Snapshot) -> Iterable[Metric]:
        counters = CounterMetricFamily(
            "switchboard_plugin_events", "A protocol plugin's own counters", labels=["plugin", "counter"]
        )
        gauges = GaugeMetricFamily("switchboard_plugin_value", "A protocol plugin's own gauges", labels=["plugin", "name"])
        for plugin, stats in sorted(snapshot.plugins.items()):
            plugin_gauges = snapshot.plugin_gauges.get(plugin, frozenset())
            for key, value in sorted(stats.items()):
                (gauges if key in plugin_gauges else counters).add_metric([plugin, key], value)
        yield counters
        yield gauges

    def _protocols(self, snapshot: Snapshot) -> Iterable[Metric]:
        opened = CounterMetricFamily(
            "switchboard_connections_opened", "Connections (requests, sockets, sessions, peers) opened", labels=["protocol"]
        )
        messages = CounterMetricFamily(
            "switchboard_messages", "Protocol messages from clients (in) and to clients (out)", labels=["protocol", "direction"]
        )
        for plugin, stats in sorted(snapshot.plugins.items()):
            for protocol, names in protocols_of_plugin(plugin, snapshot.plugin_protocols.get(plugin, ())).items():
                for family, labels, counter_names in (
                    (opened, [protocol], names.opened),
                    (messages, [protocol, "in"], names.inbound),
                    (messages, [protocol, "out"], names.outbound),
                ):
                    # Standard counters exist from the start (at 0): so does every series.
                    value = counter_sum(stats, counter_names)
                    if value is not None:
                        family.add_metric(labels, value)
        yield opened
        yield messages


class Metrics:
    """A process's metrics: registry, probe histograms and the HTTP endpoint."""

    def __init__(self, observer: Observer | None = None) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.layer_send = Histogram(
            "switchboard_layer_send_seconds",
            "Time layer.send took for the periodic probe message",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.layer_roundtrip = Histogram(
            "switchboard_layer_roundtrip_seconds",
            "Time from sending the probe to this process's own channel until it was read back",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.loop_lag = Histogram(
            "switchboard_event_loop_lag_seconds",
            "How late the event loop woke from the observer's sleep",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.server: WSGIServer | None = None
        if observer is not None:
            self.attach(observer)

    def attach(self, observer: Observer) -> None:
        """Collect from ``observer`` and feed its probe into the histograms."""
        observer.on_send = self.layer_send.observe
        observer.on_roundtrip = self.layer_roundtrip.observe
        observer.on_lag = self.loop_lag.observe
        self.registry.register(SwitchboardCollector(observer))

    def serve(self, bind: str) -> tuple[str, int]:
        """Serve ``/metrics`` on ``bind`` (``host:port``; port 0 picks one) in a daemon thread.

        Returns the bound address. A port in use is a :class:`ConfigError`, so a process
        fails at start-up rather than running unobserved.
        """
        host, port = parse_bind(bind, where="METRICS")
        try:
            self.server, _thread = start_http_server(port, host, registry=self.registry)
        except OSError as exc:
            raise ConfigError(f"METRICS: cannot serve metrics on {bind}: {exc}") from exc
        address = (host, int(self.server.server_port))
        logger.info("metrics on http://%s:%d/metrics", *address)
        return address

    async def close(self) -> None:
        """Stop the endpoint (``shutdown`` waits for the server thread, so not on the loop)."""
        server, self.server = self.server, None
        if server is not None:
            await asyncio.to_thread(server.shutdown)
            server.server_close()
