"""Protocol plugins: the base shape every protocol shares, and the registry that loads them.

A plugin is translation and policy between one native protocol and layer messages; the
framing itself belongs to a maintained library (uvicorn, aiosmtpd, paho-mqtt, aiortc, ...).
What every plugin needs besides lives here, in :class:`ProtocolPlugin`, once: sending an
event to the worker pool with one error handling and standard counter names, checking a
worker's reply against its spec, a rate-limited log, the gateway reference and the final
stats (docs/writing-a-plugin.md). A plugin shipped in its own distribution brings its own
spec (:attr:`ProtocolPlugin.spec`), which the registry adds to the validators when it
loads the class.
"""

from __future__ import annotations

import enum
import importlib
import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from importlib.metadata import entry_points
from importlib.resources.abc import Traversable
from typing import TYPE_CHECKING, Any, ClassVar, Final, Generic, TypeVar, cast

from .config import ConfigError, parse_options
from .layers import ChannelFull, Message
from .layers.durable import MessageTooLarge, NotReplicated
from .specs import WORKER_TO_GATEWAY, SpecError, SpecFileError, add_spec_file, known_types, validate_message

if TYPE_CHECKING:
    from .server import Connection, Gateway

logger = logging.getLogger("switchboard.plugins")

ENTRY_POINT_GROUP = "switchboard.protocols"

BUILTIN_PLUGINS: dict[str, str] = {
    "http": "switchboard.protocols.http:HttpPlugin",
    "udp": "switchboard.protocols.udp:UdpPlugin",
    "mqtt": "switchboard.protocols.mqtt:MqttPlugin",
    "smtp": "switchboard.protocols.smtp:SmtpPlugin",
    "sms": "switchboard.protocols.sms:SmsPlugin",
    "webrtc": "switchboard.protocols.webrtc:WebrtcPlugin",
}

OptionsT = TypeVar("OptionsT")
MessageT = TypeVar("MessageT")

#: Counters every plugin keeps under these names, at 0 from the start, one set per
#: protocol it serves (prefixed ``<protocol>.`` when it serves several, as the ``http``
#: plugin does: ``http.messages_in``, ``websocket.messages_in``). Metrics, ``switchboard
#: status`` and the console read a plugin through them alone (gateway/figures.py).
CONNECTIONS_OPENED: Final = "connections_opened"  # client connections, sessions, peers, requests
MESSAGES_IN: Final = "messages_in"  # protocol messages from clients
MESSAGES_OUT: Final = "messages_out"  # protocol messages written to clients
EVENTS_FULL: Final = "events_full"  # the worker pool refused an event: full (the layer counts it too)
EVENTS_FAILED: Final = "events_failed"  # the layer raised on an event (down, unreachable)
EVENTS_TOO_LARGE: Final = "events_too_large"  # a durable pool refused an event as too large
EVENTS_NOT_REPLICATED: Final = "events_not_replicated"  # stored, not on the replicas asked for in time
REPLIES_INVALID: Final = "replies_invalid"  # a worker's reply broke its spec or the plugin's checks: dropped
STANDARD_COUNTERS: Final = (
    CONNECTIONS_OPENED,
    MESSAGES_IN,
    MESSAGES_OUT,
    EVENTS_FULL,
    EVENTS_FAILED,
    EVENTS_TOO_LARGE,
    EVENTS_NOT_REPLICATED,
    REPLIES_INVALID,
)


class EventOutcome(enum.Enum):
    """What became of one event :meth:`ProtocolPlugin.send_event` handed to the layer.

    The value is the standard counter that records it (none for ``SENT``: the gateway
    counts ``events_sent``). The plugin answers each in its protocol: a UDP datagram is
    dropped, an HTTP request gets 503, an SMTP sender 451, an MQTT QoS 1 message is retried.
    """

    SENT = ""
    FULL = EVENTS_FULL
    FAILED = EVENTS_FAILED
    TOO_LARGE = EVENTS_TOO_LARGE
    NOT_REPLICATED = EVENTS_NOT_REPLICATED

    @property
    def stored(self) -> bool:
        """Whether the event is on the layer (not replicated in time is stored all the same)."""
        return self is EventOutcome.SENT or self is EventOutcome.NOT_REPLICATED


class PluginNotRunning(RuntimeError):
    """The plugin has no gateway: it was not started, or it stopped."""


class ProtocolPlugin(Generic[OptionsT]):
    """Base class of every protocol plugin.

    Subclasses set ``name``, ``Options`` (a dataclass, parsed from config by
    :func:`~switchboard.gateway.config.parse_options` before any socket opens) and
    ``scope_types`` (the ASGI scope types the plugin produces, which name the worker pool
    channels ``switchboard.<type>``), and implement :meth:`start` and :meth:`stop`.

    Inbound, a plugin opens a :class:`~switchboard.gateway.server.Connection` per native
    connection (or per peer/session) and calls ``gateway.send_event``; outbound, the
    gateway calls the connection's ``deliver`` for each reply of the connection's protocol.
    """

    name: ClassVar[str]
    Options: ClassVar[type[Any]]
    scope_types: ClassVar[tuple[str, ...]] = ()
    #: The plugin's own spec file (Markdown with ``message``/``scope`` blocks, as in
    #: ``switchboard/specs/``) when it is not one of the shipped specs: a plugin in its own
    #: distribution sets ``importlib.resources.files(__package__) / "lineproto.md"``. The
    #: registry adds it to the validators when it loads the class (and ``__init__`` when the
    #: class is built directly), so a broken spec, or a scope type of ``scope_types`` that
    #: no spec describes, stops start-up.
    spec: ClassVar[Traversable | None] = None

    def __init__(self, options: OptionsT) -> None:
        # Loaded through the registry the spec is in already (a no-op then); built directly
        # (tests, an embedding program) this is what makes its replies checkable.
        check_plugin_spec(self.name, type(self))
        self.options = options
        self.counters: dict[str, int] = {}
        #: The gateway while the plugin runs: set it in :meth:`start`, clear it in :meth:`stop`.
        self.gateway: Gateway | None = None
        #: ``switchboard.protocols.<name>``, and a rate-limited view of it for what clients cause.
        self.logger = logging.getLogger(f"switchboard.protocols.{self.name}")
        self.log = RateLimitedLog(self.logger, self.name)
        for protocol in self.scope_types:
            for counter in STANDARD_COUNTERS:
                self.counters[self.counter_name(counter, protocol)] = 0

    def count(self, counter: str, amount: int = 1) -> None:
        """Bump a named counter (drops, errors, bytes...) reported by :meth:`stats`."""
        self.counters[counter] = self.counters.get(counter, 0) + amount

    def counter_name(self, standard: str, protocol: str | None = None) -> str:
        """A standard counter's name for ``protocol``: bare, or ``<protocol>.<standard>``
        when the plugin serves several protocols (then ``protocol`` is required)."""
        if len(self.scope_types) > 1:
            if protocol is None:
                raise ValueError(f"the {self.name} plugin serves {', '.join(self.scope_types)}: name the protocol")
            return f"{protocol}.{standard}"
        return standard

    def gateway_or_fail(self) -> Gateway:
        """The gateway; :class:`PluginNotRunning` when the plugin is not started (or stopped)."""
        gateway = self.gateway
        if gateway is None:
            raise PluginNotRunning(f"the {self.name} plugin is not running")
        return gateway

    # -- inbound: one event to the worker pool -------------------------------------------

    async def send_event(
        self,
        connection: Connection,
        event: Mapping[str, Any],
        *,
        wait: float | None = None,
        durable: bool | None = None,
        count: bool = True,
    ) -> EventOutcome:
        """Send ``event`` of ``connection`` to the worker pool (``Gateway.send_event``).

        Never raises for the layer's answer: a refusal or failure is counted under its
        standard name (:class:`EventOutcome`), logged once per reason per second, and
        returned for the plugin to answer in its protocol. ``wait`` and ``durable`` are
        the gateway's (backpressure for sticky connections; at most once on a durable pool).
        ``count=False``: a plugin that retries one message counts its fate once itself.
        """
        gateway = self.gateway_or_fail()
        try:
            # A TypedDict of switchboard.messages is a dict at run time: no copy.
            if wait is None and durable is None:  # the gateway's defaults (and any wrapper's signature)
                await gateway.send_event(connection, cast(Message, event))
            else:
                await gateway.send_event(connection, cast(Message, event), wait=wait, durable=durable)
        except ChannelFull:
            outcome = EventOutcome.FULL
            self.log.warning(
                "worker pool full",
                "%s for %s not sent: %s is full",
                event.get("type"),
                connection.protocol,
                connection.events_channel,
            )
        except MessageTooLarge as exc:
            outcome = EventOutcome.TOO_LARGE
            self.log.warning("event too large", "%s not stored: %s", event.get("type"), exc)
        except NotReplicated as exc:
            outcome = EventOutcome.NOT_REPLICATED
            self.log.warning("not replicated", "%s stored but not replicated in time: %s", event.get("type"), exc)
        except Exception as exc:  # the layer is down or refused it: the plugin's policy decides
            outcome = EventOutcome.FAILED
            # While the layer is down every event fails the same way: one line per reason per
            # second (with how many were held back), the traceback only at DEBUG.
            self.log.warning(
                f"layer error ({type(exc).__name__})", "sending %s to the worker pool failed: %r", event.get("type"), exc
            )
            self.logger.debug("sending %s to the worker pool failed", event.get("type"), exc_info=True)
        else:
            return EventOutcome.SENT
        if count:
            self.count(self.counter_name(outcome.value, connection.protocol))
        return outcome

    # -- outbound: a worker's reply --------------------------------------------------------

    def check_reply(self, message: Message, kind: type[MessageT]) -> MessageT | None:
        """``message`` typed as ``kind`` if it is a valid worker reply (specs/), else None.

        An invalid one is counted (``replies_invalid``) and logged with the spec's exact
        reason, rate-limited; the plugin drops it. ``kind`` is the message's TypedDict from
        :mod:`switchboard.messages` (``UdpSendEvent``), so what follows is type-checked.
        """
        return cast(MessageT, message) if self.reply_is_valid(message) else None

    def reply_is_valid(self, message: Message) -> bool:
        """:meth:`check_reply` for a reply of several possible types (cast it after)."""
        try:
            validate_message(message, direction=WORKER_TO_GATEWAY)
        except SpecError as exc:
            self.drop_reply(message, str(exc), key=exc.key)
            return False
        return True

    def drop_reply(self, message: Message, reason: str, *, key: str | None = None, counter: str = REPLIES_INVALID) -> None:
        """Count and log (rate-limited, per message type and key) a reply that cannot go out.

        ``counter`` is ``replies_invalid`` unless the plugin's policy names the refusal
        (``publish_dropped_topic``...). The reason never quotes a payload.
        """
        kind = str(message.get("type"))[:60]
        protocol = kind.partition(".")[0] if len(self.scope_types) > 1 and counter == REPLIES_INVALID else None
        name = self.counter_name(counter, protocol) if counter == REPLIES_INVALID else counter
        self.count(name)
        self.log.warning(f"{kind} dropped ({key or counter})", "%s", reason)

    # -- the end ------------------------------------------------------------------------------

    def report_stats(self) -> None:
        """Log the final counters at INFO, and write them to ``options.stats_file`` if set."""
        text = json.dumps(self.stats(), sort_keys=True)
        self.logger.info("%s stats: %s", self.name, text)
        path = getattr(self.options, "stats_file", None)
        if path:
            write_atomically(path, text, self.logger)

    async def start(self, gateway: Gateway) -> None:
        """Open sockets or client connections; return once serving."""
        raise NotImplementedError

    async def stop(self, timeout: float) -> None:
        """Stop accepting, let open work drain for up to ``timeout`` seconds, then close."""
        raise NotImplementedError

    def stats(self) -> dict[str, int]:
        """Counters for metrics and ``switchboard status``."""
        return dict(self.counters)

    def endpoints(self, gateway: Gateway) -> list[str]:
        """Where clients reach this plugin, for the start-up banner: URLs or ``proto://host:port``.

        Called once the plugin has started (so port 0 is resolved). A plugin served on
        another plugin's port (webhooks, signaling) names the full URL; see
        :func:`http_urls`. The default, for plugins that do not say: nothing.
        """
        return []


class RateLimitedLog:
    """One warning per reason per interval, so a flood of bad input cannot flood the logs.

    Every plugin drops and counts bad input; this is how each drop is also logged without
    letting a client decide how much we write. Lines name how many were held back. Safe to
    call from a library's own thread (paho's) as well as from the loop.
    """

    def __init__(self, logger: logging.Logger, prefix: str, interval: float = 1.0) -> None:
        self.logger = logger
        self.prefix = prefix
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def warning(self, reason: str, message: str, *args: Any) -> None:
        """Log ``message % args`` under ``reason`` unless that reason was logged just now."""
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(reason, -self.interval) < self.interval:
                self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
                return
            self._last[reason] = now
            suppressed = self._suppressed.pop(reason, 0)
        text = message % args if args else message
        extra = f" ({suppressed} more since last report)" if suppressed else ""
        self.logger.warning("%s: %s: %s%s", self.prefix, reason, text, extra)


def write_atomically(path: str, text: str, logger: logging.Logger = logger) -> None:
    """Write ``text`` so a reader never sees half a file (tests poll for stats files)."""
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, path)
    except OSError as exc:
        logger.warning("cannot write %s: %s", path, exc)


def load_plugin_class(name: str) -> type[ProtocolPlugin[Any]]:
    """Find the plugin class for ``name``: built-ins first, then installed entry points.

    The class's own spec, if it has one, is added to the validators here
    (:func:`check_plugin_spec`): every path to a plugin (start-up checks, ``build_plugins``)
    loads it through this function.
    """
    path = BUILTIN_PLUGINS.get(name)
    if path is not None:
        module_name, _, attr = path.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"protocol {name!r} needs extra packages: pip install 'switchboard[{name}]' ({exc})") from exc
        plugin_class: type[ProtocolPlugin[Any]] = getattr(module, attr)
        return check_plugin_spec(name, plugin_class)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name == name:
            try:
                loaded: type[ProtocolPlugin[Any]] = entry.load()
            except ImportError as exc:
                raise ConfigError(f"protocol {name!r}: cannot import {entry.value} ({exc})") from exc
            if not (isinstance(loaded, type) and issubclass(loaded, ProtocolPlugin)):
                raise ConfigError(f"protocol {name!r}: {entry.value} is not a ProtocolPlugin subclass")
            return check_plugin_spec(name, loaded)
    known = sorted(set(BUILTIN_PLUGINS) | {e.name for e in entry_points(group=ENTRY_POINT_GROUP)})
    raise ConfigError(f"unknown protocol plugin {name!r}; known: {', '.join(known)}")


def check_plugin_spec(name: str, plugin_class: type[ProtocolPlugin[Any]]) -> type[ProtocolPlugin[Any]]:
    """Add ``plugin_class.spec`` to the validators; check every scope type it produces is specified.

    A ConfigError names the plugin: its spec does not compile, clashes with a type another
    spec owns, or leaves one of its ``scope_types`` without a ``scope`` block (then no
    scope of that protocol could be checked, and ``check_reply`` would refuse every reply).
    """
    spec = plugin_class.spec
    if spec is not None:
        package = plugin_class.__module__.partition(".")[0]
        try:
            add_spec_file(spec, f"{package}/{spec.name}")
        except SpecFileError as exc:
            raise ConfigError(f"protocol {name!r}: its spec is broken: {exc}") from exc
    missing = [scope for scope in plugin_class.scope_types if scope not in known_types("scope")]
    if missing:
        where = "its spec" if spec is not None else "any spec (set the plugin class's spec)"
        raise ConfigError(f"protocol {name!r}: scope type {', '.join(map(repr, missing))} is not specified in {where}")
    return plugin_class


def http_urls(gateway: Gateway, path: str = "/") -> list[str]:
    """``http://host:port<path>`` on each address of the gateway's ``http`` plugin.

    For plugins whose endpoints the http plugin serves (``Gateway.mount``): their banner
    lines name the address a person or a webhook provider would use.
    """
    for plugin in gateway.plugins or []:
        if plugin.name == "http":
            return [base + path for base in getattr(plugin, "base_urls", lambda: [])()]
    return []


def check_protocols(protocols: Mapping[str, Mapping[str, Any]]) -> None:
    """Load every configured plugin class and check its options; ConfigError names the bad one.

    What :func:`build_plugins` does, without building the plugins: the command line runs
    it before any socket opens (the metrics endpoint, the layer), so a typo in a
    setting or a ``--set`` stops start-up at once with one line.
    """
    for name, raw in protocols.items():
        parse_options(load_plugin_class(name).Options, raw, where=f"PROTOCOLS.{name}")


def build_plugins(protocols: Mapping[str, Mapping[str, Any]]) -> list[ProtocolPlugin[Any]]:
    """Load and configure every enabled plugin; any bad option raises before start-up."""
    plugins: list[ProtocolPlugin[Any]] = []
    for name, raw in protocols.items():
        plugin_class = load_plugin_class(name)
        options = parse_options(plugin_class.Options, raw, where=f"PROTOCOLS.{name}")
        plugins.append(plugin_class(options))
    return plugins
