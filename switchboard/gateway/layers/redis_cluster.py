"""The Redis layer on a Redis Cluster: redis-py's ``RedisCluster`` routes, we lay out keys.

Chosen by ``hosts: ["redis+cluster://host:port", ...]`` (seeds: any node of the cluster;
one that answers is enough) or by ``cluster: true`` with plain ``redis://`` seeds.

Key layout: the name is the hash tag, so everything one script or one blocking command
touches is in one slot, the slot of CRC16(name):

* ``<prefix>{<key>}``: the list of a channel, or of a process-local prefix ``"gateway.x!"``
  (all of one process's channels: one slot, one blocking pop);
* ``<prefix>bytes:{<key>}``: that list's byte account (``_PUSH_LUA`` touches both);
* ``<prefix>group:{<group>}``: a group's members (one sorted set);
* ``<prefix>mark:{<key>}``: a de-duplication marker;
* ``<prefix>durable:{<channel>}`` and ``...:dead``: a durable channel's stream and its dead
  letters (``streams_redis.py``), in the slot of the channel's list;
* ``<prefix>marker:{<tag>}:<name>``: a process's data-loss marker, one per primary, each
  with a tag chosen to fall in that primary's slots (:meth:`RedisClusterStorage._marker_keys`).

So the prefix must not contain ``{`` or ``}`` (it would be taken as the tag). The
one-server and hash-ring layouts (``redis.py``) keep their untagged keys: a tag there
would only move every key of a running deployment.

What redis-py does and we do not: slot routing, ``MOVED``/``ASK``, and learning the new
topology after a failover (``nodes_manager.initialize()``). What we do: a batch of pushes
(a group send to members on many slots) is one ``EVALSHA`` per slot, all of them in one
cluster pipeline, which redis-py splits per node and sends to the nodes in parallel.
Blocking pops go to the node serving the slot on connections of our own (as on one
server: no pool lock, a client id known for ``CLIENT UNBLOCK``), so a stopping reader is
woken there; a pop that meets ``MOVED``, a dead node or a cluster that is down asks
redis-py to reload the slot map before the reader's next try. SCAN cleanups (``flush``,
dead-letter listings) go through redis-py's cluster ``scan_iter``, which scans every primary.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Hashable, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import (
    AskError,
    ClusterDownError,
    MovedError,
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .cluster_client import WaitingRedisCluster
from .hosts import CLUSTER_SCHEMES, scheme
from .redis import (
    _GROUP_ADD_LUA,
    _GROUP_MEMBERS_LUA,
    _MARKER_LUA,
    _POP_NOWAIT_LUA,
    _PUSH_LUA,
    RedisStorage,
    _Shard,
    _whole_seconds,
    node_identity,
)
from .storage import PushEntry

logger = logging.getLogger("switchboard.layers.redis")

#: Errors after which the slot map may be stale: the node died, the slot moved, the cluster
#: is failing over. redis-py reloads the map on its own for its commands; our own pop
#: connections ask it to (``_refresh``).
_TOPOLOGY_ERRORS = (MovedError, AskError, ClusterDownError, TryAgainError, RedisConnectionError, RedisTimeoutError, OSError)


class ClusterTopologyError(ValueError):
    """The cluster seeds cannot be used: unreachable, or not a cluster. One clear line."""


class _ClusterShard:
    """One event loop's clients of the cluster: redis-py's ``RedisCluster`` for everything
    it routes, and a plain shard per node (made on first use) for our own connections
    (blocking pops, WAIT after a durable write, CLIENT UNBLOCK)."""

    def __init__(self, storage: RedisClusterStorage, client: RedisCluster) -> None:
        self.storage = storage
        self.client = client
        self.url = storage.hosts[0]
        self.nodes: dict[str, _Shard] = {}
        self.refreshing: asyncio.Task[Any] | None = None
        # Scripts run through the cluster client (EVALSHA routed by its keys' slot).
        self.push = AsyncScript(client, _PUSH_LUA)
        self.pop_nowait = AsyncScript(client, _POP_NOWAIT_LUA)
        self.group_add = AsyncScript(client, _GROUP_ADD_LUA)
        self.group_members = AsyncScript(client, _GROUP_MEMBERS_LUA)
        self.marker = AsyncScript(client, _MARKER_LUA)
        self.unblock = True

    def node(self, node: ClusterNode) -> _Shard:
        shard = self.nodes.get(node.name)
        if shard is None:
            shard = self.nodes[node.name] = self.storage._make_shard(self.storage._node_url(node))
        return shard

    async def aclose(self) -> None:
        nodes, self.nodes = list(self.nodes.values()), {}
        await asyncio.gather(self.client.aclose(), *(node.aclose() for node in nodes), return_exceptions=True)


class _OneShard(Sequence[Any]):
    """``_shards()`` of the cluster storage: any slot index gives the one cluster shard.

    The shared code (``redis.py``, ``streams_redis.py``) groups work by ``shard_index``
    (the slot here) and then takes ``_shards()[index]``; on a cluster every slot is served
    through the same client, which routes by the keys.
    """

    def __init__(self, shard: _ClusterShard) -> None:
        self.shard = shard

    def __getitem__(self, index: Any) -> Any:
        return self.shard

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[Any]:
        yield self.shard


class RedisClusterStorage(RedisStorage):
    """Bounded lists, groups and markers on a Redis Cluster (see module docstring)."""

    def __init__(self, hosts: Any, prefix: str = "switchboard:", **kwargs: Any) -> None:
        kwargs.pop("cluster", None)
        kwargs.pop("virtual_nodes", None)
        super().__init__(hosts, prefix, cluster=True, **kwargs)
        if "{" in prefix or "}" in prefix:
            raise ValueError(f"on a Redis Cluster the key prefix must not contain braces (hash tags), got {prefix!r}")
        if self._sentinel_kwargs is not None:
            raise ValueError("sentinel_kwargs does not apply to a Redis Cluster")
        self._seeds: list[tuple[str, int]] = []
        for url in self.hosts:
            parts = urlsplit(url)
            if parts.hostname is None:
                raise ValueError(f"a Redis Cluster seed needs host:port, got {url!r}")
            self._seeds.append((parts.hostname, parts.port or 6379))
        self._tls = any(scheme(url) in ("rediss", CLUSTER_SCHEMES[1]) for url in self.hosts)
        # Marker tags per primary slot range, found once (see _marker_keys).
        self._marker_tags: dict[int, str] = {}

    # -- Connections ------------------------------------------------------------------

    def _node_url(self, node: ClusterNode) -> str:
        return f"{'rediss' if self._tls else 'redis'}://{node.host}:{node.port}/0"

    def _cluster_client(self) -> RedisCluster:
        user = {key: value for key, value in self._connection_kwargs.items() if key not in ("protocol",)}
        from redis.asyncio.cluster import ClusterNode as Node

        # Waits for a free connection where redis-py's own client raises (cluster_client.py).
        return WaitingRedisCluster(
            startup_nodes=[Node(host, port) for host, port in self._seeds],
            socket_timeout=self._socket_timeout,
            socket_connect_timeout=self._socket_connect_timeout,
            max_connections=self._max_connections,
            pool_timeout=self._pool_timeout,
            decode_responses=False,
            ssl=self._tls,
            protocol=self._connection_kwargs.get("protocol", 2),
            **user,
        )

    def _new_shards(self) -> list[_Shard]:
        return _OneShard(_ClusterShard(self, self._cluster_client()))  # type: ignore[return-value]

    def _cluster(self) -> _ClusterShard:
        shard = self._shards()[0]
        assert isinstance(shard, _ClusterShard)
        return shard

    async def _refresh(self, shard: _ClusterShard) -> None:
        """Ask redis-py to reload the slot map (once, however many readers ask at once)."""
        task = shard.refreshing
        if task is None or task.done():
            task = shard.refreshing = asyncio.get_running_loop().create_task(shard.client.nodes_manager.initialize())
        try:
            await asyncio.shield(task)
        except (RedisError, OSError) as exc:
            logger.debug("reloading the cluster's slot map failed: %r", exc)

    async def verify(self) -> None:
        """Fail now, with one line, when the seeds are unreachable or not a cluster."""
        client = self._cluster_client()
        try:
            await client.initialize()
        except RedisClusterException as exc:
            text = str(exc)
            if "cluster support disabled" in text or "Cluster mode is not enabled" in text:
                raise ClusterTopologyError(
                    f"{', '.join(node_identity(url) for url in self.hosts)} is not a Redis Cluster "
                    "(cluster support disabled): list a plain redis:// URL, or the seeds of a real cluster"
                ) from exc
            raise ClusterTopologyError(
                f"no Redis Cluster seed of {', '.join(node_identity(url) for url in self.hosts)} answered: {text}"
            ) from exc
        except (RedisError, OSError) as exc:
            raise ClusterTopologyError(
                f"no Redis Cluster seed of {', '.join(node_identity(url) for url in self.hosts)} answered: {exc}"
            ) from exc
        finally:
            await client.aclose()

    # -- Keys -------------------------------------------------------------------------

    def _list_key(self, key: str) -> str:
        return f"{self.prefix}{{{key}}}"

    def _push_keys(self, key: str) -> tuple[str, str]:
        return self._list_key(key), f"{self.prefix}bytes:{{{key}}}"

    def _group_key(self, group: str) -> str:
        return f"{self._group_prefix}{{{group}}}"

    def _mark_key(self, key: str) -> str:
        return f"{self._mark_prefix}{{{key}}}"

    def shard_index(self, key: str) -> int:
        """The slot of ``key``'s list (and of a durable channel ``key``'s stream)."""
        return int(self._cluster().client.keyslot(key))

    def group_shard_index(self, group: str) -> int:
        return self.shard_index(group)

    #: Always several primaries: sends are batched per primary (:meth:`send_lane`).
    multi_lane = True

    def send_lane(self, key: str) -> Hashable:
        """The primary serving ``key``'s slot now, so that a primary being failed over
        holds up only the sends bound for its slots, not the process's sends to every
        other primary. While the slot map has no node for the slot (it is being
        reloaded), the slot itself is the lane."""
        client = self._cluster().client
        slot = int(client.keyslot(key))
        try:
            return str(client.nodes_manager.get_node_from_slot(slot).name)
        except RedisClusterException:  # SlotNotCoveredError
            return slot

    def _mark_shard(self, key: str) -> _Shard:
        return self._cluster()  # type: ignore[return-value]

    async def _marker_keys(self, name: str) -> list[tuple[_Shard, str]]:
        """One marker per primary: a tag whose slot that primary serves, found once.

        The tag of a primary is the first of ``m0``, ``m1``... falling in its slots; slot
        ranges survive a failover (the promoted replica serves the same slots), so the
        marker key stays the same and a replica that had it keeps it.
        """
        shard = self._cluster()
        client = shard.client
        await client.initialize()
        primaries = {node.name for node in client.get_primaries()}
        covered: dict[str, str] = {}
        for slot, tag in self._marker_tags.items():
            owner = client.nodes_manager.slots_cache.get(slot)
            if owner and owner[0].name in primaries:
                covered.setdefault(owner[0].name, tag)
        candidate = 0
        while len(covered) < len(primaries) and candidate < 100_000:
            tag = f"m{candidate}"
            candidate += 1
            slot = int(client.keyslot(tag))
            owner = client.nodes_manager.slots_cache.get(slot)
            if owner and owner[0].name not in covered:
                covered[owner[0].name] = tag
                self._marker_tags[slot] = tag
        return [(shard, f"{self.prefix}marker:{{{tag}}}:{name}") for tag in covered.values()]  # type: ignore[misc]

    # -- Lists ------------------------------------------------------------------------

    async def _push_script(self, shard: _Shard, keys: list[str], args: list[Any], script: AsyncScript | None = None) -> Any:
        """One script through the cluster client (routed by its keys' slot)."""
        script = script or shard.push
        return await script(keys=keys, args=args)

    async def push_many(self, batch: Sequence[PushEntry], ttl: float) -> list[bool]:
        """One push script per slot, all in one cluster pipeline (split per node by redis-py)."""
        if not batch:
            return []
        shard = self._cluster()
        by_slot = self._positions_by_shard(batch)
        expire = _whole_seconds(ttl)
        calls: list[tuple[list[str], list[Any], list[int]]] = []
        for lists in by_slot.values():
            keys: list[str] = []
            args: list[Any] = [expire]
            for key, positions in lists.items():
                keys.extend(self._push_keys(key))
                _key, _item, capacity, max_bytes = batch[positions[0]]
                args += [len(positions), capacity, -1 if max_bytes is None else max_bytes]
                args.extend(batch[position][1] for position in positions)
            calls.append((keys, args, [p for positions in lists.values() for p in positions]))
        replies = await self._pipelined_scripts(shard, shard.push, [(keys, args) for keys, args, _ in calls])
        results = [False] * len(batch)
        for (_keys, _args, order), codes in zip(calls, replies):
            for position, ok in zip(order, self._tally(codes)):
                results[position] = ok
        return results

    async def _pipelined_scripts(
        self, shard: _ClusterShard, script: AsyncScript, calls: Sequence[tuple[Sequence[str], Sequence[Any]]]
    ) -> list[Any]:
        """``script`` once per ``(keys, args)``, in one cluster pipeline; the replies in order.

        A node that has not seen the script yet (new, or restarted) answers NOSCRIPT for
        its calls only, which did not run: the script is loaded and those calls sent again.
        Any other error is raised once every call has answered.
        """
        if len(calls) == 1:
            keys, args = calls[0]
            return [await script(keys=keys, args=args)]
        replies: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        for attempt in range(2):
            pipe = shard.client.pipeline(transaction=False)
            for index in todo:
                keys, args = calls[index]
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            answers = await pipe.execute(raise_on_error=False)
            again = []
            for index, answer in zip(todo, answers):
                if isinstance(answer, NoScriptError) and not attempt:
                    again.append(index)
                else:
                    replies[index] = answer
            if not again:
                break
            await shard.client.script_load(script.script)
            todo = again
        for answer in replies:
            if isinstance(answer, BaseException):
                raise answer
        return replies

    async def _server_version(self, index: int, shard: _Shard) -> tuple[int, ...]:
        version = self._server_versions.get(-1)
        if version is None:
            cluster = self._cluster()
            await cluster.client.initialize()
            versions: list[tuple[int, ...]] = []
            for node in cluster.client.get_primaries():
                versions.append(await super()._server_version(-2 - len(versions), cluster.node(node)))
            version = self._server_versions[-1] = min(versions)
        return version

    def _node_for(self, key: str) -> ClusterNode:
        cluster = self._cluster()
        return cluster.client.nodes_manager.get_node_from_slot(int(cluster.client.keyslot(key)))

    async def _on_node(self, key: str, call: Any) -> Any:
        """``await call(node_shard)`` on the node serving ``key``'s slot, retried once after
        ``MOVED``/``ASK`` (the command did not run) with the slot map reloaded; other
        topology errors reload the map and are raised (the caller's retry finds the new node)."""
        cluster = self._cluster()
        if not cluster.client.nodes_manager.slots_cache:
            await cluster.client.initialize()
        for attempt in range(2):
            try:
                return await call(cluster.node(self._node_for(key)))
            except (MovedError, AskError, ClusterDownError, TryAgainError):
                await self._refresh(cluster)
                if attempt:
                    raise
            except ResponseError as exc:
                if "MOVED" in str(exc) or "CLUSTERDOWN" in str(exc):
                    await self._refresh(cluster)
                    if attempt:
                        raise
                else:
                    raise
            except _TOPOLOGY_ERRORS:
                await self._refresh(cluster)
                raise
        raise AssertionError("unreachable")

    async def _blocking_pop(self, shard: _Shard, block: float, command: tuple[Any, ...], key: str | None = None) -> Any:
        """The blocking command on our own connection to the node serving ``key``'s slot."""
        assert key is not None, "a cluster pop needs one of its keys to find the node"
        base = super()._blocking_pop
        return await self._on_node(key, lambda node: base(node, block, command, key))

    async def _script_and_wait(
        self, shard: _Shard, script: AsyncScript, keys: Sequence[str], args: Sequence[Any], replicas: int, timeout: float
    ) -> tuple[Any, int]:
        """The durable write and its WAIT on one connection to the node serving the slot."""
        base = super()._script_and_wait
        return await self._on_node(keys[0], lambda node: base(node, script, keys, args, replicas, timeout))

    async def lengths(self, keys: Sequence[str]) -> list[int]:
        if not keys:
            return []
        async with self._cluster().client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.llen(self._list_key(key))
            return [int(length) for length in await pipe.execute()]

    async def ping(self) -> list[tuple[str, float | None]]:
        """PING every primary, each named by its address; an unreachable cluster reports its seeds."""
        cluster = self._cluster()
        try:
            async with asyncio.timeout(5.0):
                await cluster.client.initialize()
        except (RedisError, OSError, TimeoutError):
            return [(node_identity(url), None) for url in self.hosts]

        async def one(node: ClusterNode) -> tuple[str, float | None]:
            started = time.perf_counter()
            try:
                async with asyncio.timeout(5.0):
                    await cluster.client.ping(target_nodes=node)
            except (RedisError, OSError, TimeoutError):
                return node.name, None
            return node.name, time.perf_counter() - started

        return list(await asyncio.gather(*(one(node) for node in cluster.client.get_primaries())))

    # -- Groups -----------------------------------------------------------------------

    async def _groups_pipelined(self, memberships: Sequence[tuple[str, Sequence[str]]], commands: Any) -> None:
        entries = [(group, channels) for group, channels in memberships if channels]
        if not entries:
            return
        async with self._cluster().client.pipeline(transaction=False) as pipe:
            for group, channels in entries:
                commands(pipe, group, channels)
            await pipe.execute()


__all__ = ["ClusterTopologyError", "RedisClusterStorage"]
