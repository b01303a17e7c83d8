"""OpenTelemetry across real processes: a gateway and a worker over Redis, spans per process.

Each process records its spans with the SDK's in-memory exporter and writes them to a file
when it exits (tracing_settings.py). The test sends one SMS webhook (signed with twilio's
own RequestValidator), one WebSocket message and one Django HTTP request, stops the
processes the production way (SIGTERM), and checks each event's chain: the gateway's
``receive`` span, the worker's ``handle`` span as its child (the context crossed the layer
in the envelope), and the gateway's ``send`` span of the reply as the handler's child;
Django's own span nests under the handler. With tracing off, no OpenTelemetry module is
even imported.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import websockets
from support.processes import ProcessDeployment, free_port, process_env, redis_reachable, stop_reporting
from support.waiting import deadline, eventually
from twilio.request_validator import RequestValidator

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
REDIS_URL = os.environ.get("SWITCHBOARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SMS_TOKEN = "tracing-test-auth-token"
PUBLIC_BASE_URL = "https://sms.tracing.test"

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

#: What tracing loads, and nothing may load while it is off.
FORBIDDEN_WHEN_OFF = (
    "switchboard.gateway.tracing",
    "opentelemetry.sdk.trace",
    "opentelemetry.propagate",
    "opentelemetry.instrumentation",
)


@dataclass
class Deployment(ProcessDeployment):
    env: dict[str, str]
    log_dir: Path
    port: int
    trace_dir: Path
    processes: dict[str, Any] = field(default_factory=dict)

    settings_module = "tracing_settings"
    cwd = HERE

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def spans(self) -> list[dict[str, Any]]:
        return [span for path in sorted(self.trace_dir.glob("spans-*.json")) for span in json.loads(path.read_text())]

    def modules(self) -> dict[str, list[str]]:
        return {path.name: json.loads(path.read_text()) for path in sorted(self.trace_dir.glob("modules-*.json"))}


@pytest.fixture
def deploy(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    if not redis_reachable():
        pytest.skip("Redis is not reachable on 127.0.0.1:6379")
    made: list[Deployment] = []

    def make(*, enabled: bool) -> Deployment:
        trace_dir = tmp_path / f"traces-{len(made)}"
        trace_dir.mkdir()
        port = free_port()
        env = process_env(
            [HERE, ROOT],
            TRACE_DIR=str(trace_dir),
            TRACE_ENABLED="1" if enabled else "0",
            TRACE_HTTP_BIND=f"127.0.0.1:{port}",
            TRACE_REDIS_URL=REDIS_URL,
            TRACE_REDIS_PREFIX=f"sb-trace-{secrets.token_hex(4)}:",
            TRACE_SMS_TOKEN=SMS_TOKEN,
        )
        log_dir = tmp_path / f"logs-{len(made)}"
        log_dir.mkdir()
        made.append(Deployment(env, log_dir, port, trace_dir))
        return made[-1]

    yield make
    for deployment in made:
        stop_reporting(deployment, request)


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read()


def _post_sms(deployment: Deployment, body: str) -> bytes:
    params = {"MessageSid": "SM" + secrets.token_hex(16), "AccountSid": "AC" + "0" * 32, "From": "+15550001111",
              "To": "+15550002222", "Body": body, "NumMedia": "0"}
    signature = RequestValidator(SMS_TOKEN).compute_signature(PUBLIC_BASE_URL + "/sms/inbound", params)
    request = urllib.request.Request(
        deployment.url("/sms/inbound"),
        data=urllib.parse.urlencode(params).encode(),
        headers={"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=20) as response:
        assert response.status == 200
        return response.read()


async def _traffic(deployment: Deployment) -> None:
    deployment.start("gateway", "gateway")
    deployment.start("worker", "worker")

    def ready() -> bool:
        deployment.check_alive()
        return _get(deployment.url("/hello")) == (200, b"hello from django")

    await eventually(ready, "the Django view through gateway and worker", timeout=60)
    async with websockets.connect(f"ws://127.0.0.1:{deployment.port}/ws/") as ws:
        await ws.send("ping")
        assert await asyncio.wait_for(ws.recv(), deadline(20)) == "echo:ping"
    twiml = await asyncio.to_thread(_post_sms, deployment, "hello")
    assert b"got: hello" in twiml
    for name in ("gateway", "worker"):
        assert deployment.stop(name) == 0, deployment.logs()


def _chain(spans: list[dict[str, Any]], protocol: str, event: str, reply: str) -> dict[str, dict[str, Any]]:
    """The receive -> handle -> send spans of the one ``event`` of ``protocol``."""
    by_id = {span["span_id"]: span for span in spans}
    (received,) = [s for s in spans if s["name"] == f"receive {event}" and s["attributes"]["switchboard.protocol"] == protocol]
    handled = [s for s in spans if s["name"] == f"handle {event}" and s["parent_id"] == received["span_id"]]
    assert len(handled) == 1, (received, [s["name"] for s in spans])
    (handle,) = handled
    sent = [s for s in spans if s["name"] == f"send {reply}" and s["parent_id"] == handle["span_id"]]
    assert sent, (handle, [(s["name"], s["parent_id"]) for s in spans if s["name"].startswith("send")])
    for span in (received, handle, sent[0]):
        assert span["trace_id"] == received["trace_id"]
        assert span["attributes"]["switchboard.protocol"] == protocol
    assert received["pid"] == sent[0]["pid"] != handle["pid"]  # gateway, worker, gateway
    assert received["kind"] == "PRODUCER" and handle["kind"] == "CONSUMER"
    assert received["attributes"]["switchboard.outcome"] in ("sent", "held")
    assert handle["attributes"]["switchboard.outcome"] == "ok"
    assert sent[0]["attributes"]["switchboard.outcome"] == "delivered"
    assert received["parent_id"] is None or by_id[received["parent_id"]]["pid"] == received["pid"]
    return {"receive": received, "handle": handle, "send": sent[0]}


async def test_one_trace_per_event_across_gateway_and_worker(deploy: Any, tmp_path: Path) -> None:
    deployment = deploy(enabled=True)
    await _traffic(deployment)
    spans = deployment.spans()
    assert len({span["pid"] for span in spans}) == 2, deployment.logs()
    for loaded in deployment.modules().values():
        assert all(any(name.startswith(prefix) for name in loaded) for prefix in FORBIDDEN_WHEN_OFF[:3])

    sms = _chain(spans, "sms", "sms.received", "sms.reply")
    assert sms["receive"]["attributes"]["messaging.destination.name"] == "switchboard.sms"
    websocket = _chain(spans, "websocket", "websocket.receive", "websocket.send")
    assert websocket["receive"]["attributes"]["messaging.destination.name"].startswith("worker.")  # claimed

    # Django's own span (its instrumentation) is a child of the handler of the request.
    requests = [s for s in spans if s["name"] == "receive http.request"]
    handles = {s["span_id"]: s for s in spans if s["name"] == "handle http.request"}
    django = [s for s in spans if s["parent_id"] in handles and not s["name"].startswith(("send ", "handle "))]
    assert django, [(s["name"], s["parent_id"]) for s in spans]
    assert any(handles[s["parent_id"]]["parent_id"] in {r["span_id"] for r in requests} for s in django)

    target = os.environ.get("SWITCHBOARD_TRACING_SCREENSHOT")
    if target:
        await _screenshot(spans, [("One SMS webhook", sms), ("One WebSocket message", websocket)], ROOT / target / "tracing.png",
                          tmp_path)


async def _screenshot(spans: list[dict[str, Any]], chains: list[tuple[str, dict[str, dict[str, Any]]]], out: Path,
                      tmp_path: Path) -> None:
    """docs/img/tracing.png: the two traces as a waterfall, rendered by headless Chromium."""
    import base64

    from support.cdp import Chromium
    from waterfall import page

    traces = []
    for title, chain in chains:
        trace_id = chain["receive"]["trace_id"]
        traces.append((title, [span for span in spans if span["trace_id"] == trace_id]))
    html_file = tmp_path / "waterfall.html"
    await asyncio.to_thread(html_file.write_text, page(traces), encoding="utf-8")
    browser = await Chromium.launch(tmp_path / "profile")
    try:
        session = await browser.open_page(html_file.as_uri())
        await browser.call("Emulation.setDeviceMetricsOverride",
                           {"width": 1100, "height": 330, "deviceScaleFactor": 1, "mobile": False}, session)
        await browser.wait_for(session, "document.querySelectorAll('.row').length > 0")
        shot = await browser.call("Page.captureScreenshot", {
            "format": "png", "clip": {"x": 0, "y": 0, "width": 1100, "height": 330, "scale": 1}}, session)
        await asyncio.to_thread(out.write_bytes, base64.b64decode(shot["data"]))
    finally:
        await browser.close()


async def test_no_opentelemetry_when_tracing_is_off(deploy: Any) -> None:
    deployment = deploy(enabled=False)
    await _traffic(deployment)
    modules = deployment.modules()
    assert len(modules) == 2, deployment.logs()
    for loaded in modules.values():
        # redis-py 8 imports parts of the OpenTelemetry API and SDK by itself when they are
        # installed (redis.observability, its own metrics); Switchboard must load none of
        # its tracing, nor the SDK's tracing, the propagators or any instrumentation.
        ours = [name for name in loaded if name.startswith(FORBIDDEN_WHEN_OFF)]
        assert ours == [], ours
    assert deployment.spans() == []
