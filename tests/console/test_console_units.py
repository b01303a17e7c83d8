"""The console's pure parts: history, frames, handler-time quantiles, refusals, tails, access.

No sockets here: these are the rules the page's numbers follow, checked on inputs whose
right answer is known.
"""

from __future__ import annotations

import pytest

from switchboard.console.access import Access, Gate, Refused, binds_are_loopback
from switchboard.console.frames import Channel, FrameBuilder
from switchboard.console.history import History
from switchboard.gateway.config import ConfigError, ConsoleOptions, from_mapping
from switchboard.gateway.figures import is_plugin_drop, is_plugin_refusal, protocol_totals, refusal_counts
from switchboard.gateway.latency import BOUNDS, HandlerTimes, difference, quantile
from switchboard.gateway.logs import REDACTOR
from switchboard.gateway.tap import MAX_TEXT, summarize

TOKEN = "a-token-of-twenty-chars"


# -- history -----------------------------------------------------------------------------


def test_history_keeps_a_window_and_aligns_new_series() -> None:
    history = History(span=3.0, interval=1.0)  # 4 points
    history.add(1.0, {"a": 1})
    history.add(2.0, {"a": 2, "b": 20})
    history.add(3.0, {"b": 30})
    data = history.as_dict()
    assert data["t"] == [1.0, 2.0, 3.0]
    assert data["series"] == {"a": [1, 2, None], "b": [None, 20, 30]}
    for t in (4.0, 5.0, 6.0):
        history.add(t, {"a": t})
    data = history.as_dict()
    assert data["t"] == [3.0, 4.0, 5.0, 6.0]
    assert all(len(line) == 4 for line in data["series"].values())
    assert history.point() == {"t": 6.0, "values": {"a": 6.0, "b": None}}


def test_history_stores_no_nan() -> None:
    history = History(span=10, interval=1)
    history.add(1.0, {"x": float("nan"), "y": float("inf")})
    assert history.as_dict()["series"] == {"x": [None], "y": [None]}


# -- handler times -------------------------------------------------------------------------


def test_handler_time_quantiles_interpolate_within_buckets() -> None:
    times = HandlerTimes()
    for _ in range(98):
        times.observe(0.0004)  # bucket (0.00025, 0.0005]
    times.observe(0.2)  # (0.1, 0.25]
    times.observe(0.2)
    counts = times.as_list()
    assert sum(counts) == 100
    p50 = quantile(counts, 0.5)
    assert p50 is not None and 0.00025 < p50 <= 0.0005
    p99 = quantile(counts, 0.99)
    assert p99 is not None and 0.1 < p99 <= 0.25
    assert quantile([0] * (len(BOUNDS) + 1), 0.5) is None
    above = [0] * len(BOUNDS) + [3]
    assert quantile(above, 0.99) == BOUNDS[-1]


def test_bucket_difference_survives_a_restart() -> None:
    assert difference([5, 3], [2, 1]) == [3, 2]
    assert difference([1, 0], [2, 1]) == [1, 0]  # went down: a new process, all of it is new
    assert difference([4, 4], None) == [4, 4]


# -- what plugin counters mean ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("counter", "refusal"),
    [
        ("http.413", True),
        ("http.503_full", True),
        ("websocket.503_limit", True),
        ("websocket.rejected", True),
        ("signaling_403", True),
        ("sessions_refused_per_ip", True),
        ("rejected_signature", True),
        ("auth_failed", True),
        ("dropped_rate_limited", False),  # a drop, not a refusal
        ("http.messages_in", False),
        ("websocket.closes.1013", False),
        ("http.responses.5xx", False),
        ("received", False),
    ],
)
def test_refusals_are_told_apart_from_drops_and_traffic(counter: str, refusal: bool) -> None:
    assert is_plugin_refusal(counter) is refusal
    if refusal:
        assert not is_plugin_drop(counter)


def test_protocol_totals_and_refusals_by_protocol() -> None:
    plugins = {
        "http": {"http.connections_opened": 7, "http.messages_in": 7, "http.messages_out": 7, "http.responses.2xx": 6,
                 "http.responses.5xx": 1, "websocket.connections_opened": 2, "websocket.messages_in": 5,
                 "websocket.messages_out": 5, "websocket.503_full": 1, "http.413": 2},
        "udp": {"messages_in": 4, "messages_out": 4, "dropped_oversize": 1},
        "smtp": {"connections_opened": 3, "messages_in": 2, "sessions_refused": 1},
        "thirdparty": {"connections_opened": 1, "messages_in": 3, "refused_quota": 2},
    }
    # Each plugin's scope types, as the snapshot carries them; a plugin not listed stands for itself.
    protocols = {"http": ("http", "websocket"), "udp": ("udp",), "smtp": ("email",)}
    totals = protocol_totals(plugins, protocols)
    assert totals["http"] == {"opened": 7, "in": 7, "out": 7}
    assert totals["websocket"] == {"opened": 2, "in": 5, "out": 5}
    assert totals["udp"] == {"opened": 0, "in": 4, "out": 4}
    assert totals["email"] == {"opened": 3, "in": 2, "out": 0}
    assert totals["thirdparty"] == {"opened": 1, "in": 3, "out": 0}
    assert refusal_counts(plugins, {}, protocols) == {
        "websocket.503_full": 1, "http.413": 2, "email.sessions_refused": 1, "thirdparty.refused_quota": 2,
    }


# -- frames ------------------------------------------------------------------------------------


def _gateway_row(time: float, cpu: float, websocket_in: int, *, seen: float = 0.1) -> dict:
    return {
        "id": "g1", "kind": "gateway", "host": "h", "pid": 10, "state": "running", "uptime": time, "time": time,
        "cpu": cpu, "rss": 1000, "last_seen": seen, "version": "0.1.0", "connections": {"websocket": 2},
        "drops": {"layer.full": 1, "http.websocket.replies_dropped_slow_reader": 3},
        "gateway": {
            "id": "g1", "events_in": websocket_in, "events_out": 0, "held": 0, "claimed": 2, "plugins": ["http"],
            "protocols": {"websocket": {"open": 2, "opened": 2, "in": websocket_in, "out": 0}},
            "refusals": {"websocket.503_full": 4},
        },
    }


def _worker_row(time: float, counts: list[int]) -> dict:
    return {
        "id": "w1", "kind": "worker", "host": "h", "pid": 11, "state": "running", "time": time, "cpu": 1.0,
        "last_seen": 0.2, "connections": {}, "drops": {},
        "worker": {"id": "w1", "events_in": 1, "instances": 2, "queued": 0, "claimed": 2,
                   "channels": ["switchboard.websocket", "thumbnails", "worker.w1!"], "handler_times": {"websocket": counts}},
    }


def test_frames_compute_rates_cpu_and_attribute_drops_and_refusals() -> None:
    builder = FrameBuilder(interval=1.0)
    slow = [0] * (len(BOUNDS) + 1)
    frame, points = builder.build([_gateway_row(10.0, 1.0, 100), _worker_row(10.0, slow)], now=10.0)
    assert frame["protocols"]["websocket"]["in_rate"] == 0.0  # one answer: no rate yet
    assert frame["processes"][0]["cpu_percent"] is None
    counts = list(slow)
    counts[3] = 10  # ten handlers of 0.5..1 ms in this second
    frame, points = builder.build(
        [_gateway_row(12.0, 1.5, 160), _worker_row(12.0, counts)],
        now=12.0,
        channels=[Channel("switchboard.websocket", "pool", 3, 100)],
        nodes=[("redis://r1", 0.002), ("redis://r2", None)],
    )
    websocket = frame["protocols"]["websocket"]
    assert websocket["in_rate"] == pytest.approx(30.0)  # 60 messages in 2 s of the gateway's own clock
    assert websocket["open"] == 2 and websocket["in"] == 160
    assert websocket["refusals"] == {"503_full": 4}
    assert websocket["drops"] == {"replies_dropped_slow_reader": 3}
    assert frame["drops"] == {"layer.full": 1}
    assert websocket["handled"] == 10
    assert 0.5 < websocket["p50_ms"] <= 1.0
    assert frame["processes"][0]["cpu_percent"] == pytest.approx(25.0)  # 0.5 s CPU in 2 s
    assert frame["layer"]["nodes"] == [{"name": "redis://r1", "latency_ms": 2.0}, {"name": "redis://r2", "latency_ms": None}]
    assert points["websocket.in"] == pytest.approx(30.0)
    assert points["layer.latency"] == 2.0
    assert points["channels.backlog"] == 3


def test_frames_mark_a_silent_process_as_lost() -> None:
    builder = FrameBuilder(interval=1.0)
    frame, _ = builder.build([_gateway_row(1.0, 0.0, 0, seen=3.0)], now=1.0)
    assert frame["processes"][0]["state"] == "lost?"


def test_collector_lists_every_channel_the_processes_name() -> None:
    from switchboard.console.collector import Collector

    rows = [_gateway_row(1.0, 0.0, 0), _worker_row(1.0, [])]
    assert Collector.channels_of(rows) == [
        ("switchboard.websocket", "pool"),
        ("thumbnails", "named"),
        ("gateway.g1!", "gateway"),
        ("worker.w1!", "worker"),
    ]


# -- live tail summaries -------------------------------------------------------------------


def test_tail_summaries_are_short_and_redacted() -> None:
    REDACTOR.register(["configured-secret-value-42"])
    message = {
        "text": "x" * 1000,
        "note": "login with password=hunter2 and configured-secret-value-42",
        "bytes": b"\x00\xff" * 500,
        "headers": [[b"cookie", b"sessionid=abc"], [b"authorization", b"Bearer abcdefgh"], [b"host", b"example.com"]],
        "auth_token": "tok",
        "nested": {"deep": {"deeper": {"deepest": {"x": 1}}}},
    }
    shown = summarize(message)
    assert shown["text"].startswith("x" * MAX_TEXT) and "(1000 chars)" in shown["text"]
    assert "hunter2" not in shown["note"] and "configured-secret-value-42" not in shown["note"]
    assert len(shown["bytes"]) < 400
    assert shown["headers"] == [["cookie", "***"], ["authorization", "***"], ["host", "example.com"]]
    assert shown["auth_token"] == "***"
    assert shown["nested"]["deep"]["deeper"] == "…"


# -- configuration and access ----------------------------------------------------------------


def test_console_options_are_checked_at_start_up() -> None:
    config = from_mapping({"CONSOLE": {"mount": "/ops/console/", "tokens": [{"name": "ops", "token": TOKEN, "manage": True}]}})
    assert config.console.mount == "/ops/console"
    assert TOKEN not in repr(config.console)
    for bad in (
        {"tokens": [{"token": "short"}]},
        {"tokens": [{"token": TOKEN, "admin": True}]},
        {"tokens": [{"token": TOKEN, "name": "a"}, {"token": TOKEN + "x", "name": "a"}]},
        {"loopback": "everyone"},
        {"mount": "console"},
        {"interval": 0},
        {"bind": "nowhere"},
    ):
        with pytest.raises(ConfigError, match="CONSOLE"):
            from_mapping({"CONSOLE": bad})


def test_loopback_binds() -> None:
    assert binds_are_loopback(["127.0.0.1:1", "[::1]:2", "localhost:3"])
    assert not binds_are_loopback(["127.0.0.1:1", "0.0.0.0:2"])
    assert not binds_are_loopback([":8000"])
    assert not binds_are_loopback([])


def _scope(headers: dict[str, str], client: str = "127.0.0.1", method: str = "GET") -> dict:
    return {
        "type": "http", "method": method, "path": "/api/frame", "client": (client, 5000),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }


async def test_gate_rules() -> None:
    tokens = [{"name": "viewer", "token": TOKEN}, {"name": "ops", "token": TOKEN + "-ops", "manage": True}]
    options = ConsoleOptions(tokens=tokens)
    local = Gate(options, loopback_only=True)
    public = Gate(options, loopback_only=False)
    host = {"Host": "127.0.0.1:9180"}

    assert await local.identify(_scope(host)) == Access("loopback", "loopback", False)
    with pytest.raises(Refused) as refused:
        await local.identify(_scope({"Host": "rebound.example:9180"}))  # DNS rebinding
    assert refused.value.status == 403
    with pytest.raises(Refused) as refused:
        await public.identify(_scope(host))
    assert refused.value.status == 401
    with pytest.raises(Refused) as refused:
        await local.identify(_scope({**host, "Authorization": "Bearer wrong-token-xxxxxxxx"}))
    assert refused.value.status == 401  # a wrong token is refused even from loopback
    with pytest.raises(Refused):
        await public.identify(_scope({"Authorization": "Basic dXNlcjpwYXNz"}))
    viewer = await public.identify(_scope({"Authorization": f"Bearer {TOKEN}"}, client="203.0.113.9"))
    assert viewer == Access("token viewer", "token", False)
    ops = await public.identify(_scope({"Authorization": f"Bearer {TOKEN}-ops"}))
    assert ops.manage

    action = _scope({"Host": "console.example", "Authorization": f"Bearer {TOKEN}-ops"}, method="POST")
    public.check_action(action, ops)  # a bearer token is CSRF-safe by itself
    with pytest.raises(Refused) as refused:
        public.check_action(action, viewer)
    assert refused.value.status == 403
    with pytest.raises(Refused):
        public.check_action({**action, "headers": [*action["headers"], (b"origin", b"https://evil.example")]}, ops)

    manager = Access("loopback", "loopback", True)
    with pytest.raises(Refused):
        local.check_action(_scope(host, method="POST"), manager)  # no CSRF token
    token = local.csrf_token(manager)
    local.check_action(_scope({**host, "X-Switchboard-CSRF": token}, method="POST"), manager)
    with pytest.raises(Refused):
        local.check_action(_scope({**host, "X-Switchboard-CSRF": public.csrf_token(manager)}, method="POST"), manager)
