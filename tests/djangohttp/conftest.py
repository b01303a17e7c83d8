"""Fixtures for Switchboard's Django HTTP path: the same request through three handlers.

``WSGIHandler`` (what gunicorn runs), ``ASGIHandler`` (Django's own async path) and
:class:`~switchboard.consumers.django_http.DjangoHttpApplication` each get the request
from :class:`Req`, built here into a WSGI environ or an ASGI scope and events. Django is
configured here only when no other suite did (the whole suite shares one process);
everything these tests need beyond that comes from ``override_settings``.
"""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from support.django_settings import configure as configure_django

configure_django()

from django.core import signals
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.wsgi import WSGIHandler
from django.test.utils import override_settings
from support.waiting import deadline, wait_until

from djangohttp import parity_site
from switchboard.consumers import django_http

WAIT = deadline(10.0)
HOST = "testserver"

SITE_SETTINGS: dict[str, Any] = {
    "ROOT_URLCONF": "djangohttp.parity_site",
    "ALLOWED_HOSTS": [HOST, "127.0.0.1", "test"],
    "TEMPLATES": [
        {
            "BACKEND": "django.template.backends.django.DjangoTemplates",
            "OPTIONS": {"loaders": [("django.template.loaders.locmem.Loader", {"parity.html": "hello {{ name }} by {{ by }}"})]},
        }
    ],
}


@dataclass
class Req:
    """One request, to be built for any of the three handlers."""

    method: str = "GET"
    path: str = "/hello/"
    query: bytes = b""
    body: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    root_path: str = ""
    #: How the ASGI body arrives: sizes of the ``http.request`` events (one event if empty).
    body_events: list[int] = field(default_factory=list)

    def all_headers(self) -> list[tuple[bytes, bytes]]:
        headers = [(b"host", HOST.encode()), *self.headers]
        if self.body:
            headers.append((b"content-length", str(len(self.body)).encode()))
        return headers

    def scope(self) -> dict[str, Any]:
        full_path = self.root_path + self.path
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": self.method,
            "scheme": "http",
            "path": full_path,
            "raw_path": full_path.encode(),
            "root_path": self.root_path,
            "query_string": self.query,
            "headers": self.all_headers(),
            "client": ["127.0.0.1", 50000],
            "server": [HOST, 80],
        }

    def events(self) -> list[dict[str, Any]]:
        if not self.body_events:
            return [{"type": "http.request", "body": self.body, "more_body": False}]
        events, start = [], 0
        for size in self.body_events:
            events.append({"type": "http.request", "body": self.body[start : start + size], "more_body": True})
            start += size
        events.append({"type": "http.request", "body": self.body[start:], "more_body": False})
        return events

    def environ(self) -> dict[str, Any]:
        environ: dict[str, Any] = {
            "REQUEST_METHOD": self.method,
            "SCRIPT_NAME": self.root_path,
            "PATH_INFO": self.path.encode().decode("latin1"),
            "QUERY_STRING": self.query.decode("latin1"),
            "SERVER_NAME": HOST,
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "REMOTE_PORT": "50000",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.input": io.BytesIO(self.body),
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        for name, value in self.all_headers():
            key = name.decode("latin1").upper().replace("-", "_")
            key = key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"
            environ[key] = f"{environ[key]},{value.decode('latin1')}" if key in environ else value.decode("latin1")
        return environ


@dataclass
class Outcome:
    """A response as a client sees it, plus the ASGI framing where there was one."""

    status: int
    headers: list[tuple[bytes, bytes]]
    chunks: list[bytes]
    messages: list[dict[str, Any]] = field(default_factory=list)

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)

    def header_set(self) -> list[tuple[bytes, bytes]]:
        """Headers with lower-case names, sorted: the same response from any server."""
        return sorted((name.lower(), value.strip()) for name, value in self.headers)


def run_wsgi(handler: WSGIHandler, req: Req) -> Outcome:
    """What a WSGI server does: call, iterate the body, close (in the calling thread)."""
    started: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        started["status"] = int(status.split()[0])
        started["headers"] = [(n.encode("latin1"), v.encode("latin1")) for n, v in headers]

    result = handler(req.environ(), start_response)
    try:
        chunks = [bytes(chunk) for chunk in result]
    finally:
        result.close()
    return Outcome(started["status"], started["headers"], chunks)


async def run_asgi(app: Any, req: Req) -> Outcome:
    """What an ASGI server does: feed the body events, collect the messages until the app ends."""
    events = req.events()
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    messages: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if events:
            return events.pop(0)
        await never  # the client stays: only the app ends this exchange
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    try:
        await asyncio.wait_for(app(req.scope(), receive, send), WAIT)
    finally:
        never.cancel()
    return outcome_of(messages)


def outcome_of(messages: list[dict[str, Any]]) -> Outcome:
    assert messages and messages[0]["type"] == "http.response.start", messages
    bodies = [m for m in messages[1:] if m["type"] == "http.response.body"]
    assert bodies and not bodies[-1].get("more_body", False), "the response was not completed"
    headers = [(bytes(n), bytes(v)) for n, v in messages[0]["headers"]]
    return Outcome(messages[0]["status"], headers, [m.get("body", b"") for m in bodies], messages)


class Handlers:
    """Django's two handlers and Switchboard's, built under the current settings."""

    def __init__(self) -> None:
        self.wsgi = WSGIHandler()
        self.asgi = ASGIHandler()
        self.ours = django_http.DjangoHttpApplication(ASGIHandler())

    async def through_wsgi(self, req: Req) -> tuple[Outcome, list[str]]:
        """WSGI in a thread of its own (as a WSGI server would), never on the event loop."""
        parity_site.TRACE.clear()
        outcome = await asyncio.get_running_loop().run_in_executor(None, run_wsgi, self.wsgi, req)
        return outcome, list(parity_site.TRACE)

    async def through_asgi(self, req: Req) -> tuple[Outcome, list[str]]:
        parity_site.TRACE.clear()
        outcome = await run_asgi(self.asgi, req)
        return outcome, list(parity_site.TRACE)

    async def through_ours(self, req: Req) -> tuple[Outcome, list[str]]:
        """Ours; ``request_finished`` comes from the pool thread just after the response is handed over."""
        parity_site.TRACE.clear()
        outcome = await run_asgi(self.ours, req)
        await wait_until(lambda: "signal:request_finished" in parity_site.TRACE, 10, "request_finished from the pool")
        return outcome, list(parity_site.TRACE)


@pytest.fixture
def traced() -> Iterator[list[str]]:
    """Trace the request signals into :data:`parity_site.TRACE`."""

    def started(**kwargs: Any) -> None:
        parity_site.trace("signal:request_started")

    def finished(**kwargs: Any) -> None:
        parity_site.trace("signal:request_finished")

    def failed(**kwargs: Any) -> None:
        parity_site.trace("signal:got_request_exception")

    signals.request_started.connect(started, weak=False)
    signals.request_finished.connect(finished, weak=False)
    signals.got_request_exception.connect(failed, weak=False)
    parity_site.TRACE.clear()
    parity_site.THREADS.clear()
    try:
        yield parity_site.TRACE
    finally:
        signals.request_started.disconnect(started)
        signals.request_finished.disconnect(finished)
        signals.got_request_exception.disconnect(failed)
        parity_site.KNOBS.clear()


@pytest.fixture
def site(traced: list[str]) -> Iterator[Any]:
    """``site(middleware=[...])``: settings for the parity site; returns a :class:`Handlers`."""
    overrides: list[Any] = []

    def build(middleware: list[str] | None = None, **extra: Any) -> Handlers:
        override = override_settings(**SITE_SETTINGS, MIDDLEWARE=list(middleware or []), **extra)
        override.enable()
        overrides.append(override)
        return Handlers()

    yield build
    for override in reversed(overrides):
        override.disable()


@pytest.fixture
def runtime() -> Iterator[Any]:
    """``runtime(mode, threads)`` sets the process's Django HTTP path; defaults again afterwards."""

    def set_runtime(mode: str = "auto", threads: int = django_http.DEFAULT_THREADS) -> None:
        django_http.configure(mode, threads)

    yield set_runtime
    django_http.configure("auto", django_http.DEFAULT_THREADS)


@pytest.fixture
async def no_pending_pool_work() -> AsyncIterator[None]:
    """After the test, wait until the pool has nothing left (a close() may still be running)."""
    yield
    pool = django_http.RUNTIME.pool()
    await asyncio.wait_for(asyncio.wrap_future(pool.submit(lambda: None)), WAIT)
