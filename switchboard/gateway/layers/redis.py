"""Redis storage: the channel layer backend for split mode (gateway and workers apart).

It implements :class:`~switchboard.gateway.layers.storage.Storage` with the same semantics
as :class:`~switchboard.gateway.layers.memory.MemoryStorage`; everything else (packing,
expiry, fan-out bucketing) lives in the layer core, so the two cannot drift apart.

Layout, under a configurable key prefix (default ``"switchboard:"``):

* ``<prefix><key>``: a list per channel, or per process-local prefix ``"gateway.x!"``.
  Items are RPUSHed and popped from the left, so the list reads oldest first.
* ``<prefix>bytes:<key>``: the byte account of that list (running totals of its items'
  sizes), kept by the push script for the list's byte bound.
* ``<prefix>group:<name>``: a sorted set per group, member = channel, score = time added.
  Channel names cannot contain ``:``, so these namespaces never collide.
* ``<prefix>mark:<key>``: a marker (``SET NX PX``), e.g. a webhook id already handled.
* ``<prefix>marker:<name>``: a process's own marker (``keep_marker``), gone when Redis lost its data.

Several Redis servers can share the load: each key lives on the server a consistent-hash
ring picks for it. Every channel of one process shares the list ``"gateway.x!"`` and so one
server, which is what lets one blocking pop per server serve a whole process. The ring
places a list and its byte account by the list's name, so every script's keys are on one
server and no key needs a hash tag. A ``hosts`` entry may be a Sentinel-managed primary
(``layers/hosts.py``): that shard's connections ask the Sentinels for the primary whenever
they connect, so after a failover they reconnect to the new one.

A Redis Cluster (``redis+cluster://`` seeds, or ``cluster: true``) is the whole layer
instead of a ring: ``RedisStorage(...)`` then builds a
:class:`~switchboard.gateway.layers.redis_cluster.RedisClusterStorage`, whose keys carry
the name as a hash tag (``<prefix>{<key>}``, ``<prefix>bytes:{<key>}``,
``<prefix>group:{<group>}``...; that module's docstring), so a list and its account, and a
durable channel's stream and its dead letters, share one slot.

redis-py asyncio connections belong to the event loop that opened them, while one layer may
be used from several loops over a process's life (asgiref's ``async_to_sync`` without an
outer loop runs each call on a fresh loop). Clients are therefore kept per running loop and
closed with that loop.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import inspect
import logging
import math
import re
import threading
import time
import weakref
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .hosts import SENTINEL_SCHEMES, is_cluster, redis_hosts, scheme
from .storage import PushEntry

logger = logging.getLogger("switchboard.layers.redis")

DEFAULT_HOST = "redis://127.0.0.1:6379/0"

# One script serves push (one item) and push_many (a shard's batch): both bounds (items and
# bytes) are checked and the items appended atomically, in one round trip.
#
# Beside each list, ``bytes:<key>`` is its byte account: a list of running totals, one
# more than the items it describes. Its first entry is the running total up to the last
# item that has left the list, each other entry the running total up to one of the
# list's items, in order; so the list holds ``last - first`` bytes, read with two O(1)
# LINDEX calls. Readers pop with plain BLMPOP/BLPOP from the head and never touch the
# account, so their hot path and their crash safety stay as they were: a push settles it
# first. When the account describes more items than the list holds, readers have taken
# the difference since the last push, and that many entries are trimmed from its head
# (the new head is then the total up to the last item taken). An empty (or expired) list
# resets the account. The account describes the list's newest items, its tail: items a
# writer of an older version pushed without it (a rolling upgrade) sit before them, are
# not counted, and cannot disturb it; they leave the list first.
#
# KEYS: per distinct list, two keys (the list, its account). ARGV[1]: TTL in whole
# seconds; then per list: item count n, capacity, max bytes (-1: no byte bound), then its
# n items. Returns one code per item, in order: 1 stored, 0 full (items), 2 full (bytes).
_PUSH_LUA = """
local ttl = ARGV[1]
local results = {}
local a = 2
local chunk = 1000
for k = 1, #KEYS, 2 do
    local list, account = KEYS[k], KEYS[k + 1]
    local n = tonumber(ARGV[a])
    local capacity = tonumber(ARGV[a + 1])
    local max_bytes = tonumber(ARGV[a + 2])
    a = a + 3
    local length = redis.call('LLEN', list)
    local marks = redis.call('LLEN', account)
    local first = 0
    local last = 0
    local totals = {}
    if length > 0 and marks > 0 then
        local taken = marks - 1 - length
        if taken > 0 then
            redis.call('LTRIM', account, taken, -1)
        end
        first = tonumber(redis.call('LINDEX', account, 0))
        last = tonumber(redis.call('LINDEX', account, -1))
    else
        if marks > 0 then
            redis.call('DEL', account)
        end
        totals[1] = 0
    end
    local items = {}
    for _ = 1, n do
        local item = ARGV[a]
        a = a + 1
        local size = string.len(item)
        if length >= capacity then
            results[#results + 1] = 0
        elseif max_bytes >= 0 and last - first + size > max_bytes then
            results[#results + 1] = 2
        else
            length = length + 1
            last = last + size
            items[#items + 1] = item
            totals[#totals + 1] = last
            results[#results + 1] = 1
        end
    end
    if #items > 0 then
        for i = 1, #items, chunk do
            redis.call('RPUSH', list, unpack(items, i, math.min(i + chunk - 1, #items)))
        end
        for i = 1, #totals, chunk do
            redis.call('RPUSH', account, unpack(totals, i, math.min(i + chunk - 1, #totals)))
        end
        redis.call('EXPIRE', list, ttl)
        redis.call('EXPIRE', account, ttl)
    end
end
return results
"""

#: Codes of the push script, per item.
_STORED, _FULL_BYTES = 1, 2

# KEYS: the lists. ARGV[1]: count. A non-blocking pop with BLMPOP's reply shape: Redis only
# checks blocked clients' timeouts every ~100 ms, so "don't wait" must not block at all.
# LRANGE + LTRIM rather than LPOP key count, which needs Redis 6.2.
_POP_NOWAIT_LUA = """
local count = tonumber(ARGV[1])
for _, key in ipairs(KEYS) do
    local items = redis.call('LRANGE', key, 0, count - 1)
    if #items > 0 then
        redis.call('LTRIM', key, #items, -1)
        return {key, items}
    end
end
return false
"""

# KEYS[1]: the group. ARGV: score (time added), channel, TTL in whole seconds.
_GROUP_ADD_LUA = """
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

# KEYS[1]: the marker. ARGV[1]: its TTL in milliseconds. Returns 1 when the marker was
# missing (set now), 0 when it was there (its TTL renewed).
_MARKER_LUA = """
if redis.call('EXISTS', KEYS[1]) == 1 then
    redis.call('PEXPIRE', KEYS[1], ARGV[1])
    return 0
end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
return 1
"""

# Members per ZADD / ZREM when a process re-adds or drops many memberships at once.
_MEMBERS_PER_COMMAND = 500

# KEYS[1]: the group. ARGV[1]: cutoff; members added strictly before it are stale (the
# in-memory backend's ``added < cutoff``), hence the exclusive "(" bound.
_GROUP_MEMBERS_LUA = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1])
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""


def _resp(args: Sequence[Any]) -> bytes:
    """One command in the Redis protocol (RESP): str, bytes and int arguments.

    What redis-py's ``pack_command`` does, without its per-argument encoder and buffer
    juggling (it was ~5% of a worker's samples on the hot path, one call per batch).
    """
    parts = [b"*%d\r\n" % len(args)]
    append = parts.append
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode("utf-8")
        elif isinstance(arg, int) and not isinstance(arg, bool):
            data = b"%d" % arg
        else:
            raise TypeError(f"cannot send {type(arg).__name__} to Redis")
        append(b"$%d\r\n" % len(data))
        append(data)
        append(b"\r\n")
    return b"".join(parts)


def stable_hash(value: str) -> int:
    """A 64-bit hash that is the same in every process and Python version.

    Python's ``hash()`` is salted per process (PYTHONHASHSEED), so a gateway and a worker
    would disagree on which server holds a channel.
    """
    return int.from_bytes(hashlib.blake2b(value.encode("utf-8"), digest_size=8).digest(), "big")


def node_identity(url: str) -> str:
    """The part of a Redis URL that names the server: credentials stripped.

    Rotating a password must not move every key to another shard.
    """
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


class HashRing:
    """Consistent hashing of keys onto ``nodes`` (by index), with virtual nodes.

    Each node owns ``replicas`` points on a 64-bit ring; a key belongs to the first point at
    or after its hash. Adding a node therefore only moves the keys that now fall on the new
    node's points (about 1/n of them), instead of nearly all keys as ``hash % n`` would;
    the many virtual points keep the shares even.
    """

    def __init__(self, nodes: Sequence[str], replicas: int = 160) -> None:
        if not nodes:
            raise ValueError("a hash ring needs at least one node")
        if replicas < 1:
            raise ValueError("replicas must be at least 1")
        self.nodes = list(nodes)
        points = sorted(
            (stable_hash(f"{node}#{replica}"), index) for index, node in enumerate(self.nodes) for replica in range(replicas)
        )
        self._points = [point for point, _index in points]
        self._owners = [index for _point, index in points]

    def node_for(self, key: str) -> int:
        """Index of the node that holds ``key``."""
        if len(self.nodes) == 1:
            return 0
        position = bisect.bisect_left(self._points, stable_hash(key))
        if position == len(self._points):
            position = 0
        return self._owners[position]


def _whole_seconds(seconds: float) -> int:
    """A TTL for EXPIRE: rounded up, and at least 1 (EXPIRE 0 would delete the key)."""
    return max(1, math.ceil(seconds))


def _block_seconds(timeout: float) -> float:
    """A blocking-command timeout Redis will honour.

    Redis reads the timeout in milliseconds and treats 0 as "block forever", so a tiny
    positive timeout must become at least 1 ms, never 0.
    """
    return max(1, math.ceil(timeout * 1000 - 1e-6)) / 1000


_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")


def _glob_escape(text: str) -> str:
    """Escape ``text`` for a SCAN MATCH pattern, so a prefix like ``"a*"`` is literal."""
    return _GLOB_SPECIAL.sub(r"\\\1", text)


@dataclass
class _Shard:
    """The clients of one Redis server, bound to one event loop.

    Besides redis-py's pools, a shard keeps connections of its own for the hot path: one
    for pushes (the layer's send batcher keeps at most one push in flight per loop, so it
    is nearly always free) and idle ones for blocking pops (one per Receiver pump in
    practice). Commands on them skip what each pooled command costs: the pool lock, the
    liveness check, the retry wrapper and, for writes with a socket timeout, the task
    ``asyncio.wait_for`` creates. Both are made without a socket timeout; the callers
    bound each command with one ``asyncio.timeout`` instead.
    """

    url: str
    pool: ConnectionPool
    blocking_pool: ConnectionPool
    client: Redis
    blocking: Redis
    push: AsyncScript
    pop_nowait: AsyncScript
    group_add: AsyncScript
    group_members: AsyncScript
    marker: AsyncScript
    push_connection: Any = None
    push_busy: bool = False
    idle_pop_connections: list[Any] | None = None
    held: list[Any] | None = None  # every connection made for this shard, to close
    # The server's client id of each pop connection (CLIENT ID, asked once per connect), so
    # a pop can be ended early with CLIENT UNBLOCK; ``unblock`` turns False when the server
    # refuses those commands (an ACL), and pops are then waited out.
    pop_ids: dict[Any, int] = field(default_factory=dict)
    unblock: bool = True

    def own_connection(self, pool: ConnectionPool) -> Any:
        """A connection of ``pool``'s kind held for the hot path, outside the pool.

        No retry of its own: its users (``_push_script``, ``_blocking_pop``) retry
        connection errors themselves, and the pool's retry inside their ``connect()``
        multiplied the attempts: with Redis down, a send failed after ~0.65 s instead of
        ~0.15 s, and every request behind it waited as long.
        """
        connection = pool.connection_class(**{**pool.connection_kwargs, "socket_timeout": None, "retry": Retry(NoBackoff(), 0)})
        if self.held is None:
            self.held = []
        self.held.append(connection)
        return connection

    async def aclose(self) -> None:
        held = self.held or []
        self.held = None
        await asyncio.gather(
            self.pool.aclose(),
            self.blocking_pool.aclose(),
            *(connection.disconnect() for connection in held),
            return_exceptions=True,
        )


class RedisStorage:
    """Bounded FIFO lists and group memberships in one or more Redis servers.

    ``hosts``: one Redis URL or a list of them (``redis://``, ``rediss://``, ``unix://``),
    or channels_redis's other forms (``(host, port)`` pairs, dicts: ``layers/hosts.py``);
    keys are spread over them by consistent hashing. ``prefix`` starts every key, so several
    layers (or test runs) can share one database and :meth:`flush` only deletes its own.

    ``socket_timeout`` and ``max_connections`` apply to the pool for ordinary commands;
    blocking pops use a separate, unbounded pool whose reads wait as long as the pop may
    block (plus ``blocking_margin``), so a slow pop never times out early and never takes a
    connection that pushes need. ``retries`` is how often an ordinary command is retried,
    with jittered exponential backoff, after a connection error (e.g. Redis restarted).
    Other keyword arguments go to redis-py's connection pool (e.g. ``password``,
    ``ssl_cert_reqs``, ``health_check_interval``).
    """

    def __new__(cls, hosts: Any = DEFAULT_HOST, *args: Any, **kwargs: Any) -> RedisStorage:
        """A Redis Cluster's seeds (or ``cluster=True``) build the cluster storage instead.

        Here rather than in the layer factory because users and ``compat.py`` name this
        one class (``RedisChannelLayer`` builds ``RedisStorage(hosts, ...)``).
        """
        if cls is RedisStorage:
            urls, _options = redis_hosts(hosts)
            if is_cluster(urls, bool(kwargs.get("cluster", False))):
                from .redis_cluster import RedisClusterStorage

                return super().__new__(RedisClusterStorage)
        return super().__new__(cls)

    # Cancelling a blocking pop after Redis removed the items but before their reply was
    # read loses them, so readers let a pop finish (within its block timeout) instead.
    pop_cancel_safe = False
    # A push is a network round trip: the layer coalesces concurrent sends into push_many.
    coalesce_sends = True

    def __init__(
        self,
        hosts: Any = DEFAULT_HOST,
        prefix: str = "switchboard:",
        *,
        socket_timeout: float | None = 5.0,
        socket_connect_timeout: float = 5.0,
        max_connections: int = 50,
        pool_timeout: float = 20.0,
        retries: int = 3,
        blocking_margin: float = 5.0,
        virtual_nodes: int = 160,
        cluster: bool = False,
        **connection_kwargs: Any,
    ) -> None:
        # URLs, (host, port) pairs and channels_redis's dict forms (layers/hosts.py).
        host_list, host_options = redis_hosts(hosts)
        if is_cluster(host_list, cluster) and type(self) is RedisStorage:
            raise ValueError("a Redis Cluster's seeds need the cluster storage; build it with RedisStorage(hosts)")
        for key, value in host_options.items():
            if key in connection_kwargs and connection_kwargs[key] != value:
                raise ValueError(f"Redis option {key!r} is given both in hosts and in the layer config")
            connection_kwargs.setdefault(key, value)
        identities = [node_identity(url) for url in host_list]
        if len(set(identities)) != len(identities):
            raise ValueError(f"duplicate Redis hosts in {host_list!r}")
        if not isinstance(prefix, str) or not prefix:
            raise ValueError("prefix must be a non-empty string")
        self.hosts = host_list
        self.prefix = prefix
        self.ring = HashRing(identities, virtual_nodes)
        self._socket_timeout = socket_timeout
        self._socket_connect_timeout = socket_connect_timeout
        self._max_connections = max_connections
        self._pool_timeout = pool_timeout
        self._retries = retries
        self._blocking_margin = blocking_margin
        # RESP2 unless asked otherwise: redis-py 8 defaults to RESP3, whose HELLO handshake
        # servers before 6.0 reject, and the BRPOP fallback exists for exactly such servers.
        connection_kwargs.setdefault("protocol", 2)
        self._sentinel_kwargs = connection_kwargs.pop("sentinel_kwargs", None)
        self._connection_kwargs = connection_kwargs
        self._group_prefix = f"{prefix}group:"
        self._mark_prefix = f"{prefix}mark:"
        # Not a WeakKeyDictionary: each value's sockets reference their loop, so the keys
        # would never die. Entries are removed when their loop closes (see _hook_loop_close)
        # or found closed (see _shards).
        self._loops: dict[asyncio.AbstractEventLoop, list[_Shard]] = {}
        self._loops_lock = threading.Lock()
        # Per shard index: does the server have BLMPOP (Redis >= 7)? Learnt once via INFO.
        self._server_versions: dict[int, tuple[int, ...]] = {}
        self.refused_bytes = 0
        # Reader task -> (shard, client id) of the blocking pop it waits in now (for wake).
        self._popping: dict[asyncio.Task[Any], tuple[_Shard, int]] = {}

    # -- Connections ------------------------------------------------------------------

    def _pools(self, url: str, pool_kwargs: dict[str, Any], blocking_kwargs: dict[str, Any]) -> tuple[Any, Any]:
        """The shard's pool for ordinary commands and its pool for blocking pops.

        A ``redis+sentinel://`` shard's pools make Sentinel-managed connections: each asks
        the Sentinels for the primary when it connects, and drops a connection to a
        primary that was demoted (redis-py's ``SentinelManagedConnection``). Our own
        hot-path connections are made from these pools' classes and arguments, so they
        follow a failover the same way.
        """
        if scheme(url) not in SENTINEL_SCHEMES:
            return BlockingConnectionPool.from_url(url, **pool_kwargs), ConnectionPool.from_url(url, **blocking_kwargs)
        from .sentinel import sentinel_pools

        return sentinel_pools(url, pool_kwargs, blocking_kwargs, self._sentinel_kwargs)

    def _make_shard(self, url: str) -> _Shard:
        user = self._connection_kwargs
        pool_kwargs: dict[str, Any] = {
            "socket_connect_timeout": self._socket_connect_timeout,
            # Connection errors only: after a timeout the command may have run, and
            # running a push twice would duplicate a message.
            "retry": Retry(ExponentialWithJitterBackoff(cap=0.5, base=0.02), self._retries, (RedisConnectionError,)),
            **user,
            "max_connections": self._max_connections,
            "timeout": self._pool_timeout,
            "socket_timeout": self._socket_timeout,
            "decode_responses": False,  # items are msgpack bytes
        }
        blocking_kwargs: dict[str, Any] = {
            "socket_connect_timeout": self._socket_connect_timeout,
            "socket_keepalive": True,
            **user,
            # A Receiver's pump retries by itself; a hidden retry inside a blocking pop
            # would only stretch how long its close() waits.
            "retry": Retry(NoBackoff(), 0),
            "decode_responses": False,
        }
        pool, blocking_pool = self._pools(url, pool_kwargs, blocking_kwargs)
        # Set after from_url because URL query options override keyword arguments, and a
        # read timeout shorter than the block would break every pop. _blocking_pop bounds the wait.
        blocking_pool.connection_kwargs["socket_timeout"] = None
        client = Redis(connection_pool=pool)
        return _Shard(
            url=url,
            pool=pool,
            blocking_pool=blocking_pool,
            client=client,
            blocking=Redis(connection_pool=blocking_pool),
            push=client.register_script(_PUSH_LUA),
            pop_nowait=client.register_script(_POP_NOWAIT_LUA),
            group_add=client.register_script(_GROUP_ADD_LUA),
            group_members=client.register_script(_GROUP_MEMBERS_LUA),
            marker=client.register_script(_MARKER_LUA),
        )

    def _shards(self) -> list[_Shard]:
        """The clients for the running event loop, created on first use in that loop."""
        loop = asyncio.get_running_loop()
        shards = self._loops.get(loop)
        if shards is not None:
            return shards
        with self._loops_lock:
            shards = self._loops.get(loop)
            if shards is None:
                # Loops closed without our hook running (e.g. uvloop, whose close cannot
                # be wrapped): their sockets can't be closed from here; drop them for GC.
                for stale in [other for other in self._loops if other.is_closed()]:
                    del self._loops[stale]
                shards = self._loops[loop] = self._new_shards()
                self._hook_loop_close(loop)
        return shards

    def _new_shards(self) -> list[_Shard]:
        """The clients of one event loop: one shard per host."""
        return [self._make_shard(url) for url in self.hosts]

    def _hook_loop_close(self, loop: asyncio.AbstractEventLoop) -> None:
        """Close this loop's clients just before the loop itself closes.

        ``asyncio.run`` and asgiref close their loop when the call ends; after that its
        sockets can no longer be closed cleanly. The hook runs the close on the (stopped)
        loop first. One hook per loop serves every storage used on it (so closing and
        reopening never stacks wrappers), and holds them weakly so a forgotten layer can
        still be freed.
        """
        storages: weakref.WeakSet[RedisStorage] | None = getattr(loop.close, "_switchboard_redis_storages", None)
        if storages is not None:
            storages.add(self)
            return
        storages = weakref.WeakSet([self])
        original_close = loop.close

        def close() -> None:
            if not loop.is_running() and not loop.is_closed():
                for storage in list(storages):
                    with storage._loops_lock:
                        shards = storage._loops.pop(loop, None)
                    if shards:
                        try:
                            loop.run_until_complete(storage._close_shards(shards))
                        except Exception:
                            logger.debug("closing Redis clients of a closing loop failed", exc_info=True)
            original_close()

        close._switchboard_redis_storages = storages  # type: ignore[attr-defined]
        try:
            loop.close = close  # type: ignore[method-assign]
        except (AttributeError, TypeError):
            logger.debug("cannot hook close() of %r; its Redis clients close on garbage collection", loop)

    @staticmethod
    async def _close_shards(shards: Sequence[_Shard]) -> None:
        await asyncio.gather(*(shard.aclose() for shard in shards), return_exceptions=True)

    async def verify(self) -> None:
        """Start-up check of Sentinel hosts: a Sentinel answers and knows the primary.

        Plain servers are not checked (a process may start before its Redis and wait);
        see ``cli.verify_layer``. Raises ValueError with one line.
        """
        from .sentinel import check_sentinel

        for url in self.hosts:
            if scheme(url) in SENTINEL_SCHEMES:
                await check_sentinel(url, self._sentinel_kwargs)

    # -- Keys -------------------------------------------------------------------------

    def _list_key(self, key: str) -> str:
        return self.prefix + key

    def _group_key(self, group: str) -> str:
        return self._group_prefix + group

    def _mark_key(self, key: str) -> str:
        return self._mark_prefix + key

    async def _marker_keys(self, name: str) -> list[tuple[_Shard, str]]:
        """Where :meth:`keep_marker` keeps ``name``: one key on every server."""
        key = f"{self.prefix}marker:{name}"
        return [(shard, key) for shard in self._shards()]

    def _mark_shard(self, key: str) -> _Shard:
        return self._shards()[self.ring.node_for(self._mark_key(key))]

    def shard_index(self, key: str) -> int:
        """Which host (index into :attr:`hosts`) stores the list ``key``."""
        return self.ring.node_for(key)

    @property
    def multi_lane(self) -> bool:
        """Several servers: the layer batches sends per server (:meth:`send_lane`)."""
        return len(self.hosts) > 1

    def send_lane(self, key: str) -> Hashable:
        """The server a push to ``key`` goes to. Sends bound for different servers are
        batched apart, so a server that hangs holds up only its own (layers/core.py,
        ``_LaneRouter``)."""
        return self.ring.node_for(key)

    def group_shard_index(self, group: str) -> int:
        """Which host stores the membership of ``group`` (hashed by the group name)."""
        return self.ring.node_for(group)

    # -- Lists ------------------------------------------------------------------------

    def _push_keys(self, key: str) -> tuple[str, str]:
        """The list ``key`` and its byte account (see ``_PUSH_LUA``)."""
        return self._list_key(key), f"{self.prefix}bytes:{key}"

    def _tally(self, codes: Sequence[int]) -> list[bool]:
        results = []
        for code in codes:
            if code == _FULL_BYTES:
                self.refused_bytes += 1
            results.append(code == _STORED)
        return results

    async def push(self, key: str, item: bytes, capacity: int, ttl: float, max_bytes: int | None = None) -> bool:
        shard = self._shards()[self.shard_index(key)]
        args = [_whole_seconds(ttl), 1, capacity, -1 if max_bytes is None else max_bytes, item]
        return self._tally(await self._push_script(shard, list(self._push_keys(key)), args))[0]

    async def _push_script(self, shard: _Shard, keys: list[str], args: list[Any], script: AsyncScript | None = None) -> Any:
        """Run the push script (or ``script``) on the shard's own push connection (the pool if it is busy)."""
        script = script or shard.push
        if shard.push_busy:
            return await script(keys=keys, args=args)
        connection = shard.push_connection
        if connection is None:
            connection = shard.push_connection = shard.own_connection(shard.pool)
        shard.push_busy = True
        try:
            command = _resp(["EVALSHA", script.sha, len(keys), *keys, *args])
            attempt = 0
            while True:
                try:
                    async with asyncio.timeout(self._socket_timeout):
                        if not connection.is_connected:
                            # connect() itself: a Sentinel-managed connection asks the
                            # Sentinels for the primary there (sending would not).
                            await connection.connect()
                        await connection.send_packed_command(command, check_health=False)
                        return await connection.read_response()
                except NoScriptError:
                    # Redis restarted (or SCRIPT FLUSH): the pooled path loads the script.
                    return await script(keys=keys, args=args)
                except (RedisConnectionError, OSError) as exc:
                    # As the pool's Retry: connection errors only, never after a timeout
                    # (the push may have run; running it twice would duplicate messages).
                    await connection.disconnect(nowait=True)
                    attempt += 1
                    if attempt > self._retries:
                        raise exc if isinstance(exc, RedisConnectionError) else RedisConnectionError(str(exc)) from exc
                    await asyncio.sleep(ExponentialWithJitterBackoff(cap=0.5, base=0.02).compute(attempt))
                except TimeoutError as exc:
                    await connection.disconnect(nowait=True)
                    raise RedisTimeoutError(f"Timeout pushing to {node_identity(shard.url)}") from exc
                except BaseException:
                    # Cancelled mid-command: the reply may still come; never reuse the socket.
                    await connection.disconnect(nowait=True)
                    raise
        finally:
            shard.push_busy = False

    def _positions_by_shard(self, batch: Sequence[PushEntry]) -> dict[int, dict[str, list[int]]]:
        """Per :meth:`shard_index` (a server, or a cluster's slot), per list in order of first
        appearance: the positions of its items in ``batch``. One push script per group."""
        by_shard: dict[int, dict[str, list[int]]] = {}
        for position, entry in enumerate(batch):
            key = entry[0]
            by_shard.setdefault(self.shard_index(key), {}).setdefault(key, []).append(position)
        return by_shard

    async def push_many(self, batch: Sequence[PushEntry], ttl: float) -> list[bool]:
        if not batch:
            return []
        shards = self._shards()
        by_shard = self._positions_by_shard(batch)
        expire = _whole_seconds(ttl)

        async def push_shard(index: int, lists: dict[str, list[int]]) -> list[tuple[int, bool]]:
            keys: list[str] = []
            args: list[Any] = [expire]
            for key, positions in lists.items():
                keys.extend(self._push_keys(key))
                # One list has one pair of bounds; the first entry's apply to the batch.
                _key, _item, capacity, max_bytes = batch[positions[0]]
                args += [len(positions), capacity, -1 if max_bytes is None else max_bytes]
                args.extend(batch[position][1] for position in positions)
            codes = await self._push_script(shards[index], keys, args)
            # The script answers in list order; pair each answer with its input position.
            order = [position for positions in lists.values() for position in positions]
            return list(zip(order, self._tally(codes)))

        jobs = list(by_shard.items())
        if len(jobs) == 1:  # the common case: no gather, no extra task
            outcomes: list[Any] = [await push_shard(*jobs[0])]
        else:
            outcomes = await asyncio.gather(*(push_shard(index, lists) for index, lists in jobs), return_exceptions=True)
            # Wait for every shard before raising, so no push is left running unobserved.
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
        results = [False] * len(batch)
        for outcome in outcomes:
            for position, ok in outcome:
                results[position] = ok
        return results

    def partition(self, keys: Sequence[str]) -> list[list[str]]:
        """One partition per :meth:`shard_index`: a blocking pop waits on keys of one server
        (on a cluster, of one slot, since the cluster storage's shard index is the slot)."""
        partitions: dict[int, list[str]] = {}
        for key in keys:
            partitions.setdefault(self.shard_index(key), []).append(key)
        return list(partitions.values())

    async def _server_version(self, index: int, shard: _Shard) -> tuple[int, ...]:
        version = self._server_versions.get(index)
        if version is None:
            try:
                info = await shard.client.info("server")
            except ResponseError:
                # Some managed services disable INFO; they all run current versions.
                logger.info("INFO is not allowed on %s; assuming Redis 7+", node_identity(shard.url))
                info = {"redis_version": "7.0.0"}
            text = str(info.get("redis_version", "0"))
            version = tuple(int(part) for part in re.findall(r"\d+", text)[:3]) or (0,)
            self._server_versions[index] = version
        return version

    async def pop(self, keys: Sequence[str], count: int, timeout: float) -> tuple[str, list[bytes]] | None:
        """One blocking pop on one server; see :meth:`Storage.pop`.

        The wait happens inside Redis (BLMPOP, or BLPOP before Redis 7), so a pop costs one
        round trip however long it waits. Cancelling a pop while its reply is on the way
        loses that reply (hence ``pop_cancel_safe = False``); a normal return never does.
        """
        if not keys:
            await asyncio.sleep(max(timeout, 0))
            return None
        if count < 1:
            raise ValueError("count must be at least 1")
        index = self.shard_index(keys[0])
        if any(self.shard_index(key) != index for key in keys[1:]):
            raise ValueError("pop() keys span several Redis servers; split them with partition()")
        shard = self._shards()[index]
        names = [self._list_key(key) for key in keys]
        by_name = {name.encode("utf-8"): key for name, key in zip(names, keys)}
        if timeout <= 0:
            reply = await shard.pop_nowait(keys=names, args=[count])
            return (by_name[reply[0]], list(reply[1])) if reply else None
        block = _block_seconds(timeout)
        version = await self._server_version(index, shard)
        if version >= (7,):
            command: tuple[Any, ...] = ("BLMPOP", f"{block:.3f}", len(names), *names, "LEFT", "COUNT", count)
        elif version >= (6,):
            command = ("BLPOP", *names, f"{block:.3f}")
        else:  # Redis 5 and older only take whole seconds.
            block = _whole_seconds(block)
            command = ("BLPOP", *names, int(block))
        reply = await self._blocking_pop(shard, block, command, names[0])
        if not reply:
            return None
        name, payload = reply[0], reply[1]
        items = list(payload) if command[0] == "BLMPOP" else [payload]
        return by_name[name], items

    async def _blocking_pop(self, shard: _Shard, block: float, command: tuple[Any, ...], key: str | None = None) -> Any:
        """A blocking pop on one of the shard's own idle connections (made when none is idle).

        ``key`` is one of the keys the command waits on (all of one slot): the cluster
        storage sends the command to the node serving that slot.

        A connection goes back to the idle list only after a complete reply; an error or a
        cancellation disconnects it (its reply could still arrive), and the next pop makes
        a new one, so a Redis restart costs one failed pop.
        """
        idle = shard.idle_pop_connections
        if idle is None:
            idle = shard.idle_pop_connections = []
        connection = idle.pop() if idle else shard.own_connection(shard.blocking_pool)
        task = asyncio.current_task()
        try:
            async with asyncio.timeout(block + self._blocking_margin):
                if shard.unblock and (not connection.is_connected or connection not in shard.pop_ids):
                    await self._learn_client_id(shard, connection)
                elif not connection.is_connected:
                    await connection.connect()  # as in _push_script: Sentinel connects here
                client_id = shard.pop_ids.get(connection)
                if client_id is not None and task is not None:
                    self._popping[task] = (shard, client_id)
                await connection.send_packed_command(_resp(command), check_health=False)
                reply = await connection.read_response()
        except TimeoutError as exc:
            await connection.disconnect(nowait=True)
            self._forget(shard, connection)
            raise RedisTimeoutError(f"no reply from {node_identity(shard.url)} to a {block}s blocking pop") from exc
        except BaseException:
            await connection.disconnect(nowait=True)
            self._forget(shard, connection)
            raise
        finally:
            if task is not None:
                self._popping.pop(task, None)
        idle.append(connection)
        return reply

    async def _script_and_wait(
        self, shard: _Shard, script: AsyncScript, keys: Sequence[str], args: Sequence[Any], replicas: int, timeout: float
    ) -> tuple[Any, int]:
        """Run ``script`` then ``WAIT replicas timeout`` on one connection: its reply and the
        replicas that confirmed. WAIT covers the writes made on its own connection, hence
        one pipeline (one connection) for both."""
        pipe = shard.client.pipeline(transaction=False)
        await script(keys=keys, args=args, client=pipe)
        pipe.execute_command("WAIT", replicas, max(1, int(timeout * 1000)))
        reply, confirmed = await pipe.execute()
        return reply, int(confirmed)

    async def _learn_client_id(self, shard: _Shard, connection: Any) -> None:
        """Ask the server for ``connection``'s client id (once per connect), for :meth:`wake`."""
        shard.pop_ids.pop(connection, None)
        await connection.connect()
        await connection.send_packed_command(_resp(["CLIENT", "ID"]), check_health=False)
        try:
            shard.pop_ids[connection] = int(await connection.read_response())
        except ResponseError as exc:
            shard.unblock = False
            logger.info("%s refuses CLIENT ID (%s): stopping readers waits out their pops", node_identity(shard.url), exc)

    async def wake(self, readers: Sequence[asyncio.Task[Any]]) -> None:
        """End the blocking pops ``readers`` wait in now, as if their timeout had passed.

        ``CLIENT UNBLOCK <id> TIMEOUT`` makes the server answer the pop with its timeout
        reply: a pop that has taken items answers with them as usual, so nothing is lost
        (cancelling the pop instead could drop a reply in flight). What a stopping reader
        used to wait out: a worker handing its connections over on SIGTERM held every
        client for up to one ``block_timeout``. A wake that reaches a connection already
        serving another pop only makes that pop return empty, and its reader pops again.
        """
        targets = [self._popping[task] for task in readers if task in self._popping]
        for shard, client_id in targets:
            if not shard.unblock:
                continue
            try:
                await shard.client.execute_command("CLIENT", "UNBLOCK", client_id, "TIMEOUT")
            except ResponseError as exc:
                shard.unblock = False
                logger.info(
                    "%s refuses CLIENT UNBLOCK (%s): stopping readers waits out their pops", node_identity(shard.url), exc
                )

    @staticmethod
    def _forget(shard: _Shard, connection: Any) -> None:
        shard.pop_ids.pop(connection, None)
        if shard.held is not None and connection in shard.held:
            shard.held.remove(connection)

    async def contains(self, key: str, item: bytes) -> bool:
        shard = self._shards()[self.shard_index(key)]
        # redis-py's stubs say str; it sends bytes as they are, which is what was stored.
        return await shard.client.lpos(self._list_key(key), item) is not None  # type: ignore[arg-type]

    async def lengths(self, keys: Sequence[str]) -> list[int]:
        """LLEN of every key, pipelined per server (one round trip each, servers in parallel)."""
        shards = self._shards()
        by_shard: dict[int, list[int]] = {}
        for position, key in enumerate(keys):
            by_shard.setdefault(self.shard_index(key), []).append(position)
        results = [0] * len(keys)

        async def shard_lengths(index: int, positions: list[int]) -> None:
            async with shards[index].client.pipeline(transaction=False) as pipe:
                for position in positions:
                    pipe.llen(self._list_key(keys[position]))
                for position, length in zip(positions, await pipe.execute()):
                    results[position] = int(length)

        await asyncio.gather(*(shard_lengths(index, positions) for index, positions in by_shard.items()))
        return results

    async def ping(self) -> list[tuple[str, float | None]]:
        """PING every server in parallel; a server that fails (or takes 5 s) reports None."""

        async def one(shard: _Shard) -> tuple[str, float | None]:
            started = time.perf_counter()
            try:
                async with asyncio.timeout(5.0):
                    await shard.client.ping()
            except (RedisError, OSError, TimeoutError):
                return node_identity(shard.url), None
            return node_identity(shard.url), time.perf_counter() - started

        return list(await asyncio.gather(*(one(shard) for shard in self._shards())))

    # -- Groups -----------------------------------------------------------------------

    async def group_add(self, group: str, channel: str, now: float, expiry: float) -> None:
        shard = self._shards()[self.group_shard_index(group)]
        await shard.group_add(keys=[self._group_key(group)], args=[repr(now), channel, _whole_seconds(expiry)])

    async def group_discard(self, group: str, channel: str) -> None:
        shard = self._shards()[self.group_shard_index(group)]
        await shard.client.zrem(self._group_key(group), channel)

    async def group_members(self, group: str, now: float, expiry: float) -> list[str]:
        shard = self._shards()[self.group_shard_index(group)]
        # On the held connection: a group_send costs this read plus the pushes, and chat
        # fan-out waits on it for every message.
        members = await self._push_script(shard, [self._group_key(group)], [repr(now - expiry)], shard.group_members)
        return [member.decode("utf-8") if isinstance(member, bytes) else str(member) for member in members]

    async def group_add_many(self, memberships: Sequence[tuple[str, Sequence[str]]], now: float, expiry: float) -> None:
        """Add or refresh many memberships: one pipeline (one round trip) per server."""
        ttl = _whole_seconds(expiry)

        def commands(pipe: Any, group: str, channels: Sequence[str]) -> None:
            key = self._group_key(group)
            for start in range(0, len(channels), _MEMBERS_PER_COMMAND):
                pipe.zadd(key, dict.fromkeys(channels[start : start + _MEMBERS_PER_COMMAND], now))
            pipe.expire(key, ttl)

        await self._groups_pipelined(memberships, commands)

    async def group_discard_many(self, memberships: Sequence[tuple[str, Sequence[str]]]) -> None:
        """Remove many memberships: one pipeline (one round trip) per server."""

        def commands(pipe: Any, group: str, channels: Sequence[str]) -> None:
            key = self._group_key(group)
            for start in range(0, len(channels), _MEMBERS_PER_COMMAND):
                pipe.zrem(key, *channels[start : start + _MEMBERS_PER_COMMAND])

        await self._groups_pipelined(memberships, commands)

    async def _groups_pipelined(self, memberships: Sequence[tuple[str, Sequence[str]]], commands: Any) -> None:
        shards = self._shards()
        by_shard: dict[int, list[tuple[str, Sequence[str]]]] = {}
        for group, channels in memberships:
            if channels:
                by_shard.setdefault(self.group_shard_index(group), []).append((group, channels))

        async def run(index: int, entries: list[tuple[str, Sequence[str]]]) -> None:
            async with shards[index].client.pipeline(transaction=False) as pipe:
                for group, channels in entries:
                    commands(pipe, group, channels)
                await pipe.execute()

        await asyncio.gather(*(run(index, entries) for index, entries in by_shard.items()))

    # -- Markers ----------------------------------------------------------------------

    async def keep_marker(self, name: str, ttl: float) -> bool:
        """Set or renew the marker ``name`` on every server; True when one did not have it.

        Redis keeps no record of what it lost: a server restarted without persistence, a
        flush, or a failover to a replica that was behind all look like empty keys. A
        process that keeps a marker of its own and renews it well within ``ttl`` knows
        that data it wrote (group memberships) is gone when its marker is.
        """
        ttl_ms = max(1, math.ceil(ttl * 1000))
        markers = await self._marker_keys(name)
        lost = await asyncio.gather(*(shard.marker(keys=[key], args=[ttl_ms]) for shard, key in markers))
        return any(lost)

    async def mark(self, key: str, ttl: float) -> bool:
        shard = self._mark_shard(key)
        milliseconds = max(1, math.ceil(ttl * 1000))
        return bool(await shard.client.set(self._mark_key(key), b"1", nx=True, px=milliseconds))

    async def unmark(self, key: str) -> None:
        await self._mark_shard(key).client.delete(self._mark_key(key))

    # -- Whole storage ----------------------------------------------------------------

    async def flush(self) -> None:
        """Delete this storage's keys (and only those) on every server.

        SCAN + UNLINK instead of FLUSHDB: other layers or applications may share the
        database, and SCAN never blocks the server the way KEYS would.
        """
        pattern = _glob_escape(self.prefix) + "*"

        async def flush_shard(shard: _Shard) -> None:
            batch: list[bytes] = []
            async for name in shard.client.scan_iter(match=pattern, count=1000):
                batch.append(name)
                if len(batch) >= 500:
                    await shard.client.unlink(*batch)
                    batch = []
            if batch:
                await shard.client.unlink(*batch)

        await asyncio.gather(*(flush_shard(shard) for shard in self._shards()))

    async def close(self) -> None:
        """Close the clients of every loop this storage was used on.

        Clients of the running loop are closed here; those of a loop running in another
        thread are closed on that loop; those of a stopped loop close with it (see
        :meth:`_hook_loop_close`). Using the storage again afterwards opens new
        connections, so a process-wide layer survives being closed between test cases.
        """
        current = asyncio.get_running_loop()
        with self._loops_lock:
            entries = list(self._loops.items())
            for loop, _shards in entries:
                if loop is current or loop.is_closed() or loop.is_running():
                    del self._loops[loop]
        for loop, shards in entries:
            if loop is current:
                await self._close_shards(shards)
            elif loop.is_running() and not loop.is_closed():
                future = asyncio.run_coroutine_threadsafe(self._close_shards(shards), loop)
                try:
                    await asyncio.wait_for(asyncio.wrap_future(future), 5.0)
                except Exception:
                    logger.debug("closing Redis clients on another loop failed", exc_info=True)


# ``__new__`` takes ``*args`` only to hand them on; what callers (and the docs test, and
# help()) should see is ``__init__``'s parameters.
RedisStorage.__signature__ = inspect.signature(RedisStorage.__init__).replace(  # type: ignore[attr-defined]
    parameters=list(inspect.signature(RedisStorage.__init__).parameters.values())[1:]
)
