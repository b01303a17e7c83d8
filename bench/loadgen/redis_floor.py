"""Raw redis-py round trips: the floor under any layer that goes through Redis.

Three measurements, all with redis-py asyncio (hiredis parser) on 127.0.0.1:

- ``ping x1``: one connection, PING after PING: the bare network + Redis round trip.
- ``ping xN``: N tasks doing the same on N connections: what Redis itself sustains here.
- ``2-hop echo xN``: N clients each LPUSH a request to one list; one server task BRPOPs it
  and LPUSHes the reply to the client's own list, which the client BRPOPs. That is the
  least work a split-mode echo (gateway -> worker -> gateway) can do through Redis with
  one message per pop; N=1 gives its latency floor.

Run as ``python -m bench.loadgen.redis_floor --url redis://127.0.0.1:6379/12``.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from bench.loadgen.common import emit, run, summarize_ns

Op = Callable[[], Awaitable[None]]
_STOP = b"STOP"


async def timed_loop(ops: list[Op], seconds: float, cap: int) -> tuple[list[int], float]:
    """Run each op in its own closed loop for ``seconds`` (and at most ``cap`` times each)."""
    latencies: list[int] = []
    stop_at = time.perf_counter() + seconds

    async def loop(op: Op) -> None:
        for _ in range(cap):
            if time.perf_counter() >= stop_at:
                return
            started = time.perf_counter_ns()
            await op()
            latencies.append(time.perf_counter_ns() - started)

    started = time.perf_counter()
    await asyncio.gather(*(loop(op) for op in ops))
    return latencies, time.perf_counter() - started


async def ping_ops(url: str, count: int) -> tuple[list[Op], list[Any]]:
    clients = [aioredis.Redis.from_url(url, single_connection_client=True) for _ in range(count)]
    for client in clients:
        await client.ping()
    ops: list[Op] = []
    for client in clients:

        async def op(client: Any = client) -> None:
            await client.ping()

        ops.append(op)
    return ops, clients


async def echo_ops(url: str, count: int, prefix: str) -> tuple[list[Op], list[Any], Op]:
    """Clients of the 2-hop echo, and a coroutine function that stops its server task.

    The server is stopped by a sentinel message, not by cancelling it: cancelling a
    redis-py call that is blocked in BRPOP can hang while it cleans the connection up.
    """
    request_list = f"{prefix}requests"
    server = aioredis.Redis.from_url(url, single_connection_client=True)

    async def serve() -> None:
        for _ in range(100_000_000):
            popped = await server.brpop([request_list], timeout=1)
            if popped is None:
                continue
            item = popped[1]
            assert isinstance(item, bytes)  # decode_responses is off
            if item == _STOP:
                return
            reply_list, _, body = item.partition(b"|")
            await server.lpush(reply_list, body)

    task = asyncio.create_task(serve())

    async def stop() -> None:
        async with aioredis.Redis.from_url(url) as control:
            await control.lpush(request_list, _STOP)
        await asyncio.wait_for(task, 10)

    clients = [aioredis.Redis.from_url(url, single_connection_client=True) for _ in range(count)]
    ops: list[Op] = []
    for number, client in enumerate(clients):
        reply_list = f"{prefix}reply.{number}"

        async def op(client: Any = client, reply_list: str = reply_list) -> None:
            await client.lpush(request_list, f"{reply_list}|{time.perf_counter_ns()}")
            await client.brpop([reply_list], timeout=5)

        ops.append(op)
    return ops, [*clients, server], stop


async def measure(name: str, ops: list[Op], args: argparse.Namespace) -> dict[str, Any]:
    await timed_loop(ops, args.warmup, args.cap)
    emit("measure_start", label=name)
    latencies, seconds = await timed_loop(ops, args.duration, args.cap)
    emit("measure_end", label=name)
    return {"label": name, "concurrency": len(ops), **summarize_ns(latencies, seconds)}


async def main(args: argparse.Namespace) -> None:
    prefix = f"bench-floor:{secrets.token_hex(4)}:"
    rows: list[dict[str, Any]] = []
    for count in (1, args.concurrency):
        ops, clients = await ping_ops(args.url, count)
        rows.append(await measure(f"redis PING x{count}", ops, args))
        for client in clients:
            await client.aclose()
    for count in (1, args.concurrency):
        ops, clients, stop_server = await echo_ops(args.url, count, prefix)
        rows.append(await measure(f"redis 2-hop echo x{count}", ops, args))
        await stop_server()
        for client in clients:
            await client.aclose()
    emit("result", data={"rows": rows})


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--cap", type=int, default=1_000_000, help="hard cap on operations per loop")
    args = parser.parse_args(argv)
    if not args.url.startswith(("redis://127.", "redis://localhost")):
        parser.error("the floor runs against this machine only: redis://127.x or redis://localhost")
    return args


if __name__ == "__main__":
    run(main(parse_args()))
