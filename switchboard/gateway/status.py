"""``switchboard status``: which gateways and workers are running, and what they are doing.

The command reaches the processes through the same channel layer they use (so it takes
the same ``--settings`` / ``--config``). It sends one ``switchboard.status.request`` to the
group ``switchboard.status``, which every process joins, and renders the
``switchboard.status`` answers (specs/layer.md, Status) that arrive on its own
process-local channel. ``--once`` collects for ``--wait`` seconds (default 2) and prints one
table, or JSON with ``--json``; without it, the table is redrawn every ``--interval``.

Why request/answer rather than every process publishing every second: nothing crosses the
layer while nobody looks, and the only group members are the long-lived processes
themselves, never a status command that may be killed without leaving the group.

An in-memory layer cannot be reached from another process, so ``switchboard run`` (which
always uses one) is not visible here; its metrics endpoint is.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import IO, Any

from .layers import ChannelLayer, LayerClosed, Message, Receiver
from .observer import STATUS, STATUS_GROUP, STATUS_REQUEST

#: A process not heard from for this many refresh intervals is shown as lost, then removed.
LOST_AFTER = 3
FORGET_AFTER = 10


class StatusClient:
    """Asks every process for its status and keeps the latest answer of each, by id."""

    def __init__(self, layer: ChannelLayer) -> None:
        self.layer = layer
        prefix = f"switchboard.status.{secrets.token_hex(6)}!"
        self.reply_channel = prefix + "in"
        self._prefix = prefix
        self._receiver: Receiver | None = None
        #: id -> (local time the answer arrived, the status message)
        self.seen: dict[str, tuple[float, Message]] = {}

    async def __aenter__(self) -> StatusClient:
        self._receiver = self.layer.receiver([self._prefix])
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._receiver is not None:
            await self._receiver.close()
            self._receiver = None

    async def request(self) -> None:
        await self.layer.group_send(STATUS_GROUP, {"type": STATUS_REQUEST, "reply_channel": self.reply_channel})

    async def collect(self, seconds: float, other: Callable[[str, Message], None] | None = None) -> None:
        """Record every answer that arrives within ``seconds``; hand anything else to ``other``."""
        receiver = self._receiver
        if receiver is None:
            raise RuntimeError("use StatusClient as an async context manager")
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                batch = await asyncio.wait_for(receiver.get_batch(), remaining)
            except (TimeoutError, LayerClosed):
                return
            now = time.time()
            for channel, message in batch:
                if message.get("type") == STATUS and isinstance(message.get("id"), str):
                    self.seen[str(message["id"])] = (now, message)
                elif other is not None:
                    other(channel, message)

    def rows(self, now: float | None = None, *, forget_after: float | None = None) -> list[dict[str, Any]]:
        """The known processes, gateways first, each with ``last_seen`` and ``uptime`` seconds."""
        now = time.time() if now is None else now
        rows = []
        for process_id, (arrived, message) in list(self.seen.items()):
            if forget_after is not None and now - arrived > forget_after:
                del self.seen[process_id]
                continue
            row = {k: v for k, v in message.items() if k != "type"}
            row["last_seen"] = round(max(now - arrived, 0.0), 3)
            row["uptime"] = round(max(float(message.get("time", now)) - float(message.get("started", now)), 0.0), 3)
            rows.append(row)
        order = {"gateway": 0, "run": 1, "worker": 2}
        rows.sort(key=lambda r: (order.get(str(r.get("kind")), 3), str(r.get("host")), int(r.get("pid", 0))))
        return rows


async def snapshot(layer: ChannelLayer, wait: float = 2.0) -> list[dict[str, Any]]:
    """One round: ask, collect for ``wait`` seconds, return the rows."""
    async with StatusClient(layer) as client:
        await client.request()
        await client.collect(wait)
        return client.rows()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 172800:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _number(value: Any) -> str:
    return "-" if value is None else str(value)


def table_rows(rows: Iterable[dict[str, Any]], interval: float | None = None) -> list[list[str]]:
    """Cells of the status table, header first."""
    header = ["ID", "KIND", "HOST/PID", "STATE", "UPTIME", "CONNECTIONS", "IN", "OUT", "DROPS", "CLAIMS", "INST", "QUEUE", "SEEN"]
    lines = [header]
    for row in rows:
        gateway = row.get("gateway") or {}
        worker = row.get("worker") or {}
        part = gateway or worker
        connections = " ".join(f"{p}={n}" for p, n in sorted((row.get("connections") or {}).items())) or "-"
        seen = float(row.get("last_seen", 0.0))
        state = str(row.get("state", "?"))
        if interval is not None and seen > LOST_AFTER * interval:
            state = "lost?"
        queue = gateway.get("held") if gateway else worker.get("queued")
        lines.append(
            [
                str(row.get("id", "?")),
                str(row.get("kind", "?")),
                f"{row.get('host', '?')}/{row.get('pid', '?')}",
                state,
                _duration(float(row.get("uptime", 0.0))),
                connections,
                _number(part.get("events_in")),
                _number(part.get("events_out")),
                str(sum((row.get("drops") or {}).values())),
                _number(part.get("claimed")),
                _number(worker.get("instances")) if worker else "-",
                _number(queue),
                f"{seen:.1f}s ago",
            ]
        )
    return lines


def render_table(rows: Iterable[dict[str, Any]], interval: float | None = None) -> str:
    """A plain-text table, columns padded to their widest cell."""
    lines = table_rows(rows, interval)
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines)


def render_json(rows: list[dict[str, Any]]) -> str:
    return json.dumps({"time": time.time(), "processes": rows}, sort_keys=True)


async def _unless_stopped(stop: asyncio.Event, work: Awaitable[None]) -> None:
    """Run ``work`` until it finishes or ``stop`` is set, whichever comes first."""
    tasks = {asyncio.ensure_future(work), asyncio.ensure_future(stop.wait())}
    _done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)


async def run_status(
    layer: ChannelLayer,
    *,
    once: bool,
    as_json: bool,
    wait: float = 2.0,
    interval: float = 1.0,
    out: IO[str] | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """The ``switchboard status`` command; returns the exit code (1: nobody answered).

    The live view runs until ``stop`` is set (SIGINT or SIGTERM in the command) and then
    exits 0.
    """
    out = out or sys.stdout
    stop = stop or asyncio.Event()
    if once:
        rows = await snapshot(layer, wait)
        out.write((render_json(rows) if as_json else render_table(rows)) + "\n")
        out.flush()
        if not rows:
            print(f"switchboard: no gateway or worker answered within {wait:g}s", file=sys.stderr)
        return 0 if rows else 1
    async with StatusClient(layer) as client:
        await client.request()
        await _unless_stopped(stop, client.collect(min(wait, interval * 2)))
        while not stop.is_set():
            rows = client.rows(forget_after=FORGET_AFTER * interval)
            if as_json:
                out.write(render_json(rows) + "\n")
            else:
                # Clear the screen and home the cursor: a live view, like top.
                out.write("\x1b[2J\x1b[H" + render_table(rows, interval) + f"\n\n{len(rows)} process(es); Ctrl-C to quit\n")
            out.flush()
            await client.request()
            await _unless_stopped(stop, client.collect(interval))
    return 0
