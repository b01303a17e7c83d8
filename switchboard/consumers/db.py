"""Running sync consumer code in a thread without leaking Django database connections.

Django opens one database connection per thread and relies on the request cycle to close
stale ones (``CONN_MAX_AGE``, broken connections). A consumer has no request cycle, so
every hop into a thread closes stale connections before and after the call, as a Django
view would between requests.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar, overload

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections

P = ParamSpec("P")
R = TypeVar("R")


#: True inside applications a ``switchboard.testing`` communicator runs: there the test
#: owns the database connection (Django's ``TestCase`` holds it inside a transaction), and
#: closing it "as stale" between calls would break the test ("connection already closed").
keep_connections: contextvars.ContextVar[bool] = contextvars.ContextVar("switchboard_keep_connections", default=False)


def close_stale_connections() -> None:
    """Close this thread's unusable or expired DB connections (no-op without settings)."""
    if settings.configured and not keep_connections.get():
        close_old_connections()


@overload
def database_sync_to_async(func: Callable[P, R], *, thread_sensitive: bool = True) -> Callable[P, Coroutine[Any, Any, R]]: ...


@overload
def database_sync_to_async(
    func: None = None, *, thread_sensitive: bool = True
) -> Callable[[Callable[P, R]], Callable[P, Coroutine[Any, Any, R]]]: ...


def database_sync_to_async(func: Callable[P, R] | None = None, *, thread_sensitive: bool = True) -> Any:
    """``sync_to_async`` that closes stale DB connections around the call.

    Thread-sensitive by default so ORM calls of one process share Django's one sync
    thread, which is what keeps SQLite and transactions consistent with Django views.
    Usable as ``@database_sync_to_async`` or ``@database_sync_to_async(thread_sensitive=False)``.
    """

    def decorate(function: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
        @functools.wraps(function)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            close_stale_connections()
            try:
                return function(*args, **kwargs)
            finally:
                close_stale_connections()

        return sync_to_async(run, thread_sensitive=thread_sensitive)

    if func is None:
        return decorate
    return decorate(func)
