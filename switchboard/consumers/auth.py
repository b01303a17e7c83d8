"""``scope["user"]`` from the Django session, and ``login`` / ``logout`` for consumers.

The Channels API: ``AuthMiddlewareStack(inner)`` is ``CookieMiddleware(SessionMiddleware(
AuthMiddleware(inner)))``, and a consumer reads ``self.scope["user"]`` as a view reads
``request.user``. The user is looked up with ``django.contrib.auth.get_user`` itself, so the
rules are Django's: the session's backend must still be in ``AUTHENTICATION_BACKENDS``, a
password change (session hash mismatch) logs the session out, and nobody logged in means an
``AnonymousUser``.

``scope["user"]`` is a ``SimpleLazyObject`` like ``request.user``. ``AuthMiddleware``
resolves it before the consumer runs — off the event loop, through
``database_sync_to_async`` — because async consumers read it in ``connect()`` without
awaiting (the Channels idiom) and an ORM query on the event loop would raise. A scope whose
session is empty (no session cookie) resolves to ``AnonymousUser`` without any thread hop
or storage access, so anonymous visitors cost nothing. ``await get_user(scope)`` looks the
user up again.

Django auth models are imported inside functions only: importing this module must work in
projects without ``django.contrib.auth`` installed (the package exports it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.contrib import auth as django_auth
from django.core.exceptions import ValidationError
from django.utils.functional import SimpleLazyObject, empty

from .asgi import ASGIApp, Receive, Scope, Send
from .db import database_sync_to_async
from .middleware import BaseMiddleware
from .sessions import CookieMiddleware, SessionMiddleware, has_headers

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.contrib.auth.models import AnonymousUser
    from django.contrib.sessions.backends.base import SessionBase


class ScopeRequest:
    """The parts of an ``HttpRequest`` Django's auth functions use, taken from a scope.

    ``get_user``, ``login`` and ``logout`` only need ``session``, ``user`` and ``META``;
    signal receivers (``user_logged_in``) get this object as ``request``, with the client
    address and the headers where a view's receivers would look for them.
    """

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self.session: SessionBase = scope["session"]
        self.COOKIES: dict[str, str] = dict(scope.get("cookies") or {})
        self.path: str = str(scope.get("path", ""))
        self.method: str | None = scope.get("method")
        self.META: dict[str, Any] = _meta(scope)
        if "user" in scope:
            self.user = scope["user"]


def _meta(scope: Scope) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    client = scope.get("client")
    if isinstance(client, (list, tuple)) and client:
        meta["REMOTE_ADDR"] = str(client[0])
    for pair in scope.get("headers") or ():
        if isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(p, bytes) for p in pair):
            name = "HTTP_" + pair[0].decode("latin-1").upper().replace("-", "_")
            meta[name] = pair[1].decode("latin-1")
    return meta


def _session_of(scope: Scope) -> SessionBase:
    if "session" not in scope:
        # Channels' wording, so tests ported from Channels that match on it keep passing.
        raise ValueError(
            "Cannot find session in scope. You should wrap your consumer in SessionMiddleware (or AuthMiddlewareStack)."
        )
    session: SessionBase = scope["session"]
    return session


def _anonymous() -> AnonymousUser:
    from django.contrib.auth.models import AnonymousUser

    return AnonymousUser()


def user_from_session(session: SessionBase) -> AbstractBaseUser | AnonymousUser:
    """``django.contrib.auth.get_user`` for a session (sync: it may query the database).

    A user id the user model cannot parse is no user at all, not an error: a session is
    server-side data, but a custom or cookie-based engine should not crash a connection.
    """
    try:
        user: AbstractBaseUser | AnonymousUser = django_auth.get_user(_SessionOnly(session))
    except ValidationError:
        return _anonymous()
    return user


class _SessionOnly:
    """What ``get_user`` reads from a request: just the session."""

    def __init__(self, session: SessionBase) -> None:
        self.session = session


async def get_user(scope: Scope) -> AbstractBaseUser | AnonymousUser:
    """The user of the scope's session, looked up off the event loop.

    An empty session (no session cookie) needs no lookup: ``AnonymousUser`` at once.
    """
    session = _session_of(scope)
    if session.is_empty():
        return _anonymous()
    return await database_sync_to_async(user_from_session)(session)


class UserLazyObject(SimpleLazyObject):
    """``scope["user"]``: resolves itself with ``get_user`` on first use, like ``request.user``.

    ``AuthMiddleware`` resolves it before the consumer runs; touching it unresolved from
    sync code (a thread) looks the user up there.
    """

    def __init__(self, session: SessionBase) -> None:
        super().__init__(lambda: user_from_session(session))

    @property
    def is_resolved(self) -> bool:
        return self._wrapped is not empty


class AuthMiddleware(BaseMiddleware):
    """Adds ``scope["user"]``; must run inside ``SessionMiddleware``.

    A scope that already has a user (an outer ``AuthMiddleware``) passes through untouched,
    and so does a scope without headers (no cookies, no session, no user).
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if "user" in scope or not has_headers(scope):
            await self.inner(scope, receive, send)
            return
        session = _session_of(scope)
        user = UserLazyObject(session)
        await self.resolve(user, scope)
        await self.inner({**scope, "user": user}, receive, send)

    async def resolve(self, user: UserLazyObject, scope: Scope) -> None:
        """Look the user up before the consumer runs, so async code can read it directly."""
        if not user.is_resolved:
            user._wrapped = await get_user(scope)


def AuthMiddlewareStack(inner: ASGIApp) -> CookieMiddleware:  # Channels' name and casing
    """``CookieMiddleware(SessionMiddleware(AuthMiddleware(inner)))``: the usual stack."""
    return CookieMiddleware(SessionMiddleware(AuthMiddleware(inner)))


async def login(scope: Scope, user: Any = None, backend: str | None = None) -> None:
    """Log ``user`` in on the scope's session, as ``django.contrib.auth.login`` does.

    Rotates the session key (or flushes the session when it belonged to another user),
    stores the user id, backend and session hash, sends ``user_logged_in`` and sets
    ``scope["user"]``. Unlike Channels, the session is also saved, because ``cycle_key``
    has already moved the stored session to a new key: an unsaved login would leave the
    session without its user. (Saving again, as Channels code does, is harmless.)

    Over a WebSocket the browser's cookie cannot be updated, so it keeps naming the old
    key: log users in through an HTTP view when other pages should see the login.
    """
    session = _session_of(scope)
    if user is None:
        user = scope.get("user")
    if user is None:
        raise ValueError("User must be passed as an argument or must be present in the scope.")
    await database_sync_to_async(_login)(scope, session, user, backend)


def _login(scope: Scope, session: SessionBase, user: Any, backend: str | None) -> None:
    request = ScopeRequest(scope)
    django_auth.login(request, user, backend)
    session.save()
    # Django's login() sets request.user only when the request had one; the scope gets
    # the logged-in user either way (a scope without "user" is not wrapped in AuthMiddleware).
    scope["user"] = user


async def logout(scope: Scope) -> None:
    """Log the scope's user out: ``user_logged_out`` (when one is logged in), flush the session,
    ``AnonymousUser``.

    Flushing deletes the stored session, so there is nothing left to save.
    """
    _session_of(scope)
    await database_sync_to_async(_logout)(scope)


def _logout(scope: Scope) -> None:
    user = scope.get("user")
    if user is None or not getattr(user, "is_authenticated", False):
        # Nobody is logged in on this scope: as Channels, no user_logged_out signal (Django's
        # logout() would send one with user=None), just a fresh session.
        scope["session"].flush()
        if "user" in scope:
            scope["user"] = _anonymous()
        return
    request = ScopeRequest(scope)
    django_auth.logout(request)
    scope["user"] = request.user
