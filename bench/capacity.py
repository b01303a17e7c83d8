"""``python -m bench.capacity [results.json]``: CPU per message of each kind of process.

The capacity model of docs/scaling.md is read from a bench run's raw results: for every
Switchboard split system and measurement, the CPU each gateway, each worker and each Redis
node spent per message in the counted window (the runner records them per process role
and per Redis node in each row's ``extra``), and what one core of each then carries:
``1e6 / (us per message)`` messages/s. CPU per message, not the rate reached, is what
carries over to another machine: on a shared 2-core machine the rate says how many cores
the system got, the CPU per message what it did with them.

A Redis server is one thread, so for a cluster the number that limits is its *busiest*
primary's; replicas are listed apart (they apply the primaries' writes). Best round per
system and measurement, as in the results tables (the highest rate: outside load only
ever slows a round down).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from bench.report import best_rounds, fmt, markdown_table, text_table
from bench.scenarios import Row

RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"
HEADER = (
    "system",
    "measurement",
    "msg/s",
    "other CPU s",
    "gateways us/msg",
    "workers us/msg",
    "busiest worker us/msg",
    "redis us/msg",
    "busiest primary us/msg",
    "replicas us/msg",
)


@dataclass(frozen=True)
class Costs:
    """CPU microseconds per message (or delivery) of one row, by kind of process."""

    row: Row
    gateways: float
    workers: float
    busiest_worker: float
    redis: float
    busiest_primary: float
    replicas: float

    def cells(self) -> list[str]:
        label = "" if self.row.label == self.row.system else self.row.label
        values = (self.gateways, self.workers, self.busiest_worker, self.redis, self.busiest_primary, self.replicas)
        return [self.row.system, label, fmt(self.row.rate), fmt(self.row.other_cpu_s), *(fmt(v) for v in values)]


def costs(row: Row) -> Costs | None:
    """The row's costs, or None when it has no per-process CPU (one process, or no count)."""
    roles = {key[6:]: value for key, value in row.extra.items() if key.startswith("cpu_s:")}
    if not row.count or not roles:
        return None
    per = 1e6 / row.count
    workers = [v for role, v in roles.items() if role.startswith("worker")]
    nodes = {key[12:]: value for key, value in row.extra.items() if key.startswith("redis_cpu_s:")}
    primaries = [v for node, v in nodes.items() if node.startswith("primary")]
    replicas = [v for node, v in nodes.items() if node.startswith("replica")]
    return Costs(
        row=row,
        gateways=per * sum(v for role, v in roles.items() if role.startswith("gateway")),
        workers=per * sum(workers),
        busiest_worker=per * max(workers, default=math.nan),
        redis=per * row.redis_cpu_s,
        # One Redis server (no per-node figures): it is the one primary.
        busiest_primary=per * (max(primaries) if primaries else row.redis_cpu_s),
        replicas=per * sum(replicas) if replicas else math.nan,
    )


def load_rows(path: Path) -> list[Row]:
    data: dict[str, Any] = json.loads(path.read_text())
    names = {f.name for f in fields(Row)}
    rows = []
    for item in data["rows"]:
        values: dict[str, Any] = {k: (math.nan if v is None else v) for k, v in item.items() if k in names}
        rows.append(Row(**values))
    return rows


def table(rows: Sequence[Row]) -> list[list[str]]:
    found = [c for c in (costs(r) for r in best_rounds(rows)) if c is not None]
    found.sort(key=lambda c: (c.row.scenario, c.row.label != c.row.system, c.row.label, c.row.system))
    return [[c.row.scenario, *c.cells()] for c in found]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.capacity", description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="?", type=Path, default=RESULTS, help="a bench/results/*.json (default latest)")
    parser.add_argument("--markdown", action="store_true", help="a Markdown table, for docs/")
    args = parser.parse_args(argv)
    body = table(load_rows(args.results))
    header = ["scenario", *HEADER]
    print(markdown_table(header, body) if args.markdown else text_table(header, body))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
