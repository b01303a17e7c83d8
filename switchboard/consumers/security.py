"""Origin checks: refuse WebSockets (and HTTP requests) opened by pages of other sites.

A browser lets any page open a WebSocket to any host, with that host's cookies: without a
check, a page on another site can act as the logged-in user over your WebSocket
(cross-site WebSocket hijacking). Browsers always say which page that is, in ``Origin``.

``OriginValidator(app, allowed_origins)`` and ``AllowedHostsOriginValidator(app)`` follow
Channels' rules:

- a pattern without a scheme (``"example.com"``, ``".example.com"`` for the domain and its
  subdomains) matches the origin's host with Django's ``is_same_domain`` (the rule of
  ``ALLOWED_HOSTS``), whatever the scheme and port; a pattern with a scheme
  (``"https://example.com:8443"``) must match scheme, host and port (default ports
  filled in); ``"*"`` matches anything; a compiled regex must match the whole
  lower-cased ``Origin``;
- a WebSocket without ``Origin`` is refused unless ``"*"`` is allowed, as in Channels.
  Browsers always send one, so this only turns away non-browser clients that omit it:
  they should send the site's origin (``websockets.connect(url, origin=...)``);
- an HTTP request (or WebRTC offer) without ``Origin`` is let through: browsers leave it
  out of same-origin GETs (a page's own ``EventSource``), and send it with every
  cross-origin request and every POST, so its absence is never a cross-site page;
- ``Origin: null`` (sandboxed frames, ``file:``), an undecodable or unparsable value, or
  several ``Origin`` headers are refused.

Refusing answers in the scope's protocol: a WebSocket gets an HTTP 403 through the
denial-response extension when the server offers it (``websocket.http.response``), else
``websocket.close`` with code 4403 (which, before the handshake completes, the client also
sees as a 403); a connection that a worker resumes after a deploy is closed with 4403;
HTTP gets a 403 response; WebRTC ``webrtc.close``. Scopes of other types (``udp``,
``email``, ``channel``) carry no browser origin and pass through, so the validator can wrap
a whole ``ProtocolTypeRouter``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from urllib.parse import ParseResult, urlparse

from django.conf import settings
from django.utils.http import is_same_domain

from .asgi import ASGIApp, Receive, Scope, Send
from .middleware import BaseMiddleware
from .sessions import header_values

logger = logging.getLogger("switchboard.security")

OriginPattern = str | re.Pattern[str]

#: Scope types the validator checks; every other type passes through.
CHECKED_TYPES = frozenset({"http", "websocket", "webrtc"})
#: Scope types where a request without ``Origin`` is not a browser's cross-site request.
MISSING_ORIGIN_OK = frozenset({"http", "webrtc"})

DENIED_BODY = b"Forbidden: this origin may not connect here.\n"
DENIED_HEADERS = [[b"content-type", b"text/plain; charset=utf-8"], [b"content-length", str(len(DENIED_BODY)).encode()]]
DENIED_CLOSE_CODE = 4403

_DEFAULT_PORTS = {"http": 80, "ws": 80, "https": 443, "wss": 443}


class _Invalid:
    """An ``Origin`` that is present but unusable (undecodable, unparsable, repeated)."""


INVALID = _Invalid()


def parse_origin(scope: Scope) -> ParseResult | _Invalid | None:
    """The scope's ``Origin``: parsed, ``None`` when absent, or ``INVALID``."""
    values = header_values(scope, b"origin")
    if not values:
        return None
    if len(values) > 1:
        return INVALID
    try:
        origin = values[0].encode("latin-1").decode("ascii").strip()
        parsed = urlparse(origin.lower())
        parsed.port  # noqa: B018 - raises ValueError for a bad port; check it once, here
    except (UnicodeError, ValueError):
        return INVALID
    if not parsed.scheme or not parsed.hostname:
        return INVALID  # "null", "example.com" without a scheme...
    return parsed


def _port(origin: ParseResult) -> int | None:
    try:
        port = origin.port
    except ValueError:
        return None
    return port if port is not None else _DEFAULT_PORTS.get(origin.scheme)


def match_origin(origin: ParseResult, pattern: OriginPattern) -> bool:
    """Whether an origin matches one allowed pattern (see the module docstring)."""
    if isinstance(pattern, re.Pattern):
        return pattern.fullmatch(origin.geturl()) is not None
    if pattern == "*":
        return True
    hostname = origin.hostname or ""
    pattern = pattern.lower()
    if "://" not in pattern:
        # An ALLOWED_HOSTS entry: "example.com", ".example.com", "[::1]", maybe with a port.
        try:
            pattern_host = urlparse("//" + pattern).hostname
        except ValueError:
            pattern_host = None
        return is_same_domain(hostname, pattern_host or pattern)
    try:
        parsed = urlparse(pattern)
        pattern_port = _port(parsed)
    except ValueError:
        return False
    return parsed.scheme == origin.scheme and _port(origin) == pattern_port and is_same_domain(hostname, parsed.hostname or "")


class OriginValidator(BaseMiddleware):
    """Lets a connection through only if its ``Origin`` matches ``allowed_origins``."""

    def __init__(self, application: ASGIApp, allowed_origins: Iterable[OriginPattern]) -> None:
        super().__init__(application)
        self._allowed_origins = list(allowed_origins)

    @property
    def application(self) -> ASGIApp:
        """Channels' name for the wrapped application."""
        return self.inner

    @property
    def allowed_origins(self) -> Sequence[OriginPattern]:
        return self._allowed_origins

    def valid_origin(self, scope_type: str, origin: ParseResult | _Invalid | None) -> bool:
        allowed = self.allowed_origins
        if origin is None:
            return scope_type in MISSING_ORIGIN_OK or "*" in allowed
        if isinstance(origin, _Invalid):
            return False
        return any(match_origin(origin, pattern) for pattern in allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope_type = scope.get("type")
        if scope_type not in CHECKED_TYPES:
            await self.inner(scope, receive, send)
            return
        origin = parse_origin(scope)
        if self.valid_origin(str(scope_type), origin):
            await self.inner(scope, receive, send)
            return
        shown = ", ".join(repr(value[:100]) for value in header_values(scope, b"origin")) or "none"
        logger.info("refused %s %s from origin %s", scope_type, scope.get("path", ""), shown)
        await deny(scope, receive, send)


class AllowedHostsOriginValidator(OriginValidator):
    """``OriginValidator`` allowing the hosts of ``settings.ALLOWED_HOSTS``.

    Read on every connection (Channels reads it once), so ``override_settings`` and
    settings changed at runtime apply. With ``DEBUG`` and no ``ALLOWED_HOSTS``, Django's
    own development defaults apply: ``.localhost``, ``127.0.0.1`` and ``[::1]``.
    """

    def __init__(self, application: ASGIApp) -> None:
        super().__init__(application, [])

    @property
    def allowed_origins(self) -> Sequence[OriginPattern]:
        hosts = list(settings.ALLOWED_HOSTS)
        if settings.DEBUG and not hosts:
            hosts = [".localhost", "127.0.0.1", "[::1]"]
        return hosts


async def deny(scope: Scope, receive: Receive, send: Send) -> None:
    """Refuse the connection in its own protocol (see the module docstring)."""
    scope_type = scope.get("type")
    if scope_type == "websocket":
        await _deny_websocket(scope, receive, send)
    elif scope_type == "http":
        await _deny_http(receive, send)
    elif scope_type == "webrtc":
        await _deny_webrtc(receive, send)


async def _deny_websocket(scope: Scope, receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        kind = message.get("type")
        if kind == "websocket.disconnect":
            return
        if kind == "websocket.connect":
            break
    denial = "websocket.http.response" in (scope.get("extensions") or {})
    if denial and not scope.get("resumed"):
        await send({"type": "websocket.http.response.start", "status": 403, "headers": list(DENIED_HEADERS)})
        await send({"type": "websocket.http.response.body", "body": DENIED_BODY})
    else:
        await send({"type": "websocket.close", "code": DENIED_CLOSE_CODE})


async def _deny_webrtc(receive: Receive, send: Send) -> None:
    """Close the peer, then take its remaining events here until the gateway's last one.

    The peer's events keep coming until ``webrtc.disconnect`` (the spec promises one per
    peer); swallowing them here keeps each from starting, and refusing, another instance.
    """
    closed = False
    while (await receive()).get("type") != "webrtc.disconnect":
        if not closed:
            closed = True
            await send({"type": "webrtc.close"})


async def _deny_http(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            return
        if message.get("type") == "http.request" and not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 403, "headers": list(DENIED_HEADERS)})
    await send({"type": "http.response.body", "body": DENIED_BODY, "more_body": False})
