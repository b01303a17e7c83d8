"""Protocol plugins: the base shape every protocol shares, and the registry that loads them.

A plugin is translation and policy between one native protocol and layer messages; the
framing itself belongs to a maintained library (uvicorn, aiosmtpd, paho-mqtt, aiortc, ...).
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from .config import ConfigError, parse_options

if TYPE_CHECKING:
    from .server import Gateway

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

    def __init__(self, options: OptionsT) -> None:
        self.options = options
        self.counters: dict[str, int] = {}

    def count(self, counter: str, amount: int = 1) -> None:
        """Bump a named counter (drops, errors, bytes...) reported by :meth:`stats`."""
        self.counters[counter] = self.counters.get(counter, 0) + amount

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


def load_plugin_class(name: str) -> type[ProtocolPlugin[Any]]:
    """Find the plugin class for ``name``: built-ins first, then installed entry points."""
    path = BUILTIN_PLUGINS.get(name)
    if path is not None:
        module_name, _, attr = path.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(
                f"protocol {name!r} needs extra packages: pip install 'switchboard[{name}]' ({exc})"
            ) from exc
        plugin_class: type[ProtocolPlugin[Any]] = getattr(module, attr)
        return plugin_class
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name == name:
            loaded: type[ProtocolPlugin[Any]] = entry.load()
            return loaded
    known = sorted(set(BUILTIN_PLUGINS) | {e.name for e in entry_points(group=ENTRY_POINT_GROUP)})
    raise ConfigError(f"unknown protocol plugin {name!r}; known: {', '.join(known)}")


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
