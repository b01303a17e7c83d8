"""Fixtures for the SMS plugin tests: a Twilio stand-in on both sides of the gateway.

* Webhooks: real HTTP requests (aiohttp, which twilio depends on) to the gateway's HTTP
  port, signed with twilio's own ``RequestValidator.compute_signature`` for the public URL
  the plugin is configured with, exactly as Twilio signs them.
* REST API: :class:`TwilioApiStub`, a small ``http.server`` in a thread on 127.0.0.1 that
  records every form it is POSTed and answers like the Messages API (201 + JSON), or
  with Twilio's error JSON for the numbers in :data:`FAILING_NUMBERS`.

In-process stacks run the real gateway core, HTTP plugin, SMS plugin and a Worker over the
in-memory layer. End-to-end deployments start ``switchboard gateway`` + ``switchboard
worker`` over the real Redis (or ``switchboard run``) with ``sms_settings.py``.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import pytest
from support.django_settings import configure as configure_django
from support.processes import ModeDeployment, free_tcp_port, process_env, redis_reachable, split_layer_env, stop_reporting
from support.processes import pytest_runtest_makereport as pytest_runtest_makereport
from support.waiting import deadline, wait_until

configure_django()

from support.layers import installed_layer
from support.stacks import PluginStack, stacks_stopped_after
from twilio.request_validator import RequestValidator

from switchboard.gateway.config import parse_options
from switchboard.gateway.layers import ChannelLayer
from switchboard.protocols.http import HttpPlugin
from switchboard.protocols.sms import SmsOptions, SmsPlugin

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "chatsite"
HERE = Path(__file__).resolve().parent
REDIS_URL = os.environ.get("SWITCHBOARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
WAIT = deadline(5)  # safety net (scaled): a broken path fails the test instead of hanging it

AUTH_TOKEN = "test-auth-token-0123456789abcdef"
ACCOUNT_SID = "AC" + "0" * 32
#: What Twilio is "configured" with: deliberately not the gateway's own address, so a
#: signature is only valid when the plugin checks it against public_base_url.
PUBLIC_BASE_URL = "https://sms.example.test"
TWILIO_NUMBER = "+15551230000"
SENDER = "+15557654321"
#: Recipients the API stub refuses (400, Twilio error 21211 "invalid 'To' number").
FAILING_NUMBERS = frozenset({"+15550000400"})


def new_sid(prefix: str = "SM") -> str:
    return prefix + secrets.token_hex(16)


# -- the Twilio REST API stand-in -------------------------------------------------------


@dataclass
class ApiRequest:
    """One request the stub received: path, Basic-auth credentials and form fields."""

    path: str
    auth: tuple[str, str] | None
    form: dict[str, list[str]]

    def field(self, name: str) -> str | None:
        values = self.form.get(name)
        return values[-1] if values else None


class TwilioApiStub:
    """Records POSTs to ``/2010-04-01/Accounts/<sid>/Messages.json`` like Twilio's API."""

    def __init__(self) -> None:
        self.requests: list[ApiRequest] = []
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                form = parse_qs(self.rfile.read(length).decode(), keep_blank_values=True)
                request = ApiRequest(self.path, _basic_auth(self.headers.get("authorization")), form)
                with stub._lock:
                    stub.requests.append(request)
                status, payload = stub.answer(request)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def answer(self, request: ApiRequest) -> tuple[int, dict[str, Any]]:
        to = request.field("To") or ""
        if to in FAILING_NUMBERS:
            return 400, {"code": 21211, "message": f"The 'To' number {to} is not a valid phone number.",
                         "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}
        sid = new_sid()
        return 201, {
            "sid": sid, "account_sid": ACCOUNT_SID, "to": to, "from": request.field("From"),
            "messaging_service_sid": request.field("MessagingServiceSid"), "body": request.field("Body") or "",
            "status": "queued", "num_media": str(len(request.form.get("MediaUrl", []))), "num_segments": "1",
            "direction": "outbound-api", "api_version": "2010-04-01", "price": None, "error_code": None,
            "error_message": None, "uri": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}.json",
            "date_created": "Wed, 25 Nov 2026 09:00:00 +0000", "date_updated": "Wed, 25 Nov 2026 09:00:00 +0000",
            "date_sent": None, "subresource_uris": {},
        }

    def bodies(self) -> list[str]:
        with self._lock:
            return [request.field("Body") or "" for request in self.requests]

    def snapshot(self) -> list[ApiRequest]:
        with self._lock:
            return list(self.requests)

    async def wait_for(self, count: int, timeout: float = 5) -> list[ApiRequest]:
        await wait_until(lambda: len(self.requests) >= count, timeout, f"{count} API request(s)")
        return self.snapshot()

    async def wait_for_body(self, predicate: Any, timeout: float = 5) -> ApiRequest:
        found: list[ApiRequest] = []

        def check() -> bool:
            found[:] = [r for r in self.snapshot() if predicate(r.field("Body") or "")]
            return bool(found)

        await wait_until(check, timeout, "a matching API request")
        return found[0]


def _basic_auth(header: str | None) -> tuple[str, str] | None:
    if not header or not header.startswith("Basic "):
        return None
    user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    return user, password


@pytest.fixture
def api() -> Iterator[TwilioApiStub]:
    stub = TwilioApiStub()
    stub.thread.start()
    try:
        yield stub
    finally:
        stub.server.shutdown()
        stub.server.server_close()


# -- signed webhooks --------------------------------------------------------------------


def sign(path: str, params: dict[str, str] | list[tuple[str, str]], *, token: str = AUTH_TOKEN,
         base: str = PUBLIC_BASE_URL) -> str:
    """The X-Twilio-Signature Twilio would send for ``params`` POSTed to ``base + path``."""
    if isinstance(params, list):
        multi: dict[str, list[str]] = {}
        for key, value in params:
            multi.setdefault(key, []).append(value)
        return RequestValidator(token).compute_signature(base + path, _Multi(multi))
    return RequestValidator(token).compute_signature(base + path, params)


class _Multi(dict[str, list[str]]):
    def getall(self, key: str) -> list[str]:
        return self[key]


def inbound_params(body: str = "hello", *, sid: str | None = None, media: list[tuple[str, str]] | None = None,
                   **extra: str) -> dict[str, str]:
    """The form fields of an incoming-message webhook, as Twilio sends them."""
    params = {
        "ToCountry": "US", "ToState": "CA", "SmsMessageSid": sid or "", "NumMedia": str(len(media or [])),
        "ToCity": "", "FromZip": "", "SmsSid": sid or "", "FromState": "NY", "SmsStatus": "received",
        "FromCity": "NEW YORK", "Body": body, "FromCountry": "US", "To": TWILIO_NUMBER, "ToZip": "",
        "NumSegments": "1", "MessageSid": sid or new_sid(), "AccountSid": ACCOUNT_SID, "From": SENDER,
        "ApiVersion": "2010-04-01",
    }
    params["SmsMessageSid"] = params["SmsSid"] = params["MessageSid"]
    for index, (url, content_type) in enumerate(media or []):
        params[f"MediaUrl{index}"] = url
        params[f"MediaContentType{index}"] = content_type
    params.update(extra)
    return params


def status_params(sid: str, status: str = "delivered", **extra: str) -> dict[str, str]:
    """The form fields of a status callback."""
    params = {"SmsSid": sid, "SmsStatus": status, "MessageStatus": status, "To": SENDER, "MessageSid": sid,
              "AccountSid": ACCOUNT_SID, "From": TWILIO_NUMBER, "ApiVersion": "2010-04-01"}
    params.update(extra)
    return params


@dataclass
class WebhookReply:
    status: int
    text: str
    headers: dict[str, str]


async def post_webhook(
    port: int,
    path: str,
    params: dict[str, str] | list[tuple[str, str]],
    *,
    signature: str | bool | None = True,
    method: str = "POST",
    data: bytes | None = None,
    content_type: str = "application/x-www-form-urlencoded",
) -> WebhookReply:
    """POST a webhook to the gateway; ``signature=True`` signs it for the public URL."""
    headers = {}
    if signature is True:
        headers["X-Twilio-Signature"] = sign(path, params)
    elif isinstance(signature, str):
        headers["X-Twilio-Signature"] = signature
    body: Any = data if data is not None else aiohttp.FormData(list(params.items()) if isinstance(params, dict) else params)
    if data is not None:
        headers["Content-Type"] = content_type
    async with aiohttp.ClientSession() as session, session.request(
        method, f"http://127.0.0.1:{port}{path}", data=body if method == "POST" else None, headers=headers,
        timeout=aiohttp.ClientTimeout(total=20),
    ) as response:
        return WebhookReply(response.status, await response.text(), dict(response.headers))


# -- the in-process stack -------------------------------------------------------------


def sms_options(**raw: Any) -> SmsOptions:
    """Options as the config would give them (so they pass the real validation)."""
    raw.setdefault("auth_token", AUTH_TOKEN)
    raw.setdefault("public_base_url", PUBLIC_BASE_URL)
    return parse_options(SmsOptions, raw, where="PROTOCOLS.sms")


class Stack(PluginStack):
    """Gateway core + HTTP plugin + SMS plugin (+ a worker running ``app``) on one layer."""

    @property
    def http(self) -> HttpPlugin:
        return self.plugin_of(HttpPlugin)

    @property
    def sms(self) -> SmsPlugin:
        return self.plugin_of(SmsPlugin)

    @property
    def port(self) -> int:
        return self.http.bound_addresses[0][1]

    async def post(self, path: str, params: Any, **kwargs: Any) -> WebhookReply:
        return await post_webhook(self.port, path, params, **kwargs)


@pytest.fixture
async def layer_config() -> dict[str, Any]:
    return {"BACKEND": "memory", "CONFIG": {"block_timeout": 0.05}}


@pytest.fixture
async def layer(layer_config: dict[str, Any]) -> AsyncIterator[ChannelLayer]:
    """A fresh in-memory layer installed as the process layer (consumers' send_sms uses it)."""
    async with installed_layer(layer_config) as channel_layer:
        yield channel_layer


@pytest.fixture
async def stack(layer: ChannelLayer) -> AsyncIterator[Any]:
    """``await stack(app=..., **sms_options)`` starts a :class:`Stack`; stopped after the test.

    It stops as production does: sms (drains webhooks and sends), http, the core, the worker.
    """
    async with stacks_stopped_after() as stacks:

        async def start(app: Any = None, **options: Any) -> Stack:
            http = HttpPlugin(parse_options(HttpPlugin.Options, {"bind": ["127.0.0.1:0"]}, where="PROTOCOLS.http"))
            plugins = [http, SmsPlugin(sms_options(**options))]
            running = await Stack.start(layer, plugins, app=app, protocols=["sms"], drain_timeout=2.0)
            stacks.append(running)
            return running

        yield start


# -- OS processes ---------------------------------------------------------------------


@dataclass
class Deployment(ModeDeployment):
    """Gateway and worker processes (or one ``run`` process) serving SMS webhooks on ``port``."""

    settings_module = "sms_settings"
    cwd = HERE

    async def post(self, path: str, params: Any, **kwargs: Any) -> WebhookReply:
        return await post_webhook(self.port, path, params, **kwargs)

    async def wait_ready(self, timeout: float = 30) -> None:
        """Text "hours" until the consumer answers inline: gateway up and a worker serving."""

        async def answers() -> bool:
            try:
                reply = await self.post("/sms/inbound", inbound_params("hours"))
            except aiohttp.ClientError:
                return False
            return reply.status == 200 and "open" in reply.text

        await self.wait_until(answers, timeout, "an inline answer to a text")


@pytest.fixture(params=["split", "run"])
def deployment(request: pytest.FixtureRequest, tmp_path: Path, api: TwilioApiStub) -> Iterator[Deployment]:
    """``split``: gateway + worker processes over Redis; ``run``: one process, memory layer."""
    mode = request.param
    if mode == "split" and not redis_reachable():
        pytest.skip("Redis is not reachable on 127.0.0.1:6379")
    port = free_tcp_port()
    env = process_env(
        [HERE, EXAMPLE, ROOT],
        SMS_TEST_HTTP_BIND=f"127.0.0.1:{port}",
        SMS_TEST_API_BASE_URL=api.url,
        SMS_TEST_AUTH_TOKEN=AUTH_TOKEN,
        SMS_TEST_ACCOUNT_SID=ACCOUNT_SID,
        SMS_TEST_PUBLIC_BASE_URL=PUBLIC_BASE_URL,
    )
    split_layer_env(env, mode, "SMS_TEST", REDIS_URL)
    deployment = Deployment(mode, port, env, tmp_path)
    deployment.start_mode()
    try:
        yield deployment
    finally:
        stop_reporting(deployment, request)

