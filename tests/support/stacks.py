"""In-process plugin stacks: the gateway core, protocol plugins and a worker on one layer.

What ``run_gateway`` and ``switchboard run`` do in a process, without the process: each
plugin suite's ``stack`` fixture starts a :class:`PluginStack` (a subclass that adds what
its peers need: an address, a URL, a client call) and :func:`stacks_stopped_after` stops
every one a test started, in the order production stops them.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar

from switchboard.gateway.layers import ChannelLayer
from switchboard.gateway.plugins import ProtocolPlugin
from switchboard.gateway.server import Gateway
from switchboard.gateway.worker import Worker

P = TypeVar("P", bound=ProtocolPlugin[Any])


@dataclass(kw_only=True)
class PluginStack:
    """Gateway core + ``plugins`` (started in order) + a worker running ``app``, when given."""

    layer: ChannelLayer
    gateway: Gateway
    plugins: list[ProtocolPlugin[Any]] = field(default_factory=list)
    #: How long each plugin may drain its work at :meth:`stop`.
    drain_timeout: float = 1.0
    worker: Worker | None = None
    worker_stop: asyncio.Event = field(default_factory=asyncio.Event)
    worker_task: asyncio.Task[None] | None = None
    stopped: bool = False

    @classmethod
    async def start(
        cls,
        layer: ChannelLayer,
        plugins: Sequence[ProtocolPlugin[Any]],
        *,
        app: Any = None,
        protocols: Iterable[str] = (),
        gateway_options: dict[str, Any] | None = None,
        **fields: Any,
    ) -> Self:
        """Start the core, then each plugin (as ``run_gateway``), then the worker for ``app``.

        ``gateway.plugins`` lists them all before any starts, as in production, so a plugin
        can check that one it builds on (WebRTC on HTTP) is enabled.
        """
        gateway = Gateway(layer, **(gateway_options or {}))
        gateway.plugins = list(plugins)
        await gateway.start()
        stack = cls(layer=layer, gateway=gateway, **fields)
        try:
            for plugin in plugins:
                await plugin.start(gateway)
                stack.plugins.append(plugin)
        except BaseException:
            await stack.stop()
            raise
        if app is not None:
            stack.worker = Worker(app, layer, protocols=list(protocols), channels=[])
            stack.worker_task = asyncio.get_running_loop().create_task(
                stack.worker.run(stack.worker_stop, drain_timeout=1)
            )
        return stack

    def plugin_of(self, kind: type[P]) -> P:
        """The one started plugin of class ``kind``: a suite's accessors name it by what it is."""
        found = [plugin for plugin in self.plugins if isinstance(plugin, kind)]
        if len(found) != 1:
            raise LookupError(f"{len(found)} started plugins are a {kind.__name__}, not one")
        return found[0]

    async def stop(self) -> None:
        """Production order: the plugins in reverse (each drains), the core, then the worker."""
        if self.stopped:
            return
        self.stopped = True
        for plugin in reversed(self.plugins):
            await plugin.stop(self.drain_timeout)
        await self.gateway.stop()
        self.worker_stop.set()
        if self.worker_task is not None:
            await self.worker_task


@asynccontextmanager
async def stacks_stopped_after() -> AsyncIterator[list[PluginStack]]:
    """A list a ``stack`` fixture appends its stacks to; each is stopped on the way out."""
    stacks: list[PluginStack] = []
    try:
        yield stacks
    finally:
        for running in stacks:
            await running.stop()
