"""Prometheus metrics scraped over real HTTP from an in-process gateway + worker.

``cli._run_both`` (what ``switchboard run`` runs) serves HTTP and WebSocket on a real port
and metrics on another; the test drives real traffic and watches the numbers move. The
stack shares the test's event loop, so every blocking client call runs in a thread.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from obs_helpers import Samples, Stack, http_get, value
from support.waiting import eventually
from websockets.asyncio.client import connect

from switchboard.gateway.layers import build_layer, get_channel_layer
from switchboard.gateway.metrics import Metrics, SwitchboardCollector
from switchboard.gateway.observer import Observer, ProcessView, Snapshot, drop_counts, is_plugin_drop


async def test_exposition_moves_with_traffic(stack: Stack) -> None:
    before = await eventually(stack.scrape, "the metrics endpoint")
    info = next(dict(labels) for name, labels in before if name == "switchboard_info")
    assert info["kind"] == "run" and info["id"] and info["host"]
    # The probe runs every interval: the latency histograms fill with no traffic at all.
    await eventually(lambda: value(stack.scrape(), "switchboard_layer_roundtrip_seconds_count") >= 3, "layer probes")

    for path in ("/a", "/b", "/c"):
        status, body = await asyncio.to_thread(http_get, stack.base_url + path)
        assert (status, body) == (200, b"hello")
    async with connect(f"ws://127.0.0.1:{stack.http_port}/ws") as socket:
        for text in ("one", "two"):
            await socket.send(text)
            assert await asyncio.wait_for(socket.recv(), 10) == f"echo:{text}"

        def open_socket_seen() -> Samples | None:
            # One snapshot may catch the gateway's side of the connection before the worker
            # took its first event: wait until both sides show it.
            samples = stack.scrape()
            open_now = value(samples, "switchboard_connections_open", protocol="websocket") == 1
            claimed = value(samples, "switchboard_worker_claimed_connections") >= 1  # the socket is sticky
            return samples if open_now and claimed else None

        during = await eventually(open_socket_seen, "the open WebSocket in the metrics, claimed by the worker")
    assert value(during, "switchboard_worker_instances") >= 1

    def after_close() -> Samples | None:
        # The gateway counts the socket closed before the worker took its disconnect event
        # (one snapshot caught it queued): wait until the worker's instance ended as well.
        samples = stack.scrape()
        closed = value(samples, "switchboard_connections_open", protocol="websocket") == 0
        handled = value(samples, "switchboard_messages_total", protocol="websocket", direction="in") >= 2
        ended = value(samples, "switchboard_worker_instances") == 0
        return samples if closed and handled and ended else None

    after = await eventually(after_close, "the closed WebSocket in the metrics, its instance ended")
    grew = {
        ("switchboard_messages_total", (("direction", "in"), ("protocol", "http"))): 3,
        ("switchboard_messages_total", (("direction", "out"), ("protocol", "http"))): 3,
        ("switchboard_messages_total", (("direction", "in"), ("protocol", "websocket"))): 2,
        ("switchboard_messages_total", (("direction", "out"), ("protocol", "websocket"))): 2,
        ("switchboard_connections_opened_total", (("protocol", "http"),)): 3,
        ("switchboard_connections_opened_total", (("protocol", "websocket"),)): 1,
        ("switchboard_gateway_connections_opened_total", ()): 4,
        ("switchboard_gateway_events_sent_total", ()): 3 + 3,  # http.request x3, connect, receive x2
        ("switchboard_gateway_replies_delivered_total", ()): 3 * 2 + 3,  # start+body x3, accept, send x2
        ("switchboard_worker_events_total", ()): 6,
        ("switchboard_gateway_claims_total", ()): 1,
        ("switchboard_layer_sent_total", ()): 12,
    }
    for key, at_least in grew.items():
        assert after.get(key, 0) - before.get(key, 0) >= at_least, (key, before.get(key), after.get(key))
    assert value(after, "switchboard_plugin_events_total", plugin="http", counter="websocket.accepted") >= 1
    assert value(after, "switchboard_gateway_held_events") == 0
    assert value(after, "switchboard_worker_queued_events") == 0
    assert value(after, "switchboard_snapshot_age_seconds") >= 0
    assert value(after, "process_cpu_seconds_total") > 0 or ("process_cpu_seconds_total", ()) not in after  # Linux only
    assert value(after, "switchboard_layer_send_seconds_count") > value(before, "switchboard_layer_send_seconds_count")
    assert value(after, "switchboard_event_loop_lag_seconds_count") > 0
    # Handler times (gateway/latency.py): every request and WebSocket message was handled.
    assert value(after, "switchboard_handler_seconds_count", protocol="http") >= 3
    assert value(after, "switchboard_handler_seconds_count", protocol="websocket") >= 3  # connect + 2 receives
    assert value(after, "switchboard_handler_seconds_bucket", protocol="http", le="+Inf") >= 3
    assert value(after, "switchboard_handler_seconds_sum", protocol="http") > 0


async def test_drops_are_counted_by_reason(stack: Stack) -> None:
    layer = get_channel_layer()
    samples = await eventually(stack.scrape, "the metrics endpoint")
    gateway_id = value_label(samples, "switchboard_info", "id")
    orphaned = value(samples, "switchboard_drops_total", component="gateway", reason="replies_orphaned")
    # A reply to a connection that no longer exists: dropped and counted by the gateway.
    await layer.send(f"gateway.{gateway_id}!gone", {"type": "websocket.send", "text": "late"})
    await eventually(
        lambda: value(stack.scrape(), "switchboard_drops_total", component="gateway", reason="replies_orphaned") == orphaned + 1,
        "the orphaned reply in the drops",
    )
    every_reason = {labels for name, labels in stack.scrape() if name == "switchboard_drops_total"}
    assert {(("component", "layer"), ("reason", r)) for r in ("full", "expired", "corrupt", "group_dropped_full")} <= every_reason
    assert (("component", "worker"), ("reason", "bad_messages")) in every_reason


def value_label(samples: Samples, name: str, label: str) -> str:
    for sample_name, labels in samples:
        if sample_name == name:
            return dict(labels)[label]
    raise AssertionError(f"no {name} sample")


# -- the collector and the drop rules, without a server ---------------------------------


def test_plugin_drop_counters_that_mirror_the_layer_are_not_counted_twice() -> None:
    assert is_plugin_drop("dropped_oversize")
    assert is_plugin_drop("send_dropped_closed")
    assert is_plugin_drop("dropped_queue_full")
    assert not is_plugin_drop("events_full")  # the layer counted it as full
    assert not is_plugin_drop("events_dropped_full")
    assert not is_plugin_drop("events_failed")  # the gateway counted it as events_failed
    assert not is_plugin_drop("delivered")
    snapshot = Snapshot(
        time=0.0,
        layer={"full": 2, "expired": 1, "corrupt": 0, "group_dropped_full": 0},
        gateway={"replies_orphaned": 4, "events_failed": 0},
        plugins={"udp": {"messages_in": 9, "dropped_oversize": 3, "events_full": 2, "queued": 5}},
        plugin_gauges={"udp": frozenset({"queued"})},
    )
    drops = drop_counts(snapshot)
    assert drops["layer", "full"] == 2
    assert drops["gateway", "replies_orphaned"] == 4
    assert drops["udp", "dropped_oversize"] == 3
    assert ("udp", "events_full") not in drops


def test_collector_types_plugin_counters_and_gauges() -> None:
    observer = Observer(ProcessView("gateway", build_layer()))  # not started: only its snapshot is read
    observer.latest = Snapshot(
        time=0.0,
        layer={"sent": 1},
        plugins={"udp": {"messages_in": 9, "messages_out": 4, "queued": 5}},
        plugin_gauges={"udp": frozenset({"queued"})},
    )
    families: dict[str, Any] = {family.name: family for family in SwitchboardCollector(observer).collect()}
    assert families["switchboard_plugin_events"].type == "counter"
    assert families["switchboard_plugin_value"].type == "gauge"
    gauges = {tuple(s.labels.values()): s.value for s in families["switchboard_plugin_value"].samples}
    assert gauges == {("udp", "queued"): 5}
    messages = {tuple(s.labels.values()): s.value for s in families["switchboard_messages"].samples}
    assert messages == {("udp", "in"): 9, ("udp", "out"): 4}


def test_collector_shows_the_django_pool_once_it_served() -> None:
    observer = Observer(ProcessView("worker", build_layer()))
    observer.latest = Snapshot(time=0.0, layer={}, worker={})
    names = {family.name for family in SwitchboardCollector(observer).collect()}
    assert not any(name.startswith("switchboard_worker_django") for name in names)
    observer.latest = Snapshot(time=0.0, layer={}, worker={}, django_pool={"running": 3, "threads": 8, "waiting": 5})
    families: dict[str, Any] = {family.name: family for family in SwitchboardCollector(observer).collect()}
    seen = {
        name: (families[name].type, families[name].samples[0].value)
        for name in families
        if name.startswith("switchboard_worker_django")
    }
    assert seen == {
        "switchboard_worker_django_threads_running": ("gauge", 3),
        "switchboard_worker_django_threads": ("gauge", 8),
        "switchboard_worker_django_requests_waiting": ("gauge", 5),
    }


def test_metrics_bind_in_use_is_a_configuration_error() -> None:
    import socket

    from switchboard.gateway.config import ConfigError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match="cannot serve metrics"):
            Metrics().serve(f"127.0.0.1:{port}")
