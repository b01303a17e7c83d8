"""The HTTP + WebSocket plugin against real clients, with a gateway and worker in-process.

Worker-side applications are small hand-written ASGI apps, so these tests pin the plugin's
translation (uvicorn <-> layer events) and policy (413, 503, timeouts, close codes), not
any consumer framework.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import h11
import pytest
from support.waiting import deadline
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from switchboard.gateway.config import ConfigError, SwitchboardConfig
from switchboard.gateway.layers import ChannelFull, build_layer
from switchboard.gateway.plugins import build_plugins
from switchboard.gateway.server import run_gateway
from switchboard.gateway.worker import Worker
from switchboard.protocols.http import HttpOptions, HttpPlugin

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

FAST_LAYER_CONFIG: dict[str, Any] = {"BACKEND": "memory", "CONFIG": {"block_timeout": 0.05}}
LEGACY_WARNING = "ignore:The `websockets` implementation is deprecated:UserWarning"


def text_response(status: int, body: bytes, headers: list[list[bytes]] | None = None) -> list[dict[str, Any]]:
    return [
        {"type": "http.response.start", "status": status, "headers": [[b"content-type", b"text/plain"], *(headers or [])]},
        {"type": "http.response.body", "body": body},
    ]


async def echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    """HTTP: describe the request as JSON; WebSocket: accept and echo text and bytes."""
    if scope["type"] == "http":
        event = await receive()
        info = {
            "method": scope["method"],
            "path": scope["path"],
            "query": scope["query_string"].decode(),
            "headers": [[name.decode(), value.decode()] for name, value in scope["headers"]],
            "client_is_list": isinstance(scope["client"], list),
            "headers_are_lists": all(isinstance(pair, list) for pair in scope["headers"]),
            "has_state": "state" in scope,
            "has_reply_channel": scope.get("reply_channel", "").startswith("gateway."),
            "more_body": event["more_body"],
            "body": event["body"].hex(),
        }
        for message in text_response(201, json.dumps(info).encode(), [[b"x-echo", b"yes"]]):
            await send(message)
        return
    while True:
        event = await receive()
        if event["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
        elif event["type"] == "websocket.receive":
            if event.get("text") is not None:
                await send({"type": "websocket.send", "text": "echo:" + event["text"]})
            else:
                await send({"type": "websocket.send", "bytes": b"echo:" + event["bytes"]})
        else:
            return


async def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``condition()`` holds (state that settles on the loop, not on a timer)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


class Recorder:
    """A WebSocket app that records every event and lets the test script its replies."""

    def __init__(self, on_connect: list[dict[str, Any]] | None = None) -> None:
        self.on_connect = [{"type": "websocket.accept"}] if on_connect is None else on_connect
        self.events: list[dict[str, Any]] = []
        self.scopes: list[Scope] = []
        self.changed = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        while True:
            event = await receive()
            self.events.append(event)
            self.changed.set()
            if event["type"] == "websocket.connect":
                for message in self.on_connect:
                    await send(message)
            elif event["type"] == "websocket.receive" and event.get("text", "").startswith("close:"):
                await send({"type": "websocket.close", "code": int(event["text"][6:]), "reason": "bye"})
            elif event["type"] == "websocket.disconnect":
                return

    async def wait_for(self, event_type: str, timeout: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(deadline(timeout)):  # scaled: a safety net, not a speed check
            while True:
                for event in self.events:
                    if event["type"] == event_type:
                        return event
                self.changed.clear()
                await self.changed.wait()


# -- HTTP -------------------------------------------------------------------------------


async def test_get_round_trip(serve, fetch_url) -> None:
    stack = await serve(echo_app)
    response = await fetch_url(stack.port, "GET", "/items/%C3%A9?page=2", headers=[("x-token", "abc")])
    assert response.status == 201
    assert response.headers[b"x-echo"] == b"yes"
    assert b"server" not in response.headers  # server_header is off by default
    info = json.loads(response.body)
    assert info["method"] == "GET"
    assert info["path"] == "/items/é"
    assert info["query"] == "page=2"
    assert ["x-token", "abc"] in info["headers"]
    assert info["client_is_list"] and info["headers_are_lists"] and info["has_reply_channel"]
    assert not info["has_state"]
    assert info["body"] == "" and info["more_body"] is False
    stats = stack.plugin.stats()
    assert stats["http.messages_in"] == 1
    assert stats["http.responses.2xx"] == 1


async def test_post_body_round_trip_with_content_length_and_chunked(serve, fetch_url) -> None:
    stack = await serve(echo_app)
    payload = bytes(range(256)) * 40
    fixed = await fetch_url(stack.port, "POST", "/upload", body=payload)
    chunked = await fetch_url(stack.port, "POST", "/upload", chunks=[payload[:5000], payload[5000:]])
    for response in (fixed, chunked):
        assert response.status == 201
        info = json.loads(response.body)
        assert bytes.fromhex(info["body"]) == payload
        assert info["more_body"] is False  # the gateway sends the body as one event


async def test_keep_alive_serves_several_requests_on_one_connection(serve, http_connect) -> None:
    stack = await serve(echo_app)
    client = await http_connect(stack.port)
    for number in range(3):
        await client.send_request("GET", f"/n/{number}")
        response = await client.read_response()
        assert json.loads(response.body)["path"] == f"/n/{number}"
        client.conn.start_next_cycle()


async def test_streaming_response_arrives_chunk_by_chunk(serve, http_connect) -> None:
    """Each body message is written as it comes: the client reads part 1 before part 2 exists."""
    seen_first = asyncio.Event()

    async def stream_app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "http.response.start", "status": 200, "headers": [[b"content-type", b"text/event-stream"]]})
        await send({"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True})
        await seen_first.wait()
        await send({"type": "http.response.body", "body": b"data: 2\n\n", "more_body": True})
        await send({"type": "http.response.body", "body": b"data: 3\n\n", "more_body": False})

    stack = await serve(stream_app)
    client = await http_connect(stack.port)
    await client.send_request("GET", "/events")
    head = await client.next_event()
    assert head.status_code == 200
    assert dict(head.headers)[b"transfer-encoding"] == b"chunked"
    first = await client.next_event()
    assert first.data == b"data: 1\n\n" and first.chunk_start
    seen_first.set()
    rest = []
    while not isinstance(event := await client.next_event(), h11.EndOfMessage):
        rest.append(bytes(event.data))
    assert b"".join(rest) == b"data: 2\n\ndata: 3\n\n"


async def test_oversized_body_by_content_length_gets_413_without_reaching_a_worker(serve, http_connect) -> None:
    calls: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(scope)

    stack = await serve(app, max_body_size=1000)
    client = await http_connect(stack.port)
    # Only the head is sent: the 413 must not wait for a 2 MB body.
    await client.send_request("POST", "/upload", headers=[("content-length", "2000000")], end=False)
    response = await client.read_response()
    assert response.status == 413
    assert response.headers[b"connection"] == b"close"
    assert calls == []
    assert stack.plugin.stats()["http.413"] == 1
    assert stack.gateway.stats.events_sent == 0


async def test_oversized_chunked_body_gets_413(serve, http_connect, fetch_url) -> None:
    stack = await serve(echo_app, max_body_size=1000)
    client = await http_connect(stack.port)
    await client.send_request("POST", "/upload", chunks=[b"x" * 600, b"y" * 600], end=False)
    response = await client.read_response()
    assert response.status == 413
    assert stack.gateway.stats.events_sent == 0
    # A body of exactly the limit is fine.
    ok = await fetch_url(stack.port, "POST", "/upload", body=b"z" * 1000)
    assert ok.status == 201


async def test_malformed_request_gets_400_and_the_server_keeps_serving(serve, raw_http, fetch_url) -> None:
    stack = await serve(echo_app)
    answer = await raw_http(stack.port, b"THIS IS NOT HTTP\r\n\x00\x01\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")
    response = await fetch_url(stack.port, "GET", "/after")
    assert response.status == 201


async def test_application_error_is_a_500_from_the_worker(serve, fetch_url) -> None:
    async def broken_app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        raise RuntimeError("no route, on purpose")

    stack = await serve(broken_app)
    response = await fetch_url(stack.port, "GET", "/nowhere")
    assert response.status == 500
    assert response.body == b"Internal Server Error"


async def test_no_worker_means_503_after_response_timeout(serve, fetch_url) -> None:
    stack = await serve(None, response_timeout=0.3)
    response = await fetch_url(stack.port, "GET", "/")
    assert response.status == 503
    assert b"no worker answered in time" in response.body
    assert stack.plugin.stats()["http.503_timeout"] == 1


async def test_full_worker_pool_means_503(serve, fetch_url) -> None:
    full = {"BACKEND": "memory", "CONFIG": {"block_timeout": 0.05, "channel_capacity": {"switchboard.*": 0}}}
    stack = await serve(None, layer_config=full)
    response = await fetch_url(stack.port, "GET", "/")
    assert response.status == 503
    assert response.headers[b"retry-after"] == b"1"
    with pytest.raises(InvalidStatus) as refused:
        async with connect(stack.ws_url()):
            pass
    assert refused.value.response.status_code == 503
    stats = stack.plugin.stats()
    assert stats["http.503_full"] == 1 and stats["websocket.503_full"] == 1
    assert stack.gateway.connections == {}


async def test_proxy_headers_and_root_path_reach_the_scope(serve, fetch_url) -> None:
    stack = await serve(echo_app, proxy_headers=True, root_path="/site")
    response = await fetch_url(
        stack.port, "GET", "/page", headers=[("x-forwarded-for", "203.0.113.9"), ("x-forwarded-proto", "https")]
    )
    info = json.loads(response.body)
    assert info["path"] == "/site/page"
    assert info["client_is_list"]  # the proxy middleware's tuple still arrives as a list


@pytest.mark.parametrize(
    "start",
    [
        {"type": "http.response.start", "status": "200"},
        {"type": "http.response.start", "status": 200, "headers": [[b"x-bad", b"a\r\nset-cookie: x"]]},
        {"type": "http.response.start", "status": 200, "headers": [["str", "not bytes"]]},
        {"type": "http.response.body", "body": b"body before start"},
    ],
    ids=["status-str", "header-injection", "header-str", "body-first"],
)
async def test_malformed_reply_from_worker_is_a_500(serve, fetch_url, start: dict[str, Any]) -> None:
    async def bad_app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send(start)
        await send({"type": "http.response.body", "body": b""})

    stack = await serve(bad_app)
    response = await fetch_url(stack.port, "GET", "/")
    assert response.status == 500
    assert stack.plugin.stats()["http.replies_invalid"] == 1
    # The plugin survived: the next request is served.
    assert (await fetch_url(stack.port, "GET", "/")).status == 500


async def test_client_disconnect_reaches_the_application(serve, http_connect) -> None:
    events: list[dict[str, Any]] = []
    done = asyncio.Event()

    async def long_poll_app(scope: Scope, receive: Receive, send: Send) -> None:
        events.append(await receive())
        events.append(await receive())  # blocks until the client goes away
        done.set()

    stack = await serve(long_poll_app)
    client = await http_connect(stack.port)
    await client.send_request("GET", "/poll")
    async with asyncio.timeout(10):
        while not events:
            await asyncio.sleep(0.01)
    await client.close()
    async with asyncio.timeout(10):
        await done.wait()
    assert [event["type"] for event in events] == ["http.request", "http.disconnect"]
    assert stack.plugin.stats()["http.client_disconnects"] == 1


async def test_graceful_stop_lets_an_in_flight_request_finish(serve, http_connect) -> None:
    arrived, release = asyncio.Event(), asyncio.Event()

    async def slow_app(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        arrived.set()
        await release.wait()
        for message in text_response(200, b"finished"):
            await send(message)

    stack = await serve(slow_app)
    client = await http_connect(stack.port)
    await client.send_request("GET", "/slow")
    await asyncio.wait_for(arrived.wait(), deadline(10))
    stopping = asyncio.create_task(stack.plugin.stop(10.0))
    # The listener closes first: new connections are refused while the request drains.
    async with asyncio.timeout(10):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", stack.port)
            except OSError:
                break
            writer.close()
            await asyncio.sleep(0.02)
    assert not stopping.done()
    release.set()
    response = await client.read_response()
    assert response.status == 200
    assert response.body == b"finished"
    await asyncio.wait_for(stopping, deadline(10))


async def test_stop_timeout_cancels_the_rest_and_tells_the_worker(serve, http_connect) -> None:
    events: list[dict[str, Any]] = []

    async def stuck_app(scope: Scope, receive: Receive, send: Send) -> None:
        events.append(await receive())
        events.append(await receive())  # never answers; only the disconnect ends this

    stack = await serve(stuck_app)
    client = await http_connect(stack.port)
    await client.send_request("GET", "/stuck")
    await eventually(lambda: bool(events))
    await asyncio.wait_for(stack.plugin.stop(0.2), deadline(10))
    await eventually(lambda: len(events) == 2)
    assert events[1]["type"] == "http.disconnect"


async def test_max_connections_answers_503(serve, fetch_url) -> None:
    app = Recorder()
    stack = await serve(app, max_connections=1)
    async with connect(stack.ws_url()) as ws:
        await app.wait_for("websocket.connect")
        assert (await fetch_url(stack.port, "GET", "/")).status == 503
        with pytest.raises(InvalidStatus) as refused:
            async with connect(stack.ws_url()):
                pass
        assert refused.value.response.status_code == 503
        await ws.send("still here")
    assert stack.plugin.stats()["websocket.503_limit"] == 1


async def test_several_binds_including_ipv6(serve, fetch_url) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 support")
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    stack = await serve(echo_app, bind=["127.0.0.1:0", "[::1]:0"])
    (host4, port4), (host6, port6) = stack.plugin.bound_addresses
    assert (host4, host6) == ("127.0.0.1", "::1")
    assert port4 and port6
    reader, writer = await asyncio.open_connection("::1", port6)
    writer.write(b"GET /v6 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), deadline(10))
    writer.close()
    assert answer.startswith(b"HTTP/1.1 201 ")
    assert (await fetch_url(port4, "GET", "/v4")).status == 201


async def test_bind_failure_closes_everything(serve) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match=r"cannot listen on 127\.0\.0\.1"):
            await serve(echo_app, bind=["127.0.0.1:0", f"127.0.0.1:{port}"])


# -- WebSocket --------------------------------------------------------------------------


@pytest.mark.filterwarnings(LEGACY_WARNING)
@pytest.mark.parametrize("ws", ["websockets", "websockets-legacy"])
async def test_websocket_echo_text_and_bytes(serve, ws: str) -> None:
    stack = await serve(echo_app, ws=ws)
    async with connect(stack.ws_url()) as client:
        await client.send("hello")
        assert await client.recv() == "echo:hello"
        await client.send(b"\x00\x01")
        assert await client.recv() == b"echo:\x00\x01"
    stats = stack.plugin.stats()
    assert stats["websocket.messages_in"] == 2
    assert stats["websocket.messages_out"] == 2


async def test_websocket_accept_with_subprotocol_and_headers(serve) -> None:
    app = Recorder([{"type": "websocket.accept", "subprotocol": "chat.v2", "headers": [[b"x-room", b"lobby"]]}])
    stack = await serve(app)
    async with connect(stack.ws_url("/chat?room=1"), subprotocols=["chat.v1", "chat.v2"]) as client:
        assert client.subprotocol == "chat.v2"
        assert client.response.headers["x-room"] == "lobby"
    scope = app.scopes[0]
    assert scope["subprotocols"] == ["chat.v1", "chat.v2"]
    assert scope["query_string"] == b"room=1"
    assert "state" not in scope and isinstance(scope["client"], list)


async def test_server_close_code_reaches_the_client(serve) -> None:
    app = Recorder()
    stack = await serve(app)
    async with connect(stack.ws_url()) as client:
        await client.send("close:4000")
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4000, "bye")
    # The worker's instance hears about the end too, so it can finish.
    assert (await app.wait_for("websocket.disconnect"))["code"] == 4000
    assert stack.plugin.stats()["websocket.closes.4000"] == 1


@pytest.mark.filterwarnings(LEGACY_WARNING)
@pytest.mark.parametrize("ws", ["websockets", "websockets-legacy"])
async def test_oversized_message_closes_1009_and_the_server_keeps_serving(serve, ws: str) -> None:
    app = Recorder()
    stack = await serve(app, ws=ws, max_frame_size=1024)
    async with connect(stack.ws_url()) as client:
        await client.send("x" * 2000)
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    # The legacy implementation reports its own failed connection as abnormal (1006).
    expected = {1009, 1006} if ws == "websockets-legacy" else {1009}
    assert (await app.wait_for("websocket.disconnect"))["code"] in expected
    async with connect(stack.ws_url()) as client:
        await client.send("close:1000")
        with pytest.raises(ConnectionClosed):
            await client.recv()


@pytest.mark.filterwarnings(LEGACY_WARNING)
@pytest.mark.parametrize("ws", ["websockets", "websockets-legacy"])
async def test_close_before_accept_is_http_403(serve, ws: str) -> None:
    stack = await serve(Recorder([{"type": "websocket.close"}]), ws=ws)
    with pytest.raises(InvalidStatus) as refused:
        async with connect(stack.ws_url()):
            pass
    assert refused.value.response.status_code == 403
    assert stack.plugin.stats()["websocket.rejected"] == 1


async def test_denial_response_from_the_worker_reaches_the_client(serve) -> None:
    denial = [
        {"type": "websocket.http.response.start", "status": 401, "headers": [[b"www-authenticate", b"Bearer"]]},
        {"type": "websocket.http.response.body", "body": b"log in", "more_body": True},
        {"type": "websocket.http.response.body", "body": b" first"},
    ]
    app = Recorder(denial)
    stack = await serve(app)
    with pytest.raises(InvalidStatus) as refused:
        async with connect(stack.ws_url()):
            pass
    response = refused.value.response
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.body == b"log in first"
    await app.wait_for("websocket.disconnect")


async def test_websocket_bad_reply_before_accept_is_500_and_after_is_1011(serve) -> None:
    bad_before = Recorder([{"type": "websocket.send", "text": "not accepted yet"}])
    stack = await serve(bad_before)
    with pytest.raises(InvalidStatus) as refused:
        async with connect(stack.ws_url()):
            pass
    assert refused.value.response.status_code == 500

    bad_after = Recorder([{"type": "websocket.accept"}, {"type": "websocket.send", "text": None, "bytes": None}])
    stack = await serve(bad_after)
    async with connect(stack.ws_url()) as client:
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    assert stack.plugin.stats()["websocket.replies_invalid"] == 1


async def test_client_disconnect_reaches_the_application_as_websocket_disconnect(serve) -> None:
    app = Recorder()
    stack = await serve(app)
    async with connect(stack.ws_url()) as client:
        await client.send("hi")
        await app.wait_for("websocket.receive")
    event = await app.wait_for("websocket.disconnect")
    assert event["code"] == 1000
    assert [e["type"] for e in app.events] == ["websocket.connect", "websocket.receive", "websocket.disconnect"]
    assert stack.plugin.stats()["websocket.disconnects.1000"] == 1
    await eventually(lambda: not stack.gateway.connections)


async def test_idle_timeout_closes_with_1001(serve) -> None:
    app = Recorder()
    stack = await serve(app, websocket_idle_timeout=0.3)
    async with connect(stack.ws_url()) as client:
        await client.send("activity")  # resets the idle clock; then silence
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert (await app.wait_for("websocket.disconnect"))["code"] == 1001
    assert stack.plugin.stats()["websocket.idle_timeouts"] == 1


async def test_websocket_without_worker_is_refused_with_503(serve) -> None:
    stack = await serve(None, response_timeout=0.3)
    with pytest.raises(InvalidStatus) as refused:
        async with connect(stack.ws_url()):
            pass
    assert refused.value.response.status_code == 503
    assert b"no worker answered in time" in refused.value.response.body


async def test_full_pool_after_accept_closes_1013(serve) -> None:
    app = Recorder()
    stack = await serve(app)
    real_send_event = stack.gateway.send_event

    async def refuse_messages(connection: Any, event: dict[str, Any]) -> None:
        if event["type"] == "websocket.receive":
            raise ChannelFull(connection.channel)
        await real_send_event(connection, event)

    stack.gateway.send_event = refuse_messages  # type: ignore[method-assign]
    async with connect(stack.ws_url()) as client:
        await client.send("lost")
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
    assert (await app.wait_for("websocket.disconnect"))["code"] == 1013
    assert stack.plugin.stats()["websocket.events_full"] == 1


async def test_graceful_stop_closes_websockets_with_1012(serve) -> None:
    app = Recorder()
    stack = await serve(app)
    async with connect(stack.ws_url()) as client:
        await app.wait_for("websocket.connect")
        await stack.plugin.stop(5.0)
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
    assert (await app.wait_for("websocket.disconnect"))["code"] == 1012


# -- lifecycle through the gateway entry point ---------------------------------------------


async def test_runs_under_run_gateway(fetch_url) -> None:
    """The path the CLI takes: registry lookup, start, serve, stop on the event, drain."""
    layer = build_layer(FAST_LAYER_CONFIG)
    stop = asyncio.Event()
    plugins: list[Any] = []
    config = SwitchboardConfig(protocols={"http": {"bind": ["127.0.0.1:0"]}})
    worker_stop = asyncio.Event()
    worker = asyncio.create_task(Worker(echo_app, layer, protocols=["http"]).run(worker_stop))
    running = asyncio.create_task(
        run_gateway(config, layer=layer, stop=stop, started=lambda _gw, started: plugins.extend(started))
    )
    try:
        await eventually(lambda: bool(plugins) or running.done())
        (plugin,) = plugins
        assert isinstance(plugin, HttpPlugin)
        response = await fetch_url(plugin.bound_addresses[0][1], "GET", "/via-run-gateway")
        assert response.status == 201
    finally:
        stop.set()
        await asyncio.wait_for(running, deadline(10))
        worker_stop.set()
        await worker
        await layer.close()


# -- configuration ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"bind": "nope"}, "must be host:port"),
        ({"bind": ["127.0.0.1:99999"]}, "out of range"),
        ({"bind": []}, "at least one"),
        ({"max_body_size": -1}, "max_body_size"),
        ({"max_frame_size": 0}, "max_frame_size"),
        ({"response_timeout": 0}, "response_timeout"),
        ({"websocket_idle_timeout": -5}, "websocket_idle_timeout"),
        ({"max_connections": 0}, "max_connections"),
        ({"ws": "carrier-pigeon"}, "ws must be one of"),
        ({"http": "h3"}, "http must be one of"),
        ({"root_path": "api/"}, "root_path"),
        ({"max_body_size": "10MB"}, "expected an integer"),
        ({"bnid": ["127.0.0.1:8000"]}, "unknown option"),
    ],
)
def test_bad_config_is_a_config_error(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        build_plugins({"http": options})
    assert "PROTOCOLS.http" in str(error.value)


def test_defaults_and_coercion() -> None:
    (plugin,) = build_plugins({"http": {"bind": "0.0.0.0:8080", "response_timeout": 5, "max_connections": None}})
    assert isinstance(plugin, HttpPlugin)
    assert plugin.options.bind == ["0.0.0.0:8080"]
    assert plugin.options.response_timeout == 5.0
    defaults = HttpOptions()
    assert defaults.bind == ["127.0.0.1:8000"]
    assert defaults.max_body_size == 10 * 1024 * 1024
    assert defaults.max_frame_size == 1024 * 1024
    assert defaults.ws == "websockets"
    assert HttpPlugin.scope_types == ("http", "websocket")
