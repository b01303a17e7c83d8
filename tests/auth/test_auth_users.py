"""AuthMiddleware, get_user, login and logout: Django's rules, from consumers."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.test.utils import override_settings
from django.utils.functional import SimpleLazyObject

from switchboard.consumers import (
    AsyncHttpConsumer,
    AsyncJsonWebsocketConsumer,
    AuthMiddleware,
    AuthMiddlewareStack,
    CookieMiddleware,
    ProtocolTypeRouter,
    SessionMiddleware,
    URLRouter,
    WebsocketConsumer,
    login,
    logout,
)
from switchboard.consumers.auth import get_user

PASSWORD = "correct horse battery staple"  # what the new_user fixture sets


class ScopeSpy:
    def __init__(self) -> None:
        self.scopes: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scopes.append(scope)


@sync_to_async
def django_login_cookie(user: Any) -> str:
    """A session made by Django's own test client login: independent of the code under test."""
    from django.test import Client

    client = Client()
    client.force_login(user)
    return str(client.cookies[settings.SESSION_COOKIE_NAME].value)


def cookie_header(key: str) -> list[tuple[bytes, bytes]]:
    return [(b"cookie", f"{settings.SESSION_COOKIE_NAME}={key}".encode())]


async def user_of(scope: dict[str, Any]) -> Any:
    spy = ScopeSpy()
    await AuthMiddlewareStack(spy)(scope, None, None)
    return spy.scopes[0]["user"]


async def test_no_cookie_is_an_anonymous_user_without_touching_storage(scope: Any, monkeypatch: Any) -> None:
    from django.contrib.auth.models import AnonymousUser

    def no_thread_hop(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an empty session needs no storage lookup")

    monkeypatch.setattr("switchboard.consumers.auth.database_sync_to_async", no_thread_hop)
    user = await user_of(scope())
    assert isinstance(user, SimpleLazyObject)
    assert isinstance(user, AnonymousUser)
    assert not user.is_authenticated


async def test_logged_in_session_gives_the_user_readable_from_async_code(new_user: Any, scope: Any) -> None:
    alice = await new_user("alice")
    key = await django_login_cookie(alice)
    user = await user_of(scope(headers=cookie_header(key)))
    # Resolved before the consumer runs: reading it here, on the event loop, needs no query.
    assert user.is_authenticated and user.pk == alice.pk and user.username == "alice"


@pytest.mark.parametrize("cookie", ["nonsense", "x" * 32, "\u2603" * 40])
async def test_unknown_or_bad_session_key_is_anonymous(cookie: str, scope: Any) -> None:
    user = await user_of(scope(headers=[(b"cookie", f"sessionid={cookie}".encode())]))
    assert not user.is_authenticated


async def test_password_change_logs_the_session_out(new_user: Any, scope: Any) -> None:
    alice = await new_user("alice")
    key = await django_login_cookie(alice)

    @sync_to_async
    def change_password() -> None:
        alice.set_password("something else entirely")
        alice.save()

    await change_password()
    assert not (await user_of(scope(headers=cookie_header(key)))).is_authenticated


async def test_backend_no_longer_configured_is_anonymous(new_user: Any, scope: Any) -> None:
    key = await django_login_cookie(await new_user("alice"))
    with override_settings(AUTHENTICATION_BACKENDS=["django.contrib.auth.backends.RemoteUserBackend"]):
        assert not (await user_of(scope(headers=cookie_header(key)))).is_authenticated


async def test_unparsable_user_id_in_session_is_anonymous(scope: Any) -> None:
    @sync_to_async
    def session_with_bad_id() -> str:
        from django.contrib.sessions.backends.db import SessionStore

        store = SessionStore()
        store[SESSION_KEY] = "not-a-number"
        store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        store[HASH_SESSION_KEY] = "x"
        store.save()
        assert store.session_key is not None
        return store.session_key

    key = await session_with_bad_id()
    assert not (await user_of(scope(headers=cookie_header(key)))).is_authenticated


async def test_auth_middleware_needs_a_session(scope: Any) -> None:
    with pytest.raises(ValueError, match="SessionMiddleware"):
        await CookieMiddleware(AuthMiddleware(ScopeSpy()))(scope(), None, None)


async def test_outer_user_is_kept_and_headerless_scopes_pass(scope: Any) -> None:
    spy = ScopeSpy()
    marker = object()
    await AuthMiddlewareStack(spy)(scope(user=marker), None, None)
    assert spy.scopes[0]["user"] is marker
    await AuthMiddlewareStack(spy)({"type": "channel", "channel": "thumbnails"}, None, None)
    assert spy.scopes[1] == {"type": "channel", "channel": "thumbnails"}


async def test_get_user_looks_up_again(new_user: Any, scope: Any) -> None:
    key = await django_login_cookie(await new_user("alice"))
    spy = ScopeSpy()
    await AuthMiddlewareStack(spy)(scope(headers=cookie_header(key)), None, None)
    fresh = await get_user(spy.scopes[0])
    assert fresh.username == "alice"
    with pytest.raises(ValueError, match="SessionMiddleware"):
        await get_user(scope())


def test_stack_keeps_the_application_mapping_visible() -> None:
    router = ProtocolTypeRouter({"websocket": URLRouter([])})
    assert AuthMiddlewareStack(router).application_mapping is router.application_mapping
    assert AuthMiddlewareStack(URLRouter([])).routes_by_path


class WhoAmI(AsyncJsonWebsocketConsumer):
    """Answers every frame with who it is; logs in or out on request."""

    async def connect(self) -> None:
        await self.accept()
        await self.send_json({"user": str(self.scope["user"]), "authenticated": self.scope["user"].is_authenticated})

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if content.get("login"):
            from django.contrib.auth import aauthenticate

            user = await aauthenticate(username=content["login"], password=content["password"])
            if user is None:
                await self.send_json({"error": "bad credentials"})
                return
            await login(self.scope, user)
        elif content.get("logout"):
            await logout(self.scope)
        await self.send_json({
            "user": str(self.scope["user"]),
            "authenticated": self.scope["user"].is_authenticated,
            "session": self.scope["session"].session_key,
        })


async def test_login_and_logout_from_a_websocket_consumer(new_user: Any, run_app: Any, scope: Any) -> None:
    await new_user("alice")
    runner = run_app(AuthMiddlewareStack(WhoAmI.as_asgi()), scope())
    await runner.send_input({"type": "websocket.connect"})
    assert (await runner.receive_output())["type"] == "websocket.accept"
    assert '"authenticated": false' in (await runner.receive_output())["text"]

    await runner.send_input({"type": "websocket.receive", "text": '{"login": "alice", "password": "wrong"}'})
    assert "bad credentials" in (await runner.receive_output())["text"]

    await runner.send_input({"type": "websocket.receive", "text": f'{{"login": "alice", "password": "{PASSWORD}"}}'})
    reply = (await runner.receive_output())["text"]
    assert '"user": "alice", "authenticated": true' in reply
    key = reply.rsplit('"session": "', 1)[1].split('"')[0]

    # login() saved the session: a second connection with that cookie is alice too.
    assert (await user_of(scope(headers=cookie_header(key)))).username == "alice"

    await runner.send_input({"type": "websocket.receive", "text": '{"logout": true}'})
    assert '"authenticated": false' in (await runner.receive_output())["text"]
    assert not (await user_of(scope(headers=cookie_header(key)))).is_authenticated


async def test_login_into_another_users_session_starts_a_fresh_one(new_user: Any, scope: Any) -> None:
    alice, bob = await new_user("alice"), await new_user("bob")
    key = await django_login_cookie(alice)
    spy = ScopeSpy()
    await AuthMiddlewareStack(spy)(scope(headers=cookie_header(key)), None, None)
    await login(spy.scopes[0], bob)
    new_key = spy.scopes[0]["session"].session_key
    assert new_key != key
    assert (await user_of(scope(headers=cookie_header(new_key)))).username == "bob"
    assert not (await user_of(scope(headers=cookie_header(key)))).is_authenticated


async def test_login_needs_a_session_and_a_user(scope: Any) -> None:
    with pytest.raises(ValueError, match="SessionMiddleware"):
        await login(scope(), object())
    spy = ScopeSpy()
    await CookieMiddleware(SessionMiddleware(spy))(scope(), None, None)
    with pytest.raises(ValueError, match="User must be passed"):
        await login(spy.scopes[0])
    await logout(spy.scopes[0])  # logging nobody out is fine
    assert "user" not in spy.scopes[0]


async def test_login_into_a_scope_without_a_user(new_user: Any, scope: Any) -> None:
    """Regression: a scope with a session but no "user" (no AuthMiddleware) used to raise
    AttributeError after login() had already saved the session."""
    alice = await new_user("alice")
    spy = ScopeSpy()
    await CookieMiddleware(SessionMiddleware(spy))(scope(), None, None)
    session_scope = spy.scopes[0]
    assert "user" not in session_scope
    await login(session_scope, alice)
    assert session_scope["user"] == alice
    key = session_scope["session"].session_key
    assert (await user_of(scope(headers=cookie_header(key)))).username == "alice"


class LoginView(AsyncHttpConsumer):
    """An HTTP consumer that logs the posted user in: the session cookie rides on its response."""

    async def handle(self, body: bytes) -> None:
        from django.contrib.auth import aauthenticate

        username, _, password = body.decode().partition(":")
        user = await aauthenticate(username=username, password=password)
        if user is None:
            await self.send_response(403, b"no")
            return
        await login(self.scope, user)
        await self.send_response(200, b"welcome")


async def test_login_from_an_http_consumer_sets_the_new_session_cookie(new_user: Any, run_app: Any, scope: Any) -> None:
    await new_user("alice")
    runner = run_app(AuthMiddlewareStack(LoginView.as_asgi()), scope("http", "/login/", method="POST"))
    await runner.send_input({"type": "http.request", "body": f"alice:{PASSWORD}".encode()})
    start = await runner.receive_output()
    assert start["status"] == 200
    (cookie,) = [value.decode() for name, value in start["headers"] if name.lower() == b"set-cookie"]
    key = cookie.split("=", 1)[1].split(";")[0]
    assert (await user_of(scope(headers=cookie_header(key)))).username == "alice"


class SyncWhoAmI(WebsocketConsumer):
    """A sync consumer reads the user in Django's sync thread, as a view would."""

    seen: list[Any] | None = None

    def connect(self) -> None:
        assert self.seen is not None
        self.seen.append((self.scope["user"].username, threading.current_thread() is threading.main_thread()))
        self.accept()


async def test_sync_consumer_reads_the_user(new_user: Any, run_app: Any, scope: Any) -> None:
    key = await django_login_cookie(await new_user("alice"))
    seen: list[Any] = []
    runner = run_app(AuthMiddlewareStack(SyncWhoAmI.as_asgi(seen=seen)), scope(headers=cookie_header(key)))
    await runner.send_input({"type": "websocket.connect"})
    assert (await runner.receive_output())["type"] == "websocket.accept"
    assert seen == [("alice", False)]
