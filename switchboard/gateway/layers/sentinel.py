"""Sentinel-managed shards of the Redis layer: pools whose connections find the primary.

A ``redis+sentinel://s1:26379,s2:26379/<master name>/<db>`` host (what ``layers/hosts.py``
makes of channels_redis's ``{"sentinels": ..., "master_name": ...}`` entry) is one shard
whose pools are redis-py's ``SentinelConnectionPool``: every connection asks the
Sentinels for the current primary when it connects, and a connection to a primary that
was demoted is dropped (``SentinelManagedConnection``). After a failover, a command on a
dead connection fails, the retry reconnects, and the reconnect reaches the new primary:
nothing here tracks the topology by hand.

The pool for ordinary commands must wait for a free connection, as the plain shards'
``BlockingConnectionPool`` does, rather than raise when all are busy; hence one small
class joining the two redis-py pools.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio import BlockingConnectionPool
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """A Sentinel pool that waits (``timeout``) for a free connection, never raises at once."""


def parse_sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, int, bool]:
    """``(sentinels, master name, db, tls)`` of ``redis+sentinel://h:p,h:p/name/db``."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    sentinels: list[tuple[str, int]] = []
    for address in netloc.split(","):
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"a Sentinel address must be host:port, got {address!r} in {url!r}")
        sentinels.append((host.strip("[]"), int(port)))
    path = [unquote(piece) for piece in parts.path.split("/") if piece]
    if not path:
        raise ValueError(f"a Sentinel URL names the primary after the addresses: redis+sentinel://h:26379/mymaster, not {url!r}")
    db = int(path[1]) if len(path) > 1 else 0
    return sentinels, path[0], db, parts.scheme.lower().startswith("rediss")


def sentinel_pools(
    url: str, pool_kwargs: dict[str, Any], blocking_kwargs: dict[str, Any], sentinel_kwargs: dict[str, Any] | None
) -> tuple[Any, Any]:
    """The shard's two pools (ordinary commands, blocking pops) for a Sentinel host."""
    sentinels, master, db, tls = parse_sentinel_url(url)
    credentials = urlsplit(url).netloc.rpartition("@")[0]
    auth: dict[str, Any] = {}
    if credentials:  # the primary's credentials, as in a redis:// URL
        username, _, password = credentials.partition(":")
        auth = {"username": unquote(username) or None, "password": unquote(password) or None}
    manager = Sentinel(sentinels, sentinel_kwargs=dict(sentinel_kwargs or {}))

    def kwargs(base: dict[str, Any]) -> dict[str, Any]:
        options = {**auth, **base, "db": db}
        if tls:
            options["ssl"] = True
        return options

    pool = _BlockingSentinelPool(master, manager, **kwargs(pool_kwargs))
    blocking = SentinelConnectionPool(master, manager, **kwargs(blocking_kwargs))
    return pool, blocking


async def check_sentinel(url: str, sentinel_kwargs: dict[str, Any] | None) -> None:
    """Raise ValueError (one line) unless a Sentinel of ``url`` answers and names its primary."""
    from redis.asyncio.sentinel import MasterNotFoundError
    from redis.exceptions import RedisError

    sentinels, master, _db, _tls = parse_sentinel_url(url)
    options = {"socket_timeout": 2.0, "socket_connect_timeout": 2.0, **(sentinel_kwargs or {})}
    manager = Sentinel(sentinels, sentinel_kwargs=options)
    shown = ",".join(f"{host}:{port}" for host, port in sentinels)
    try:
        answered = 0
        for sentinel in manager.sentinels:
            try:
                await sentinel.ping()
                answered += 1
            except (RedisError, OSError):
                continue
        if not answered:
            raise ValueError(f"no Sentinel of {shown} answered (is redis-server --sentinel running there?)")
        try:
            await manager.discover_master(master)
        except MasterNotFoundError as exc:
            raise ValueError(
                f"the Sentinels at {shown} know no healthy primary named {master!r} "
                "(check master_name against their 'sentinel monitor' line)"
            ) from exc
    finally:
        await manager.aclose()
