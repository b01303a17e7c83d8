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
        inner = self.inner
        return getattr(inner, "routes_by_path", False) is True or getattr(inner, "_path_routing", False) is True

    @property
    def _path_routing(self) -> bool:
        """Channels' name for :attr:`routes_by_path`, for routers written against Channels."""
        return self.routes_by_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        # A copy, so what this middleware adds never leaks into a sibling route's scope.
        return await self.inner(dict(scope), receive, send)
