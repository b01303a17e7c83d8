"""Command line: ``switchboard gateway | worker | run | status | deadletters | console``.

``gateway`` holds client connections; ``worker`` runs consumers; ``run`` does both in one
process over the in-memory layer, the embedded mode that needs nothing else installed;
``status`` shows the running gateways and workers (docs/observability.md);
``deadletters`` lists, shows, replays and drops dead letters of durable channels
(docs/delivery.md); ``console`` serves the operator's web console (docs/console.md).

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

from . import banner, logs, reload, supervisor
from . import options as cli_options
from .config import (
    ConfigError,
    MetricsOptions,
    SwitchboardConfig,
    WorkerOptions,
    from_django_settings,
    from_toml,
    parse_bind,
)
from .observer import Observer, ProcessView

if TYPE_CHECKING:
    from switchboard.console.serve import ConsoleMount

    from .layers import ChannelLayer
    from .metrics import Metrics
    from .plugins import ProtocolPlugin
    from .server import Gateway
    from .tracing import GatewayTracer, WorkerTracer
    from .worker import Worker

logger = logging.getLogger("switchboard.cli")

T = TypeVar("T")

# Django settings whose values are secrets or hold some (URLs with passwords, PASSWORD keys).
_SECRET_SETTINGS = ("SECRET_KEY", "SECRET_KEY_FALLBACKS", "DATABASES", "CACHES", "CHANNEL_LAYERS", "EMAIL_HOST_PASSWORD")


def build_parser() -> argparse.ArgumentParser:
    """The ``switchboard`` command line (gateway/options.py defines every option)."""
    return cli_options.build_parser(banner.version_text())


def load_config(args: argparse.Namespace) -> SwitchboardConfig:
    """Read configuration and set Django up; the one place every command starts from."""
    sys.path.insert(0, os.path.abspath(getattr(args, "pythonpath", None) or os.getcwd()))
    if getattr(args, "settings", None):
        os.environ["DJANGO_SETTINGS_MODULE"] = args.settings
    config: SwitchboardConfig | None = None
    if args.config:
        config = from_toml(args.config)
        if config.settings_module:
            os.environ.setdefault("DJANGO_SETTINGS_MODULE", config.settings_module)
    if os.environ.get("DJANGO_SETTINGS_MODULE"):
        setup_django()
        if config is None:
            config = from_django_settings()
        elif config.application is None:
            config.application = from_django_settings().application
    if config is None:
        raise ConfigError("no configuration: pass --settings (or set DJANGO_SETTINGS_MODULE) or --config FILE")
    return config


def setup_django() -> None:
    """``django.setup()``, with a settings module that will not load as a ConfigError.

    The usual first-run mistakes (started from the wrong directory, a typo in the module
    name, a missing app) are one line that names the module; the traceback is logged at
    DEBUG for the rarer case where the cause is deeper.
    """
    import django
    from django.core.exceptions import ImproperlyConfigured

    module = os.environ.get("DJANGO_SETTINGS_MODULE", "")
    try:
        django.setup()
    except (ImportError, ImproperlyConfigured) as exc:
        logger.debug("django.setup() failed", exc_info=True)
        hint = ""
        if isinstance(exc, ModuleNotFoundError) and exc.name and module.startswith(exc.name):
            hint = f" (run from the directory that holds {exc.name}/, or pass --pythonpath)"
        raise ConfigError(f"cannot set Django up with settings {module!r}: {exc}{hint}") from exc


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


def raise_file_limit() -> None:
    """Raise this process's soft file-descriptor limit to its hard limit, as nginx and most servers do.

    A gateway holds a descriptor per client connection; the soft limit is often 1,024
    (a default meant for interactive shells) while the hard limit the administrator allows
    is far higher. The HTTP plugin keeps a reserve below whatever limit is in force and
    sheds idle connections near it (docs/http.md), but it can only use what it is given.
    A lower hard limit is respected: that is the administrator's decision.
    """
    try:
        import resource
    except ImportError:  # not POSIX: nothing to raise
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard or (hard != resource.RLIM_INFINITY and soft != resource.RLIM_INFINITY and soft > hard):
        return
    target = hard
    if hard == resource.RLIM_INFINITY:
        target = 1024 * 1024  # an unlimited hard limit still has a kernel ceiling (nr_open)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        logger.warning("could not raise the file limit from %d to %d: %s", soft, target, exc)
        return
    logger.info("file limit raised from %d to %d descriptors", soft, target)


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
        #: Where the metrics endpoint listens (port 0 resolved), for the banner.
        self.metrics_address: tuple[str, int] | None = None
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
            self.metrics_address = self.metrics.serve(bind)

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


def _attach_gateway(
    view: ProcessView, observability: Observability, notes: Sequence[str] = ()
) -> Callable[[Gateway, list[ProtocolPlugin[Any]]], None]:
    """The ``started`` callback of ``run_gateway``: the observer, then the banner."""

    def started(gateway: Gateway, plugins: list[ProtocolPlugin[Any]]) -> None:
        view.gateway = gateway
        view.plugins = list(plugins)
        logs.CONTEXT["gateway_id"] = gateway.id
        observability.start()
        if observability.console is not None:
            observability.console.start(gateway, plugins)
        logger.info(
            "%s",
            banner.render(
                view.kind,
                layer=view.layer,
                gateway=gateway,
                plugins=plugins,
                worker=view.worker,
                metrics_address=observability.metrics_address,
                notes=notes,
            ),
        )
        freeze_startup_objects()

    return started


# -- commands ---------------------------------------------------------------------------


def build_configured_layer(layer_config: dict[str, Any]) -> ChannelLayer:
    """The layer of ``LAYER`` (or ``CHANNEL_LAYERS``); a bad one is a ConfigError, as other settings.

    Building connects nothing (Redis pools open on first use), so this runs before any
    socket opens: a ``hosts`` entry that is no URL, an unknown option or a backend that
    does not import is one line and exit code 2, not a traceback.
    """
    from .layers import build_layer

    try:
        return build_layer(layer_config)
    except (ValueError, TypeError, ImportError, AttributeError) as exc:
        raise ConfigError(f"LAYER: {exc}") from exc


async def verify_layer(layer: ChannelLayer) -> None:
    """Ask the layer's storage whether its topology is usable, before any listener opens.

    A Redis Cluster whose seeds do not answer or are no cluster, or Sentinels that know no
    such primary, would otherwise surface as a retry loop of warnings after the gateway
    has started listening; as a ConfigError they are one line and exit code 2. Plain
    Redis servers are not checked: a gateway may start before its Redis and wait for it.
    """
    verify = getattr(layer.storage, "verify", None)
    if verify is None:
        return
    try:
        await verify()
    except ValueError as exc:
        raise ConfigError(f"LAYER: {exc}") from exc


def _memory_layer(config: SwitchboardConfig) -> bool:
    return str(config.layer.get("BACKEND", "memory")) == "memory"


def refuse_split_memory_layer(command: str, config: SwitchboardConfig) -> None:
    """A gateway or worker process of its own on the in-memory layer can reach nobody: refuse it.

    The in-memory layer lives inside one process; a ``gateway`` and a ``worker`` started
    side by side on it each talk to themselves, and every request waits its
    ``response_timeout`` for a worker and gets 503. Better to say so at once.
    """
    if command in ("gateway", "worker") and _memory_layer(config):
        other = "worker" if command == "gateway" else "gateway"
        raise ConfigError(
            f"switchboard {command} runs apart from the {other}s, so they need a shared channel layer, and this one is "
            "in-memory (private to each process: nothing would ever reach the other side). Run both in one process "
            "with `switchboard run`, or set SWITCHBOARD['LAYER'] (or CHANNEL_LAYERS) to a Redis layer, e.g. "
            '{"BACKEND": "redis", "CONFIG": {"hosts": ["redis://127.0.0.1:6379/0"]}}'
        )


def worker_routes(application: Any, options: WorkerOptions, channels: Sequence[str] = ()) -> tuple[list[str], list[str]]:
    """The protocols and named channels a worker reads: the command line's, the settings', the application's."""
    from .worker import channel_names_of, protocols_of

    if channels:
        return [], list(channels)
    protocols = options.protocols if options.protocols is not None else protocols_of(application)
    names = options.channels if options.channels is not None else channel_names_of(application)
    return list(protocols), list(names)


def with_static_files(application: Any, args: argparse.Namespace | None) -> tuple[Any, str | None]:
    """Serve ``STATIC_URL`` in ``switchboard run`` as ``runserver`` does: with DEBUG (or ``--insecure``).

    Django's own ``ASGIStaticFilesHandler`` (what ``runserver`` uses, through the
    staticfiles finders, so app and ``STATICFILES_DIRS`` files are found without
    ``collectstatic``) wraps the application; other protocols pass through it. Returns the
    application and a banner note (None when static files are not served).
    """
    if args is None or getattr(args, "nostatic", False):
        return application, None
    try:
        from django.apps import apps
        from django.conf import settings
    except ImportError:
        return application, None
    if not settings.configured or not apps.ready or not apps.is_installed("django.contrib.staticfiles"):
        return application, None
    if not (settings.DEBUG or getattr(args, "insecure", False)):
        return application, None
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    handler = ASGIStaticFilesHandler(application)
    if handler.base_url.netloc:  # STATIC_URL on another host: nothing for us to serve
        return application, None
    why = "DEBUG is on" if settings.DEBUG else "--insecure"
    return StaticFirst(application, handler), (
        f"static   {handler.base_url.path} served from the staticfiles finders ({why}; --nostatic turns it off)"
    )


class StaticFirst:
    """``STATIC_URL`` requests to Django's static files handler, everything else to the application.

    Rather than the handler wrapping the application (its own fallback), so the
    application itself stays what the worker was given: Django's handler as the whole
    application keeps its fast sync path (``consumers/django_http.py``), and routers
    stay visible.
    """

    def __init__(self, application: Any, static: Any) -> None:
        from switchboard.consumers.django_http import fast_django

        self.application = fast_django(application)
        self.static = static
        self.prefix: str = static.base_url.path
        #: What the application routes, for the worker (``worker.protocols_of``).
        self.application_mapping = getattr(application, "application_mapping", None)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefix):
            await self.static(scope, receive, send)
        else:
            await self.application(scope, receive, send)


async def _run_gateway(config: SwitchboardConfig, args: argparse.Namespace, stop: asyncio.Event | None = None) -> None:
    from .server import run_gateway

    gateway_tracer, _ = tracers(config, "gateway")
    layer = build_configured_layer(config.layer)
    await verify_layer(layer)
    stop = stop or asyncio.Event()
    view = ProcessView("gateway", layer, stopping=stop)
    observability: Observability | None = None
    try:
        observability = Observability(view, config.metrics, metrics_bind(args, config.metrics, "gateway"), config)
        await run_gateway(config, layer=layer, stop=stop, started=_attach_gateway(view, observability), tracer=gateway_tracer)
    finally:
        if observability is not None:
            await observability.close()
        await layer.close()


def build_worker(
    application: Any,
    layer: ChannelLayer,
    options: WorkerOptions,
    protocols: Sequence[str],
    names: Sequence[str],
    tracer: WorkerTracer | None = None,
) -> Worker:
    """The worker of ``switchboard worker`` and ``switchboard run``: its settings, its tracer, its log id."""
    from .worker import Worker

    worker = Worker(
        application,
        layer,
        protocols=protocols,
        channels=names,
        heartbeat_interval=options.heartbeat_interval,
        max_instance_backlog=options.max_instance_backlog,
        max_listener_backlog=options.max_listener_backlog,
        local_delivery=options.local_delivery,
        reply_wait=options.reply_wait,
        django_http=options.django_http,
        django_threads=options.django_threads,
        durable_prefetch=options.durable_prefetch,
    )
    if tracer is not None:
        tracer.install(worker)
    logs.CONTEXT["worker_id"] = worker.id
    return worker


async def _run_worker(
    config: SwitchboardConfig,
    channels: Sequence[str],
    args: argparse.Namespace | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    from .layers import set_channel_layer
    from .server import _install_signal_handlers

    _, worker_tracer = tracers(config, "worker")
    application = load_application(config)
    layer = build_configured_layer(config.layer)
    await verify_layer(layer)
    set_channel_layer(layer)
    stop = stop or asyncio.Event()
    _install_signal_handlers(stop)
    options = config.worker_options
    protocols, names = worker_routes(application, options, channels)
    worker = build_worker(application, layer, options, protocols, names, worker_tracer)
    view = ProcessView("worker", layer, worker=worker, stopping=stop)
    observability: Observability | None = None
    orphan_watch: asyncio.Task[None] | None = None
    try:
        bind = supervisor.child_metrics_bind(metrics_bind(args or argparse.Namespace(), config.metrics, "worker"))
        observability = Observability(view, config.metrics, bind)
        observability.start()
        logger.info("%s", banner.render("worker", layer=layer, worker=worker, metrics_address=observability.metrics_address))
        freeze_startup_objects()
        supervisor.notify_ready()
        if supervisor.is_child():
            orphan_watch = asyncio.get_running_loop().create_task(supervisor.stop_when_orphaned(stop))
        await worker.run(stop, drain_timeout=options.drain_timeout)
    finally:
        if orphan_watch is not None:
            orphan_watch.cancel()
        if observability is not None:
            await observability.close()
        await layer.close()


async def _run_both(config: SwitchboardConfig, args: argparse.Namespace | None = None, stop: asyncio.Event | None = None) -> None:
    from .layers import set_channel_layer
    from .server import run_gateway

    if not _memory_layer(config):
        logger.info("switchboard run uses the in-memory layer (configured: %s)", config.layer.get("BACKEND"))
    memory_options = config.layer.get("CONFIG", {}) if _memory_layer(config) else {}
    gateway_tracer, worker_tracer = tracers(config, "run")
    layer = build_configured_layer({"BACKEND": "memory", "CONFIG": memory_options})
    set_channel_layer(layer)
    application = load_application(config)
    options = config.worker_options
    protocols, names = worker_routes(application, options)
    application, static_note = with_static_files(application, args)
    worker = build_worker(application, layer, options, protocols, names, worker_tracer)
    stop = stop or asyncio.Event()
    view = ProcessView("run", layer, worker=worker, stopping=stop)
    observability = Observability(view, config.metrics, metrics_bind(args or argparse.Namespace(), config.metrics, "run"), config)
    worker_task = asyncio.get_running_loop().create_task(worker.run(stop, drain_timeout=options.drain_timeout))
    notes = [static_note] if static_note else []
    try:
        await run_gateway(
            config, layer=layer, stop=stop, started=_attach_gateway(view, observability, notes), tracer=gateway_tracer
        )
    finally:
        stop.set()
        await worker_task
        await observability.close()
        await layer.close()


async def _status(config: SwitchboardConfig, args: argparse.Namespace) -> int:
    from .status import run_status

    if _memory_layer(config):
        raise ConfigError(
            "switchboard status reaches processes through a shared channel layer (e.g. Redis); "
            "the in-memory layer of `switchboard run` is private to that process (use its metrics endpoint)"
        )
    from .server import _install_signal_handlers

    layer = build_configured_layer(config.layer)
    stop = asyncio.Event()
    _install_signal_handlers(stop)  # SIGINT/SIGTERM end the live view cleanly
    try:
        return await run_status(layer, once=args.once, as_json=args.json, wait=args.wait, interval=args.interval, stop=stop)
    finally:
        await layer.close()


async def _deadletters(config: SwitchboardConfig, args: argparse.Namespace) -> int:
    from .deadletters import run_deadletters

    if _memory_layer(config):
        raise ConfigError(
            "switchboard deadletters reads the dead letters in a shared channel layer (e.g. Redis); "
            "those of the in-memory layer live and die with their process"
        )
    layer: ChannelLayer = build_configured_layer(config.layer)
    try:
        return await run_deadletters(layer, args)
    finally:
        await layer.close()


async def _console(config: SwitchboardConfig, args: argparse.Namespace, stop: asyncio.Event | None = None) -> None:
    from switchboard.console.serve import run_console

    if _memory_layer(config):
        raise ConfigError(
            "switchboard console reaches processes through a shared channel layer (e.g. Redis); for "
            "`switchboard run` (in-memory layer) mount it in that process instead: CONSOLE.mount"
        )
    from .server import _install_signal_handlers

    layer: ChannelLayer = build_configured_layer(config.layer)
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
    """``switchboard``: parse the command line and run the command; the process's exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()  # bare `switchboard`, as bare `django-admin`: the commands, exit 0
        return 0
    return execute(args.command, args, argv=list(sys.argv[1:] if argv is None else argv))


def execute(command: str, args: argparse.Namespace, argv: Sequence[str] | None = None) -> int:
    """Run ``command`` with parsed ``args``: what ``switchboard`` and the management commands share.

    Everything that can be wrong with the configuration or the command line is checked
    before any socket opens (layer, metrics endpoint, plugins), and reported as one line
    with exit code 2; so is a plugin that cannot start (a port in use).
    """
    from .server import StartupError

    log_format = args.log_format or os.environ.get("SWITCHBOARD_LOG_FORMAT", "text")
    if log_format not in logs.FORMATS:
        return _fail(f"SWITCHBOARD_LOG_FORMAT must be one of {', '.join(logs.FORMATS)}, not {log_format!r}")
    if str(args.log_level).upper() not in logging.getLevelNamesMapping():
        return _fail(f"--log-level (or SWITCHBOARD_LOG_LEVEL) {args.log_level!r} is not a logging level")
    logs.setup_logging(args.log_level, log_format)
    logs.register_secrets(logs.environment_secrets())
    if command not in ("status", "deadletters"):
        logs.CONTEXT["kind"] = command
    processes = getattr(args, "processes", 1) or 1
    if command == "worker" and processes > 1 and not supervisor.is_child():
        logs.CONTEXT["kind"] = "worker-supervisor"
        return supervisor.supervise(argv, processes)
    if command == "run" and args.reload and not reload.is_child():
        try:
            return reload.supervise(argv or [], args.reload_dir or [os.getcwd()], extra=[args.config] if args.config else [])
        except ConfigError as exc:
            return _fail(f"configuration error: {exc}")
    try:
        config = load_config(args)
        if reload.is_child():
            reload.shorten_drains(config)
        cli_options.apply_overrides(config, args, command)
        refuse_split_memory_layer(command, config)
        if command in cli_options.LISTENING:
            from .plugins import check_protocols

            check_protocols(config.protocols)
        _register_secrets(config)
        logs.protect_root_handlers()  # Django's LOGGING setting may have added handlers
        http = config.protocols.get("http", {})
        logs.quiet_django_duplicates(access_log=command == "run" and bool(http.get("access_log")))
        if command in ("gateway", "run"):
            raise_file_limit()
        if command == "gateway":
            run_async(_run_gateway(config, args))
        elif command == "worker":
            run_async(_run_worker(config, args.channels, args))
        elif command == "run":
            run_async(_run_both(config, args))
        elif command == "status":
            return run_async(_status(config, args))
        elif command == "deadletters":
            return run_async(_deadletters(config, args))
        elif command == "console":
            run_async(_console(config, args))
    except ConfigError as exc:
        return _fail(f"configuration error: {logs.REDACTOR.redact_text(str(exc))}")
    except StartupError as exc:
        return _fail(f"cannot start: {logs.REDACTOR.redact_text(str(exc))}")
    except KeyboardInterrupt:
        return 130
    return 0


def _fail(message: str) -> int:
    """One line on stderr and exit code 2: how every start-up problem is reported."""
    print(f"switchboard: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
