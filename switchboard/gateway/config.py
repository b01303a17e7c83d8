"""Switchboard configuration: Django settings or a TOML file, validated before any socket opens.

Django settings form::

    SWITCHBOARD = {
        "APPLICATION": "mysite.routing.application",   # default: settings.ASGI_APPLICATION
        "LAYER": {"BACKEND": "redis", "CONFIG": {"hosts": ["redis://127.0.0.1:6379/0"]}},
        "PROTOCOLS": {"http": {"bind": ["127.0.0.1:8000"]}},
        "WORKER": {"protocols": ["http", "websocket"], "channels": ["thumbnails"]},
        "METRICS": {"bind": "127.0.0.1:9100", "worker_bind": "127.0.0.1:9101"},
        "CONSOLE": {"mount": "/switchboard/console/", "tokens": [{"name": "ops", "token": "..."}]},
        "TRACING": {"enabled": True, "exporter": "otlp"},
    }

TOML form (``switchboard gateway --config switchboard.toml``) uses the same keys in lower
case: ``application``, ``[layer]``, ``[protocols.http]``, ``[worker]``, ``[metrics]``,
``[console]``, ``[tracing]``.
"""

from __future__ import annotations

import dataclasses
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar


class ConfigError(ValueError):
    """Configuration is missing or wrong; raised at start-up with a message naming the key."""


@dataclass
class MetricsOptions:
    """``SWITCHBOARD["METRICS"]``: Prometheus endpoints and the ``switchboard status`` answer.

    Metrics are off unless a bind is given, because an endpoint is a listening socket a
    deployment must decide to expose. ``bind`` serves gateway (and ``switchboard run``)
    processes, ``worker_bind`` worker processes: the two kinds usually share a host, so
    they need different ports. Several workers on one host each need their own port; pass
    it per process with ``switchboard worker --metrics-bind HOST:PORT``.
    """

    #: ``"host:port"`` for gateway and ``run`` processes; None: no endpoint.
    bind: str | None = None
    #: ``"host:port"`` for worker processes; None: no endpoint.
    worker_bind: str | None = None
    #: Seconds between stats snapshots and layer latency probes (what metrics read).
    interval: float = 1.0
    #: Answer ``switchboard status`` requests (one extra blocking reader per process).
    status: bool = True

    def __post_init__(self) -> None:
        for name in ("bind", "worker_bind"):
            value = getattr(self, name)
            if value is not None:
                parse_bind(value, where=name)  # parse_options prefixes "METRICS: "
        if not self.interval > 0:
            raise ValueError(f"interval must be > 0, got {self.interval!r}")


#: What a client of a console bound only to loopback gets without credentials.
CONSOLE_LOOPBACK_ACCESS = ("read", "manage", "none")
#: Shortest console token accepted: a bearer token is a password that never changes.
CONSOLE_TOKEN_MIN_LENGTH = 16


@dataclass
class ConsoleOptions:
    """``SWITCHBOARD["CONSOLE"]``: the operator's console (docs/console.md).

    ``switchboard console`` serves it on ``bind``; a gateway serves it on its HTTP port
    under ``mount`` only when a mount path is given (off by default: a page on a public
    port is a decision). Clients of a console whose every listening address is a
    loopback one get ``loopback`` access without credentials; anywhere else a client
    needs a bearer token from ``tokens`` or, with Django's auth and sessions installed, a
    staff session. Read-only unless the token says ``manage: true`` or the staff user has
    the ``switchboard.manage`` permission.
    """

    #: ``"host:port"`` of ``switchboard console``.
    bind: str = "127.0.0.1:9180"
    #: Path prefix on the gateway's HTTP port (``"/switchboard/console/"``); None: not mounted.
    mount: str | None = None
    #: Bearer tokens: ``[{"name": "ops", "token": "...", "manage": false}]``.
    tokens: list[dict[str, Any]] = field(default_factory=list, repr=False)
    #: ``read``, ``manage`` or ``none``: what loopback clients of a loopback-only console get.
    loopback: str = "read"
    #: Seconds between refreshes (one status round over the layer each).
    interval: float = 1.0
    #: Seconds of history the charts keep (in the console's process).
    history: float = 900.0
    #: Largest request body accepted by the console's endpoints, in bytes.
    max_body_size: int = 16 * 1024
    #: Seconds without an answer after which a process leaves the page (None: the
    #: gateway's ``worker_timeout``, the same rule the gateways use for workers).
    forget_after: float | None = None

    def __post_init__(self) -> None:
        parse_bind(self.bind, where="bind")
        if self.mount is not None:
            if not self.mount.startswith("/") or "?" in self.mount or "#" in self.mount or len(self.mount) < 2:
                raise ValueError(f"mount must be a path like '/switchboard/console/', got {self.mount!r}")
            self.mount = self.mount.rstrip("/")
        if self.loopback not in CONSOLE_LOOPBACK_ACCESS:
            raise ValueError(f"loopback must be one of {', '.join(CONSOLE_LOOPBACK_ACCESS)}, got {self.loopback!r}")
        for name in ("interval", "history"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.history < self.interval:
            raise ValueError("history must be at least one interval")
        if self.max_body_size < 1:
            raise ValueError(f"max_body_size must be >= 1, got {self.max_body_size!r}")
        if self.forget_after is not None and not self.forget_after > 0:
            raise ValueError(f"forget_after must be > 0, got {self.forget_after!r}")
        names: set[str] = set()
        for index, entry in enumerate(self.tokens):
            unknown = set(entry) - {"name", "token", "manage"}
            if unknown:
                raise ValueError(f"tokens[{index}]: unknown key(s) {', '.join(sorted(unknown))}; known: manage, name, token")
            token, name, manage = entry.get("token"), entry.get("name", f"token{index}"), entry.get("manage", False)
            if not isinstance(token, str) or len(token) < CONSOLE_TOKEN_MIN_LENGTH:
                raise ValueError(f"tokens[{index}]: token must be a string of at least {CONSOLE_TOKEN_MIN_LENGTH} characters")
            if not isinstance(name, str) or not name or name in names:
                raise ValueError(f"tokens[{index}]: name must be a unique non-empty string")
            if not isinstance(manage, bool):
                raise ValueError(f"tokens[{index}]: manage must be true or false")
            names.add(name)


#: Where finished spans go: an OTLP collector, stdout, or whatever provider the process set.
TRACING_EXPORTERS = ("otlp", "console", "global")


@dataclass
class TracingOptions:
    """``SWITCHBOARD["TRACING"]``: OpenTelemetry spans per event (docs/tracing.md).

    Off by default, and then nothing of OpenTelemetry is imported. ``exporter``:
    ``otlp`` (the OTLP/HTTP exporter, configured by the standard ``OTEL_EXPORTER_OTLP_*``
    variables), ``console`` (spans as JSON on stdout) or ``global`` (keep the tracer
    provider the process already installed, e.g. by ``opentelemetry-instrument`` or the
    project's settings module).
    """

    enabled: bool = False
    exporter: str = "global"
    #: ``service.name`` of the spans; default ``switchboard-<gateway|worker|run>``.
    service_name: str | None = None
    #: Instrument Django with ``opentelemetry-instrumentation-django`` (when installed),
    #: so its spans nest under the handler's.
    instrument_django: bool = True

    def __post_init__(self) -> None:
        if self.exporter not in TRACING_EXPORTERS:
            raise ValueError(f"exporter must be one of {', '.join(TRACING_EXPORTERS)}, got {self.exporter!r}")


@dataclass
class GatewayOptions:
    """``SWITCHBOARD["GATEWAY"]``: how long the gateway waits on workers (specs/layer.md).

    ``worker_timeout``: a worker silent this long (no heartbeat; by the gateway's own
    read-back check, so a backlog of replies never makes a live worker look silent) is
    taken as dead and its connections go back to the pool. ``claim_timeout``: events of
    a connection wait this long for the worker that took its first event to claim it.
    ``drain_timeout``: how long a stopping worker's connections are held for it to
    finish, and how long the gateway itself drains open requests on SIGTERM.
    ``membership_check_interval``: how often the gateway checks that the layer still
    holds its connections' group memberships (re-added at once when it lost them, see
    gateway/memberships.py). ``event_wait``: how long an event of a sticky connection (a
    WebSocket frame, an HTTP request) waits for room in a full worker channel before
    the client is told to try later (1013 / 503); meanwhile nothing more is read from
    that client.
    """

    worker_timeout: float = 1.0
    claim_timeout: float = 2.0
    drain_timeout: float = 10.0
    membership_check_interval: float = 1.0
    event_wait: float = 2.0

    def __post_init__(self) -> None:
        for name in ("worker_timeout", "claim_timeout", "drain_timeout", "membership_check_interval", "event_wait"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")


@dataclass
class WorkerOptions:
    """``SWITCHBOARD["WORKER"]``: what a worker reads and how it bounds its work.

    ``protocols`` / ``channels``: pool channels and named channels to read (default: what
    the application routes). ``heartbeat_interval``: seconds between heartbeats to the
    gateways it holds connections on (keep it well under the gateway's
    ``worker_timeout``). ``drain_timeout``: on SIGTERM, how long to wait for gateways to
    take connections back and for instances to finish. ``max_instance_backlog``: events
    one connection's instance may have queued; past it the connection gets the protocol's
    "try again later" (WebSocket close 1013, HTTP 503) instead of the worker buffering
    without bound (specs/layer.md, Bounded worker backlog). ``max_listener_backlog``: the
    same for the instance of a listener (a UDP socket, an MQTT session, the SMTP server),
    which serves all of its peers; past it their events are dropped and counted.
    ``local_delivery``: deliver group messages and sends to connections this worker has
    claimed straight to their instance, without the round trip through the gateway
    (specs/layer.md, Local delivery). ``reply_wait``: how long a consumer's ``send`` to
    its client waits for room when the gateway's reply list is full, before the reply is
    shed and counted (``replies_shed``) instead of raising into the consumer.
    ``django_http``: how Django's own HTTP handler serves a request: ``"auto"`` (a sync
    view, behind a middleware chain that can run synchronously, in one hop to the
    worker's thread pool, as WSGI serves it; anything else through Django's ASGI
    handler), ``"sync"`` or ``"async"`` (always that path). ``django_threads``: threads
    in that pool, which bound the sync views running at once (and, with
    ``CONN_MAX_AGE``, the database connections kept open). ``durable_prefetch``: durable
    messages (specs/layer.md, Durable channels) read and not yet finished, at most: what a
    killed worker leaves for the others to claim after the visibility timeout, and how far
    one worker reads ahead of its consumer (a channel's instance handles one message at a
    time, so with slow tasks and several workers keep it small; raise it for many fast ones).

    Other keys are left for the project's own use (they were always allowed here).
    """

    protocols: list[str] | None = None
    channels: list[str] | None = None
    heartbeat_interval: float = 0.25
    drain_timeout: float = 10.0
    max_instance_backlog: int = 1000
    max_listener_backlog: int = 20000
    local_delivery: bool = True
    reply_wait: float = 5.0
    django_http: str = "auto"
    django_threads: int = 8
    durable_prefetch: int = 32

    def __post_init__(self) -> None:
        if self.django_http not in ("auto", "sync", "async"):
            raise ValueError(f"django_http must be auto, sync or async, got {self.django_http!r}")
        if self.django_threads < 1:
            raise ValueError(f"django_threads must be >= 1, got {self.django_threads!r}")
        for name in ("heartbeat_interval", "drain_timeout", "reply_wait"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("max_instance_backlog", "max_listener_backlog", "durable_prefetch"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)!r}")

    @classmethod
    def from_config(cls, worker: Mapping[str, Any]) -> WorkerOptions:
        """Validate the known keys of ``SWITCHBOARD["WORKER"]`` (others are the project's)."""
        known = {f.name for f in dataclasses.fields(cls)}
        return parse_options(cls, {k: v for k, v in worker.items() if k in known}, where="WORKER")


@dataclass
class SwitchboardConfig:
    """Everything the gateway and worker processes read from configuration."""

    application: str | None = None
    layer: dict[str, Any] = field(default_factory=lambda: {"BACKEND": "memory"})
    protocols: dict[str, dict[str, Any]] = field(default_factory=dict)
    worker: dict[str, Any] = field(default_factory=dict)
    settings_module: str | None = None
    metrics: MetricsOptions = field(default_factory=MetricsOptions)
    gateway: GatewayOptions = field(default_factory=GatewayOptions)
    console: ConsoleOptions = field(default_factory=ConsoleOptions)
    tracing: TracingOptions = field(default_factory=TracingOptions)

    @property
    def worker_options(self) -> WorkerOptions:
        return WorkerOptions.from_config(self.worker)


def _upper_keys(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k).upper(): v for k, v in mapping.items()}


def from_mapping(raw: Mapping[str, Any], settings_module: str | None = None) -> SwitchboardConfig:
    """Build a config from a ``SWITCHBOARD``-style mapping (keys in any case)."""
    data = _upper_keys(raw)
    known = {"APPLICATION", "LAYER", "PROTOCOLS", "WORKER", "METRICS", "GATEWAY", "CONSOLE", "TRACING", "DJANGO_SETTINGS_MODULE"}
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"unknown SWITCHBOARD keys: {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})")
    layer = _upper_keys(data.get("LAYER") or {"BACKEND": "memory"})
    protocols = data.get("PROTOCOLS") or {}
    if not isinstance(protocols, Mapping):
        raise ConfigError("SWITCHBOARD['PROTOCOLS'] must be a mapping of plugin name to options")
    for name, options in protocols.items():
        if not isinstance(options, Mapping):
            raise ConfigError(f"options of protocol {name!r} must be a mapping, got {type(options).__name__}")
    worker = data.get("WORKER") or {}
    if not isinstance(worker, Mapping):
        raise ConfigError("SWITCHBOARD['WORKER'] must be a mapping")
    metrics = data.get("METRICS") or {}
    if not isinstance(metrics, Mapping):
        raise ConfigError("SWITCHBOARD['METRICS'] must be a mapping")
    gateway = data.get("GATEWAY") or {}
    if not isinstance(gateway, Mapping):
        raise ConfigError("SWITCHBOARD['GATEWAY'] must be a mapping")
    console = data.get("CONSOLE") or {}
    tracing = data.get("TRACING") or {}
    for name, value in (("CONSOLE", console), ("TRACING", tracing)):
        if not isinstance(value, Mapping):
            raise ConfigError(f"SWITCHBOARD['{name}'] must be a mapping")
    WorkerOptions.from_config(worker)  # fail at start-up on a bad value, not at first use
    return SwitchboardConfig(
        application=data.get("APPLICATION"),
        layer=layer,
        protocols={str(k): dict(v) for k, v in protocols.items()},
        worker=dict(worker),
        settings_module=data.get("DJANGO_SETTINGS_MODULE") or settings_module,
        metrics=parse_options(MetricsOptions, {str(k).lower(): v for k, v in metrics.items()}, where="METRICS"),
        gateway=parse_options(GatewayOptions, {str(k).lower(): v for k, v in gateway.items()}, where="GATEWAY"),
        console=parse_options(ConsoleOptions, {str(k).lower(): v for k, v in console.items()}, where="CONSOLE"),
        tracing=parse_options(TracingOptions, {str(k).lower(): v for k, v in tracing.items()}, where="TRACING"),
    )


def from_toml(path: str | Path) -> SwitchboardConfig:
    """Read a TOML config file; errors name the file."""
    try:
        with open(path, "rb") as handle:
            raw = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    try:
        return from_mapping(raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def from_django_settings() -> SwitchboardConfig:
    """Read ``settings.SWITCHBOARD``, defaulting the application to ``ASGI_APPLICATION``.

    Without ``SWITCHBOARD["LAYER"]``, the layer is ``CHANNEL_LAYERS["default"]``, so a
    Channels project runs with the layer it has configured (layers/aliases.py).
    """
    from django.conf import settings

    raw = getattr(settings, "SWITCHBOARD", {}) or {}
    config = from_mapping(raw)
    if config.application is None:
        config.application = getattr(settings, "ASGI_APPLICATION", None)
    if "LAYER" not in _upper_keys(raw):
        channels_default = (getattr(settings, "CHANNEL_LAYERS", None) or {}).get("default")
        if channels_default is not None:
            config.layer = channels_layer_config(channels_default)
    return config


def channels_layer_config(entry: Any) -> dict[str, Any]:
    """A ``CHANNEL_LAYERS`` entry as a layer config; Channels' in-memory layer is ``"memory"``.

    So ``switchboard run`` (which always runs in memory) keeps the entry's options, and
    every other backend is built as Channels builds it.
    """
    from .layers.aliases import KNOWN_BACKENDS

    if not isinstance(entry, Mapping):
        raise ConfigError(f"CHANNEL_LAYERS['default'] must be a mapping, got {type(entry).__name__}")
    layer = _upper_keys(entry)
    backend = layer.get("BACKEND")
    if not isinstance(backend, str):
        raise ConfigError("CHANNEL_LAYERS['default'] has no BACKEND")
    if KNOWN_BACKENDS.get(backend, "").endswith(".InMemoryChannelLayer"):
        return {"BACKEND": "memory", "CONFIG": dict(layer.get("CONFIG") or {})}
    return {"BACKEND": backend, "CONFIG": dict(layer.get("CONFIG") or {})}


def layer_config_from_settings() -> dict[str, Any]:
    """The default layer's config outside a gateway/worker process (see from_django_settings)."""
    try:
        from django.conf import settings

        if settings.configured:
            return from_django_settings().layer
    except ImportError:
        pass
    return {"BACKEND": "memory"}


T = TypeVar("T")


def parse_options(options_class: type[T], raw: Mapping[str, Any], *, where: str) -> T:
    """Validate ``raw`` against the dataclass ``options_class`` and build it.

    Unknown keys, missing required keys and wrongly typed values raise :class:`ConfigError`
    naming ``where`` and the key, so a typo in settings stops start-up with a clear message.
    Ints are accepted for floats; a single string is accepted for ``list[str]``.
    """
    if not dataclasses.is_dataclass(options_class):
        raise TypeError(f"{options_class!r} is not a dataclass")
    hints = typing.get_type_hints(options_class)
    known = {f.name: f for f in dataclasses.fields(options_class)}
    unknown = set(raw) - set(known)
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    values: dict[str, Any] = {}
    for name, value in raw.items():
        values[name] = _coerce(value, hints[name], f"{where}.{name}")
    try:
        return options_class(**values)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {hint}")
    if origin is list:
        (item_type,) = args or (Any,)
        if isinstance(value, str) and item_type is str:
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(item, item_type, f"{where}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if isinstance(hint, type) and not isinstance(value, hint):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}")
    return value


def parse_bind(bind: str, *, where: str) -> tuple[str, int]:
    """``"host:port"`` / ``"[::1]:port"`` / ``":port"`` to ``(host, port)``."""
    host, sep, port_text = bind.rpartition(":")
    if not sep:
        raise ConfigError(f"{where}: bind {bind!r} must be host:port")
    host = host.strip("[]") or "0.0.0.0"
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"{where}: bind {bind!r} has a bad port") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{where}: bind {bind!r} port out of range")
    return host, port
