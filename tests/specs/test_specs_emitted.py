"""What the gateway core and the worker emit is specified, and matches its spec.

The name list pins every message type the core code produces by name; the other tests run
the real code paths (over a capturing layer or the in-memory layer) and validate what
comes out, so a change to either the code or a spec that breaks the other fails here.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from switchboard.gateway import specs
from switchboard.gateway.envelope import EVENT_TYPE, pool_channel, wrap
from switchboard.gateway.layers import build_layer, check_channel_name
from switchboard.gateway.server import Gateway
from switchboard.gateway.worker import _FINAL_EVENTS, Worker, _Instance

# Every type the core code (gateway/server.py, gateway/envelope.py, gateway/worker.py) emits by name.
EMITTED_BY_CORE = {
    "switchboard.event": specs.GATEWAY_TO_WORKER,  # envelope.wrap, Gateway.send_event
    "http.response.start": specs.WORKER_TO_GATEWAY,  # Worker._fail: 404 / 500
    "http.response.body": specs.WORKER_TO_GATEWAY,  # Worker._fail
    "websocket.close": specs.WORKER_TO_GATEWAY,  # Worker._fail: 4404 / 1011
    "websocket.http.response.start": specs.WORKER_TO_GATEWAY,  # Worker._fail: 404 / 500 denial
    "websocket.http.response.body": specs.WORKER_TO_GATEWAY,  # Worker._fail
    "websocket.accept": specs.WORKER_TO_GATEWAY,  # tracked by Worker._send_reply
    "websocket.send": specs.WORKER_TO_GATEWAY,
    "websocket.connect": specs.GATEWAY_TO_WORKER,  # Worker: replayed to resume a connection
    "switchboard.claim": specs.WORKER_TO_GATEWAY,  # envelope.CLAIM
    "switchboard.release": specs.WORKER_TO_GATEWAY,  # envelope.RELEASE
    "switchboard.heartbeat": specs.WORKER_TO_GATEWAY,  # envelope.HEARTBEAT
    "switchboard.worker_stopping": specs.WORKER_TO_GATEWAY,  # envelope.WORKER_STOPPING
    "switchboard.released": specs.GATEWAY_TO_WORKER,  # envelope.RELEASED
    "switchboard.drained": specs.WORKER_TO_GATEWAY,  # envelope.DRAINED
    "switchboard.scope_request": specs.WORKER_TO_GATEWAY,  # envelope.SCOPE_REQUEST
    "switchboard.scope": specs.GATEWAY_TO_WORKER,  # envelope.SCOPE
    "switchboard.mark": specs.WORKER_TO_GATEWAY,  # envelope.MARK, the gateway to itself
    "switchboard.group_add": specs.WORKER_TO_GATEWAY,  # envelope.GROUP_ADD, by ChannelLayer.group_add
    "switchboard.group_discard": specs.WORKER_TO_GATEWAY,  # envelope.GROUP_DISCARD
}


@pytest.mark.parametrize(("type_name", "direction"), sorted(EMITTED_BY_CORE.items()))
def test_core_types_are_specified(type_name: str, direction: str) -> None:
    assert type_name in specs.known_types("message")
    assert specs.spec_for(type_name).direction == direction


def test_envelope_type_and_final_events_are_specified() -> None:
    assert EVENT_TYPE == "switchboard.event"
    for type_name in _FINAL_EVENTS:
        assert specs.spec_for(type_name).direction == specs.GATEWAY_TO_WORKER


@pytest.mark.parametrize("scope_type", sorted(specs.known_types("scope") - {"channel"}))
def test_pool_channel_of_every_scope_type_is_a_valid_channel(scope_type: str) -> None:
    assert check_channel_name(pool_channel(scope_type)) == f"switchboard.{scope_type}"


class CapturingLayer:
    """Just enough of a layer for the code under test: records every send."""

    group_expiry = 86400.0  # read by the gateway's membership keeper

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def send(self, channel: str, message: dict[str, Any], **options: Any) -> None:
        self.sent.append((channel, message))

    async def send_tracked(self, channel: str, message: dict[str, Any], **options: Any) -> bytes:
        self.sent.append((channel, message))
        return b"item"

    def send_soon(self, channel: str, message: dict[str, Any], **options: Any) -> Any:
        self.sent.append((channel, message))  # queued at the call, as ChannelLayer.send_soon
        return asyncio.sleep(0)


REPLY = "gateway.3f2a9c1b7d4e!hV3kq9xZ0aBc"


def scope_of(type_name: str) -> dict[str, Any]:
    """The first example scope of the spec: a complete, valid scope to build instances from."""
    return dict(specs.spec_for(type_name).examples[0], reply_channel=REPLY)


async def fail_outcome(
    scope_type: str, *, http_status: int, websocket_code: int, scope: dict[str, Any] | None = None, **state: bool
) -> list[dict[str, Any]]:
    """What ``Worker._fail`` sends for an instance in the given state."""
    layer = CapturingLayer()
    worker = Worker(lambda *args: None, layer, protocols=[scope_type], channels=[])  # type: ignore[arg-type]
    instance = _Instance(REPLY, {**scope_of(scope_type), **(scope or {})})
    for name, value in state.items():
        setattr(instance, name, value)
    await worker._fail(instance, http_status=http_status, websocket_code=websocket_code)
    assert all(channel == REPLY for channel, _ in layer.sent)
    return [message for _, message in layer.sent]


@pytest.mark.parametrize(("status", "body"), [(404, b"Not Found"), (500, b"Internal Server Error")])
async def test_worker_http_failure_outcome_is_valid(status: int, body: bytes) -> None:
    start, end = await fail_outcome("http", http_status=status, websocket_code=1011)
    specs.validate_message(start, direction=specs.WORKER_TO_GATEWAY)
    specs.validate_message(end, direction=specs.WORKER_TO_GATEWAY)
    assert (start["type"], start["status"], end["body"], end["more_body"]) == ("http.response.start", status, body, False)


async def test_worker_http_failure_after_response_start_is_valid() -> None:
    (end,) = await fail_outcome("http", http_status=500, websocket_code=1011, response_started=True)
    specs.validate_message(end, direction=specs.WORKER_TO_GATEWAY)
    assert end == {"type": "http.response.body", "body": b"", "more_body": False}


@pytest.mark.parametrize("code", [4404, 1011])
async def test_worker_websocket_failure_outcome_is_valid(code: int) -> None:
    """Without the denial-response extension, a close; after accept, a close too."""
    scope_without_denial = {"extensions": {}}
    (close,) = await fail_outcome("websocket", http_status=500, websocket_code=code, scope=scope_without_denial)
    specs.validate_message(close, direction=specs.WORKER_TO_GATEWAY)
    assert close == {"type": "websocket.close", "code": code}
    (close,) = await fail_outcome("websocket", http_status=500, websocket_code=code, accepted=True)
    specs.validate_message(close, direction=specs.WORKER_TO_GATEWAY)


@pytest.mark.parametrize(("code", "status"), [(4404, 404), (1011, 500)])
async def test_worker_websocket_denial_outcome_is_valid(code: int, status: int) -> None:
    """Before accept, when the scope announces websocket.http.response: an HTTP denial."""
    assert "websocket.http.response" in scope_of("websocket")["extensions"]
    start, body = await fail_outcome("websocket", http_status=500, websocket_code=code)
    for message in (start, body):
        spec = specs.spec_for(message["type"])
        assert spec.extension == "websocket.http.response"
        specs.validate_message(message, direction=specs.WORKER_TO_GATEWAY)
    assert start["status"] == status


def test_wrap_builds_a_valid_envelope() -> None:
    scope = scope_of("websocket")
    specs.validate_envelope(wrap(REPLY, scope, {"type": "websocket.connect"}))


async def test_gateway_sends_valid_envelopes_and_forwards_group_messages_in_them() -> None:
    """Gateway.send_event and the reply loop's forwarding rule, over the in-memory layer."""
    layer = build_layer({"BACKEND": "memory", "CONFIG": {"block_timeout": 0.05}})
    gateway = Gateway(layer)
    await gateway.start()
    delivered: list[dict[str, Any]] = []
    try:
        scope = {key: value for key, value in scope_of("websocket").items() if key != "reply_channel"}
        connection = gateway.open_connection(scope, delivered.append)
        specs.validate_scope(connection.scope)

        await gateway.send_event(connection, {"type": "websocket.connect"})
        # A reply of the connection's protocol goes to the plugin; any other type is forwarded.
        await layer.send(connection.channel, {"type": "websocket.send", "text": "to the client"})
        await layer.send(connection.channel, {"type": "chat.message", "text": "to the consumer"})

        envelopes = []
        async with asyncio.timeout(5):
            while len(envelopes) < 2:
                envelopes.append(await layer.receive(pool_channel("websocket")))
            while not delivered:
                await asyncio.sleep(0.01)
    finally:
        await gateway.stop()
        await layer.close()

    for envelope in envelopes:
        specs.validate_envelope(envelope)
    assert [envelope["event"]["type"] for envelope in envelopes] == ["websocket.connect", "chat.message"]
    assert all(envelope["connection"] == connection.channel for envelope in envelopes)
    assert delivered == [{"type": "websocket.send", "text": "to the client"}]
    specs.validate_message(delivered[0], direction=specs.WORKER_TO_GATEWAY)


def test_envelope_module_types_are_specified() -> None:
    from switchboard.gateway import envelope

    names = {value for key, value in vars(envelope).items() if key.isupper() and isinstance(value, str)}
    names.discard(envelope.POOL_PREFIX)
    assert names == {
        "switchboard.event",
        "switchboard.claim",
        "switchboard.release",
        "switchboard.heartbeat",
        "switchboard.worker_stopping",
        "switchboard.released",
        "switchboard.drained",
        "switchboard.scope_request",
        "switchboard.scope",
        "switchboard.mark",
        "switchboard.group_add",
        "switchboard.group_discard",
    }
    assert names <= specs.known_types("message")


async def test_affinity_messages_are_valid() -> None:
    """Claim, heartbeat, stopping (worker side) and released (gateway side), from the real code."""
    worker_layer = CapturingLayer()
    worker = Worker(lambda *args: None, worker_layer, protocols=["websocket"], channels=[])  # type: ignore[arg-type]
    instance = _Instance(REPLY, scope_of("websocket"))
    instance.claim = True
    await worker._send_claim(instance)
    await worker._release_all(timeout=0.01)
    worker.heartbeat_interval = 0.01
    heartbeat = asyncio.get_running_loop().create_task(worker._heartbeat())
    async with asyncio.timeout(5):
        while len(worker_layer.sent) < 3:
            await asyncio.sleep(0.01)
    heartbeat.cancel()
    kinds = [message["type"] for _, message in worker_layer.sent[:3]]
    assert kinds == ["switchboard.claim", "switchboard.worker_stopping", "switchboard.heartbeat"]
    for channel, message in worker_layer.sent:
        specs.validate_message(message, direction=specs.WORKER_TO_GATEWAY)
        check_channel_name(channel)

    gateway_layer = CapturingLayer()
    gateway = Gateway(gateway_layer)  # type: ignore[arg-type]
    await gateway._control({"type": "switchboard.worker_stopping", "worker": worker.channel})
    ((channel, released),) = gateway_layer.sent
    assert channel == worker.channel
    specs.validate_message(released, direction=specs.GATEWAY_TO_WORKER)


async def test_sticky_connection_envelope_with_claim_is_valid() -> None:
    layer = CapturingLayer()
    gateway = Gateway(layer)  # type: ignore[arg-type]
    scope = {key: value for key, value in scope_of("websocket").items() if key != "reply_channel"}
    connection = gateway.open_connection(scope, lambda message: None, sticky=True)
    await gateway.send_event(connection, {"type": "websocket.connect"})
    ((channel, envelope),) = layer.sent
    assert channel == "switchboard.websocket" and envelope["claim"] is True
    specs.validate_envelope(envelope)
