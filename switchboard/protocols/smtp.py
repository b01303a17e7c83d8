"""Inbound e-mail over SMTP: each accepted message becomes one ``email.received`` event.

The SMTP dialogue (commands, DATA dot-stuffing, SIZE, STARTTLS, AUTH PLAIN/LOGIN) is
aiosmtpd's; MIME parsing is the standard library's :mod:`email` (see ``_smtp_message``),
run in a small pool of child processes (``_smtp_pool``): off the event loop and its GIL,
bounded in parts, nesting, header size and time, and killed when the sender hangs up.
This module is policy: which recipients are ours, how big a message may be, how many
sessions one address and how many messages one session may have, when the sender hears
``250``.

The one rule that shapes it: a sender is told ``250 Message accepted`` only after the
event is on the channel layer. Until then it still owns the message, and any failure
here (full worker pool, layer down, disk full) is a 4xx, so the sender's MTA keeps the
message and retries instead of it being lost silently.

Shape (the connectionless-protocol rule of the gateway): one gateway connection for the
SMTP server, scope type ``email``; every message is one event on it, so events go to
``switchboard.email`` and any worker may take any message. Nothing is sent back: there are
no outbound ``email.*`` messages (replying by e-mail is not in scope), and whatever a
consumer sends to the reply channel is logged, counted and dropped.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import logging
import os
import socket
import ssl
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from switchboard.gateway.config import parse_bind
from switchboard.gateway.layers import Message
from switchboard.gateway.plugins import CONNECTIONS_OPENED, MESSAGES_IN, EventOutcome, ProtocolPlugin

from ._smtp_message import BuiltEvent, HeaderTooLong, Limits, MessageRefused, Storage, TooDeep, TooManyParts, is_clean
from ._smtp_message import Envelope as MessageEnvelope
from ._smtp_pool import ParserFailed, ParserPool, ParseTimeout, Unparsable

if TYPE_CHECKING:
    from switchboard.gateway.server import Connection, Gateway

logger = logging.getLogger("switchboard.protocols.smtp")

SCOPE_TYPE = "email"
# The version of specs/email.md this module implements (scope["asgi"]["spec_version"]).
SPEC_VERSION = "1.0"

# Replies, in one place so the spec, docs and tests agree with the code.
ACCEPTED = "250 Message accepted"
TRY_LATER = "451 4.3.0 try again later"
NO_STORAGE = "452 4.3.1 Insufficient system storage"
TOO_BIG_TO_QUEUE = "552 5.3.4 Message too big for the delivery queue"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
RELAY_DENIED = "550 5.7.1 Relaying denied: recipient domain not accepted here"
BAD_SENDER = "553 5.1.7 Sender address is not valid UTF-8"
BAD_RECIPIENT = "553 5.1.3 Recipient address is not valid UTF-8"
UNPARSABLE = "554 5.6.0 Message could not be parsed"
# The MIME limits; {limit} is the configured value, so the sender sees what was exceeded.
TOO_MANY_PARTS = "552 5.3.4 Message has more than {limit} MIME parts"
TOO_DEEP = "554 5.6.0 MIME parts nested more than {limit} levels deep"
HEADER_TOO_LONG = "552 5.3.4 Message has a header longer than {limit} bytes"
PARSE_TOO_SLOW = "451 4.3.0 Message took too long to parse, try again later"
TOO_BUSY = "421 4.3.2 Too many connections, try again later"
TOO_BUSY_FROM_IP = "421 4.7.0 Too many connections from your address, try again later"
TOO_MANY_MESSAGES = "421 4.7.0 Too many messages in this session, continue in a new one"

# Every counter of ``SmtpPlugin.stats()`` (specs/email.md), present from the start at 0.
# The standard ones (connections_opened: sessions admitted, messages_in: messages accepted
# with 250, events_*: the layer's refusals, replies_invalid) come from the base class.
COUNTERS = (
    "sessions_refused",
    "sessions_refused_per_ip",
    "sessions_over_message_limit",
    "bytes_accepted",
    "parts_stored",
    "storage_errors",
    "messages_unparsable",
    "recipients_rejected",
    "recipients_over_limit",
    "auth_succeeded",
    "auth_failed",
    "errors",
    "messages_too_many_parts",
    "messages_too_deep",
    "messages_header_too_long",
    "messages_parse_timeout",
    "parses_abandoned",
    "parser_failures",
)
# A refused message: (reply template, counter) by the limit it broke.
_REFUSALS: dict[type[MessageRefused], tuple[str, str]] = {
    TooManyParts: (TOO_MANY_PARTS, "messages_too_many_parts"),
    TooDeep: (TOO_DEEP, "messages_too_deep"),
    HeaderTooLong: (HEADER_TOO_LONG, "messages_header_too_long"),
}

_HASH_PREFIX = "pbkdf2_sha256$"


def _default_storage_path() -> str:
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return os.path.join(tempfile.gettempdir(), f"switchboard-email-{uid}")


def normalize_domain(domain: str) -> str:
    """Lower case, no trailing dot, IDNA (so ``bücher.de`` and ``xn--bcher-kva.de`` match)."""
    domain = domain.strip().lower().rstrip(".")
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain


def _check_domain(entry: str) -> str:
    domain = normalize_domain(entry)
    if domain == "*":
        return domain
    bare = domain.removeprefix("*.")
    if not bare or "@" in bare or "*" in bare or any(c.isspace() for c in bare):
        raise ValueError(f"domains: {entry!r} is not a domain, '*.domain' or '*'")
    return domain


def _check_password_entry(user: object, secret: object) -> None:
    if not isinstance(user, str) or not isinstance(secret, str) or not user or not secret:
        raise ValueError("users: must map non-empty user names to non-empty passwords (strings)")
    if secret.startswith(_HASH_PREFIX):
        parts = secret.split("$")
        if len(parts) != 4 or not parts[1].isdigit() or not parts[2] or not parts[3]:
            raise ValueError(f"users[{user!r}]: a hashed password is pbkdf2_sha256$<iterations>$<salt>$<hash>")


@dataclass
class SmtpOptions:
    """``SWITCHBOARD["PROTOCOLS"]["smtp"]`` (docs/smtp.md has the table)."""

    bind: str = "127.0.0.1:2525"
    #: Name in the banner and EHLO reply; default: this host's FQDN (looked up once).
    hostname: str | None = None
    #: Recipient domains mail is accepted for ("example.com", "*.example.com", "*").
    #: Required: an SMTP server that accepts any domain is an open sink, so it is opt-in.
    domains: list[str] = field(default_factory=list)
    max_message_size: int = 10 * 1024 * 1024
    max_recipients: int = 100
    #: Concurrent client sessions; more get ``421`` (each may hold up to max_message_size).
    max_sessions: int = 100
    #: Concurrent sessions from one client IP; one more gets ``421`` and is disconnected, so
    #: one host cannot take every session. 20 is Postfix's default
    #: ``default_destination_concurrency_limit``: a sending Postfix opens at most that many
    #: sessions to one server, so honest MTAs are never refused, while it takes five
    #: addresses to fill the default ``max_sessions``. ``None`` turns it off (needed behind
    #: a proxy that hides client addresses: every session would come from the proxy).
    max_sessions_per_ip: int | None = 20
    #: Mail transactions (``MAIL FROM`` accepted) per session; the next ``MAIL`` gets
    #: ``421`` and the session is closed (the client reconnects and carries on), so one
    #: connection cannot hold a session slot forever. 1,000 is Exim's default
    #: (``smtp_accept_max_per_connection``). Counted at ``MAIL``, not at a successful
    #: ``DATA``: transactions refused later (552, RSET) cost work too. ``None``: no limit.
    max_messages_per_session: int | None = 1000
    #: MIME parts one message may have (every part: containers and forwarded messages
    #: count too); more get ``552``. Parsing cost grows with parts: 100,000 of them cost
    #: ~30 s of CPU before this limit, ~0.2 s now.
    max_mime_parts: int = 1000
    #: Levels of MIME nesting; deeper gets ``554`` (real mail nests a handful).
    max_mime_depth: int = 32
    #: Bytes of one header (folded lines included); longer gets ``552``. 100 KiB is
    #: Postfix's ``header_size_limit``. Decoding a 2 MB address header takes minutes.
    max_header_size: int = 100 * 1024
    #: Child processes that parse received mail (one message each at a time).
    parser_processes: int = 2
    #: Seconds one parse may take; then its process is killed and the sender gets ``451``.
    parse_timeout: float = 15.0
    #: Parts (and the raw message) larger than this are stored in ``storage_path``.
    attachment_inline_limit: int = 256 * 1024
    storage_path: str | None = None
    #: Seconds of silence (and the longest one DATA transfer may take) before hang-up.
    timeout: float = 300.0
    smtputf8: bool = True
    #: user name -> password, plain or ``pbkdf2_sha256$<iterations>$<salt>$<b64 hash>``.
    users: dict[str, str] = field(default_factory=dict)
    require_auth: bool = False
    #: Offer AUTH only after STARTTLS (passwords never in clear text on the wire).
    auth_require_tls: bool = True
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    require_starttls: bool = False
    # Parsed from ``bind`` (not options themselves).
    host: str = field(init=False, repr=False, default="")
    port: int = field(init=False, repr=False, default=0)

    def __post_init__(self) -> None:
        self.host, self.port = parse_bind(self.bind, where="bind")
        if not self.domains:
            raise ValueError("domains: list the recipient domains to accept mail for (or ['*'] for any)")
        self.domains = [_check_domain(entry) for entry in self.domains]
        for name in (
            "max_message_size",
            "max_recipients",
            "max_sessions",
            "max_mime_parts",
            "max_mime_depth",
            "max_header_size",
            "parser_processes",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        for name in ("max_sessions_per_ip", "max_messages_per_session"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be at least 1 (or null for no limit)")
        if self.attachment_inline_limit < 0:
            raise ValueError("attachment_inline_limit must be 0 or more")
        if self.timeout <= 0:
            raise ValueError("timeout must be positive")
        if not self.parse_timeout > 0:
            raise ValueError("parse_timeout must be positive")
        for user, secret in self.users.items():
            _check_password_entry(user, secret)
        self._check_tls()
        if self.require_auth and not self.users:
            raise ValueError("require_auth needs users")
        if self.users and self.auth_require_tls and not self.tls_enabled:
            raise ValueError("users need tls_cert_file/tls_key_file (AUTH is offered only over TLS) or auth_require_tls: false")

    def _check_tls(self) -> None:
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("tls_cert_file and tls_key_file go together")
        for name in ("tls_cert_file", "tls_key_file"):
            path = getattr(self, name)
            if path is not None and not os.path.isfile(path):
                raise ValueError(f"{name}: {path} is not a readable file")
        if self.require_starttls and not self.tls_enabled:
            raise ValueError("require_starttls needs tls_cert_file and tls_key_file")

    @property
    def limits(self) -> Limits:
        """The MIME limits every message is parsed under."""
        return Limits(max_parts=self.max_mime_parts, max_depth=self.max_mime_depth, max_header_size=self.max_header_size)

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert_file is not None

    def accepts_domain(self, domain: str) -> bool:
        """Whether mail for ``domain`` is ours: exact, ``*.parent`` subdomains, or ``*``."""
        domain = normalize_domain(domain)
        for entry in self.domains:
            if entry == "*" or entry == domain:
                return True
            if entry.startswith("*.") and domain.endswith(entry[1:]):
                return True
        return False


def check_password(stored: str, given: bytes) -> bool:
    """Compare a login attempt with a configured password, in constant time.

    ``pbkdf2_sha256$...`` is Django's default hasher format, so ``make_password()`` output
    can be pasted into settings. It is slow on purpose; callers run this in a thread.
    """
    if stored.startswith(_HASH_PREFIX):
        _, iterations, salt, expected = stored.split("$", 3)
        digest = hashlib.pbkdf2_hmac("sha256", given, salt.encode(), int(iterations))
        return hmac.compare_digest(base64.b64encode(digest).decode("ascii").strip(), expected)
    return hmac.compare_digest(stored.encode("utf-8"), given)


def _collect_credentials(server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any) -> AuthResult:
    """aiosmtpd ``authenticator``: only hand the parsed credentials back, verified later.

    aiosmtpd calls the authenticator synchronously on the event loop, where a slow password
    hash would stall every connection of the gateway. So the built-in PLAIN/LOGIN parsers
    are wrapped (``_Handler.auth_PLAIN``) and verification happens in a thread. Failing
    closed: were this result ever used as is, it says "invalid credentials".
    """
    return AuthResult(success=False, handled=False, auth_data=data)


class _Handler:
    """aiosmtpd handler: the ``handle_*`` hooks and AUTH wrappers of one SMTP server.

    (Attribute names matter: aiosmtpd treats every ``handle_*`` member as a hook and every
    ``auth_*`` member as an AUTH mechanism.)
    """

    def __init__(self, plugin: SmtpPlugin) -> None:
        self.plugin = plugin

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname  # with this hook present, aiosmtpd leaves it to us
        if not self.plugin.options.users:
            responses = [line for line in responses if not line.startswith("250-AUTH")]
        return responses

    async def handle_MAIL(self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]) -> str:
        # Called once aiosmtpd has checked HELO, AUTH, syntax and nesting.
        limit = self.plugin.options.max_messages_per_session
        if isinstance(server, _Session) and limit is not None and server.transactions >= limit:
            self.plugin.count("sessions_over_message_limit")
            self.plugin.log.warning(
                "session over max_messages_per_session",
                "%s started %d mail transactions in one session; closing it",
                server.peer_ip,
                limit,
            )
            server.hang_up_after_reply()
            return TOO_MANY_MESSAGES
        if not is_clean(address):
            return BAD_SENDER
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        if isinstance(server, _Session):
            server.transactions += 1
        return "250 OK"

    async def handle_RCPT(self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]) -> str:
        plugin = self.plugin
        if not is_clean(address):
            return BAD_RECIPIENT
        if len(envelope.rcpt_tos) >= plugin.options.max_recipients:
            plugin.count("recipients_over_limit")
            return TOO_MANY_RECIPIENTS
        _, at, domain = address.rpartition("@")
        if not at or not plugin.options.accepts_domain(domain):
            plugin.count("recipients_rejected")
            return RELAY_DENIED
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        return await self.plugin.receive_message(session, envelope, tls=session.ssl is not None)

    async def handle_exception(self, error: Exception) -> str:
        """A bug (ours or aiosmtpd's) on one command: a 4xx, the session and server go on."""
        logger.error("SMTP session error", exc_info=error)
        self.plugin.count("errors")
        return TRY_LATER

    async def auth_PLAIN(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._verify(await SMTP.auth_PLAIN(server, server, args))

    async def auth_LOGIN(self, server: SMTP, args: list[str]) -> AuthResult:
        return await self._verify(await SMTP.auth_LOGIN(server, server, args))

    async def _verify(self, parsed: AuthResult) -> AuthResult:
        credentials = parsed.auth_data
        if not isinstance(credentials, LoginPassword):
            return parsed  # aiosmtpd already answered (bad base64, aborted...)
        user = await asyncio.to_thread(self.plugin.authenticate, credentials.login, credentials.password)
        if user is None:
            self.plugin.count("auth_failed")
            return AuthResult(success=False, handled=False)
        self.plugin.count("auth_succeeded")
        return AuthResult(success=True, auth_data=user)


def peer_ip(peername: Any) -> str | None:
    """The client IP that ``max_sessions_per_ip`` counts, from a socket's peer name.

    IPv4-mapped IPv6 (``::ffff:192.0.2.1``, what a dual-stack socket reports for an IPv4
    client) counts as the IPv4 address, so one client has one count whichever way it came.
    """
    if not isinstance(peername, tuple) or not peername or not isinstance(peername[0], str):
        return None
    host = peername[0]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:  # a scoped IPv6 literal ("fe80::1%eth0"): count it as written
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


class _Session(SMTP):
    """aiosmtpd's SMTP protocol for one client, admitted by the plugin's per-IP limit.

    The peer address is only known in ``connection_made`` (the server's protocol factory
    is called without it), so that is where the session asks the plugin for a slot. A
    refused client gets ``421`` from here and aiosmtpd never starts (no banner, no state):
    ``connection_lost`` and ``eof_received`` must then not reach aiosmtpd, which assumes a
    started session.
    """

    def __init__(self, plugin: SmtpPlugin, handler: _Handler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._plugin = plugin
        self._state = "new"  # -> "admitted" (aiosmtpd runs) or "refused"
        self._hang_up = False
        #: The address this session counts against while it does (None once released).
        self.peer_ip: str | None = None
        #: Mail transactions started in this session (``max_messages_per_session``).
        self.transactions = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._state == "admitted":  # after STARTTLS: the same client, now over TLS
            super().connection_made(transport)
            return
        ip = peer_ip(transport.get_extra_info("peername"))
        if not self._plugin.admit(self, ip):
            self._state = "refused"
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(TOO_BUSY_FROM_IP.encode("ascii") + b"\r\n")
            transport.close()
            return
        self._state = "admitted"
        self.peer_ip = ip
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._plugin.release(self)  # idempotent: aiosmtpd may report a lost TLS session twice
        if self._state == "admitted":
            super().connection_lost(error)

    def eof_received(self) -> bool | None:
        if self._state != "admitted":
            return False  # close: a refused client has nothing more to say
        return super().eof_received()

    def hang_up_after_reply(self) -> None:
        """Close the connection once the next reply is written (a ``421`` from a hook)."""
        self._hang_up = True

    async def push(self, status: Any) -> None:
        await super().push(status)
        if self._hang_up and self.transport is not None:
            # aiosmtpd's own 421s do the same: reply, then close; connection_lost ends the
            # session's task.
            self.transport.close()


class _Busy(asyncio.Protocol):
    """Answers a connection over ``max_sessions`` with 421 and hangs up (the client retries)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(TOO_BUSY.encode("ascii") + b"\r\n")
        transport.close()


class SmtpPlugin(ProtocolPlugin[SmtpOptions]):
    """The ``smtp`` protocol: an SMTP server whose accepted messages go to consumers."""

    name: ClassVar[str] = "smtp"
    Options: ClassVar[type[Any]] = SmtpOptions
    scope_types: ClassVar[tuple[str, ...]] = (SCOPE_TYPE,)

    def __init__(self, options: SmtpOptions) -> None:
        super().__init__(options)
        self.connection: Connection | None = None
        self.address: tuple[str, int] | None = None
        self.storage = Storage(Path(options.storage_path or _default_storage_path()))
        self.parser = ParserPool(self.storage, processes=options.parser_processes, timeout=options.parse_timeout)
        self._server: asyncio.Server | None = None
        #: Live sessions: what ``max_sessions`` counts and what ``stop`` hangs up.
        self.sessions: set[SMTP] = set()
        #: Admitted sessions per client IP (``max_sessions_per_ip``); no entry at zero, so
        #: it never holds more than ``max_sessions`` addresses.
        self.sessions_per_ip: dict[str, int] = {}
        self.counters.update(dict.fromkeys(COUNTERS, 0))
        hashed = [secret for secret in options.users.values() if secret.startswith(_HASH_PREFIX)]
        self._dummy_secret = f"{_HASH_PREFIX}{hashed[0].split('$')[1]}$dummy$-" if hashed else "-"
        self._in_flight = 0
        self._drained = asyncio.Event()

    def endpoints(self, gateway: Gateway) -> list[str]:
        if self.address is None:
            return []
        host, port = self.address
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        notes = [f"mail for {', '.join(self.options.domains)}"]
        if self.options.tls_cert_file:
            notes.append("STARTTLS required" if self.options.require_starttls else "STARTTLS")
        return [f"smtp://{where}  ({'; '.join(notes)})"]

    # -- lifecycle ------------------------------------------------------------------

    async def start(self, gateway: Gateway) -> None:
        """Prepare storage and TLS, then listen; ``self.address`` is the bound address."""
        options = self.options
        await asyncio.to_thread(self.storage.prepare)
        hostname = options.hostname or await asyncio.to_thread(socket.getfqdn)
        tls_context = self._tls_context()
        _quiet_aiosmtpd_logging()
        loop = asyncio.get_running_loop()
        handler = _Handler(self)

        def new_session() -> asyncio.Protocol:
            if len(self.sessions) >= options.max_sessions:
                self.count("sessions_refused")
                return _Busy()
            session = _Session(
                self,
                handler,
                data_size_limit=options.max_message_size,
                enable_SMTPUTF8=options.smtputf8,
                hostname=hostname,
                ident="Switchboard ESMTP",
                tls_context=tls_context,
                require_starttls=options.require_starttls,
                timeout=options.timeout,
                auth_required=options.require_auth,
                auth_require_tls=options.auth_require_tls,
                authenticator=_collect_credentials,
                loop=loop,
            )
            self.sessions.add(session)  # now, not in connection_made: the bound stays exact
            return session

        self._server = await loop.create_server(new_session, options.host, options.port)
        await self.parser.start()
        sockname = self._server.sockets[0].getsockname()
        self.address = (str(sockname[0]), int(sockname[1]))
        self.gateway = gateway
        scope = {
            "type": SCOPE_TYPE,
            "asgi": {"version": "3.0", "spec_version": SPEC_VERSION},
            "server": list(self.address),
            "hostname": hostname,
        }
        self.connection = gateway.open_connection(scope, self._deliver)
        logger.info("SMTP listening on %s:%d for %s", *self.address, ", ".join(options.domains))

    async def stop(self, timeout: float) -> None:
        """Stop accepting, let messages already in DATA reach the layer, then hang up."""
        if self._server is None:
            return
        self._server.close()
        if self._in_flight:
            self._drained.clear()
            try:
                await asyncio.wait_for(self._drained.wait(), timeout)
            except TimeoutError:
                logger.warning("SMTP stop: %d message(s) still in flight after %.1fs", self._in_flight, timeout)
        for session in list(self.sessions):
            if session.transport is not None:
                session.transport.close()
        try:
            await asyncio.wait_for(self._server.wait_closed(), max(timeout, 0.1))
        except TimeoutError:
            logger.warning("SMTP stop: sessions still open after %.1fs", timeout)
        self._server = None
        await self.parser.close()
        if self.gateway is not None and self.connection is not None:
            self.gateway.close_connection(self.connection)
        self.gateway = None
        self.report_stats()

    def _tls_context(self) -> ssl.SSLContext | None:
        if not self.options.tls_enabled:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self.options.tls_cert_file), str(self.options.tls_key_file))
        return context

    # -- sessions -------------------------------------------------------------------

    def admit(self, session: _Session, ip: str | None) -> bool:
        """Whether a new session from ``ip`` may start (False: the caller answers 421).

        A peer without an address (it is already gone) is not counted against anyone.
        """
        limit = self.options.max_sessions_per_ip
        if ip is not None and limit is not None and self.sessions_per_ip.get(ip, 0) >= limit:
            self.sessions.discard(session)
            self.count("sessions_refused_per_ip")
            self.log.warning("too many sessions from one address", "%s already has %d; refused with 421", ip, limit)
            return False
        if ip is not None:
            self.sessions_per_ip[ip] = self.sessions_per_ip.get(ip, 0) + 1
        self.count(CONNECTIONS_OPENED)
        return True

    def release(self, session: _Session) -> None:
        """A session ended: free its slot and its address's count (once, however often called)."""
        self.sessions.discard(session)
        ip, session.peer_ip = session.peer_ip, None
        if ip is None:
            return
        left = self.sessions_per_ip.get(ip, 0) - 1
        if left > 0:
            self.sessions_per_ip[ip] = left
        else:
            self.sessions_per_ip.pop(ip, None)

    # -- inbound --------------------------------------------------------------------

    def authenticate(self, login: bytes, password: bytes) -> str | None:
        """The user name if ``login``/``password`` match ``users`` (runs in a thread)."""
        try:
            user = login.decode("utf-8")
        except UnicodeDecodeError:
            return None
        stored = self.options.users.get(user)
        if stored is None:
            check_password(self._dummy_secret, password)  # same work: no user enumeration by timing
            return None
        return user if check_password(stored, password) else None

    async def receive_message(self, session: Session, envelope: Envelope, *, tls: bool) -> str:
        """Turn one DATA into an event on the layer; the reply tells the sender the outcome."""
        self._in_flight += 1
        try:
            return await self._receive(session, envelope, tls)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._drained.set()

    async def _receive(self, session: Session, envelope: Envelope, tls: bool) -> str:
        content = envelope.original_content or b""
        peer = list(session.peer[:2]) if isinstance(session.peer, tuple) else [str(session.peer), 0]
        auth_user = session.auth_data if session.authenticated and isinstance(session.auth_data, str) else None
        meta = MessageEnvelope(
            mail_from=envelope.mail_from or "",
            rcpt_tos=list(envelope.rcpt_tos),
            peer=peer,
            helo=session.host_name,
            auth_user=auth_user,
            tls=tls,
        )
        options = self.options
        try:
            built = await self.parser.build(content, meta, inline_limit=options.attachment_inline_limit, limits=options.limits)
        except asyncio.CancelledError:
            # The sender hung up mid-parse: its parser process was killed with the task.
            self.count("parses_abandoned")
            raise
        except MessageRefused as exc:
            reply, counter = _REFUSALS[type(exc)]
            self.count(counter)
            self.log.warning(counter, "message from %s refused: %s", peer[0], reply.format(limit=exc.limit))
            return reply.format(limit=exc.limit)
        except ParseTimeout:
            self.count("messages_parse_timeout")
            self.log.warning(
                "parse timeout", "parsing a message from %s took over %.0f s; process killed, 451", peer[0], options.parse_timeout
            )
            return PARSE_TOO_SLOW
        except ParserFailed as exc:
            self.count("parser_failures")
            logger.error("parsing a message from %s: %s", peer[0], exc)
            return TRY_LATER
        except OSError as exc:
            logger.error("storing a part of a message failed: %s", exc)
            self.count("storage_errors")
            return NO_STORAGE
        except Unparsable as exc:
            logger.error("parsing a message from %s failed: %s", peer, exc)
            self.count("messages_unparsable")
            return UNPARSABLE
        return await self._send(built, len(content))

    async def _send(self, built: BuiltEvent, size: int) -> str:
        """Hand the event to the gateway: 250 once it is on the layer, 451 otherwise.

        On the durable pool (the default) "on the layer" means stored until a consumer
        has finished with it, so the sender's 250 is a promise kept across worker
        crashes (docs/delivery.md).
        """
        assert self.connection is not None
        send = asyncio.ensure_future(self.send_event(self.connection, built.event))
        try:
            outcome = await asyncio.shield(send)
        except asyncio.CancelledError:
            # The sender hung up (it will retry); let the send finish, keep files if it landed.
            send.add_done_callback(lambda task: _discard_if_failed(task, built))
            raise
        # Refusals are counted (events_*) and logged by send_event; the sender keeps the
        # message and retries on a 4xx. Not replicated in time is stored all the same (a
        # worker will handle it, so its files stay): the retry is a duplicate that
        # idempotent consumers recognise (by Message-ID).
        if not outcome.stored:
            built.discard_files()
        if outcome is EventOutcome.TOO_LARGE:
            return TOO_BIG_TO_QUEUE
        if outcome is not EventOutcome.SENT:
            return TRY_LATER
        self.count(MESSAGES_IN)
        self.count("bytes_accepted", size)
        self.count("parts_stored", len(built.stored))
        return ACCEPTED

    # -- outbound -------------------------------------------------------------------

    def _deliver(self, message: Message) -> None:
        """No ``email.*`` message goes out (spec: none are defined); log the reason, count, drop."""
        if self.reply_is_valid(message):  # an invalid one is counted and logged with the spec's reason
            self.drop_reply(message, "the smtp plugin sends nothing (specs/email.md defines no outbound messages)")


def _discard_if_failed(task: asyncio.Future[EventOutcome], built: BuiltEvent) -> None:
    if task.cancelled() or task.exception() is not None or not task.result().stored:
        built.discard_files()


def _quiet_aiosmtpd_logging() -> None:
    """aiosmtpd logs every command line at INFO on ``mail.log``; keep that out of INFO logs.

    The level is only set when the project has not configured that logger itself. The
    deprecation warning aiosmtpd logs on every successful AUTH (its own code sets the
    deprecated ``Session.login_data``) is filtered out: nothing here can avoid it.
    """
    mail_log = logging.getLogger("mail.log")
    if mail_log.level == logging.NOTSET:
        mail_log.setLevel(logging.WARNING)
    if not any(isinstance(f, _LoginDataWarningFilter) for f in mail_log.filters):
        mail_log.addFilter(_LoginDataWarningFilter())


class _LoginDataWarningFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Session.login_data is deprecated")
