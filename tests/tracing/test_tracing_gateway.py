"""The gateway's tracing on a real Gateway and in-memory layer: held events keep their parent.

An event of a sticky connection that arrives while its claim is pending is held and sent
later, from the reply loop, after the claim; its envelope must still carry the context of
its own ``receive`` span, not whatever runs at flush time. The messages a worker would
send (the claim) are sent through the layer as a worker sends them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support.waiting import wait_until

from switchboard.gateway.envelope import CLAIM
from switchboard.gateway.layers import ChannelFull, ChannelLayer, Message, build_layer
from switchboard.gateway.server import Gateway
from switchboard.gateway.tracing import TRACE_KEY, GatewayTracer

EXPORTER = InMemorySpanExporter()
PROVIDER = TracerProvider()
PROVIDER.add_span_processor(SimpleSpanProcessor(EXPORTER))


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[Gateway, ChannelLayer]]:
    layer = build_layer({"BACKEND": "memory", "CONFIG": {"block_timeout": 0.05}})
    gateway = Gateway(layer, claim_timeout=30.0)
    GatewayTracer(PROVIDER.get_tracer("test")).install(gateway)
    await gateway.start()
    EXPORTER.clear()
    try:
        yield gateway, layer
    finally:
        await gateway.stop()
        await layer.close()


async def _read(layer: ChannelLayer, channel: str) -> Message:
    return await asyncio.wait_for(layer.receive(channel), 10)


async def test_a_held_event_is_sent_under_its_own_span(gateway: tuple[Gateway, ChannelLayer]) -> None:
    gw, layer = gateway
    delivered: list[Message] = []
    connection = gw.open_connection({"type": "websocket", "path": "/"}, delivered.append, sticky=True)
    await gw.send_event(connection, {"type": "websocket.connect"})  # asks for a claim
    await gw.send_event(connection, {"type": "websocket.receive", "text": "early"})  # held until the claim
    assert connection.held is not None and len(connection.held) == 1

    first = await _read(layer, "switchboard.websocket")
    worker = "worker.tracingtest!in"
    await layer.send(connection.channel, {"type": CLAIM, "worker": worker})
    flushed = await _read(layer, worker)
    assert flushed["event"]["text"] == "early"

    spans = {span.name: span for span in EXPORTER.get_finished_spans()}
    connect, receive = spans["receive websocket.connect"], spans["receive websocket.receive"]
    assert connect.attributes is not None and connect.attributes["switchboard.outcome"] == "sent"
    assert receive.attributes is not None and receive.attributes["switchboard.outcome"] == "held"
    for envelope, span in ((first, connect), (flushed, receive)):
        parent = trace.get_current_span(propagate.extract(envelope[TRACE_KEY])).get_span_context()
        assert parent.span_id == span.context.span_id and parent.trace_id == span.context.trace_id

    # A reply carrying the context comes back as a child span of it, and the plugin gets
    # the message without the trace key.
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(trace.NonRecordingSpan(receive.context)))
    await layer.send(connection.channel, {"type": "websocket.send", "text": "hi", TRACE_KEY: carrier})
    await wait_until(lambda: bool(delivered), what="the reply delivered")
    assert delivered == [{"type": "websocket.send", "text": "hi"}]
    sent = next(span for span in EXPORTER.get_finished_spans() if span.name == "send websocket.send")
    assert sent.parent is not None and sent.parent.span_id == receive.context.span_id
    assert sent.attributes is not None and sent.attributes["switchboard.outcome"] == "delivered"


async def test_a_refused_event_says_so(gateway: tuple[Gateway, ChannelLayer]) -> None:
    gw, _layer = gateway
    gw.max_held_events = 0
    connection = gw.open_connection({"type": "websocket", "path": "/"}, lambda message: None, sticky=True)
    await gw.send_event(connection, {"type": "websocket.connect"})
    with pytest.raises(ChannelFull):
        await gw.send_event(connection, {"type": "websocket.receive", "text": "no room"})
    refused = next(span for span in EXPORTER.get_finished_spans() if span.name == "receive websocket.receive")
    assert refused.attributes is not None and refused.attributes["switchboard.outcome"] == "refused_full"


def test_tracing_options_are_checked_at_start_up() -> None:
    from switchboard.gateway.config import ConfigError, from_mapping

    assert from_mapping({}).tracing.enabled is False
    config = from_mapping({"TRACING": {"enabled": True, "exporter": "console", "service_name": "edge"}})
    assert (config.tracing.exporter, config.tracing.service_name) == ("console", "edge")
    for bad in ({"exporter": "zipkin"}, {"enabled": "yes"}, {"sampler": 0.5}):
        with pytest.raises(ConfigError, match="TRACING"):
            from_mapping({"TRACING": bad})
