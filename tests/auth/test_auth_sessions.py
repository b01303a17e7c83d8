"""CookieMiddleware and SessionMiddleware: parsing, lazy stores, saving, bad input."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase
from django.test.utils import override_settings

from switchboard.consumers import (
    AsyncHttpConsumer,
    AsyncWebsocketConsumer,
    CookieMiddleware,
    ProtocolTypeRouter,
    SessionMiddleware,
    SessionMiddlewareStack,
    URLRouter,
)
from switchboard.consumers.sessions import cookies_from_scope


class ScopeSpy:
    """An ASGI app that records the scope it was called with and answers nothing."""

    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scopes.append(scope)


@sync_to_async
def stored_session(key: str) -> dict[str, Any]:
    from django.contrib.sessions.backends.db import SessionStore

    return dict(SessionStore(key).items())


@sync_to_async
def new_stored_session(**data: Any) -> str:
    from django.contrib.sessions.backends.db import SessionStore

    store = SessionStore()
    store.update(data)
    store.save()
    assert store.session_key is not None
    return store.session_key


# -- cookies ------------------------------------------------------------------------------


async def test_cookies_parsed_with_djangos_rules(scope: Any) -> None:
    spy = ScopeSpy()
    await CookieMiddleware(spy)(scope(headers=[(b"cookie", b'a=1; b="two\\054words"; c=x=y; lone')]), None, None)
    # Django's parse_cookie: values unquoted, split at the first "=", a lone word has no name.
    assert spy.scopes[0]["cookies"] == {"a": "1", "b": "two,words", "c": "x=y", "": "lone"}


async def test_several_cookie_headers_are_joined_and_other_headers_ignored(scope: Any) -> None:
    spy = ScopeSpy()
    headers = [(b"host", b"x"), (b"cookie", b"a=1"), (b"Cookie", b"b=2"), (b"x-cookie", b"c=3")]
    await CookieMiddleware(spy)(scope(headers=headers), None, None)
    assert spy.scopes[0]["cookies"] == {"a": "1", "b": "2"}


@pytest.mark.parametrize(
    "raw",
    [
        b"\xff\xfe\x00=\x01;;;;=;=",
        b"sessionid=" + b"x" * 10000,
        b";;;",
        b"",
        "sessionid=é; a=\u2603".encode(),
        b'a="unterminated',
    ],
    ids=["binary", "huge", "separators", "empty", "utf8", "quote"],
)
async def test_bad_cookie_headers_never_crash(raw: bytes, scope: Any) -> None:
    spy = ScopeSpy()
    await CookieMiddleware(spy)(scope(headers=[(b"cookie", raw)]), None, None)
    assert isinstance(spy.scopes[0]["cookies"], dict)


async def test_malformed_header_entries_are_skipped(scope: Any) -> None:
    bad = scope()
    bad["headers"] = [[b"cookie"], "nonsense", [b"cookie", 5], [b"cookie", b"a=1"], ["cookie", "b=2"]]
    assert cookies_from_scope(bad) == {"a": "1", "b": "2"}


async def test_scope_without_headers_passes_through_untouched() -> None:
    spy = ScopeSpy()
    udp_scope = {"type": "udp", "reply_channel": "gateway.t!u"}
    await SessionMiddlewareStack(spy)(udp_scope, None, None)
    assert spy.scopes == [udp_scope]


def test_set_and_delete_cookie_headers_use_djangos_format() -> None:
    message: dict[str, Any] = {"type": "http.response.start", "status": 200, "headers": [[b"content-type", b"text/plain"]]}
    CookieMiddleware.set_cookie(message, "flavour", "mint", max_age=60, httponly=True, samesite="Strict")
    CookieMiddleware.delete_cookie(message, "old")
    assert message["headers"][0] == [b"content-type", b"text/plain"]
    set_flavour = message["headers"][1][1].decode()
    assert message["headers"][1][0] == b"Set-Cookie"
    assert set_flavour.startswith("flavour=mint;") and "Max-Age=60" in set_flavour and "HttpOnly" in set_flavour
    assert "SameSite=Strict" in set_flavour
    assert message["headers"][2][1].decode().startswith('old=""; expires=Thu, 01 Jan 1970 00:00:00 GMT; Max-Age=0')


def test_set_cookie_defaults_to_samesite_lax_in_channels_form() -> None:
    """Regression: set_cookie sent no SameSite by default; Channels sends Lax."""
    message: dict[str, Any] = {}
    CookieMiddleware.set_cookie(message, "Testing-Key", "testing-value")
    assert message == {"headers": [(b"Set-Cookie", b"Testing-Key=testing-value; Path=/; SameSite=lax")]}
    CookieMiddleware.set_cookie(message, "plain", "1", samesite=None)
    assert message["headers"][1] == (b"Set-Cookie", b"plain=1; Path=/")


@pytest.mark.parametrize("samesite", ["Hello", "", 3])
def test_bad_samesite_is_an_assertion_and_a_value_error(samesite: Any) -> None:
    """Regression: a bad samesite raised Django's ValueError only; Channels raises AssertionError."""
    for expected in (AssertionError, ValueError):
        with pytest.raises(expected, match="samesite"):
            CookieMiddleware.set_cookie({}, "k", "v", samesite=samesite)


# -- sessions -----------------------------------------------------------------------------


async def test_session_is_djangos_store_keyed_by_the_cookie_and_lazy(scope: Any) -> None:
    key = await new_stored_session(colour="blue")
    spy = ScopeSpy()
    await SessionMiddlewareStack(spy)(scope(headers=[(b"cookie", f"sessionid={key}".encode())]), None, None)
    session = spy.scopes[0]["session"]
    assert isinstance(session, SessionBase)
    assert session.session_key == key
    assert not hasattr(session, "_session_cache")  # nothing loaded by the middleware
    assert await session.aget("colour") == "blue"  # Django's async API loads it off the loop


@pytest.mark.parametrize(
    "cookie",
    [b"", b"sessionid=short", b"sessionid=" + b"z" * 32, b"sessionid=../../etc/passwd%00", b"sessionid=" + b"\xff" * 40],
    ids=["missing", "too-short", "unknown", "path-like", "binary"],
)
async def test_missing_or_bad_session_cookie_gives_an_empty_session(cookie: bytes, scope: Any) -> None:
    spy = ScopeSpy()
    await SessionMiddlewareStack(spy)(scope(headers=[(b"cookie", cookie)]), None, None)
    session = spy.scopes[0]["session"]
    assert dict(await session.aitems()) == {}
    assert await session.aget("anything") is None


async def test_session_middleware_needs_cookie_middleware(scope: Any) -> None:
    with pytest.raises(ValueError, match="CookieMiddleware"):
        await SessionMiddleware(ScopeSpy())(scope(), None, None)


async def test_inner_session_middleware_keeps_the_outer_session(scope: Any) -> None:
    spy = ScopeSpy()
    await CookieMiddleware(SessionMiddleware(SessionMiddleware(spy)))(scope(), None, None)
    outer = spy.scopes[0]["session"]
    assert isinstance(outer, SessionBase)


def test_stacks_keep_the_routers_application_mapping_visible() -> None:
    router = ProtocolTypeRouter({"websocket": URLRouter([]), "http": ScopeSpy()})
    stack = SessionMiddlewareStack(router)
    assert stack.application_mapping is router.application_mapping
    assert SessionMiddlewareStack(URLRouter([])).routes_by_path


class CountingWebsocket(AsyncWebsocketConsumer):
    """Counts visits in the session; saves only when asked, as Channels consumers do."""

    save: bool = False

    async def connect(self) -> None:
        session = self.scope["session"]
        await session.aset("visits", (await session.aget("visits", 0)) + 1)
        if self.save:
            await session.asave()
        await self.accept()


@pytest.mark.parametrize("save", [True, False])
async def test_websocket_session_changes_persist_only_when_saved(save: bool, run_app: Any, scope: Any) -> None:
    key = await new_stored_session(visits=1)
    app = SessionMiddlewareStack(CountingWebsocket.as_asgi(save=save))
    runner = run_app(app, scope(headers=[(b"cookie", f"sessionid={key}".encode())]))
    await runner.send_input({"type": "websocket.connect"})
    accept = await runner.receive_output()
    assert accept["type"] == "websocket.accept"
    assert "headers" not in accept  # no cookie can ride on a WebSocket
    assert (await stored_session(key))["visits"] == (2 if save else 1)


class SessionHttp(AsyncHttpConsumer):
    """Sets, clears or only reads the session, then answers with the given status."""

    action: str = "set"
    status: int = 200

    async def handle(self, body: bytes) -> None:
        session = self.scope["session"]
        if self.action == "set":
            await session.aset("cart", ["tea"])
        elif self.action == "flush":
            await session.aflush()
        else:
            await session.aget("cart")
        await self.send_response(self.status, b"ok", headers=[(b"content-type", b"text/plain")])


def set_cookies(message: dict[str, Any]) -> list[str]:
    return [value.decode() for name, value in message["headers"] if name.lower() == b"set-cookie"]


async def test_http_response_saves_a_modified_session_and_sets_its_cookie(run_app: Any, scope: Any) -> None:
    runner = run_app(SessionMiddlewareStack(SessionHttp.as_asgi()), scope("http", "/cart/"))
    await runner.send_input({"type": "http.request", "body": b""})
    start = await runner.receive_output()
    (cookie,) = set_cookies(start)
    name, _, rest = cookie.partition("=")
    key = rest.split(";")[0]
    assert name == settings.SESSION_COOKIE_NAME and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    # As Channels: the cookie is the only header the middleware adds (no Vary).
    assert [name.lower() for name, _value in start["headers"]] == [b"content-type", b"set-cookie"]
    assert (await stored_session(key)) == {"cart": ["tea"]}
    assert (await runner.receive_output())["body"] == b"ok"


async def test_http_response_leaves_an_unmodified_session_alone(run_app: Any, scope: Any) -> None:
    key = await new_stored_session(cart=["milk"])
    app = SessionMiddlewareStack(SessionHttp.as_asgi(action="read"))
    runner = run_app(app, scope("http", "/cart/", headers=[(b"cookie", f"sessionid={key}".encode())]))
    await runner.send_input({"type": "http.request", "body": b""})
    assert set_cookies(await runner.receive_output()) == []


async def test_http_server_error_does_not_save_the_session(run_app: Any, scope: Any) -> None:
    runner = run_app(SessionMiddlewareStack(SessionHttp.as_asgi(status=500)), scope("http", "/cart/"))
    await runner.send_input({"type": "http.request", "body": b""})
    assert set_cookies(await runner.receive_output()) == []

    @sync_to_async
    def count() -> int:
        from django.contrib.sessions.models import Session

        return Session.objects.count()

    assert await count() == 0


async def test_http_flushed_session_deletes_the_cookie(run_app: Any, scope: Any) -> None:
    key = await new_stored_session(cart=["milk"])
    app = SessionMiddlewareStack(SessionHttp.as_asgi(action="flush"))
    runner = run_app(app, scope("http", "/cart/", headers=[(b"cookie", f"sessionid={key}".encode())]))
    await runner.send_input({"type": "http.request", "body": b""})
    (cookie,) = set_cookies(await runner.receive_output())
    assert cookie.startswith('sessionid=""; expires=Thu, 01 Jan 1970')
    assert await stored_session(key) == {}


@override_settings(SESSION_COOKIE_NAME="sid", SESSION_EXPIRE_AT_BROWSER_CLOSE=True)
async def test_http_cookie_follows_session_settings(run_app: Any, scope: Any) -> None:
    runner = run_app(SessionMiddlewareStack(SessionHttp.as_asgi()), scope("http", "/cart/"))
    await runner.send_input({"type": "http.request", "body": b""})
    (cookie,) = set_cookies(await runner.receive_output())
    assert cookie.startswith("sid=") and "Max-Age" not in cookie and "expires" not in cookie


class SessionDeletedElsewhere(AsyncHttpConsumer):
    """Changes the session, then another request (a logout) deletes it before the response."""

    async def handle(self, body: bytes) -> None:
        from django.contrib.sessions.backends.db import SessionStore

        session = self.scope["session"]
        await session.aset("cart", ["tea"])
        await session.asave()
        await SessionStore(session.session_key).aflush()
        await session.aset("cart", ["tea", "milk"])
        await self.send_response(200, b"ok")


async def test_interrupted_session_is_suspicious_as_in_channels(run_app: Any, scope: Any) -> None:
    """Regression: Channels raises SuspiciousOperation when the session to save is gone;
    we raised Django's SessionInterrupted only. Now one exception is both."""
    from django.contrib.sessions.exceptions import SessionInterrupted
    from django.core.exceptions import SuspiciousOperation

    runner = run_app(SessionMiddlewareStack(SessionDeletedElsewhere.as_asgi()), scope("http", "/cart/"))
    await runner.send_input({"type": "http.request", "body": b""})
    with pytest.raises(SuspiciousOperation) as caught:
        await runner.receive_output()
    assert isinstance(caught.value, SessionInterrupted)
