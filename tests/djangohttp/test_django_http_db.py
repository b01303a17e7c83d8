"""Database connections on Switchboard's pool path behave as under WSGI.

Django closes a request's connections in ``request_started`` and ``request_finished``
(``close_old_connections``): with ``CONN_MAX_AGE = 0`` each request gets a fresh one and
it is closed when the response is; with a persistent setting a thread keeps its connection
for the next request. That only works when the view and both signals run in the same
thread and that thread serves the next request, as a WSGI server's threads do and as
Switchboard's pool threads do. Each test adds a SQLite database of its own (a real file,
so closing is real) as an extra alias, and serves from one pool thread and one WSGI
thread so "the same thread" is certain.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from django.db import connections

from djangohttp import parity_site
from djangohttp.conftest import WAIT, Outcome, Req, run_asgi, run_wsgi
from switchboard.consumers import django_http

_numbers = itertools.count()


@pytest.fixture
def database(tmp_path: Path) -> Iterator[Callable[[int | None], str]]:
    """``database(conn_max_age)``: a new SQLite file as a new alias; its name."""
    added: list[str] = []

    def add(conn_max_age: int | None) -> str:
        alias = f"djangohttp{next(_numbers)}"
        path = str(tmp_path / f"{alias}.sqlite3")
        config = {"ENGINE": "django.db.backends.sqlite3", "NAME": path, "CONN_MAX_AGE": conn_max_age}
        connections.settings[alias] = connections.configure_settings({"default": {}, alias: config})[alias]
        added.append(alias)
        parity_site.KNOBS["alias"] = alias
        return alias

    yield add
    for alias in added:
        del connections.settings[alias]


def connection_state(alias: str) -> Any:
    """In the calling thread: the DB-API connection object of ``alias``, or None when closed."""
    return connections[alias].connection


class OneThread:
    """A WSGI server with one thread, and a way to look at that thread's connections."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(1)

    async def serve(self, handler: Any, req: Req) -> Outcome:
        return await asyncio.wait_for(asyncio.wrap_future(self.pool.submit(run_wsgi, handler, req)), WAIT)

    async def state(self, alias: str) -> Any:
        return await asyncio.wrap_future(self.pool.submit(connection_state, alias))

    def close(self, alias: str) -> None:
        self.pool.submit(lambda: connections[alias].close()).result()
        self.pool.shutdown()


async def pool_state(alias: str) -> Any:
    """The connection of ``alias`` in Switchboard's (one) pool thread, after its queued work."""
    return await asyncio.wait_for(asyncio.wrap_future(django_http.RUNTIME.pool().submit(connection_state, alias)), WAIT)


async def test_conn_max_age_0_closes_the_connection_with_each_response(site: Any, runtime: Any, database: Any) -> None:
    runtime("auto", threads=1)
    handlers = site()
    wsgi = OneThread()
    alias = database(0)
    try:
        for _ in range(2):
            assert (await wsgi.serve(handlers.wsgi, Req(path="/db/"))).status == 200
            assert await wsgi.state(alias) is None
            assert (await run_asgi(handlers.ours, Req(path="/db/"))).status == 200
            assert await pool_state(alias) is None
    finally:
        wsgi.close(alias)


async def test_a_persistent_connection_serves_the_next_request_of_the_same_thread(site: Any, runtime: Any, database: Any) -> None:
    runtime("auto", threads=1)
    handlers = site()
    wsgi = OneThread()
    alias = database(None)  # never expires
    try:
        first = json.loads((await wsgi.serve(handlers.wsgi, Req(path="/db/"))).body)
        second = json.loads((await wsgi.serve(handlers.wsgi, Req(path="/db/"))).body)
        assert first["connection"] == second["connection"] == id(await wsgi.state(alias))

        first = json.loads((await run_asgi(handlers.ours, Req(path="/db/"))).body)
        second = json.loads((await run_asgi(handlers.ours, Req(path="/db/"))).body)
        assert first["thread"] == second["thread"]
        assert first["connection"] == second["connection"] == id(await pool_state(alias))
    finally:
        wsgi.close(alias)
        await asyncio.wrap_future(django_http.RUNTIME.pool().submit(lambda: connections[alias].close()))


async def test_a_view_that_fails_after_its_query_still_closes_the_connection(site: Any, runtime: Any, database: Any) -> None:
    runtime("auto", threads=1)
    handlers = site()
    alias = database(0)
    outcome = await run_asgi(handlers.ours, Req(path="/db/", query=b"fail=1"))
    assert outcome.status == 500
    assert await pool_state(alias) is None


async def test_an_expired_persistent_connection_is_replaced_at_the_next_request(site: Any, runtime: Any, database: Any) -> None:
    """CONN_MAX_AGE counts from the connection's start; once over, request_started closes it."""
    runtime("auto", threads=1)
    handlers = site()
    alias = database(3600)
    first = json.loads((await run_asgi(handlers.ours, Req(path="/db/"))).body)
    assert first["connection"] == id(await pool_state(alias))

    def expire() -> None:
        connections[alias].close_at = 0.0  # what an hour later looks like to close_if_unusable_or_obsolete

    await asyncio.wrap_future(django_http.RUNTIME.pool().submit(expire))
    kept = await pool_state(alias)  # held here, so its id cannot be reused by the new one
    assert kept is not None
    second = json.loads((await run_asgi(handlers.ours, Req(path="/db/"))).body)
    assert second["connection"] != id(kept)
    assert second["connection"] == id(await pool_state(alias))
    await asyncio.wrap_future(django_http.RUNTIME.pool().submit(lambda: connections[alias].close()))
