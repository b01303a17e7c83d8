"""Durable channels on Redis Streams with one consumer group (needs Redis >= 6.2).

Layout, under the storage's key prefix, per durable channel ``c``:

* ``<prefix>durable:{c}``: the stream. Each entry has the field ``m`` (the packed message)
  and, for a message replayed from the dead letters, ``e`` (its original event id). The
  consumer group ``switchboard`` reads it; an acknowledged entry is deleted (XACK +
  XDEL), so the stream's length is what is stored and unfinished: the capacity check.
* ``<prefix>durable:{c}:dead``: the dead letters, a stream of entries with the message,
  its channel, event id, delivery count, error and time.

Both keys of a channel live on the server the storage's hash ring picks for the channel
name, so every script here touches keys of one server; on a Redis Cluster the ``{c}`` hash
tag keeps them in one slot (CRC16 of the channel name), the slot of the channel's list
too (``redis_cluster.py``). A script that spans channels (``_ADD_LUA``, ``_ACK_LUA``, a
blocking XREADGROUP) is given the channels of one shard: one server here, one slot on a
cluster (``storage.shard_index`` is the slot there). Every other script (``_RENEW_LUA``,
``_SET_IDLE_LUA``, ``_CLAIM_LUA``, ``_DEAD_LETTER_LUA``, ``_REPLAY_LUA``) touches one
channel's two keys.

Why a Lua check before XADD rather than ``XADD MAXLEN``: MAXLEN trims the *oldest*
entries, which may be messages not yet handled; a full durable channel must refuse the
new message (the source retries) instead of dropping an accepted one.

Retries and hand-backs need no timer process and no extra key: a pending entry's idle
time is set (``XCLAIM ... IDLE``) so that the claimers, which take entries idle for the
visibility timeout (``XAUTOCLAIM``), take it when its backoff has passed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from redis.commands.core import AsyncScript
from redis.exceptions import ResponseError

from .durable import GROUP, PARKED, DeadLetter, StreamEntry, event_id_for
from .redis import _block_seconds, _glob_escape

if TYPE_CHECKING:
    from .redis import RedisStorage, _Shard

# KEYS: one stream per entry (keys may repeat). ARGV[1]: group; then per entry the item,
# the capacity and the event id ('' for a new message). The group is made with the
# stream, from id 0, so nothing stored before the first reader started is skipped.
_ADD_LUA = """
local group = ARGV[1]
local results = {}
local lengths = {}
for i, key in ipairs(KEYS) do
    local base = 2 + (i - 1) * 3
    local length = lengths[key]
    if length == nil then
        length = redis.call('XLEN', key)
        if length == 0 and redis.call('EXISTS', key) == 0 then
            redis.call('XGROUP', 'CREATE', key, group, '0', 'MKSTREAM')
        end
    end
    if length < tonumber(ARGV[base + 1]) then
        local event_id = ARGV[base + 2]
        if event_id == '' then
            results[i] = redis.call('XADD', key, '*', 'm', ARGV[base])
        else
            results[i] = redis.call('XADD', key, '*', 'm', ARGV[base], 'e', event_id)
        end
        length = length + 1
    else
        results[i] = false
    end
    lengths[key] = length
end
return results
"""

# KEYS: streams. ARGV[1]: group; then per stream the number of ids and the ids.
_ACK_LUA = """
local group = ARGV[1]
local at = 2
for _, key in ipairs(KEYS) do
    local n = tonumber(ARGV[at])
    local ids = {}
    for j = 1, n do
        ids[j] = ARGV[at + j]
    end
    at = at + n + 1
    if n > 0 then
        redis.call('XACK', key, group, unpack(ids))
        redis.call('XDEL', key, unpack(ids))
    end
end
return 1
"""

# KEYS[1]: stream. ARGV: group, consumer, idle (ms), parking consumer, ids... Entries
# the consumer still owns move to the parking consumer, looking ``idle`` ms idle; one
# another worker claimed meanwhile is that worker's now, and stays untouched.
_SET_IDLE_LUA = """
local n = 0
for i = 5, #ARGV do
    local info = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
    if info[1] and info[1][2] == ARGV[2] then
        redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[4], 0, ARGV[i], 'IDLE', ARGV[3], 'JUSTID')
        n = n + 1
    end
end
return n
"""

# KEYS[1]: stream. ARGV: group, consumer, ids... The lease: entries the consumer still
# owns get their idle time reset (XCLAIM to itself, JUSTID: no delivery counted); one
# another worker claimed meanwhile is that worker's now, and stays untouched.
_RENEW_LUA = """
local n = 0
for i = 3, #ARGV do
    local info = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
    if info[1] and info[1][2] == ARGV[2] then
        redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
        n = n + 1
    end
end
return n
"""

# Shared by the claim and dead-letter scripts: move entry ``id`` (fields ``fields``) of
# KEYS[1] into the dead letters KEYS[2].
_MOVE_DEAD_LUA = """
local function move_dead(id, fields, channel, deliveries, err, now)
    local m, e = '', nil
    for j = 1, #fields, 2 do
        if fields[j] == 'm' then m = fields[j + 1] elseif fields[j] == 'e' then e = fields[j + 1] end
    end
    redis.call('XADD', KEYS[2], '*', 'm', m, 'c', channel, 'e', e or (channel .. ':' .. id),
               'n', deliveries, 'err', err, 't', now)
    redis.call('XACK', KEYS[1], ARGV[1], id)
    redis.call('XDEL', KEYS[1], id)
end
"""

# KEYS: stream, dead letters. ARGV: group, consumer, min idle (ms), cursor, count,
# max deliveries, dead-letter capacity, channel, now, entries to look at. Entries the
# consumer itself holds are skipped: it is alive and still handling them (a handler
# slower than the visibility timeout is not handed to the same worker twice).
# Returns {next cursor, {{id, fields, count}...}, moved to dead letters}.
_CLAIM_LUA = (
    _MOVE_DEAD_LUA
    + """
local scan = tonumber(ARGV[10])
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[3], ARGV[4], '+', scan)
local want = tonumber(ARGV[5])
local max = tonumber(ARGV[6])
local claimed = {}
local dead = 0
local cursor = '0-0'
if #pending >= scan then
    cursor = '(' .. pending[#pending][1]
end
for _, info in ipairs(pending) do
    local id = info[1]
    if info[2] ~= ARGV[2] then
        local got = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], id)
        local entry = got[1]
        if entry and entry[2] then
            local count = info[4] + 1
            if count > max and redis.call('XLEN', KEYS[2]) < tonumber(ARGV[7]) then
                move_dead(id, entry[2], ARGV[8], count,
                          'delivered ' .. count .. ' times without finishing (its workers were lost or stuck)', ARGV[9])
                dead = dead + 1
            else
                claimed[#claimed + 1] = {id, entry[2], count}
                if #claimed >= want then
                    cursor = '(' .. id
                    break
                end
            end
        end
    end
end
return {cursor, claimed, dead}
"""
)

# KEYS: stream, dead letters. ARGV: group, id, channel, error, deliveries, capacity, now.
# 1: moved; 0: the dead letters are full; -1: the entry is gone (acknowledged meanwhile).
_DEAD_LETTER_LUA = (
    _MOVE_DEAD_LUA
    + """
if redis.call('XLEN', KEYS[2]) >= tonumber(ARGV[6]) then
    return 0
end
local entries = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
if #entries == 0 then
    redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
    return -1
end
move_dead(ARGV[2], entries[1][2], ARGV[3], ARGV[5], ARGV[4], ARGV[7])
return 1
"""
)

# KEYS: stream, dead letters. ARGV: group, capacity, ids... Returns {replayed, refused}.
_REPLAY_LUA = """
local replayed, refused = 0, 0
local length = redis.call('XLEN', KEYS[1])
if length == 0 and redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
end
for i = 3, #ARGV do
    local entries = redis.call('XRANGE', KEYS[2], ARGV[i], ARGV[i])
    if #entries > 0 then
        if length >= tonumber(ARGV[2]) then
            refused = refused + 1
        else
            local fields = entries[1][2]
            local m, e = '', ''
            for j = 1, #fields, 2 do
                if fields[j] == 'm' then m = fields[j + 1] elseif fields[j] == 'e' then e = fields[j + 1] end
            end
            redis.call('XADD', KEYS[1], '*', 'm', m, 'e', e)
            redis.call('XDEL', KEYS[2], ARGV[i])
            length = length + 1
            replayed = replayed + 1
        end
    end
end
return {replayed, refused}
"""


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _bytes(value: Any) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


def _fields(flat: Sequence[Any]) -> dict[bytes, Any]:
    return {flat[i]: flat[i + 1] for i in range(0, len(flat) - 1, 2)}


class _ShardScript:
    """A script bound to one shard's client: what ``RedisStorage._push_script`` runs."""

    __slots__ = ("client", "script")

    def __init__(self, script: AsyncScript, client: Any) -> None:
        self.script = script
        self.client = client

    @property
    def sha(self) -> str:
        return self.script.sha

    async def __call__(self, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        return await self.script(keys=keys, args=args, client=self.client)


class RedisStreams:
    """Durable channels of a :class:`~.redis.RedisStorage` (see module docstring)."""

    def __init__(self, storage: RedisStorage) -> None:
        self.storage = storage
        self.prefix = storage.prefix + "durable:"
        # The script text as bytes: the digest needs no client's encoder.
        self._add = AsyncScript(None, _ADD_LUA.encode())  # type: ignore[arg-type]
        self._ack = AsyncScript(None, _ACK_LUA.encode())  # type: ignore[arg-type]
        self._set_idle = AsyncScript(None, _SET_IDLE_LUA.encode())  # type: ignore[arg-type]
        self._renew = AsyncScript(None, _RENEW_LUA.encode())  # type: ignore[arg-type]
        self._claim = AsyncScript(None, _CLAIM_LUA.encode())  # type: ignore[arg-type]
        self._dead_letter = AsyncScript(None, _DEAD_LETTER_LUA.encode())  # type: ignore[arg-type]
        self._replay = AsyncScript(None, _REPLAY_LUA.encode())  # type: ignore[arg-type]
        self._checked: set[int] = set()
        # Where each (channel, consumer)'s next claim scan starts: a long list of
        # entries still being handled at the front cannot hide idle ones behind it.
        self._cursors: dict[tuple[str, str], str] = {}

    # -- Keys -------------------------------------------------------------------------

    def stream_key(self, channel: str) -> str:
        return f"{self.prefix}{{{channel}}}"

    def dead_key(self, channel: str) -> str:
        return f"{self.prefix}{{{channel}}}:dead"

    def _shard(self, channel: str) -> tuple[int, _Shard]:
        index = self.storage.shard_index(channel)
        return index, self.storage._shards()[index]

    async def _check_version(self, index: int, shard: _Shard) -> None:
        if index in self._checked:
            return
        version = await self.storage._server_version(index, shard)
        if version < (6, 2):
            raise RuntimeError(
                f"durable channels need Redis >= 6.2 (XAUTOCLAIM); {shard.url.rpartition('@')[2]} runs "
                f"{'.'.join(map(str, version))}"
            )
        self._checked.add(index)

    def _entry(self, channel: str, entry: Any, fields: Sequence[Any], count: int) -> StreamEntry:
        entry_id = _text(entry)
        if len(fields) == 2 and fields[0] == b"m":  # the common case: a message never replayed
            return StreamEntry(channel, entry_id, _bytes(fields[1]), int(count), f"{channel}:{entry_id}")
        values = _fields(fields)
        event_id = values.get(b"e")
        return StreamEntry(
            channel,
            entry_id,
            _bytes(values.get(b"m", b"")),
            int(count),
            _text(event_id) if event_id else event_id_for(channel, entry_id),
        )

    # -- Messages ---------------------------------------------------------------------

    async def add_many(
        self, batch: Sequence[tuple[str, bytes, int, str | None]], replicas: int, replica_timeout: float
    ) -> tuple[list[str | None], int]:
        if not batch:
            return [], 0
        by_shard: dict[int, list[int]] = {}
        for position, (channel, _item, _capacity, _event_id) in enumerate(batch):
            by_shard.setdefault(self.storage.shard_index(channel), []).append(position)
        shards = self.storage._shards()

        async def add_shard(index: int, positions: list[int]) -> tuple[list[Any], int]:
            shard = shards[index]
            await self._check_version(index, shard)
            keys: list[str] = []
            args: list[Any] = [GROUP]
            for position in positions:
                channel, item, capacity, event_id = batch[position]
                keys.append(self.stream_key(channel))
                args.extend((item, capacity, event_id or ""))
            if not replicas:
                script = cast(AsyncScript, _ShardScript(self._add, shard.client))
                return list(await self.storage._push_script(shard, keys, args, script)), 0
            ids, confirmed = await self.storage._script_and_wait(shard, self._add, keys, args, replicas, replica_timeout)
            return list(ids), confirmed

        jobs = list(by_shard.items())
        outcomes = await asyncio.gather(*(add_shard(index, positions) for index, positions in jobs), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        results: list[str | None] = [None] * len(batch)
        confirmed = replicas
        for (_index, positions), outcome in zip(jobs, outcomes):
            assert not isinstance(outcome, BaseException)
            ids, shard_confirmed = outcome
            confirmed = min(confirmed, shard_confirmed)
            for position, entry in zip(positions, ids):
                results[position] = _text(entry) if entry else None
        return results, confirmed if replicas else 0

    def partition(self, channels: Sequence[str]) -> list[list[str]]:
        partitions: dict[int, list[str]] = {}
        for channel in channels:
            partitions.setdefault(self.storage.shard_index(channel), []).append(channel)
        return list(partitions.values())

    async def _create_groups(self, shard: _Shard, channels: Sequence[str]) -> None:
        for channel in channels:
            try:
                await shard.client.xgroup_create(self.stream_key(channel), GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def read(self, channels: Sequence[str], consumer: str, count: int, timeout: float) -> list[StreamEntry]:
        if not channels:
            await asyncio.sleep(max(timeout, 0))
            return []
        index, shard = self._shard(channels[0])
        if any(self.storage.shard_index(channel) != index for channel in channels[1:]):
            raise ValueError("read() channels span several Redis servers; split them with partition()")
        await self._check_version(index, shard)
        keys = [self.stream_key(channel) for channel in channels]
        by_key = {key.encode("utf-8"): channel for key, channel in zip(keys, channels)}
        block = _block_seconds(timeout)
        command = (
            "XREADGROUP", "GROUP", GROUP, consumer, "COUNT", count, "BLOCK", max(1, int(block * 1000)),
            "STREAMS", *keys, *([">"] * len(keys)),
        )  # fmt: skip
        for attempt in range(2):
            try:
                reply = await self.storage._blocking_pop(shard, block, command, keys[0])
                break
            except ResponseError as exc:
                # No group (the stream is new, or Redis restarted empty): make it, read again.
                if "NOGROUP" not in str(exc) or attempt:
                    raise
                await self._create_groups(shard, channels)
        if not reply:
            return []
        entries: list[StreamEntry] = []
        for key, items in reply:
            channel = by_key[key]
            for entry, fields in items:
                if fields is not None:
                    entries.append(self._entry(channel, entry, fields, 1))
        return entries

    async def claim(
        self, channel: str, consumer: str, min_idle: float, count: int, max_deliveries: int, dead_capacity: int
    ) -> tuple[list[StreamEntry], int]:
        index, shard = self._shard(channel)
        await self._check_version(index, shard)
        cursor_key = (channel, consumer)
        args: list[Any] = [
            GROUP, consumer, max(0, int(min_idle * 1000)), self._cursors.get(cursor_key, "0-0"), count,
            max_deliveries, dead_capacity, channel, repr(time.time()), max(count * 10, 100),
        ]  # fmt: skip
        try:
            reply = await self._claim(keys=[self.stream_key(channel), self.dead_key(channel)], args=args, client=shard.client)
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                return [], 0  # nothing was ever stored (or Redis restarted empty)
            raise
        cursor, claimed, dead = reply
        self._cursors[cursor_key] = _text(cursor)
        return [self._entry(channel, entry, fields, count) for entry, fields, count in claimed], int(dead)

    async def ack(self, acks: Mapping[str, Sequence[str]]) -> None:
        by_shard: dict[int, list[str]] = {}
        for channel, entries in acks.items():
            if entries:
                by_shard.setdefault(self.storage.shard_index(channel), []).append(channel)
        if not by_shard:
            return
        shards = self.storage._shards()

        async def ack_shard(index: int, channels: list[str]) -> None:
            shard = shards[index]
            keys: list[str] = []
            args: list[Any] = [GROUP]
            for channel in channels:
                entries = acks[channel]
                keys.append(self.stream_key(channel))
                args.append(len(entries))
                args.extend(entries)
            script = cast(AsyncScript, _ShardScript(self._ack, shard.client))
            await self.storage._push_script(shard, keys, args, script)

        outcomes = await asyncio.gather(*(ack_shard(i, c) for i, c in by_shard.items()), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def renew(self, channel: str, consumer: str, entries: Sequence[str]) -> int:
        if not entries:
            return 0
        _index, shard = self._shard(channel)
        renewed = await self._renew(keys=[self.stream_key(channel)], args=[GROUP, consumer, *entries], client=shard.client)
        return int(renewed)

    async def set_idle(self, channel: str, consumer: str, entries: Sequence[str], idle: float) -> None:
        if not entries:
            return
        _index, shard = self._shard(channel)
        await self._set_idle(
            keys=[self.stream_key(channel)],
            args=[GROUP, consumer, max(0, int(idle * 1000)), PARKED, *entries],
            client=shard.client,
        )

    # -- Dead letters -----------------------------------------------------------------

    async def dead_letter(self, channel: str, entry: str, error: str, deliveries: int, dead_capacity: int) -> bool:
        _index, shard = self._shard(channel)
        moved = await self._dead_letter(
            keys=[self.stream_key(channel), self.dead_key(channel)],
            args=[GROUP, entry, channel, error, deliveries, dead_capacity, repr(time.time())],
            client=shard.client,
        )
        return int(moved) != 0

    async def dead_channels(self) -> dict[str, int]:
        pattern = _glob_escape(self.prefix) + "{*}:dead"
        start = len(self.prefix) + 1
        found: dict[str, int] = {}
        for shard in self.storage._shards():
            async for name in shard.client.scan_iter(match=pattern, count=1000):
                channel = _text(name)[start : -len("}:dead")]
                length = int(await shard.client.xlen(name))
                if length:
                    found[channel] = length
        return found

    async def dead_list(self, channel: str, start: str | None, count: int) -> list[DeadLetter]:
        _index, shard = self._shard(channel)
        entries = await shard.client.xrange(self.dead_key(channel), min=start or "-", max="+", count=count)
        letters = []
        for entry, fields in entries or []:
            values = {_text(key): value for key, value in (fields or {}).items()}
            letters.append(
                DeadLetter(
                    id=_text(entry),
                    channel=_text(values.get("c", channel)),
                    event_id=_text(values.get("e", "")),
                    deliveries=int(values.get("n", 0)),
                    error=_text(values.get("err", "")),
                    failed_at=float(values.get("t", 0) or 0),
                    item=_bytes(values.get("m", b"")),
                )
            )
        return letters

    async def dead_replay(self, channel: str, ids: Sequence[str], capacity: int) -> tuple[int, int]:
        if not ids:
            return 0, 0
        _index, shard = self._shard(channel)
        replayed, refused = await self._replay(
            keys=[self.stream_key(channel), self.dead_key(channel)], args=[GROUP, capacity, *ids], client=shard.client
        )
        return int(replayed), int(refused)

    async def dead_drop(self, channel: str, ids: Sequence[str] | None) -> int:
        _index, shard = self._shard(channel)
        key = self.dead_key(channel)
        if ids is None:
            length = int(await shard.client.xlen(key))
            await shard.client.delete(key)
            return length
        if not ids:
            return 0
        return int(await shard.client.xdel(key, *ids))

    async def info(self, channel: str) -> tuple[int, int]:
        _index, shard = self._shard(channel)
        key = self.stream_key(channel)
        length = int(await shard.client.xlen(key))
        if not length:
            return 0, 0
        try:
            summary = await shard.client.xpending(key, GROUP)
        except ResponseError:
            return length, 0
        return length, int(summary.get("pending", 0) if isinstance(summary, dict) else summary[0])

    async def flush(self) -> None:
        """Nothing to do: the storage's flush deletes every key under its prefix, these too."""
