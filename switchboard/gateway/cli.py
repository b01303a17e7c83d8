"""Command line: ``switchboard gateway | worker | run | status | console``.

``gateway`` holds client connections; ``worker`` runs consumers; ``run`` does both in one
process over the in-memory layer, the embedded mode that needs nothing else installed;
``status`` shows the running gateways and workers (docs/observability.md); ``console``
serves the operator's web console (docs/console.md).

Every serving process also runs an observer (``gateway/observer.py``) that answers
``switchboard status`` and, when a metrics bind is configured, feeds a Prometheus endpoint.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import logging
import os
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from . import logs
from .config import ConfigError, MetricsOptions, SwitchboardConfig, from_django_settings, from_toml, parse_bind
from .observer import Observer, ProcessView

if TYPE_CHECKING:
    from switchboard.console.serve import ConsoleMount

    from .layers import ChannelLayer
    from .metrics import Metrics
    from .plugins import ProtocolPlugin
    from .server import Gateway
    from .tracing import GatewayTracer, WorkerTracer

logger = logging.getLogger("switchboard.cli")

T = TypeVar("T")

# Django settings whose values are secrets or hold some (URLs with passwords, PASSWORD keys).
_SECRET_SETTINGS = ("SECRET_KEY", "SECRET_KEY_FALLBACKS", "DATABASES", "CACHES", "CHANNEL_LAYERS", "EMAIL_HOST_PASSWORD")


def _add_common(parser: argparse.ArgumentParser, *, serving: bool = True) -> None:
    parser.add_argument("--settings", help="Django settings module (else DJANGO_SETTINGS_MODULE)")
    parser.add_argument("--config", help="TOML config file, instead of settings.SWITCHBOARD")
    parser.add_argument("--pythonpath", help="directory to add to sys.path (default: the current one)")
    parser.add_argument("--log-level", default=os.environ.get("SWITCHBOARD_LOG_LEVEL", "INFO"))
    parser.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        help="text (default) or json: one JSON object per line (else SWITCHBOARD_LOG_FORMAT)",
    )
    if serving:
        parser.add_argument(
            "--metrics-bind",
            default=os.environ.get("SWITCHBOARD_METRICS_BIND"),
            metavar="HOST:PORT",
            help="serve Prometheus metrics of this process here, or 'off' "
            "(default: METRICS bind, or worker_bind for a worker; else SWITCHBOARD_METRICS_BIND)",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchboard", description="Multi-protocol gateway for Django.")
    sub = parser.add_subparsers(dest="command", required=True)
    gateway = sub.add_parser("gateway", help="run the protocol servers (gateway process)")
    _add_common(gateway)
    worker = sub.add_parser("worker", help="run consumers (worker process)")
    _add_common(worker)
    worker.add_argument("channels", nargs="*", help="only consume these named channels (no connections)")
    run = sub.add_parser("run", help="gateway and worker in one process on the in-memory layer")
    _add_common(run)
    status = sub.add_parser("status", help="show the running gateways and workers (through the channel layer)")
    _add_common(status, serving=False)
    status.add_argument("--once", action="store_true", help="print one snapshot and exit (1 if nobody answered)")
    status.add_argument("--json", action="store_true", help="machine-readable output: one JSON object per snapshot")
    status.add_argument("--wait", type=float, default=2.0, help="seconds to collect answers with --once (default 2)")
    status.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes when live (default 1)")
    console = sub.add_parser("console", help="serve the operator's web console (through the channel layer)")
    _add_common(console, serving=False)
    console.add_argument(
        "--bind",
        metavar="HOST:PORT",
        default=os.environ.get("SWITCHBOARD_CONSOLE_BIND"),
        help="where to serve it (default: CONSOLE bind, 127.0.0.1:9180; else SWITCHBOARD_CONSOLE_BIND)",
    )
    return parser


def load_config(args: argparse.Namespace) -> SwitchboardConfig:
    """Read configuration and set Django up; the one place both commands start from."""
    sys.path.insert(0, os.path.abspath(args.pythonpath or os.getcwd()))
    if args.settings:
        os.environ["DJANGO_SETTINGS_MODULE"] = args.settings
    config: SwitchboardConfig | None = None
    if args.config:
        config = from_toml(args.config)
        if config.settings_module:
            os.environ.setdefault("DJANGO_SETTINGS_MODULE", config.settings_module)
    if os.environ.get("DJANGO_SETTINGS_MODULE"):
        import django

        django.setup()
        if config is None:
            config = from_django_settings()
        elif config.application is None:
            config.application = from_django_settings().application
    if config is None:
        raise ConfigError("no configuration: pass --settings (or set DJANGO_SETTINGS_MODULE) or --config FILE")
    return config


def load_application(config: SwitchboardConfig) -> Any:
    """The ASGI application workers run: ``APPLICATION``/``ASGI_APPLICATION``, else Django's."""
    if config.application:
        module_name, _, attr = config.application.replace(":", ".").rpartition(".")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"cannot load application {config.application!r}: {exc}") from exc
    from django.core.asgi import get_asgi_application

    return get_asgi_application()


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop when it is installed, else the default asyncio loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


# -- observability ----------------------------------------------------------------------


def metrics_bind(args: argparse.Namespace, options: MetricsOptions, kind: str) -> str | None:
    """Where this process serves metrics: ``--metrics-bind`` (``off`` disables), else config."""
    value = getattr(args, "metrics_bind", None)
    if value is not None:
        if value.strip().lower() in ("", "off", "none"):
            return None
        parse_bind(value, where="--metrics-bind")
        return str(value)
    return options.worker_bind if kind == "worker" else options.bind


class Observability:
    """The observer and metrics endpoint of one serving process; either may be off.

    The endpoint is bound at construction, so a taken port stops start-up with a
    configuration error; the observer starts with :meth:`start` once the gateway (or
    worker) exists, and stops before the layer closes.
    """

    def __init__(
        self, view: ProcessView, options: MetricsOptions, bind: str | None, config: SwitchboardConfig | None = None
    ) -> None:
        self.view = view
        self.metrics: Metrics | None = None
        self.observer: Observer | None = None
        #: The console mounted on the gateway's HTTP port (``CONSOLE.mount``), if any.
        self.console: ConsoleMount | None = None
        if config is not None and config.console.mount is not None and view.kind != "worker":
            from switchboard.console.serve import ConsoleMount

            self.console = ConsoleMount(config, view.layer)
        if bind is not None:
            try:
                from .metrics import Metrics
            except ImportError as exc:
                raise ConfigError(
                    f"METRICS: serving metrics needs prometheus_client: pip install 'switchboard[metrics]' ({exc})"
                ) from exc
            self.metrics = Metrics()
        if self.metrics is not None or options.status:
            self.observer = Observer(view, interval=options.interval, status=options.status, probe=self.metrics is not None)
        if self.metrics is not None and self.observer is not None and bind is not None:
            self.metrics.attach(self.observer)
            self.metrics.serve(bind)

    def start(self) -> None:
        if self.observer is not None:
            self.observer.start()

    async def close(self) -> None:
        if self.console is not None:
            await self.console.close()
        if self.observer is not None:
            await self.observer.stop()
        if self.metrics is not None:
            await self.metrics.close()


def tracers(config: SwitchboardConfig, kind: str) -> tuple[GatewayTracer | None, WorkerTracer | None]:
    """The gateway and worker tracers when ``TRACING`` is enabled (docs/tracing.md), else Nones.

    Only then is OpenTelemetry imported. Call before the application is loaded: Django's
    instrumentation adds its middleware, which must be in place when Django's handler is built.
    """
    if not config.tracing.enabled:
        return None, None
    try:
        from .tracing import GatewayTracer, WorkerTracer, setup_tracing
    except ImportError as exc:
        raise ConfigError(f"TRACING: tracing needs OpenTelemetry: pip install 'switchboard[otel]' ({exc})") from exc
    tracer = setup_tracing(config.tracing, kind)
    return GatewayTracer(tracer), WorkerTracer(tracer)


def freeze_startup_objects() -> None:
    """Move everything alive after start-up out of the garbage collector's sight.

    Django, the application, the plugins and their libraries leave a few hundred thousand
    long-lived objects; every full (generation 2) collection walks them all, which under
    load shows as latency spikes of tens of milliseconds at the p99. ``gc.freeze()`` puts
    them in a permanent generation that collections skip (what CPython documents it for:
    a server's start-up state); objects made while serving are collected as before.
    """
    if os.environ.get("SWITCHBOARD_GC_FREEZE", "1") == "0":
        return
    gc.collect()
    gc.freeze()


def _attach_gateway(view: ProcessView, observability: Observability) -> Callable[[Gateway, list[ProtocolPlugin[Any]]], None]:
    """The ``started`` callback of ``run_gateway``: what the observer needs, once it exists."""

    def started(gateway: Gateway, plugins: list[ProtocolPlugin[Any]]) -> None:
        view.gateway = gateway
        view.plugins = list(plugins)
        logs.CONTEXT["gateway_id"] = gateway.id
        observability.start()
        if observability.console is not None:
            observability.console.start(gateway, plugins)
        freeze_startup_objects()

    return started


# -- commands ---------------------------------------------------------------------------


async def _run_gateway(config: SwitchboardConfig, args: argparse.Namespace, stop: asyncio.Event | None = None) -> None:
    from .layers import build_layer
    from .server import run_gateway

    gateway_tracer, _ = tracers(config, "gateway")
    layer = build_layer(config.layer)
    stop = stop or asyncio.Event()
    view = ProcessView("gateway", layer, stopping=stop)
    observability: Observability | None = None
    try:
        observability = Observability(view, config.metrics, metrics_bind(args, config.metrics, "gateway"), config)
        await run_gateway(
            config, layer=layer, stop=stop, started=_attach_gateway(view, observability), tracer=gateway_tracer
        )
    finally:
        if observability is not None:
            await observability.close()
        await layer.close()


async def _run_worker(
    config: SwitchboardConfig,
    channels: Sequence[str],
    args: argparse.Namespace | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    from .layers import build_layer, set_channel_layer
    from .server import _install_signal_handlers
    from .worker import Worker

    _, worker_tracer = tracers(config, "worker")
    application = load_application(config)
    layer = build_layer(config.layer)
    set_channel_layer(layer)
    stop = stop or asyncio.Event()
    _install_signal_handlers(stop)
    options = config.worker_options
    worker = Worker(
        application, layer,
        protocols=[] if channels else options.protocols,
        channels=list(channels) if channels else options.channels,
        heartbeat_interval=options.heartbeat_interval, max_instance_backlog=options.max_instance_backlog,
        max_listener_backlog=options.max_listener_backlog,
        local_delivery=options.local_delivery,
        django_http=options.django_http, django_threads=options.django_threads,
    )
    if worker_tracer is not None:
        worker_tracer.install(worker)
    logs.CONTEXT["worker_id"] = worker.id
    view = ProcessView("worker", layer, worker=worker, stopping=stop)
    observability: Observability | None = None
    try:
        observability = Observability(view, config.metrics, metrics_bind(args or argparse.Namespace(), config.metrics, "worker"))
        observability.start()
        freeze_startup_objects()
        await worker.run(stop, drain_timeout=options.drain_timeout)
    finally:
        if observability is not None:
            await observability.close()
        await layer.close()


async def _run_both(config: SwitchboardConfig, args: argparse.Namespace | None = None, stop: asyncio.Event | None = None) -> None:
    from .layers import build_layer, set_channel_layer
    from .server import run_gateway
    from .worker import Worker

    if str(config.layer.get("BACKEND", "memory")) != "memory":
        logger.info("switchboard run uses the in-memory layer (configured: %s)", config.layer.get("BACKEND"))
    memory_options = config.layer.get("CONFIG", {}) if config.layer.get("BACKEND", "memory") == "memory" else {}
    gateway_tracer, worker_tracer = tracers(config, "run")
    layer = build_layer({"BACKEND": "memory", "CONFIG": memory_options})
    set_channel_layer(layer)
    application = load_application(config)
    options = config.worker_options
    worker = Worker(
        application, layer, protocols=options.protocols, channels=options.channels,
        heartbeat_interval=options.heartbeat_interval, max_instance_backlog=options.max_instance_backlog,
        max_listener_backlog=options.max_listener_backlog,
        local_delivery=options.local_delivery,
        django_http=options.django_http, django_threads=options.django_threads,
    )
    if worker_tracer is not None:
        worker_tracer.install(worker)
    logs.CONTEXT["worker_id"] = worker.id
    stop = stop or asyncio.Event()
    view = ProcessView("run", layer, worker=worker, stopping=stop)
    observability = Observability(view, config.metrics, metrics_bind(args or argparse.Namespace(), config.metrics, "run"), config)
    worker_task = asyncio.get_running_loop().create_task(worker.run(stop, drain_timeout=options.drain_timeout))
    try:
        await run_gateway(
            config, layer=layer, stop=stop, started=_attach_gateway(view, observability), tracer=gateway_tracer
        )
    finally:
        stop.set()
        await worker_task
        await observability.close()
        await layer.close()


async def _status(config: SwitchboardConfig, args: argparse.Namespace) -> int:
    from .layers import build_layer
    from .status import run_status

    if str(config.layer.get("BACKEND", "memory")) == "memory":
        raise ConfigError(
            "switchboard status reaches processes through a shared channel layer (e.g. Redis); "
            "the in-memory layer of `switchboard run` is private to that process (use its metrics endpoint)"
        )
    from .server import _install_signal_handlers

    layer = build_layer(config.layer)
    stop = asyncio.Event()
    _install_signal_handlers(stop)  # SIGINT/SIGTERM end the live view cleanly
    try:
        return await run_status(layer, once=args.once, as_json=args.json, wait=args.wait, interval=args.interval, stop=stop)
    finally:
        await layer.close()


async def _console(config: SwitchboardConfig, args: argparse.Namespace, stop: asyncio.Event | None = None) -> None:
    from switchboard.console.serve import run_console

    from .layers import build_layer

    if str(config.layer.get("BACKEND", "memory")) == "memory":
        raise ConfigError(
            "switchboard console reaches processes through a shared channel layer (e.g. Redis); for "
            "`switchboard run` (in-memory layer) mount it in that process instead: CONSOLE.mount"
        )
    if args.bind is not None:
        parse_bind(args.bind, where="--bind")
    from .server import _install_signal_handlers

    layer: ChannelLayer = build_layer(config.layer)
    stop = stop or asyncio.Event()
    _install_signal_handlers(stop)
    try:
        await run_console(config, layer, stop, bind=args.bind)
    finally:
        await layer.close()


def _register_secrets(config: SwitchboardConfig) -> None:
    """Tell the log redaction every secret value configuration holds (see gateway/logs.py)."""
    found = logs.secrets_in(
        {"layer": config.layer, "protocols": config.protocols, "worker": config.worker, "console": config.console.tokens}
    )
    try:
        from django.conf import settings

        if settings.configured:
            found |= logs.secrets_in({name: getattr(settings, name, None) for name in _SECRET_SETTINGS})
    except ImportError:
        pass
    logs.register_secrets(found)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    log_format = args.log_format or os.environ.get("SWITCHBOARD_LOG_FORMAT", "text")
    if log_format not in logs.FORMATS:
        parser.error(f"SWITCHBOARD_LOG_FORMAT must be one of {', '.join(logs.FORMATS)}, not {log_format!r}")
    logs.setup_logging(args.log_level, log_format)
    logs.register_secrets(logs.environment_secrets())
    if args.command != "status":
        logs.CONTEXT["kind"] = args.command
    try:
        config = load_config(args)
        _register_secrets(config)
        logs.protect_root_handlers()  # Django's LOGGING setting may have added handlers
        if args.command == "gateway":
            run_async(_run_gateway(config, args))
        elif args.command == "worker":
            run_async(_run_worker(config, args.channels, args))
        elif args.command == "run":
            run_async(_run_both(config, args))
        elif args.command == "status":
            return run_async(_status(config, args))
        elif args.command == "console":
            run_async(_console(config, args))
    except ConfigError as exc:
        print(f"switchboard: configuration error: {logs.REDACTOR.redact_text(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
