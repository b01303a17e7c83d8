"""The same requests through Django's WSGIHandler, its ASGIHandler and Switchboard's sync path.

What a site relies on must not change when it moves behind the gateway: status, headers
(cookies included), body, the order of middleware hooks and request signals, exceptions
turned into 500s with ``got_request_exception``, and streaming. The three handlers run
under identical settings; Switchboard's is forced onto its sync path (``auto`` picks it
for all of these views) so the comparison is always with the pool path.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from djangohttp import parity_site
from djangohttp.conftest import Req

BOTH, SYNC_ONLY = parity_site.BOTH, parity_site.SYNC_ONLY

CASES = {
    "json": Req(path="/hello/"),
    "echo-get": Req(path="/echo/", query=b"a=1&b=caf%C3%A9&a=2", headers=[(b"x-thing", b"42"), (b"cookie", b"c=3; d=4")]),
    "form-post": Req(
        method="POST", path="/echo/", body=b"name=ada&lang=python",
        headers=[(b"content-type", b"application/x-www-form-urlencoded")],
    ),
    "script-name": Req(path="/echo/", root_path="/mounted"),
    "cookies-and-latin1-header": Req(path="/cookies/"),
    "exception-500": Req(path="/boom/"),
    "exception-handled-by-middleware": Req(path="/handled/"),
    "view-returns-none": Req(path="/none/"),
    "not-found": Req(path="/nowhere/"),
    "big-body": Req(path="/big/"),
    "template-response": Req(path="/template/"),
    "streaming": Req(path="/stream/", query=b"n=4"),
    "bad-host": Req(path="/echo/", headers=[(b"host", b"evil.example")]),
}
STACKS = {"no-middleware": [], "both-capable": [BOTH], "sync-only+both": [SYNC_ONLY, BOTH], "both+sync-only": [BOTH, SYNC_ONLY]}


@pytest.mark.filterwarnings("ignore:StreamingHttpResponse must consume")
@pytest.mark.parametrize("stack", list(STACKS), ids=list(STACKS))
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
async def test_same_response_and_same_trace_as_wsgi_and_asgi(case: str, stack: str, site: Any, runtime: Any) -> None:
    runtime("sync")
    handlers = site(middleware=STACKS[stack])
    req = CASES[case]
    wsgi, wsgi_trace = await handlers.through_wsgi(req)
    asgi, asgi_trace = await handlers.through_asgi(req)
    ours, ours_trace = await handlers.through_ours(req)

    assert ours.status == wsgi.status == asgi.status
    assert ours.header_set() == wsgi.header_set() == asgi.header_set()
    assert ours.body == wsgi.body == asgi.body
    assert ours_trace == wsgi_trace == asgi_trace
    # Framing as Django's ASGI handler does it: 64 KiB body messages, streaming parts
    # each in its own message, ended by an empty one.
    assert [m.get("more_body", False) for m in ours.messages[1:]] == [m.get("more_body", False) for m in asgi.messages[1:]]
    assert ours.chunks == asgi.chunks


async def test_what_the_view_sees_of_the_request_is_the_same(site: Any, runtime: Any) -> None:
    runtime("sync")
    handlers = site()
    req = Req(
        method="POST", path="/echo/", query=b"q=%E2%9C%93", body=b"a=1&a=2&b=%C3%A9",
        headers=[(b"content-type", b"application/x-www-form-urlencoded; charset=utf-8"), (b"x-thing", b"v")],
        root_path="/app",
    )
    throughs = (handlers.through_wsgi, handlers.through_asgi, handlers.through_ours)
    seen = [json.loads((await through(req))[0].body) for through in throughs]
    assert seen[0] == seen[1] == seen[2]
    assert seen[2]["path"] == "/app/echo/" and seen[2]["path_info"] == "/echo/" and seen[2]["script_name"] == "/app"
    assert seen[2]["post"] == {"a": "2", "b": "\u00e9"} and seen[2]["get"] == {"q": "\u2713"}


async def test_exceptions_become_500_with_got_request_exception_and_middleware_order(site: Any, runtime: Any) -> None:
    runtime("sync")
    handlers = site(middleware=[SYNC_ONLY, BOTH])
    outcome, trace = await handlers.through_ours(Req(path="/boom/"))
    assert outcome.status == 500
    assert trace == [
        "signal:request_started",
        "SyncOnly:before",
        "Both:before",
        "SyncOnly:view:boom",
        "Both:view:boom",
        "view:boom",
        "Both:exception:ValueError",
        "SyncOnly:exception:ValueError",
        "signal:got_request_exception",
        "Both:after:500",
        "SyncOnly:after:500",
        "signal:request_finished",
    ]
