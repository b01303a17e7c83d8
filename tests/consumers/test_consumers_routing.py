"""Routers: protocol type, URL path (Django patterns, nesting), channel name."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.urls import include, path, re_path

from switchboard.consumers import (
    AsyncWebsocketConsumer,
    BaseMiddleware,
    ChannelNameRouter,
    ProtocolTypeRouter,
    RouteNotFound,
    URLRouter,
)
from switchboard.gateway.worker import channel_names_of, protocols_of


class Probe:
    """An ASGI app recording the scope it was called with."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.scopes: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scopes.append(scope)

    @property
    def scope(self) -> dict[str, Any]:
        assert len(self.scopes) == 1, self.scopes
        return self.scopes[0]


async def nothing() -> dict[str, Any]:
    raise AssertionError("router apps in these tests never receive")


async def discard(message: dict[str, Any]) -> None:
    raise AssertionError("router apps in these tests never send")


async def call(app: Any, scope: dict[str, Any]) -> None:
    await app(scope, nothing, discard)


def ws(path_: str, **extra: Any) -> dict[str, Any]:
    return {"type": "websocket", "path": path_, **extra}


# -- URLRouter ---------------------------------------------------------------------------


async def test_path_converters_and_extra_kwargs() -> None:
    room, item, other = Probe("room"), Probe("item"), Probe("other")
    router = URLRouter(
        [
            path("ws/chat/<str:room_name>/", room),
            path("items/<int:pk>/", item, kwargs={"view": "detail"}),
            path("items/<slug:name>/", other),
        ]
    )
    await call(router, ws("/ws/chat/lobby/"))
    assert room.scope["url_route"] == {"args": (), "kwargs": {"room_name": "lobby"}}
    await call(router, ws("/items/42/"))
    assert item.scope["url_route"] == {"args": (), "kwargs": {"pk": 42, "view": "detail"}}
    # int does not convert "abc": the next route gets a chance.
    await call(router, ws("/items/abc/"))
    assert other.scope["url_route"]["kwargs"] == {"name": "abc"}


async def test_re_path_named_and_positional_groups() -> None:
    named, positional = Probe("named"), Probe("positional")
    router = URLRouter(
        [
            re_path(r"^room/(?P<room>\w+)/$", named),
            re_path(r"^page/(\d+)/(\d+)/$", positional),
        ]
    )
    await call(router, ws("/room/blue/"))
    assert named.scope["url_route"] == {"args": (), "kwargs": {"room": "blue"}}
    await call(router, ws("/page/3/7/"))
    assert positional.scope["url_route"] == {"args": ("3", "7"), "kwargs": {}}


async def test_endpoint_routes_match_the_whole_path_only() -> None:
    router = URLRouter([path("chat/", Probe("chat"))])
    with pytest.raises(RouteNotFound):
        await call(router, ws("/chat/extra/"))


async def test_no_match_raises_route_not_found_which_is_a_value_error() -> None:
    router = URLRouter([path("a/", Probe("a"))])
    with pytest.raises(RouteNotFound, match="/nowhere/") as caught:
        await call(router, ws("/nowhere/"))
    assert isinstance(caught.value, ValueError)


async def test_nested_routers_combine_prefix_and_inner_arguments() -> None:
    user, fallback = Probe("user"), Probe("fallback")
    router = URLRouter(
        [
            path(
                "api/v<int:version>/",
                URLRouter([path("users/<slug:name>/", user)]),
                kwargs={"api": True},
            ),
            # The nested router above matches the prefix but not "api/v1/other/": fall through.
            re_path(r"^api/", fallback),
        ]
    )
    await call(router, ws("/api/v2/users/ada/"))
    assert user.scope["url_route"] == {"args": (), "kwargs": {"version": 2, "api": True, "name": "ada"}}
    assert "path_remaining" not in user.scope
    await call(router, ws("/api/v1/other/"))
    assert fallback.scope["url_route"] == {"args": (), "kwargs": {}}


async def test_include_style_nesting() -> None:
    leaf = Probe("leaf")
    router = URLRouter([path("rooms/<int:floor>/", include([path("<str:room>/", leaf)]))])
    await call(router, ws("/rooms/3/kitchen/"))
    assert leaf.scope["url_route"]["kwargs"] == {"floor": 3, "room": "kitchen"}


async def test_root_path_is_stripped_before_matching() -> None:
    leaf = Probe("leaf")
    router = URLRouter([path("ws/<str:room>/", leaf)])
    await call(router, ws("/prefix/ws/hall/", root_path="/prefix"))
    assert leaf.scope["url_route"]["kwargs"] == {"room": "hall"}
    assert leaf.scope["path"] == "/prefix/ws/hall/"  # the scope path itself is untouched


async def test_router_behind_middleware_routes_the_remaining_path() -> None:
    class Tagging(BaseMiddleware):
        async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
            scope = dict(scope, tagged=True)
            await self.inner(scope, receive, send)

    leaf, sibling = Probe("leaf"), Probe("sibling")
    router = URLRouter(
        [
            path("secure/<str:area>/", Tagging(URLRouter([path("doc/<int:pk>/", leaf)]))),
            path("open/", sibling),
        ]
    )
    await call(router, ws("/secure/hr/doc/9/"))
    assert leaf.scope["tagged"] is True
    assert leaf.scope["url_route"]["kwargs"] == {"area": "hr", "pk": 9}
    assert "path_remaining" not in leaf.scope
    await call(router, ws("/open/"))
    assert "tagged" not in sibling.scope


def test_consumer_class_instead_of_as_asgi_is_refused() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"as_asgi\(\)"):
        URLRouter([path("ws/", AsyncWebsocketConsumer)])
    with pytest.raises(ImproperlyConfigured, match=r"as_asgi\(\)"):
        ProtocolTypeRouter({"websocket": AsyncWebsocketConsumer})


async def test_url_router_runs_consumers_with_url_route(run_app: Any) -> None:
    class Room(AsyncWebsocketConsumer):
        async def connect(self) -> None:
            await self.accept()
            await self.send(text_data=f"welcome to {self.scope['url_route']['kwargs']['room']}")

    router = URLRouter([path("ws/<str:room>/", Room.as_asgi())])
    runner = run_app(router, {"type": "websocket", "path": "/ws/den/", "reply_channel": "gateway.t!r"})
    await runner.send_input({"type": "websocket.connect"})
    assert (await runner.receive_output())["type"] == "websocket.accept"
    assert (await runner.receive_output())["text"] == "welcome to den"


# -- ProtocolTypeRouter -----------------------------------------------------------------


async def test_protocol_type_router_dispatches_on_scope_type() -> None:
    http_app, ws_app = Probe("http"), Probe("ws")
    router = ProtocolTypeRouter({"http": http_app, "websocket": ws_app})
    await call(router, {"type": "http", "path": "/"})
    await call(router, ws("/"))
    assert http_app.scope["type"] == "http"
    assert ws_app.scope["type"] == "websocket"
    assert set(router.application_mapping) == {"http", "websocket"}


async def test_protocol_type_router_unknown_type_is_a_value_error() -> None:
    router = ProtocolTypeRouter({"http": Probe("http")})
    with pytest.raises(ValueError, match="'mqtt'"):
        await call(router, {"type": "mqtt"})


# -- ChannelNameRouter ---------------------------------------------------------------


async def test_channel_name_router() -> None:
    thumbs, mail = Probe("thumbs"), Probe("mail")
    router = ChannelNameRouter({"thumbnails": thumbs, "mail-out": mail})
    await call(router, {"type": "channel", "channel": "thumbnails"})
    assert thumbs.scope["channel"] == "thumbnails" and not mail.scopes
    assert list(router.application_mapping) == ["thumbnails", "mail-out"]
    with pytest.raises(RouteNotFound, match="'nope'"):
        await call(router, {"type": "channel", "channel": "nope"})
    with pytest.raises(ValueError, match="without a 'channel' key"):
        await call(router, {"type": "channel"})


def test_worker_reads_protocols_and_channel_names_from_routers() -> None:
    application = ProtocolTypeRouter(
        {
            "http": URLRouter([path("x/", Probe("x"))]),
            "websocket": BaseMiddleware(URLRouter([path("y/", Probe("y"))])),
            "channel": ChannelNameRouter({"thumbnails": Probe("t"), "mail": Probe("m")}),
        }
    )
    assert protocols_of(application) == ["http", "websocket"]
    assert channel_names_of(application) == ["thumbnails", "mail"]
    # Middleware around the top router does not hide what it routes.
    assert protocols_of(BaseMiddleware(application)) == ["http", "websocket"]
    assert channel_names_of(BaseMiddleware(application)) == ["thumbnails", "mail"]


# -- Channels' routing behaviours a ported app relies on (issue 15) ---------------------


class Returns:
    """An application that records its scope and returns a value, as Channels' tests use."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self.scope: dict[str, Any] | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        self.scope = scope
        return self.value


async def test_function_middleware_marked_path_routing_nests_like_a_router() -> None:
    """Regression: middleware written as a function around an inner URLRouter, marked with
    Channels' ``_path_routing``, routes the rest of the path (it used to be matched as an
    endpoint, so nothing under it was found)."""
    page = Returns("page")
    inner = URLRouter([path("test/<int:page>/", page)])

    def middleware(app: Any) -> Any:
        async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> Any:
            return await app(scope, receive, send)

        wrapped._path_routing = True  # type: ignore[attr-defined]
        return wrapped

    outer = URLRouter([path("number/<int:number>/", middleware(inner))])
    assert await outer({"type": "http", "path": "/number/42/test/3/"}, None, None) == "page"
    assert page.scope is not None and page.scope["url_route"] == {"args": (), "kwargs": {"number": 42, "page": 3}}
    for unmatched in ("/number/42/test/3/more/", "/number/42/other/"):
        with pytest.raises(RouteNotFound):
            await outer({"type": "http", "path": unmatched}, None, None)


async def test_path_outside_root_path_is_refused() -> None:
    """Regression: a path not under root_path used to be routed as if it were."""
    router = URLRouter([path("", Returns("home")), path("foo/", Returns("foo"))])
    assert await router({"type": "http", "path": "/root/foo/", "root_path": "/root"}, None, None) == "foo"
    for outside in ("/", "/foo/", "/rootfoo/"):
        with pytest.raises(RouteNotFound, match="outside root_path"):
            await router({"type": "http", "path": outside, "root_path": "/root"}, None, None)
    nested = URLRouter([path("", URLRouter([path("prefix/stuff/", Returns("stuff"))]))])
    assert await nested({"type": "http", "path": "/root/prefix/stuff/", "root_path": "/root"}, None, None) == "stuff"
    with pytest.raises(RouteNotFound):  # root_path is stripped once, by the outermost router
        await nested({"type": "http", "path": "/root/root/prefix/stuff/", "root_path": "/root"}, None, None)


async def test_scope_without_type_is_a_key_error() -> None:
    """Regression: Channels raises KeyError for a scope without "type"; so do we (also a ValueError)."""
    router = ProtocolTypeRouter({"http": Returns("http")})
    with pytest.raises(KeyError):
        await router({"path": "/"}, None, None)
    with pytest.raises(ValueError):
        await router({"path": "/"}, None, None)


async def test_routers_return_what_the_application_returns() -> None:
    router = ProtocolTypeRouter({"http": URLRouter([path("x/", Returns(7))]), "channel": ChannelNameRouter({"c": Returns(8)})})
    assert await router({"type": "http", "path": "/x/"}, None, None) == 7
    assert await router({"type": "channel", "channel": "c"}, None, None) == 8
