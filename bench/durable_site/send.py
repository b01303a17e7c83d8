"""``python -m durable_site.send``: send numbered tasks to Switchboard or Celery.

``--rate 0`` sends as fast as the system takes them (``--concurrency`` sends in flight for
Switchboard's async ``send``; Celery's ``apply_async`` is synchronous); a rate paces them.
Every task carries its send time. Prints one JSON line: count, seconds, the sender's CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def send_switchboard(args: argparse.Namespace) -> tuple[float, float]:
    """(seconds, CPU seconds) of the sending itself, start-up excluded."""
    import django

    django.setup()
    from switchboard.gateway.layers import get_channel_layer

    layer = get_channel_layer()
    began, cpu_before = time.monotonic(), cpu()
    kind = "task." + args.task
    interval = 1.0 / args.rate if args.rate else 0.0
    start = time.monotonic()
    pending: set[asyncio.Task[None]] = set()
    for n in range(args.start, args.start + args.count):
        if interval:
            delay = start + (n - args.start) * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        task = asyncio.ensure_future(layer.send("bench.tasks", {"type": kind, "n": n, "sent": time.time()}))
        pending.add(task)
        task.add_done_callback(pending.discard)
        if len(pending) >= args.concurrency:
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    if pending:
        await asyncio.gather(*pending)
    spent = time.monotonic() - began, cpu() - cpu_before
    await layer.close()
    return spent


def send_celery(args: argparse.Namespace) -> tuple[float, float]:
    from durable_site.celery_app import noop, sleep

    task = noop if args.task == "noop" else sleep
    noop.app.connection_for_write().ensure_connection()  # connected before the clock starts
    began, cpu_before = time.monotonic(), cpu()
    interval = 1.0 / args.rate if args.rate else 0.0
    start = time.monotonic()
    for n in range(args.start, args.start + args.count):
        if interval:
            delay = start + (n - args.start) * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        task.apply_async((n, time.time()))
    return time.monotonic() - began, cpu() - cpu_before


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--system", choices=["switchboard", "celery"], required=True)
    parser.add_argument("--task", choices=["noop", "sleep"], default="noop")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    if args.system == "switchboard":
        seconds, used = asyncio.run(send_switchboard(args))
    else:
        seconds, used = send_celery(args)
    json.dump({"count": args.count, "seconds": seconds, "cpu": used}, sys.stdout)
    print()


if __name__ == "__main__":
    main()
