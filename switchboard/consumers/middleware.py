"""The base for ASGI middleware around routers and consumers (auth, sessions: later).

Middleware wraps an inner application and may add to the scope before calling it. It
passes through the attributes the rest of Switchboard inspects (``application_mapping``
for the worker, ``routes_by_path`` for ``URLRouter`` nesting), so wrapping a router does
not hide which protocols and channels it serves.
"""

from __future__ import annotations

from typing import Any

from .asgi import ASGIApp, Receive, Scope, Send
from .django_http import fast_django


class BaseMiddleware:
    """Calls the inner application with a copy of the scope; override ``__call__``."""

    def __init__(self, inner: ASGIApp) -> None:
        self.inner = fast_django(inner)  # Django's handler behind middleware is served fast too

    @property
    def application_mapping(self) -> Any:
        return getattr(self.inner, "application_mapping", None)

    @property
    def routes_by_path(self) -> bool:
        return getattr(self.inner, "routes_by_path", False) is True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A copy, so what this middleware adds never leaks into a sibling route's scope.
        await self.inner(dict(scope), receive, send)
