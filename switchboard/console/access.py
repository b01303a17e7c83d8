"""Who may look at the console, and who may act in it.

The rules (docs/console.md, Access):

1. ``Authorization: Bearer <token>`` naming a configured token: that token's access
   (read-only unless it says ``manage: true``). A token that matches none is refused
   (401), even from loopback: a wrong credential is an error, not anonymity.
2. A Django session cookie (when ``django.contrib.sessions`` and ``django.contrib.auth``
   are installed, which is the case when the console is mounted in the site's gateway):
   an active staff user may look; one with the ``switchboard.manage`` permission may act.
   A logged-in non-staff user is refused (403).
3. No credentials: a console whose every listening address is a loopback one gives its
   loopback clients ``CONSOLE.loopback`` access (``read`` by default), provided the
   ``Host`` header names a loopback host too — that stops DNS rebinding, where a hostile
   page resolves its own name to 127.0.0.1 to read the console from the browser.
4. Anything else: 401 with ``WWW-Authenticate: Bearer``.

Actions (``POST``) also need CSRF safety. A bearer token is never sent by a browser on
its own, so token requests are safe as they are. Cookie and loopback access carry no
secret a hostile page lacks, so actions then need the ``X-Switchboard-CSRF`` header with
the token the console's own API hands out (an HMAC of who is asking, under a per-process
key): a page on another origin cannot read it, and the custom header plus a JSON body
makes the browser ask (CORS preflight) first, which the console never allows. An
``Origin`` header, when present, must name the host the request was sent to.

Every refusal is logged, at most once a second per reason (a flood must not flood logs).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from switchboard.gateway.asgi import header_text as header
from switchboard.gateway.config import ConsoleOptions, parse_bind
from switchboard.gateway.plugins import RateLimitedLog

logger = logging.getLogger("switchboard.console")

#: The permission that lets a staff user act (Django's ``<app_label>.<codename>``).
MANAGE_PERMISSION = "switchboard.manage"
CSRF_HEADER = b"x-switchboard-csrf"


@dataclass(frozen=True)
class Access:
    """What one request may do. ``who`` is what logs and the page show."""

    who: str
    via: str  # "token", "session" or "loopback"
    manage: bool
    #: The session key behind a ``session`` access (binds its CSRF token to the session).
    session_key: str = ""


class Refused(Exception):
    """The request is refused with ``status``; ``reason`` is logged, ``text`` answered."""

    def __init__(self, status: int, reason: str, text: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.text = text


def is_loopback_host(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def binds_are_loopback(binds: Iterable[str]) -> bool:
    """Whether every ``host:port`` listens on a loopback address only (none: False)."""
    hosts = [parse_bind(bind, where="console")[0] for bind in binds]
    return bool(hosts) and all(is_loopback_host(host) for host in hosts)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class Gate:
    """Decides :class:`Access` for a request scope; see the module docstring."""

    def __init__(self, options: ConsoleOptions, *, loopback_only: bool) -> None:
        self.loopback_only = loopback_only
        self.loopback = options.loopback
        # Digests, compared in constant time: neither a token's length nor its prefix
        # can be learnt from how long a refusal takes.
        self._tokens = [
            (_digest(entry["token"]), str(entry.get("name", f"token{i}")), bool(entry.get("manage", False)))
            for i, entry in enumerate(options.tokens)
        ]
        self._key = secrets.token_bytes(32)
        self.log = RateLimitedLog(logger, "console")

    async def identify(self, scope: Mapping[str, Any]) -> Access:
        """The request's access, or :class:`Refused` (401/403)."""
        authorization = header(scope, b"authorization")
        if authorization is not None:
            return self._token(authorization)
        session = await self._session(scope)
        if session is not None:
            return session
        client = scope.get("client")
        client_host = str(client[0]) if client else ""
        if self.loopback_only and self.loopback != "none" and is_loopback_host(client_host):
            host = (header(scope, b"host") or "").rpartition(":")[0] or header(scope, b"host") or ""
            if not is_loopback_host(host):
                raise Refused(403, f"loopback client with Host {host!r}", "Forbidden: use a loopback host name\n")
            return Access("loopback", "loopback", self.loopback == "manage")
        raise Refused(401, "no credentials", "Unauthorized: a bearer token or a staff session is required\n")

    def _token(self, authorization: str) -> Access:
        scheme, _, credential = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            raise Refused(401, "malformed Authorization header", "Unauthorized: use Authorization: Bearer <token>\n")
        digest = _digest(credential.strip())
        found: tuple[str, bool] | None = None
        for known, name, manage in self._tokens:
            if hmac.compare_digest(known, digest):
                found = (name, manage)
        if found is None:
            raise Refused(401, "unknown bearer token", "Unauthorized: unknown token\n")
        return Access(f"token {found[0]}", "token", found[1])

    async def _session(self, scope: Mapping[str, Any]) -> Access | None:
        """A staff session's access; None without Django auth/sessions or a session cookie."""
        try:
            from django.apps import apps
            from django.conf import settings
        except ImportError:
            return None
        if not settings.configured or not apps.ready:
            return None
        if not (apps.is_installed("django.contrib.sessions") and apps.is_installed("django.contrib.auth")):
            return None
        from switchboard.consumers.auth import user_from_session
        from switchboard.consumers.db import database_sync_to_async
        from switchboard.consumers.sessions import cookies_from_scope, session_store_class

        key = cookies_from_scope(dict(scope)).get(settings.SESSION_COOKIE_NAME)
        if not key:
            return None

        def look_up() -> tuple[bool, bool, bool, str]:
            user = user_from_session(session_store_class()(key))
            authenticated = bool(user.is_authenticated and user.is_active)
            staff = authenticated and bool(getattr(user, "is_staff", False))
            manage = staff and bool(user.has_perm(MANAGE_PERMISSION))
            return authenticated, staff, manage, str(user.get_username()) if authenticated else ""

        authenticated, staff, manage, username = await database_sync_to_async(look_up)()
        if not authenticated:
            return None  # an expired or anonymous session: as if there were no cookie
        if not staff:
            raise Refused(403, f"user {username!r} is not staff", "Forbidden: staff only\n")
        return Access(f"user {username}", "session", manage, session_key=key)

    # -- actions -----------------------------------------------------------------------

    def csrf_token(self, access: Access) -> str:
        """The token actions of ``access`` must echo in ``X-Switchboard-CSRF``."""
        subject = f"{access.via}\0{access.who}\0{access.session_key}".encode()
        return hmac.new(self._key, subject, hashlib.sha256).hexdigest()

    def check_action(self, scope: Mapping[str, Any], access: Access) -> None:
        """Refuse (403) an action ``access`` may not take or that could be forged cross-site."""
        if not access.manage:
            raise Refused(403, f"{access.who} lacks {MANAGE_PERMISSION}", f"Forbidden: needs {MANAGE_PERMISSION}\n")
        origin = header(scope, b"origin")
        host = header(scope, b"host")
        if origin is not None and (host is None or urlsplit(origin).netloc.lower() != host.lower()):
            raise Refused(403, f"cross-origin action from {origin!r}", "Forbidden: cross-origin request\n")
        if access.via == "token":
            return
        given = header(scope, CSRF_HEADER) or ""
        if not hmac.compare_digest(given.encode(), self.csrf_token(access).encode()):
            raise Refused(403, "missing or wrong CSRF token", "Forbidden: missing or wrong X-Switchboard-CSRF\n")

    def refused(self, scope: Mapping[str, Any], refusal: Refused) -> None:
        """Log a refusal (rate-limited per reason) with where it came from."""
        client = scope.get("client")
        where = f"{client[0]}" if client else "?"
        self.log.warning(
            f"{refusal.status} {refusal.reason}", "%s %s from %s", scope.get("method", "?"), scope.get("path", "?"), where
        )
