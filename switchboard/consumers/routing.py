"""Routers: pick the application for a scope by protocol, URL path or channel name.

They are plain ASGI applications, so they nest: a ``ProtocolTypeRouter`` of
``URLRouter``s of consumers. The worker reads ``application_mapping`` from the top
``ProtocolTypeRouter`` (and from its ``"channel"`` entry) to know which pool channels and
named channels to listen to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from asgiref.compatibility import guarantee_single_callable
from django.core.exceptions import ImproperlyConfigured
from django.urls import URLPattern, URLResolver

from .asgi import ASGIApp, Receive, Scope, Send
from .base import AsyncConsumer
from .django_http import fast_django
from .exceptions import RouteNotFound


def _application(app: Any, where: str) -> ASGIApp:
    """``app`` as an ASGI3 callable; a bare consumer class is a common mistake, say so.

    Django's own ASGI handler becomes a :class:`~.django_http.DjangoHttpApplication`,
    which serves sync views in one hop to a reused thread pool (docs/http.md).
    """
    if isinstance(app, type) and issubclass(app, AsyncConsumer):
        raise ImproperlyConfigured(f"{where}: pass {app.__name__}.as_asgi(), not the {app.__name__} class")
    if not callable(app):
        raise ImproperlyConfigured(f"{where}: {app!r} is not an ASGI application")
    return guarantee_single_callable(fast_django(app))


def routes_by_path(app: Any) -> bool:
    """Whether ``app`` routes on the rest of the path (a router, or middleware around one).

    ``routes_by_path`` is our marker; ``_path_routing`` is the one Channels' ``URLRouter``
    sets and Channels users put on their own function middleware around an inner router
    (``app._path_routing = True``), so both are honoured.
    """
    return getattr(app, "routes_by_path", False) is True or getattr(app, "_path_routing", False) is True


class ScopeTypeMissing(KeyError, ValueError):
    """A scope without ``type``: a KeyError as in Channels, a ValueError as bad input is here."""


class ProtocolTypeRouter:
    """Routes on ``scope["type"]``: ``{"http": ..., "websocket": ..., "channel": ...}``."""

    def __init__(self, application_mapping: Mapping[str, Any]) -> None:
        self.application_mapping: dict[str, ASGIApp] = {
            name: _application(app, f"ProtocolTypeRouter[{name!r}]") for name, app in application_mapping.items()
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        if "type" not in scope:
            raise ScopeTypeMissing("type")
        scope_type = scope["type"]
        application = self.application_mapping.get(scope_type) if isinstance(scope_type, str) else None
        if application is None:
            raise ValueError(
                f"No application configured for scope type {scope_type!r} "
                f"(configured: {', '.join(sorted(self.application_mapping))})"
            )
        return await application(scope, receive, send)


class ChannelNameRouter:
    """Routes ``channel`` scopes (named channels a worker reads) on ``scope["channel"]``."""

    def __init__(self, application_mapping: Mapping[str, Any]) -> None:
        self.application_mapping: dict[str, ASGIApp] = {
            name: _application(app, f"ChannelNameRouter[{name!r}]") for name, app in application_mapping.items()
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        if "channel" not in scope:
            raise ValueError(
                "ChannelNameRouter got a scope without a 'channel' key; route it under ProtocolTypeRouter's 'channel' entry only"
            )
        application = self.application_mapping.get(scope["channel"])
        if application is None:
            raise RouteNotFound(f"No application configured for channel {scope['channel']!r}")
        return await application(scope, receive, send)


@dataclass(frozen=True)
class _Route:
    pattern: Any  # django.urls RoutePattern or RegexPattern
    app: ASGIApp
    defaults: dict[str, Any]


@dataclass(frozen=True)
class _Match:
    app: ASGIApp
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    remaining: str


def _prefix_pattern(pattern: Any) -> Any:
    """A copy of a ``path()``/``re_path()`` pattern that matches a path prefix.

    ``path("chat/", URLRouter(...))`` builds an endpoint pattern (whole-path match); an
    inner router needs the same pattern matching only the start, as ``include()`` does.
    """
    return type(pattern)(str(pattern), name=getattr(pattern, "name", None), is_endpoint=False)


def _strip_root(scope: Scope) -> str | None:
    """The path a top-level router matches: ``path`` minus ``root_path`` and leading ``/``.

    Django's URL patterns are written without the leading slash (``"ws/chat/<room>/"``).
    None when the path is not under ``root_path``: the application is mounted there, so a
    path elsewhere is not one of its URLs (Channels and Django refuse it too).
    """
    path = scope.get("path", "")
    root_path = scope.get("root_path", "")
    if root_path:
        root = root_path.rstrip("/")
        # At a segment boundary: "/rootfoo/" is not under "/root".
        if not (path == root or path.startswith(root + "/")):
            return None
        path = path[len(root) :]
    return path[1:] if path.startswith("/") else path


class URLRouter:
    """Routes on the URL path with Django ``path()`` / ``re_path()`` patterns.

    The matched application gets ``scope["url_route"] = {"args": ..., "kwargs": ...}``
    (converted values, plus the pattern's extra ``kwargs``). A ``URLRouter`` or an
    ``include([...])`` under a prefix route nests: the prefix is matched here, the rest of
    the path by the inner router, and the arguments of both are combined. Nothing matching
    raises ``RouteNotFound`` (the worker answers 404 / close 4404).
    """

    routes_by_path = True
    _path_routing = True  # Channels' marker, for middleware written against Channels

    def __init__(self, routes: Sequence[URLPattern | URLResolver]) -> None:
        self.routes = [self._compile(route) for route in routes]

    @staticmethod
    def _compile(route: URLPattern | URLResolver) -> _Route:
        if isinstance(route, URLResolver):
            # include([...]) or include("module"): its pattern already matches a prefix.
            return _Route(route.pattern, URLRouter(route.url_patterns), dict(route.default_kwargs or {}))
        if isinstance(route, URLPattern):
            app = _application(route.callback, f"URLRouter route {str(route.pattern)!r}")
            pattern = _prefix_pattern(route.pattern) if routes_by_path(app) else route.pattern
            return _Route(pattern, app, dict(route.default_args or {}))
        raise ImproperlyConfigured(f"URLRouter routes must be path() or re_path() entries, not {route!r}")

    def resolve(self, path: str) -> _Match | None:
        """The application for ``path`` and its arguments, descending into inner routers."""
        for route in self.routes:
            matched = route.pattern.match(path)
            if matched is None:
                continue
            remaining, args, kwargs = matched
            kwargs = {**kwargs, **route.defaults}
            if isinstance(route.app, URLRouter):
                inner = route.app.resolve(remaining)
                if inner is None:
                    continue  # the prefix matched but nothing under it: try the next route
                return _Match(inner.app, tuple(args) + inner.args, {**kwargs, **inner.kwargs}, inner.remaining)
            return _Match(route.app, tuple(args), kwargs, remaining)
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        path = scope["path_remaining"] if "path_remaining" in scope else _strip_root(scope)
        if path is None:
            raise RouteNotFound(f"Path {scope.get('path')!r} is outside root_path {scope.get('root_path')!r}")
        match = self.resolve(path)
        if match is None:
            raise RouteNotFound(f"No route found for path {scope.get('path', path)!r}")
        outer = scope.get("url_route") or {}
        inner_scope = dict(scope)
        inner_scope["url_route"] = {
            "args": tuple(outer.get("args", ())) + match.args,
            "kwargs": {**outer.get("kwargs", {}), **match.kwargs},
        }
        if routes_by_path(match.app):
            inner_scope["path_remaining"] = match.remaining  # a router behind middleware
        else:
            inner_scope.pop("path_remaining", None)
        return await match.app(inner_scope, receive, send)
