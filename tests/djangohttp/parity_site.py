"""Views, URLs and middleware whose behaviour the handler parity tests compare.

Everything Django does around a view that a site relies on leaves a line in
:data:`TRACE`: middleware (``__call__`` before and after, ``process_view``,
``process_exception``, ``process_template_response``), the view, a streaming
generator's end, and the request signals (the tests connect their receivers). The same
request through ``WSGIHandler``, ``ASGIHandler`` and Switchboard's handler must leave the
same lines in the same order and the same response.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

from asgiref.sync import async_to_sync, iscoroutinefunction, markcoroutinefunction
from django.db import connections
from django.http import (
    FileResponse,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    JsonResponse,
    StreamingHttpResponse,
)
from django.template.response import TemplateResponse
from django.urls import path

TRACE: list[str] = []
#: Thread of each traced step, by step name (last one wins): the sync path must run the
#: request, the view and ``request_finished`` in one thread (its database connections).
THREADS: dict[str, int] = {}
#: A file for the FileResponse view (set by the test that uses it).
FILE: dict[str, Path] = {}
#: Per-test knobs: the database alias views use, a gate blocking views, a channel layer.
KNOBS: dict[str, Any] = {}


def trace(step: str) -> None:
    TRACE.append(step)
    THREADS[step] = threading.get_ident()


# -- middleware -------------------------------------------------------------------------


class _Traced:
    """New-style middleware that traces around the call and in every hook."""

    name = "?"

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if iscoroutinefunction(self):
            return self._acall(request)
        trace(f"{self.name}:before")
        response = self.get_response(request)
        trace(f"{self.name}:after:{response.status_code}")
        response[f"X-{self.name}"] = "seen"
        return response

    async def _acall(self, request: HttpRequest) -> Any:
        trace(f"{self.name}:before")
        response = await self.get_response(request)
        trace(f"{self.name}:after:{response.status_code}")
        response[f"X-{self.name}"] = "seen"
        return response

    def process_view(self, request: HttpRequest, view: Any, args: Any, kwargs: Any) -> None:
        trace(f"{self.name}:view:{view.__name__}")

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        trace(f"{self.name}:exception:{type(exception).__name__}")
        if isinstance(exception, LookupError):
            return HttpResponse(f"{self.name} handled it", status=409)
        return None

    def process_template_response(self, request: HttpRequest, response: TemplateResponse) -> TemplateResponse:
        trace(f"{self.name}:template")
        response.context_data = {**(response.context_data or {}), "by": self.name}  # type: ignore[dict-item]
        return response


class Both(_Traced):
    """Sync- and async-capable (what ``MiddlewareMixin`` declares)."""

    name = "Both"
    sync_capable = True
    async_capable = True


class SyncOnly(_Traced):
    """A middleware written before async Django: sync only (the default)."""

    name = "SyncOnly"


class AsyncOnly(_Traced):
    """Async only: a sync chain must adapt it, so Django's async path serves the request."""

    name = "AsyncOnly"
    sync_capable = False
    async_capable = True


BOTH = f"{__name__}.Both"
SYNC_ONLY = f"{__name__}.SyncOnly"
ASYNC_ONLY = f"{__name__}.AsyncOnly"


# -- views ------------------------------------------------------------------------------


def hello(request: HttpRequest) -> HttpResponse:
    trace("view:hello")
    return JsonResponse({"hello": "world"})


def echo(request: HttpRequest) -> HttpResponse:
    """What Django made of the request: method, paths, query, body, form, headers, cookies."""
    trace("view:echo")
    return JsonResponse(
        {
            "method": request.method,
            "path": request.path,
            "path_info": request.path_info,
            "script_name": request.META.get("SCRIPT_NAME"),
            "get": request.GET.dict(),
            "body": request.body.decode("latin1"),
            "post": request.POST.dict(),
            "content_type": request.content_type,
            "x_header": request.headers.get("X-Thing"),
            "cookies": request.COOKIES,
            "scheme": request.scheme,
            "host": request.get_host(),
        }
    )


def cookies(request: HttpRequest) -> HttpResponse:
    trace("view:cookies")
    response = HttpResponse("cookies", content_type="text/plain; charset=utf-8")
    # A fixed expiry given as a string. Both max_age and a datetime make Django stamp a
    # value computed from "now" (Max-Age for a datetime), which differs between the three
    # handlers when the test straddles a second boundary.
    response.set_cookie("a", "1", expires="Tue, 01 Jan 2030 00:00:00 GMT")
    response.set_cookie("b", "two words", httponly=True)
    response["X-Latin"] = "caf\u00e9"
    return response


def boom(request: HttpRequest) -> HttpResponse:
    trace("view:boom")
    raise ValueError("view bug")


def handled(request: HttpRequest) -> HttpResponse:
    trace("view:handled")
    raise KeyError("a middleware turns this into a 409")


def big(request: HttpRequest) -> HttpResponse:
    trace("view:big")
    return HttpResponse(bytes(range(256)) * 1024)  # 256 KiB: several body messages


def template(request: HttpRequest) -> TemplateResponse:
    trace("view:template")
    return TemplateResponse(request, "parity.html", {"name": "world"})


def stream(request: HttpRequest) -> StreamingHttpResponse:
    trace("view:stream")

    def parts() -> Iterator[bytes]:
        try:
            for number in range(int(request.GET.get("n", "3"))):
                yield f"part {number}\n".encode()
        finally:
            trace("stream:closed")

    return StreamingHttpResponse(parts(), content_type="text/plain")


def endless(request: HttpRequest) -> StreamingHttpResponse:
    """A server-sent-events style stream that only ends when the client goes."""
    trace("view:endless")
    gate: threading.Event = KNOBS["endless_gate"]

    def parts() -> Iterator[bytes]:
        try:
            number = 0
            while True:
                yield f"data: {number}\n\n".encode()
                number += 1
                gate.wait(0.01)  # paced by the test's gate; never a busy loop
        finally:
            trace("stream:closed")

    return StreamingHttpResponse(parts(), content_type="text/event-stream")


def async_stream(request: HttpRequest) -> StreamingHttpResponse:
    """A sync view returning async content (allowed; Django's ASGI handler streams it)."""
    trace("view:async_stream")

    async def parts() -> AsyncIterator[bytes]:
        try:
            for number in range(3):
                await asyncio.sleep(0)
                yield f"async part {number}\n".encode()
        finally:
            trace("stream:closed")

    return StreamingHttpResponse(parts(), content_type="text/plain")


def download(request: HttpRequest) -> FileResponse:
    trace("view:download")
    opened = open(FILE["path"], "rb")  # FileResponse closes it
    KNOBS.setdefault("files", []).append(opened)
    return FileResponse(opened, as_attachment=True, filename="data.bin")


async def async_hello(request: HttpRequest) -> HttpResponse:
    trace("view:async_hello")
    await asyncio.sleep(0)
    return JsonResponse({"hello": "async"})


def db(request: HttpRequest) -> HttpResponse:
    """One query on the test's database alias; answers which connection served it."""
    trace("view:db")
    connection = connections[KNOBS["alias"]]
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    if request.GET.get("fail"):
        raise ValueError("after the query")
    return JsonResponse({"connection": id(connection.connection), "thread": threading.get_ident()})


def blocking(request: HttpRequest) -> HttpResponse:
    """Holds a pool thread until the test opens the gate: for the concurrency bound."""
    running: list[int] = KNOBS["running"]
    lock: threading.Lock = KNOBS["lock"]
    with lock:
        running.append(1)
        KNOBS["peak"] = max(KNOBS.get("peak", 0), len(running))
    try:
        KNOBS["gate"].wait(KNOBS["gate_timeout"])
    finally:
        with lock:
            running.pop()
    return HttpResponse("released")


def layer_send(request: HttpRequest) -> HttpResponse:
    """The Channels idiom from a sync view: async_to_sync on the channel layer."""
    trace("view:layer_send")
    async_to_sync(KNOBS["layer"].send)("djangohttp.out", {"type": "from.view", "thread": threading.get_ident()})
    return HttpResponse("sent")


def group_send(request: HttpRequest) -> HttpResponse:
    """Tell a room's WebSockets from a sync view, the way Channels sites do."""
    from switchboard.consumers import get_channel_layer

    async_to_sync(get_channel_layer().group_send)("djangohttp-room", {"type": "room.message", "text": request.GET["text"]})
    return HttpResponse("told the room")


def returns_none(request: HttpRequest) -> HttpResponseBase:
    trace("view:returns_none")
    return None  # type: ignore[return-value]  # Django turns this into a ValueError, then a 500


urlpatterns = [
    path("hello/", hello),
    path("echo/", echo),
    path("cookies/", cookies),
    path("boom/", boom),
    path("handled/", handled),
    path("big/", big),
    path("template/", template),
    path("stream/", stream),
    path("endless/", endless),
    path("async-stream/", async_stream),
    path("download/", download),
    path("async-hello/", async_hello),
    path("db/", db),
    path("blocking/", blocking),
    path("layer-send/", layer_send),
    path("none/", returns_none),
    path("group-send/", group_send),
]
