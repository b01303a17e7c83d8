"""redis-py's asyncio ``RedisCluster`` that waits for a connection instead of failing.

On one server the layer's pool is a ``BlockingConnectionPool``: a burst of commands
beyond ``max_connections`` waits for a free connection. redis-py's asyncio cluster client
has no such pool: a node whose ``max_connections`` connections are all busy raises
``MaxConnectionsError`` at once (redis/redis-py#3135, #2522). The cluster benchmark hit it
(issue 18): a room of 1,000 members closing together is 1,000 ``ZREM``s of one group key,
all to one node, and about 700 consumers' ``disconnect`` raised.

:class:`WaitingRedisCluster` bounds the commands and pipelines in flight on one client to
``max_connections``, over the whole cluster. A command takes one connection of one node
and a pipeline at most one per node, so no node's pool is ever exhausted, and a burst
queues on the semaphore the way it queues on the one-server pool: each waits for a place
up to ``pool_timeout`` and then fails as that pool does. A command issued while its task
already holds a place (a pipeline's own per-command retries after a redirection) does not
take a second one, so a full semaphore cannot wait on itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, TypeVar

from redis.asyncio.cluster import ClusterPipeline, RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError

__all__ = ["WaitingRedisCluster"]

_T = TypeVar("_T")

#: Set while the current task (and tasks it starts) holds a place of some client.
_holding: ContextVar[bool] = ContextVar("switchboard_cluster_in_flight", default=False)


class WaitingRedisCluster(RedisCluster):
    """``RedisCluster`` with at most ``max_connections`` commands or pipelines in flight."""

    def __init__(self, *, max_connections: int, pool_timeout: float | None = None, **kwargs: Any) -> None:
        super().__init__(max_connections=max_connections, **kwargs)
        # Created here, used only on the loop that owns this client (one client per loop).
        self._in_flight = asyncio.Semaphore(max_connections)
        self._pool_timeout = pool_timeout

    async def _bounded(self, call: Callable[[], Awaitable[_T]]) -> _T:
        if _holding.get():
            return await call()
        try:
            async with asyncio.timeout(self._pool_timeout):
                await self._in_flight.acquire()
        except TimeoutError:
            # What the one-server BlockingConnectionPool raises after its pool_timeout.
            raise RedisConnectionError("No connection available.") from None
        token = _holding.set(True)
        try:
            return await call()
        finally:
            _holding.reset(token)
            self._in_flight.release()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        return await self._bounded(lambda: super(WaitingRedisCluster, self).execute_command(*args, **kwargs))

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # redis-py's own error
        return _WaitingPipeline(self, transaction)  # type: ignore[abstract]  # as redis-py's own pipeline()


class _WaitingPipeline(ClusterPipeline):
    """A cluster pipeline whose ``execute`` takes one place of its client's bound."""

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        client = self.cluster_client
        assert isinstance(client, WaitingRedisCluster)

        async def run() -> list[Any]:
            return await super(_WaitingPipeline, self).execute(raise_on_error, allow_redirections)

        return await client._bounded(run)
