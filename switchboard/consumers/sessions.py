"""Cookies and Django sessions in the scope, as Channels' ``SessionMiddlewareStack`` gives them.

``CookieMiddleware`` parses the ``Cookie`` header into ``scope["cookies"]`` with Django's own
parser, so a consumer sees exactly the cookies a Django view would. ``SessionMiddleware``
puts a session store of ``settings.SESSION_ENGINE`` in ``scope["session"]``, keyed by the
``SESSION_COOKIE_NAME`` cookie.

The store is Django's, and lazy as Django's is: building it touches no storage; it loads on
first use. Sync consumers use it like ``request.session``; async code uses Django's async
session API (Django 5.0+: ``await session.aget(key)``, ``aset``, ``asave()``...) or runs sync
code through ``database_sync_to_async``. ``AuthMiddleware`` loads it off the event loop anyway when it
resolves the user, so behind ``AuthMiddlewareStack`` the dict API works in async code too.

Saving follows Channels:

- ``http`` scopes: a modified session is saved when the response starts
  (``http.response.start``, unless the status is 500 or more) and its cookie is set on that
  response, with the same rules as Django's ``SessionMiddleware``. As in Channels, only
  the ``Set-Cookie`` header is added (Django's middleware also adds ``Vary: Cookie``: add
  it yourself where a shared cache could serve one user's response to another);
- every other scope (WebSockets): a WebSocket has no response to carry a cookie, so nothing
  is saved for you; persist changes with ``await self.scope["session"].asave()`` (or
  ``await database_sync_to_async(self.scope["session"].save)()``, as in Channels).

Scopes without headers (``udp``, ``email``, ``channel``) have no cookies: all three
middlewares pass them through untouched, so wrapping a whole ``ProtocolTypeRouter`` works.
"""

from __future__ import annotations

import time
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase, UpdateError
from django.contrib.sessions.exceptions import SessionInterrupted
from django.core.exceptions import SuspiciousOperation
from django.http import HttpResponse
from django.http.cookie import parse_cookie
from django.utils.http import http_date

from .asgi import ASGIApp, Message, Receive, Scope, Send
from .db import database_sync_to_async
from .middleware import BaseMiddleware


class SessionInterruptedError(SessionInterrupted, SuspiciousOperation):
    """The session was deleted (a logout elsewhere) before this response could save it.

    Django's ``SessionInterrupted`` (a 400 Bad Request), and also the
    ``SuspiciousOperation`` Channels raises here, so handlers written for either catch it.
    """


def has_headers(scope: Scope) -> bool:
    """Whether the scope carries request headers (http, websocket, webrtc...)."""
    return isinstance(scope.get("headers"), (list, tuple))


def header_values(scope: Scope, name: bytes) -> list[str]:
    """Every value of header ``name`` (lower-case bytes), decoded as latin-1.

    Latin-1 maps every byte to a character, so no header a client sends can make decoding
    fail; pairs that are not two str/bytes items are skipped rather than trusted.
    """
    values = []
    for pair in scope.get("headers") or ():
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            continue
        key, value = pair
        if isinstance(key, str):
            key = key.encode("latin-1", "replace")
        if not isinstance(key, bytes) or key.lower() != name:
            continue
        if isinstance(value, bytes):
            values.append(value.decode("latin-1"))
        elif isinstance(value, str):
            values.append(value)
    return values


def cookies_from_scope(scope: Scope) -> dict[str, str]:
    """The request's cookies, parsed by Django (several Cookie headers are joined)."""
    return parse_cookie("; ".join(header_values(scope, b"cookie")))


SAMESITE_VALUES = ("lax", "strict", "none")


class InvalidSameSite(ValueError, AssertionError):
    """A ``samesite`` cookie option that is not Lax, Strict or None.

    A ValueError, as Django raises; also an AssertionError, as Channels raises, so code
    and tests written for either catch it.
    """


def cookie_header(key: str, value: str = "", **options: Any) -> tuple[bytes, bytes]:
    """A ``(b"Set-Cookie", ...)`` header built by Django's ``HttpResponse.set_cookie``.

    Going through Django keeps the attribute rules (``SameSite``, ``Max-Age`` and
    ``expires`` together, quoting) identical to what a Django view would send. The pair's
    form, a tuple with the name as Channels writes it, is the one Channels' middleware
    produces, so tests ported from Channels that compare header lists keep passing.
    """
    samesite = options.get("samesite")
    if samesite is not None and (not isinstance(samesite, str) or samesite.lower() not in SAMESITE_VALUES):
        raise InvalidSameSite(f"samesite must be one of 'Lax', 'Strict' or 'None', not {samesite!r}")
    response = HttpResponse()
    response.set_cookie(key, value, **options)
    return (b"Set-Cookie", response.cookies[key].output(header="").strip().encode("latin-1"))


class CookieMiddleware(BaseMiddleware):
    """Adds ``scope["cookies"]``: the ``Cookie`` header parsed with Django's ``parse_cookie``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not has_headers(scope):
            await self.inner(scope, receive, send)
            return
        await self.inner({**scope, "cookies": cookies_from_scope(scope)}, receive, send)

    @staticmethod
    def set_cookie(message: Message, key: str, value: str = "", *, samesite: str | None = "lax", **options: Any) -> None:
        """Add a ``Set-Cookie`` header to an ``http.response.start`` message (in place).

        ``options`` are those of Django's ``HttpResponse.set_cookie`` (``max_age``,
        ``expires``, ``path``, ``domain``, ``secure``, ``httponly``). ``samesite`` defaults
        to ``"lax"``, as in Channels (and browsers, when a cookie names none); pass None
        to send no SameSite attribute. Any other value than Lax, Strict or None raises
        :class:`InvalidSameSite`.
        """
        headers = message.get("headers")
        if not isinstance(headers, list):
            headers = message["headers"] = list(headers or [])
        headers.append(cookie_header(key, value, samesite=samesite, **options))

    @staticmethod
    def delete_cookie(
        message: Message, key: str, path: str = "/", domain: str | None = None, samesite: str | None = None
    ) -> None:
        """Add a ``Set-Cookie`` header that makes the client drop cookie ``key``."""
        CookieMiddleware.set_cookie(
            message,
            key,
            max_age=0,
            path=path,
            domain=domain,
            samesite=samesite,
            expires="Thu, 01 Jan 1970 00:00:00 GMT",
            secure=key.startswith(("__Secure-", "__Host-")) or None,
        )


def session_store_class() -> type[SessionBase]:
    """``SessionStore`` of ``settings.SESSION_ENGINE``, looked up per call so tests may override it."""
    store: type[SessionBase] = import_module(settings.SESSION_ENGINE).SessionStore
    return store


class SessionMiddleware(BaseMiddleware):
    """Adds ``scope["session"]``; must run inside ``CookieMiddleware``.

    An outer ``SessionMiddleware`` already put a session in the scope: this one then
    passes through, so stacking two never loads or saves one session twice.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if "session" in scope or not has_headers(scope):
            await self.inner(scope, receive, send)
            return
        if "cookies" not in scope:
            raise ValueError("No cookies in the scope: SessionMiddleware must be wrapped in CookieMiddleware")
        cookies = scope["cookies"]
        session_key = cookies.get(settings.SESSION_COOKIE_NAME)
        session = session_store_class()(session_key if isinstance(session_key, str) else None)
        scope = {**scope, "session": session}
        if scope.get("type") == "http":
            send = _HttpSessionSaver(session, cookies, send).send
        await self.inner(scope, receive, send)


class _HttpSessionSaver:
    """Wraps an HTTP consumer's ``send``: saves the session and sets its cookie on the response."""

    def __init__(self, session: SessionBase, cookies: dict[str, str], send: Send) -> None:
        self.session = session
        self.cookies = cookies
        self.real_send = send

    async def send(self, message: Message) -> None:
        if message.get("type") == "http.response.start" and self._needs_work():
            message = dict(message)
            message["headers"] = list(message.get("headers") or [])
            await database_sync_to_async(self._process_response)(message)
        await self.real_send(message)

    def _needs_work(self) -> bool:
        """Cheap check, no storage access: is there anything to save or a cookie to drop?"""
        session = self.session
        if settings.SESSION_COOKIE_NAME in self.cookies and session.is_empty():
            return True
        return bool(session.modified or settings.SESSION_SAVE_EVERY_REQUEST)

    def _process_response(self, message: Message) -> None:
        """Django's ``SessionMiddleware.process_response``, on an ASGI response start."""
        session = self.session
        empty = session.is_empty()
        if settings.SESSION_COOKIE_NAME in self.cookies and empty:
            CookieMiddleware.delete_cookie(
                message,
                settings.SESSION_COOKIE_NAME,
                path=settings.SESSION_COOKIE_PATH,
                domain=settings.SESSION_COOKIE_DOMAIN,
                samesite=settings.SESSION_COOKIE_SAMESITE,
            )
            return
        if not (session.modified or settings.SESSION_SAVE_EVERY_REQUEST) or empty:
            return
        status = message.get("status", 200)
        if isinstance(status, int) and status >= 500:
            return  # as Django: a failed request does not persist what it half did
        if session.get_expire_at_browser_close():
            max_age: int | None = None
            expires: str | None = None
        else:
            max_age = session.get_expiry_age()
            expires = http_date(time.time() + max_age)
        try:
            session.save()
        except UpdateError:
            raise SessionInterruptedError(
                "The request's session was deleted before the request completed. "
                "The user may have logged out in a concurrent request, for example."
            ) from None
        assert session.session_key is not None
        CookieMiddleware.set_cookie(
            message,
            settings.SESSION_COOKIE_NAME,
            session.session_key,
            max_age=max_age,
            expires=expires,
            domain=settings.SESSION_COOKIE_DOMAIN,
            path=settings.SESSION_COOKIE_PATH,
            secure=settings.SESSION_COOKIE_SECURE or None,
            httponly=settings.SESSION_COOKIE_HTTPONLY or None,
            samesite=settings.SESSION_COOKIE_SAMESITE,
        )


def SessionMiddlewareStack(inner: ASGIApp) -> CookieMiddleware:  # Channels' name and casing
    """``CookieMiddleware(SessionMiddleware(inner))``: cookies, then the session built from them."""
    return CookieMiddleware(SessionMiddleware(inner))
