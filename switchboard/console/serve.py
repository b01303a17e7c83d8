"""Running the console: ``switchboard console`` on its own port, or mounted in a gateway.

Both run the same :class:`~switchboard.console.collector.Collector` and
:class:`~switchboard.console.app.ConsoleApp`; they differ in who owns the HTTP server.

- ``switchboard console`` binds ``CONSOLE.bind`` (default ``127.0.0.1:9180``) itself and
  serves with uvicorn (the ``http`` extra), the same server the gateway's HTTP plugin
  uses, driven the same way: ``startup`` on sockets we bound, ``main_loop``, ``shutdown``.
- With ``CONSOLE.mount`` set, a gateway mounts the app on its HTTP plugin's port
  (``Gateway.mount``, like the SMS webhooks) and runs the collector on its own loop and
  layer. Off by default: a page on a public port is the operator's decision.

Whether loopback clients are trusted without credentials depends on where the console
listens (access.py): every address a loopback one, or not.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from switchboard.gateway.config import ConfigError, SwitchboardConfig
from switchboard.gateway.layers import ChannelLayer

from .access import Gate, binds_are_loopback
from .app import ConsoleApp
from .collector import Collector
from .deadletters import dead_letters_of

if TYPE_CHECKING:
    from switchboard.gateway.plugins import ProtocolPlugin
    from switchboard.gateway.server import Gateway

logger = logging.getLogger("switchboard.console")


def build_collector(config: SwitchboardConfig, layer: ChannelLayer) -> Collector:
    options = config.console
    forget_after = options.forget_after if options.forget_after is not None else config.gateway.worker_timeout
    return Collector(
        layer,
        interval=options.interval,
        history=options.history,
        forget_after=forget_after,
        deadletters=dead_letters_of(layer),
    )


async def run_console(config: SwitchboardConfig, layer: ChannelLayer, stop: asyncio.Event, *, bind: str | None = None) -> None:
    """``switchboard console``: serve until ``stop`` is set."""
    try:
        import uvicorn

        from switchboard.protocols.http import bind_sockets
    except ImportError as exc:
        raise ConfigError(f"switchboard console needs uvicorn: pip install 'switchboard[http]' ({exc})") from exc
    options = config.console
    address = bind or options.bind
    try:
        sockets = bind_sockets([address])
    except OSError as exc:
        raise ConfigError(f"CONSOLE: bind: {exc}") from exc
    collector = build_collector(config, layer)
    gate = Gate(options, loopback_only=binds_are_loopback([address]))
    app = ConsoleApp(collector, gate, max_body_size=options.max_body_size)
    server_config = uvicorn.Config(
        app=app,
        interface="asgi3",
        lifespan="off",
        log_config=None,
        access_log=False,
        limit_concurrency=256,
        timeout_keep_alive=5,
        h11_max_incomplete_event_size=16 * 1024,
        server_header=False,
    )
    try:
        server_config.load()
        server = uvicorn.Server(server_config)
        server.lifespan = server_config.lifespan_class(server_config)
        await server.startup(sockets=sockets)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    loop = asyncio.get_running_loop()
    main_loop = loop.create_task(server.main_loop(), name="console-http")
    collecting = loop.create_task(collector.run(stop), name="console-collector")
    where = ", ".join(_where(sock.getsockname()) for sock in sockets)
    logger.info(
        "console on http://%s/ (%s)",
        where,
        "loopback clients may look without a token" if gate.loopback_only else "a token or staff session is required",
    )
    try:
        await stop.wait()
    finally:
        app.close()
        server.should_exit = True
        await main_loop
        server_config.timeout_graceful_shutdown = 2
        await server.shutdown(sockets=sockets)
        await collecting


def _where(name: Any) -> str:
    host, port = str(name[0]), int(name[1])
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ConsoleMount:
    """The console inside a gateway (``CONSOLE.mount``): mounted once the plugins started."""

    def __init__(self, config: SwitchboardConfig, layer: ChannelLayer) -> None:
        if config.console.mount is None:
            raise ValueError("CONSOLE.mount is not set")
        if "http" not in config.protocols:
            raise ConfigError("CONSOLE: mount needs the http protocol (the console is served on its port)")
        self.config = config
        self.prefix = config.console.mount
        self.collector = build_collector(config, layer)
        self.app: ConsoleApp | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._gateway: Gateway | None = None

    def start(self, gateway: Gateway, plugins: list[ProtocolPlugin[Any]]) -> None:
        http = next((plugin for plugin in plugins if plugin.name == "http"), None)
        if http is None:
            logger.error("console not mounted: the http plugin did not start")
            return
        binds = list(getattr(http.options, "bind", []))
        gate = Gate(self.config.console, loopback_only=binds_are_loopback(binds))
        self.app = ConsoleApp(self.collector, gate, prefix=self.prefix, max_body_size=self.config.console.max_body_size)
        gateway.mount(self.prefix, self.app, owner="console")
        self._gateway = gateway
        self._task = asyncio.get_running_loop().create_task(self.collector.run(self._stop), name="console-collector")
        logger.info(
            "console mounted at %s/ (%s)",
            self.prefix,
            "loopback clients may look without a token" if gate.loopback_only else "a token or staff session is required",
        )

    async def close(self) -> None:
        self._stop.set()
        if self.app is not None:
            self.app.close()
        if self._task is not None:
            await self._task
            self._task = None
