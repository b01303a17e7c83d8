"""Switchboard's Django HTTP path: which requests take it, and what it does beyond parity.

The pool path is chosen the way Django decides what runs synchronously (the resolved view
and the middleware chain), a setting forces either path, the pool bounds how many views
run at once, streaming stops when the client goes, and ``async_to_sync`` in a view runs
on the worker's event loop, where the channel layer lives.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest
from django.test.utils import override_settings
from support.waiting import wait_until

from djangohttp import parity_site
from djangohttp.conftest import WAIT, Req, run_asgi
from switchboard.consumers import django_http
from switchboard.gateway.layers import build_layer

#: A whole request with an empty body, as the gateway sends it: one event.
WHOLE_EMPTY_REQUEST = {"type": "http.request", "body": b"", "more_body": False}


def receiving(events: list[dict[str, Any]]) -> Any:
    """An ASGI ``receive`` that hands out ``events`` in order."""

    async def receive() -> dict[str, Any]:
        return events.pop(0)

    return receive


async def test_auto_serves_sync_views_in_the_pool_and_async_views_through_django(site: Any, runtime: Any) -> None:
    runtime("auto")
    handlers = site(middleware=[parity_site.BOTH, parity_site.SYNC_ONLY])
    outcome, _ = await handlers.through_ours(Req(path="/hello/"))
    assert outcome.status == 200 and parity_site.THREADS["view:hello"] != threading.get_ident()
    assert handlers.ours.stats == {"sync": 1, "async": 0}
    parity_site.TRACE.clear()
    outcome = await run_asgi(handlers.ours, Req(path="/async-hello/"))
    assert outcome.status == 200 and outcome.body == b'{"hello": "async"}'
    assert parity_site.THREADS["view:async_hello"] == threading.get_ident()  # on the loop, as Django runs it
    assert handlers.ours.stats == {"sync": 1, "async": 1}
    # A path that resolves to nothing is a sync 404.
    outcome, _ = await handlers.through_ours(Req(path="/nowhere/"))
    assert outcome.status == 404 and handlers.ours.stats == {"sync": 2, "async": 1}


async def test_an_async_only_middleware_keeps_djangos_async_path(site: Any, runtime: Any) -> None:
    runtime("auto")
    handlers = site(middleware=[parity_site.BOTH, parity_site.ASYNC_ONLY])
    outcome = await run_asgi(handlers.ours, Req(path="/hello/"))
    assert outcome.status == 200 and outcome.header_set() == (await run_asgi(handlers.asgi, Req(path="/hello/"))).header_set()
    assert handlers.ours.stats == {"sync": 0, "async": 1}
    assert handlers.ours.async_only_middleware == [parity_site.ASYNC_ONLY]


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_the_setting_forces_either_path_and_both_answer_the_same(mode: str, site: Any, runtime: Any) -> None:
    runtime(mode)
    handlers = site(middleware=[parity_site.BOTH])
    for path in ("/hello/", "/async-hello/"):
        parity_site.TRACE.clear()
        ours = await run_asgi(handlers.ours, Req(path=path))
        await wait_until(lambda: "signal:request_finished" in parity_site.TRACE, 10, "request_finished")
        django = await run_asgi(handlers.asgi, Req(path=path))
        assert (ours.status, ours.header_set(), ours.body) == (django.status, django.header_set(), django.body)
    assert handlers.ours.stats == ({"sync": 2, "async": 0} if mode == "sync" else {"sync": 0, "async": 2})


async def test_the_request_its_view_and_request_finished_share_one_pool_thread(site: Any, runtime: Any) -> None:
    runtime("auto")
    handlers = site(middleware=[parity_site.SYNC_ONLY])
    await handlers.through_ours(Req(path="/hello/"))
    threads = parity_site.THREADS
    assert threads["signal:request_started"] == threads["view:hello"] == threads["signal:request_finished"]
    assert threads["SyncOnly:before"] == threads["view:hello"] != threading.get_ident()


@pytest.mark.parametrize("events", [[1], [3, 5], [0, 0, 7]], ids=["2-events", "3-events", "empty-events"])
async def test_a_body_in_several_http_request_events_is_read_whole(events: list[int], site: Any, runtime: Any) -> None:
    runtime("auto")
    handlers = site()
    req = Req(
        method="POST", path="/echo/", body=b"name=ada&lang=python",
        headers=[(b"content-type", b"application/x-www-form-urlencoded")], body_events=events,
    )
    ours, _ = await handlers.through_ours(req)
    django = await run_asgi(handlers.asgi, req)
    assert ours.body == django.body and b'"post": {"name": "ada", "lang": "python"}' in ours.body


@pytest.mark.parametrize("before", [[b"part"], []], ids=["after-a-part", "before-any-body"])
async def test_a_client_gone_before_the_body_ends_gets_no_request(before: list[bytes], site: Any, runtime: Any) -> None:
    runtime("auto")
    handlers = site()
    events: list[dict[str, Any]] = [{"type": "http.request", "body": part, "more_body": True} for part in before]
    events.append({"type": "http.disconnect"})
    sent: list[Any] = []
    receive = receiving(events)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = Req(method="POST", path="/echo/", body=b"partial body").scope()
    await asyncio.wait_for(handlers.ours(scope, receive, send), WAIT)
    assert sent == [] and parity_site.TRACE == []  # no request_started, as under Django's ASGI handler


async def test_a_streaming_response_stops_when_the_client_goes(site: Any, runtime: Any, no_pending_pool_work: None) -> None:
    runtime("auto")
    handlers = site()
    parity_site.KNOBS["endless_gate"] = threading.Event()
    first_parts = asyncio.Event()
    gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    events = [{"type": "http.request", "body": b"", "more_body": False}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if events:
            return events.pop(0)
        await gone
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if len(sent) >= 4:
            first_parts.set()

    task = asyncio.ensure_future(handlers.ours(Req(path="/endless/").scope(), receive, send))
    await asyncio.wait_for(first_parts.wait(), WAIT)
    gone.set_result(None)
    await asyncio.wait_for(task, WAIT)
    await wait_until(lambda: "signal:request_finished" in parity_site.TRACE, 10, "request_finished")
    assert parity_site.TRACE[-2:] == ["stream:closed", "signal:request_finished"]
    assert sent[0]["status"] == 200 and all(m.get("more_body") for m in sent[1:])  # never completed
    assert sent[1]["body"] == b"data: 0\n\n"


async def test_async_content_of_a_sync_view_streams_part_by_part(site: Any, runtime: Any) -> None:
    runtime("auto")
    handlers = site()
    ours, trace = await handlers.through_ours(Req(path="/async-stream/"))
    assert ours.chunks == [b"async part 0\n", b"async part 1\n", b"async part 2\n", b""]
    assert trace[-2:] == ["stream:closed", "signal:request_finished"]
    assert handlers.ours.stats == {"sync": 1, "async": 0}


@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume")
async def test_file_response_is_sent_in_django_asgi_sized_chunks(tmp_path: Path, site: Any, runtime: Any) -> None:
    runtime("auto")
    handlers = site()
    data = bytes(range(256)) * 700  # 175 KiB
    parity_site.FILE["path"] = tmp_path / "data.bin"
    parity_site.FILE["path"].write_bytes(data)
    ours, trace = await handlers.through_ours(Req(path="/download/"))
    django = await run_asgi(handlers.asgi, Req(path="/download/"))
    assert ours.body == data and ours.chunks == django.chunks and ours.header_set() == django.header_set()
    assert [len(c) for c in ours.chunks] == [65536, 65536, len(data) - 131072, 0]
    assert trace[-1] == "signal:request_finished"
    assert all(opened.closed for opened in parity_site.KNOBS["files"])  # closed by response.close()


async def test_the_pool_bounds_the_views_running_at_once(site: Any, runtime: Any) -> None:
    runtime("auto", threads=2)
    handlers = site()
    gate = threading.Event()
    parity_site.KNOBS.update(running=[], lock=threading.Lock(), gate=gate, gate_timeout=WAIT)
    requests = [asyncio.ensure_future(run_asgi(handlers.ours, Req(path="/blocking/"))) for _ in range(5)]
    await wait_until(lambda: len(parity_site.KNOBS["running"]) == 2, 10, "two views running")
    assert not any(request.done() for request in requests)
    gate.set()
    outcomes = await asyncio.gather(*requests)
    assert [o.body for o in outcomes] == [b"released"] * 5
    assert parity_site.KNOBS["peak"] == 2


async def test_async_to_sync_in_a_view_runs_on_the_workers_loop(site: Any, runtime: Any) -> None:
    runtime("auto")
    handlers = site()
    layer = build_layer({"BACKEND": "memory"})
    parity_site.KNOBS["layer"] = layer
    try:
        ours, _ = await handlers.through_ours(Req(path="/layer-send/"))
        assert ours.body == b"sent"
        message = await asyncio.wait_for(layer.receive("djangohttp.out"), WAIT)
        assert message["type"] == "from.view" and message["thread"] == parity_site.THREADS["view:layer_send"]
    finally:
        await layer.close()


async def test_a_failure_before_the_response_reaches_the_worker_as_an_exception(site: Any, runtime: Any) -> None:
    """Like Django's ASGI handler: a request_started receiver that raises fails the instance (the worker sends 500)."""
    runtime("auto")
    handlers = site()

    def broken(**kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    from django.core.signals import request_started

    request_started.connect(broken, weak=False)
    try:
        with pytest.raises(RuntimeError, match="receiver bug"):
            await run_asgi(handlers.ours, Req(path="/hello/"))
        with pytest.raises(RuntimeError, match="receiver bug"):
            await run_asgi(handlers.asgi, Req(path="/hello/"))
    finally:
        request_started.disconnect(broken)


def test_fast_django_wraps_only_djangos_own_handler_once() -> None:
    from django.core.handlers.asgi import ASGIHandler

    class Custom(ASGIHandler):
        pass

    plain = ASGIHandler()
    assert django_http.fast_django(plain) is django_http.fast_django(plain)
    assert isinstance(django_http.fast_django(plain), django_http.DjangoHttpApplication)
    custom = Custom()
    assert django_http.fast_django(custom) is custom


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="django_http"):
        django_http.configure("fast", 4)
    with pytest.raises(ValueError, match="django_threads"):
        django_http.configure("auto", 0)


async def test_the_remembered_choice_follows_the_urlconf(site: Any, runtime: Any) -> None:
    runtime("auto")
    handlers = site()
    scope = Req(path="/hello/").scope()
    assert handlers.ours.uses_sync_path(scope) and handlers.ours.uses_sync_path(scope)
    with override_settings(ROOT_URLCONF="djangohttp.async_urls"):
        assert not handlers.ours.uses_sync_path(scope)
        outcome = await run_asgi(handlers.ours, Req(path="/hello/"))
        assert outcome.body == b'{"hello": "async"}' and handlers.ours.stats == {"sync": 0, "async": 1}
    assert handlers.ours.uses_sync_path(scope)


@pytest.mark.parametrize("queues_at_call", [False, True], ids=["coroutine-send", "worker-like-send"])
async def test_a_failed_send_fails_the_request_after_every_message_settled(queues_at_call: bool, site: Any, runtime: Any) -> None:
    """Start and body go out together; a layer refusing the start is the request's error.

    Either kind of ``send``: a coroutine function (run as tasks), or one that queues at
    the call and is awaited after, as a worker's is (``queues_at_call``).
    """
    runtime("auto")
    handlers = site()
    sent: list[str] = []
    settled: list[str] = []
    receive = receiving([WHOLE_EMPTY_REQUEST])

    async def outcome(message: dict[str, Any]) -> None:
        settled.append(message["type"])
        if message["type"] == "http.response.start":
            raise RuntimeError("channel full")

    async def coroutine_send(message: dict[str, Any]) -> None:
        sent.append(message["type"])
        await outcome(message)

    def queuing_send(message: dict[str, Any]) -> Any:
        sent.append(message["type"])
        return outcome(message)

    queuing_send.queues_at_call = True  # type: ignore[attr-defined]
    send = queuing_send if queues_at_call else coroutine_send
    with pytest.raises(RuntimeError, match="channel full"):
        await asyncio.wait_for(handlers.ours(Req(path="/hello/").scope(), receive, send), WAIT)
    assert sent == settled == ["http.response.start", "http.response.body"]  # queued in order, both settled


async def test_a_send_refused_at_the_call_still_settles_what_was_queued(site: Any, runtime: Any) -> None:
    runtime("auto")
    handlers = site()
    settled: list[str] = []
    receive = receiving([WHOLE_EMPTY_REQUEST])

    async def outcome(message: dict[str, Any]) -> None:
        settled.append(message["type"])

    def send(message: dict[str, Any]) -> Any:
        if message["type"] == "http.response.body":
            raise TypeError("not serializable")
        return outcome(message)

    send.queues_at_call = True  # type: ignore[attr-defined]
    with pytest.raises(TypeError, match="not serializable"):
        await asyncio.wait_for(handlers.ours(Req(path="/hello/").scope(), receive, send), WAIT)
    assert settled == ["http.response.start"]
