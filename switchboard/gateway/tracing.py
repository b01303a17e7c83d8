"""OpenTelemetry tracing: one trace per client event, from the plugin through the worker and back.

Opt-in (``SWITCHBOARD["TRACING"] = {"enabled": True}``, ``pip install 'switchboard[otel]'``;
docs/tracing.md). This module is imported only then: with tracing off no OpenTelemetry
module is loaded and the gateway and worker keep their plain code paths — one ``None``
test per event where the envelope is built or read (``Gateway._send_envelope``,
``Worker._dispatch_event``), nothing else.

The spans of one event, in one trace:

1. ``receive <event type>`` (producer) in the gateway, around ``Gateway.send_event``: the
   plugin that received the event handed it over. Attributes: ``switchboard.protocol``,
   ``switchboard.connection``, ``messaging.destination.name`` (the pool or worker channel)
   and ``switchboard.outcome``: ``sent``, ``held`` (waiting for a worker's claim; sent
   later, still under this span's context), ``refused_full`` or ``error``.
2. The W3C trace context crosses the layer in the envelope's ``trace`` key
   (specs/layer.md), injected by the global propagator.
3. ``handle <event type>`` (consumer) in the worker, a child of (1): from handing the
   event to the application until it asks for its next event from the same task, or
   ends — the handler. It is the current span while the handler runs, so Django's spans
   (``opentelemetry-instrumentation-django``, instrumented here when installed) and any
   the project makes nest under it. Outcome ``ok``, ``error`` or ``cancelled``.
4. Each reply the consumer sends carries the current context in its ``trace`` key;
   ``send <message type>`` in the gateway, a child of (3), covers handing it to the plugin
   that writes it to the client. Outcome ``delivered`` or ``error``.

Group messages forwarded from the gateway to a worker (``chat.message``) carry no
context: their handler spans start new traces.

How it hooks in: the gateway's ``send_event`` and ``open_connection`` and the worker's
``application`` are wrapped on the instance when tracing starts (the instrumentation
pattern of OpenTelemetry's own libraries), and the two ``None`` tests above call
:meth:`GatewayTracer.inject` and :meth:`WorkerTracer.arrived`.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from .. import __version__
from .config import ConfigError, TracingOptions
from .layers import ChannelFull, Message

if TYPE_CHECKING:
    from .server import Connection, Gateway
    from .worker import Worker

logger = logging.getLogger("switchboard.tracing")

#: The envelope and reply key that carries the W3C trace context (specs/layer.md).
TRACE_KEY: Final = "trace"
PROTOCOL: Final = "switchboard.protocol"
CONNECTION: Final = "switchboard.connection"
OUTCOME: Final = "switchboard.outcome"
EVENT_TYPE: Final = "switchboard.message.type"
DESTINATION: Final = "messaging.destination.name"
SYSTEM: Final = "messaging.system"

#: Held events (and events read but not yet handed to an app) remembered at most.
MAX_PENDING: Final = 10_000

ASGIApp = Callable[..., Awaitable[None]]


def setup_tracing(options: TracingOptions, kind: str) -> trace.Tracer:
    """Install the configured exporter (unless ``global``) and instrument Django; the tracer.

    ``otlp`` uses the OTLP/HTTP exporter configured by the standard ``OTEL_EXPORTER_OTLP_*``
    variables; ``console`` prints spans as JSON; ``global`` keeps whatever provider the
    process installed (``opentelemetry-instrument``, the settings module).
    """
    if options.exporter != "global":
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
        except ImportError as exc:
            raise ConfigError(f"TRACING: the {options.exporter} exporter needs pip install 'switchboard[otel]' ({exc})") from exc
        exporter: SpanExporter
        if options.exporter == "otlp":
            try:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            except ImportError as exc:
                raise ConfigError(f"TRACING: the otlp exporter needs pip install 'switchboard[otel]' ({exc})") from exc
            exporter = OTLPSpanExporter()
        else:
            exporter = ConsoleSpanExporter()
        provider = TracerProvider(resource=Resource.create({"service.name": options.service_name or f"switchboard-{kind}"}))
        provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
        atexit.register(provider.shutdown)  # flush what is batched when the process ends
    if options.instrument_django:
        _instrument_django()
    return trace.get_tracer("switchboard", __version__)


def _instrument_django() -> None:
    try:
        from django.conf import settings
        from opentelemetry.instrumentation.django import DjangoInstrumentor
    except ImportError:
        logger.info("tracing: opentelemetry-instrumentation-django is not installed; Django makes no spans of its own")
        return
    if settings.configured and not DjangoInstrumentor().is_instrumented_by_opentelemetry:
        DjangoInstrumentor().instrument()


def _carrier(ctx: otel_context.Context | None = None) -> dict[str, str]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=ctx)
    return carrier


def _extract(carrier: Any) -> otel_context.Context | None:
    if not isinstance(carrier, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in carrier.items()):
        return None
    return propagate.extract(carrier)


class _Pending:
    """Contexts of events by identity, holding the event so its id cannot be reused meanwhile."""

    def __init__(self) -> None:
        self._entries: collections.OrderedDict[int, tuple[Message, otel_context.Context]] = collections.OrderedDict()

    def put(self, event: Message, ctx: otel_context.Context) -> None:
        self._entries[id(event)] = (event, ctx)
        if len(self._entries) > MAX_PENDING:
            self._entries.popitem(last=False)

    def take(self, event: Message) -> otel_context.Context | None:
        entry = self._entries.pop(id(event), None)
        return entry[1] if entry is not None and entry[0] is event else None


class GatewayTracer:
    """The gateway's spans: events received (1) and replies delivered (4)."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer
        self._held = _Pending()

    def install(self, gateway: Gateway) -> None:
        gateway.tracer = self
        send_event = gateway.send_event
        open_connection = gateway.open_connection

        async def traced_send_event(
            connection: Connection, event: Message, *, wait: float | None = None, durable: bool | None = None
        ) -> None:
            await self._send_event(send_event, connection, event, wait=wait, durable=durable)

        def traced_open_connection(scope: dict[str, Any], deliver: Callable[[Message], None], *, sticky: bool = False) -> Any:
            return open_connection(scope, self._deliverer(scope, deliver), sticky=sticky)

        gateway.send_event = traced_send_event  # type: ignore[method-assign]
        gateway.open_connection = traced_open_connection  # type: ignore[method-assign]

    async def _send_event(
        self, send_event: Callable[..., Awaitable[None]], connection: Connection, event: Message, **options: Any
    ) -> None:
        event_type = str(event.get("type"))
        attributes = {
            PROTOCOL: connection.protocol,
            CONNECTION: connection.channel,
            EVENT_TYPE: event_type,
            SYSTEM: "switchboard",
        }
        with self.tracer.start_as_current_span(f"receive {event_type}", kind=SpanKind.PRODUCER, attributes=attributes) as span:
            try:
                await send_event(connection, event, **options)
            except ChannelFull:
                span.set_attribute(OUTCOME, "refused_full")
                raise
            except Exception:
                span.set_attribute(OUTCOME, "error")
                raise
            held = connection.held
            if held and any(item is event for item in reversed(held)):
                # Sent later (once a worker claims the connection), from another task:
                # remember under which context, for inject().
                span.set_attribute(OUTCOME, "held")
                self._held.put(event, otel_context.get_current())
            else:
                span.set_attribute(OUTCOME, "sent")
                span.set_attribute(DESTINATION, connection.events_channel)

    def inject(self, event: Message, envelope: Message) -> None:
        """Put the event's trace context in ``envelope`` (called where the envelope is built)."""
        carrier = _carrier(self._held.take(event))
        if carrier:
            envelope[TRACE_KEY] = carrier

    def _deliverer(self, scope: dict[str, Any], deliver: Callable[[Message], None]) -> Callable[[Message], None]:
        protocol = str(scope.get("type"))

        def traced_deliver(message: Message) -> None:
            parent = _extract(message.pop(TRACE_KEY, None))
            message_type = str(message.get("type"))
            attributes = {PROTOCOL: protocol, CONNECTION: str(scope.get("reply_channel")), EVENT_TYPE: message_type}
            with self.tracer.start_as_current_span(f"send {message_type}", context=parent, attributes=attributes) as span:
                try:
                    deliver(message)
                except Exception:
                    span.set_attribute(OUTCOME, "error")
                    raise
                span.set_attribute(OUTCOME, "delivered")

        return traced_deliver


class WorkerTracer:
    """The worker's handler spans (3), and the context its replies carry back (4)."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self.tracer = tracer
        self._pending = _Pending()

    def install(self, worker: Worker) -> None:
        worker.tracer = self
        worker.application = self.wrap_application(worker.application)

    def arrived(self, envelope: Message, event: Message) -> None:
        """An envelope was read: remember its context until its event reaches the application."""
        parent = _extract(envelope.get(TRACE_KEY))
        if parent is not None:
            self._pending.put(event, parent)

    def wrap_application(self, application: ASGIApp) -> ASGIApp:
        async def traced(
            scope: dict[str, Any], receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Awaitable[None]]
        ) -> None:
            handler = _Handler(self, scope, asyncio.current_task())
            try:
                await application(scope, handler.receive(receive), handler.send(send))
            except asyncio.CancelledError:
                handler.end("cancelled")
                raise
            except BaseException as exc:
                handler.end("error", exc)
                raise
            handler.end("ok")

        traced.__wrapped__ = application  # type: ignore[attr-defined]
        return traced


class _Handler:
    """One application instance's current handler span."""

    def __init__(self, tracer: WorkerTracer, scope: dict[str, Any], task: asyncio.Task[Any] | None) -> None:
        self.tracer = tracer
        self.scope = scope
        self.task = task
        self.span: trace.Span | None = None
        self.attributes = {
            PROTOCOL: str(scope.get("type")),
            CONNECTION: str(scope.get("reply_channel") or scope.get("channel") or ""),
            SYSTEM: "switchboard",
        }

    def end(self, outcome: str, error: BaseException | None = None) -> None:
        span, self.span = self.span, None
        if span is None:
            return
        span.set_attribute(OUTCOME, outcome)
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end()

    def receive(self, receive: Callable[[], Awaitable[Message]]) -> Callable[[], Awaitable[Message]]:
        async def traced_receive() -> Message:
            own_task = asyncio.current_task() is self.task
            if own_task:
                self.end("ok")  # the app asks for more: the last handler is done
            message = await receive()
            message_type = str(message.get("type"))
            span = self.tracer.tracer.start_span(
                f"handle {message_type}",
                context=self.tracer._pending.take(message),
                kind=SpanKind.CONSUMER,
                attributes={**self.attributes, EVENT_TYPE: message_type},
            )
            if own_task:
                self.span = span
                otel_context.attach(trace.set_span_in_context(span))  # current while the handler runs
            else:
                # A second reader (Django waits for http.disconnect from its own task):
                # nothing runs "under" that event here.
                span.set_attribute(OUTCOME, "ok")
                span.end()
            return message

        return traced_receive

    def send(self, send: Callable[[Message], Awaitable[None]]) -> Callable[[Message], Awaitable[None]]:
        async def traced_send(message: Message) -> None:
            current = trace.get_current_span()
            span = current if current.get_span_context().is_valid else self.span
            if span is not None:
                carrier = _carrier(trace.set_span_in_context(span))
                if carrier:
                    message = {**message, TRACE_KEY: carrier}
            await send(message)

        return traced_send
