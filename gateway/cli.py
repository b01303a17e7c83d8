"""Command line: ``switchboard gateway | worker | run``.

``gateway`` holds client connections; ``worker`` runs consumers; ``run`` does both in one
process over the in-memory layer, the embedded mode that needs nothing else installed.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

from .config import ConfigError, SwitchboardConfig, from_django_settings, from_toml

logger = logging.getLogger("switchboard.cli")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--settings", help="Django settings module (else DJANGO_SETTINGS_MODULE)")
    parser.add_argument("--config", help="TOML config file, instead of settings.SWITCHBOARD")
    parser.add_argument("--pythonpath", help="directory to add to sys.path (default: the current one)")
    parser.add_argument("--log-level", default=os.environ.get("SWITCHBOARD_LOG_LEVEL", "INFO"))


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


def run_async(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop when it is installed, else the default asyncio loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


async def _run_worker(config: SwitchboardConfig, channels: Sequence[str]) -> None:
    from .layers import build_layer, set_channel_layer
    from .server import _install_signal_handlers
    from .worker import Worker

    application = load_application(config)
    layer = build_layer(config.layer)
    set_channel_layer(layer)
    stop = asyncio.Event()
    _install_signal_handlers(stop)
    options = dict(config.worker)
    if channels:
        worker = Worker(application, layer, protocols=[], channels=channels)
    else:
        worker = Worker(application, layer, protocols=options.get("protocols"), channels=options.get("channels"))
    try:
        await worker.run(stop)
    finally:
        await layer.close()


async def _run_both(config: SwitchboardConfig) -> None:
    from .layers import build_layer, set_channel_layer
    from .server import run_gateway
    from .worker import Worker

    if str(config.layer.get("BACKEND", "memory")) != "memory":
        logger.info("switchboard run uses the in-memory layer (configured: %s)", config.layer.get("BACKEND"))
    memory_options = config.layer.get("CONFIG", {}) if config.layer.get("BACKEND", "memory") == "memory" else {}
    layer = build_layer({"BACKEND": "memory", "CONFIG": memory_options})
    set_channel_layer(layer)
    application = load_application(config)
    options = dict(config.worker)
    worker = Worker(application, layer, protocols=options.get("protocols"), channels=options.get("channels"))
    stop = asyncio.Event()
    worker_task = asyncio.get_running_loop().create_task(worker.run(stop))
    try:
        await run_gateway(config, layer=layer, stop=stop)
    finally:
        stop.set()
        await worker_task
        await layer.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s",
    )
    try:
        config = load_config(args)
        if args.command == "gateway":
            from .server import run_gateway

            run_async(run_gateway(config))
        elif args.command == "worker":
            run_async(_run_worker(config, args.channels))
        elif args.command == "run":
            run_async(_run_both(config))
    except ConfigError as exc:
        print(f"switchboard: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
