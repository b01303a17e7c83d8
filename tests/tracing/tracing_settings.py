"""Settings for the tracing tests' OS processes: HTTP (Django), WebSocket and SMS over Redis.

With ``TRACE_ENABLED=1`` the process installs an OpenTelemetry SDK tracer provider with the
SDK's in-memory exporter (``TRACING.exporter = "global"`` keeps it) and, when it exits,
writes every finished span to ``TRACE_DIR/spans-<pid>.json``. Either way it writes the
OpenTelemetry and Switchboard tracing modules it has loaded to
``TRACE_DIR/modules-<pid>.json`` at exit, so the "no cost when off" test can see what was
imported. (redis-py 8 imports the OpenTelemetry *API* by itself when it is installed, for
its own optional metrics; Switchboard must import nothing of it: not its tracing module,
not the SDK, not an instrumentation.)

Environment (set by the test): TRACE_DIR, TRACE_ENABLED, TRACE_HTTP_BIND,
TRACE_REDIS_URL, TRACE_REDIS_PREFIX, TRACE_SMS_TOKEN.
"""

import atexit
import json
import os
import sys

SECRET_KEY = "switchboard-tracing-tests"
DEBUG = False
INSTALLED_APPS = ["switchboard"]
DATABASES: dict[str, dict[str, str]] = {}
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "tracing_urls"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
USE_TZ = True
ASGI_APPLICATION = "tracing_routing.application"

ENABLED = os.environ.get("TRACE_ENABLED") == "1"
TRACE_DIR = os.environ["TRACE_DIR"]
SMS_TOKEN = os.environ.get("TRACE_SMS_TOKEN", "tracing-test-auth-token")
PUBLIC_BASE_URL = "https://sms.tracing.test"

SWITCHBOARD = {
    "LAYER": {
        "BACKEND": "redis",
        "CONFIG": {"hosts": [os.environ["TRACE_REDIS_URL"]], "prefix": os.environ["TRACE_REDIS_PREFIX"]},
    },
    "PROTOCOLS": {
        "http": {"bind": [os.environ["TRACE_HTTP_BIND"]]},
        "sms": {"auth_token": SMS_TOKEN, "public_base_url": PUBLIC_BASE_URL, "reply_deadline": 5.0},
    },
    "TRACING": {"enabled": ENABLED, "exporter": "global", "instrument_django": True},
}

if ENABLED:
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    EXPORTER = InMemorySpanExporter()
    _provider = TracerProvider(resource=Resource.create({"service.name": f"tracing-test-{os.getpid()}"}))
    _provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
    trace.set_tracer_provider(_provider)

    @atexit.register
    def _write_spans() -> None:
        spans = [
            {
                "name": span.name,
                "trace_id": format(span.context.trace_id, "032x"),
                "span_id": format(span.context.span_id, "016x"),
                "parent_id": format(span.parent.span_id, "016x") if span.parent is not None else None,
                "kind": span.kind.name,
                "start": span.start_time,
                "end": span.end_time,
                "attributes": dict(span.attributes or {}),
                "pid": os.getpid(),
            }
            for span in EXPORTER.get_finished_spans()
        ]
        with open(os.path.join(TRACE_DIR, f"spans-{os.getpid()}.json"), "w", encoding="utf-8") as out:
            json.dump(spans, out)


@atexit.register
def _write_modules() -> None:
    loaded = sorted(name for name in sys.modules if name.startswith(("opentelemetry", "switchboard.gateway.tracing")))
    with open(os.path.join(TRACE_DIR, f"modules-{os.getpid()}.json"), "w", encoding="utf-8") as out:
        json.dump(loaded, out)
