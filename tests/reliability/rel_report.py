"""Write the fuzz counts of a test run into docs/reliability.md.

Usage, from the repository root::

    REL_COUNTS_FILE=/tmp/counts.json .venv/bin/pytest tests/reliability
    .venv/bin/python tests/reliability/rel_report.py /tmp/counts.json

Without an argument it reads what the last run stored in pytest's cache
(``.pytest_cache/v/reliability/fuzz_counts``). Only the part of the document between the
``fuzz-counts`` markers is replaced, so the prose around it stays hand-written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "reliability.md"
CACHE = ROOT / ".pytest_cache" / "v" / "reliability" / "fuzz_counts"
START, END = "<!-- fuzz-counts:start -->", "<!-- fuzz-counts:end -->"
TARGETS = {"memory": "in-process (memory layer)", "redis": "processes over Redis"}


def render(data: dict[str, Any]) -> str:
    """Markdown: a summary table, then per protocol every kind of input and what it got."""
    protocols: dict[str, dict[str, Any]] = data["protocols"]
    lines = ["| Protocol | " + " | ".join(TARGETS.values()) + " |", "|---|" + "---:|" * len(TARGETS)]
    total = dict.fromkeys(TARGETS, 0)
    for protocol, targets in protocols.items():
        cells = []
        for target in TARGETS:
            tried = targets.get(target, {}).get("tried", 0)
            total[target] += tried
            cells.append(str(tried) if tried else "—")
        lines.append(f"| {protocol} | " + " | ".join(cells) + " |")
    lines.append("| **all** | " + " | ".join(f"**{n}**" for n in total.values()) + " |")
    for protocol, targets in protocols.items():
        lines += ["", f"**{protocol}** — input: outcome", "", "| Input: what the gateway did | " + " | ".join(TARGETS) + " |",
                  "|---|" + "---:|" * len(TARGETS)]
        outcomes = sorted({outcome for target in targets.values() for outcome in target["outcomes"]})
        for outcome in outcomes:
            counts = [str(targets.get(t, {}).get("outcomes", {}).get(outcome, "—")) for t in TARGETS]
            lines.append(f"| {outcome} | " + " | ".join(counts) + " |")
    expected = data.get("expected_log_lines") or {}
    if expected:
        lines += ["", "Tolerated log lines seen during the batches (each a finding, see below):", ""]
        lines += [f"- `{message}`: {count}" for message, count in sorted(expected.items())]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    source = Path(argv[1]) if len(argv) > 1 else CACHE
    data = json.loads(source.read_text(encoding="utf-8"))
    text = DOC.read_text(encoding="utf-8")
    head, start, rest = text.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        print(f"{DOC}: markers {START} / {END} not found", file=sys.stderr)
        return 1
    DOC.write_text(f"{head}{START}\n{render(data)}\n{END}{tail}", encoding="utf-8")
    print(f"wrote the counts of {source} into {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
