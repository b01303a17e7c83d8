"""The picture in docs/benchmarks.md: one PNG from a results JSON, drawn with matplotlib.

matplotlib lives only in the comparison venv (bench/.env), never in the project's
dependencies, so the harness runs this module with that venv's interpreter:
``bench/.env/bin/python -m bench.plot bench/results/latest.json docs/img/benchmarks.png``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

COLORS = {"switchboard": "#2b6cb0", "channels": "#c05621", "django": "#2f855a", "baseline": "#718096"}


def _best(rows: list[dict], scenario: str) -> list[dict]:
    best: dict[tuple[str, str], dict] = {}
    for row in rows:
        if row["scenario"] != scenario:
            continue
        key = (row["system"], row["label"])
        rate = row.get("rate") or 0.0
        if key not in best or rate > (best[key].get("rate") or 0.0):
            best[key] = row
    return list(best.values())


def _bars(ax, rows: list[dict], value: str, title: str, unit: str) -> None:
    rows = [r for r in rows if r.get(value) is not None and not math.isnan(r[value])]
    names = [r["system"] for r in rows]
    values = [r[value] for r in rows]
    ax.barh(names, values, color=[COLORS.get(r["side"], "#999") for r in rows])
    for y, v in enumerate(values):
        ax.text(v, y, f" {v:,.0f}" if v >= 100 else f" {v:.1f}", va="center", fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel(unit, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.invert_yaxis()


def main(source: str, target: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = json.loads(Path(source).read_text())["rows"]
    fig, axes = plt.subplots(2, 4, figsize=(18, 7.5))
    _bars(axes[0][0], _best(rows, "ws-echo"), "rate", "WebSocket echo, 50 connections", "round trips/s (higher is better)")
    _bars(axes[0][1], _best(rows, "ws-echo"), "p99_ms", "WebSocket echo p99", "ms (lower is better)")
    _bars(axes[0][2], _best(rows, "http-get"), "rate", "GET /hello/ (plain Django view)", "requests/s (higher is better)")
    _bars(axes[0][3], _best(rows, "http-db"), "rate", "GET /db/ (one indexed PostgreSQL query)", "requests/s (higher is better)")
    _bars(axes[1][3], _best(rows, "http-get"), "cpu_us_per_msg", "GET /hello/: server CPU per request", "us (lower is better)")
    fan = _best(rows, "ws-fanout")
    ax = axes[1][0]
    systems = list(dict.fromkeys(r["system"] for r in fan))
    labels = sorted({r["label"] for r in fan}, key=lambda label: int(label.rsplit("x", 1)[-1]))
    width = 0.8 / max(1, len(systems))
    for i, system in enumerate(systems):
        by_label = {r["label"]: r for r in fan if r["system"] == system}
        side = next((r["side"] for r in fan if r["system"] == system), "")
        values = [by_label.get(label, {}).get("rate") or 0 for label in labels]
        ax.bar([x + i * width for x in range(len(labels))], values, width, label=system,
               color=COLORS.get(side), alpha=0.35 + 0.65 * (i + 1) / len(systems))
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(labels))], labels, fontsize=7)
    ax.set_title("group fan-out: deliveries/s", fontsize=9)
    ax.legend(fontsize=6)
    ax.tick_params(labelsize=7)
    for col, scenario, title in ((1, "idle-ws", "10,000 idle WebSockets"), (2, "idle-poll", "10,000 held long-polls")):
        memory = _best(rows, scenario)
        for r in memory:
            r["kib"] = (r.get("extra") or {}).get("kib_first")
        _bars(axes[1][col], memory, "kib", title + ": RSS per connection", "KiB, first process (gateway) (lower is better)")
    fig.suptitle(
        "Switchboard (blue), Django Channels 4 (orange), plain Django on gunicorn/uvicorn (green): same machine, same run",
        fontsize=11,
    )
    fig.tight_layout()
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
