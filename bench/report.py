"""Tables for the terminal and docs/benchmarks.md, and the raw JSON in bench/results/.

docs/benchmarks.md is half hand-written (method, fairness, caveats) and half generated:
only the part between the two markers below is replaced, so the prose survives reruns.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bench.runner import RunFailure
from bench.scenarios import SCENARIOS, Row

START_MARKER = "<!-- bench:results:start -->"
END_MARKER = "<!-- bench:results:end -->"

COLUMNS: tuple[tuple[str, str], ...] = (
    ("system", "system"),
    ("measurement", "label"),
    ("conns", "connections"),
    ("msgs", "count"),
    ("msg/s", "rate"),
    ("p50 ms", "p50_ms"),
    ("p99 ms", "p99_ms"),
    ("max ms", "max_ms"),
    ("srv CPU s", "server_cpu_s"),
    ("CPU us/msg", "cpu_us_per_msg"),
    ("redis CPU s", "redis_cpu_s"),
    ("client CPU s", "loadgen_cpu_s"),
    ("other CPU s", "other_cpu_s"),
    ("peak RSS MB", "peak_rss_mb"),
    ("procs", "server_processes"),
    ("errors", "errors"),
)


# Scenarios whose rows are not rates: their own columns (see bench/scenarios/idle_memory.py).
MEMORY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("system", "system"),
    ("measurement", "label"),
    ("conns", "connections"),
    ("held", "count"),
    ("first proc KiB/conn", "extra:kib_first"),
    ("all procs KiB/conn", "extra:kib_total"),
    ("open s", "seconds"),
    ("srv CPU s", "server_cpu_s"),
    ("peak RSS MB", "peak_rss_mb"),
    ("procs", "server_processes"),
    ("failed", "errors"),
)
# Open loop at a fixed rate (bench/scenarios/ws_echo_paced.py): the rate asked for beside
# the rate carried, and how far the client's sends were behind their schedule.
PACED_COLUMNS: tuple[tuple[str, str], ...] = (
    ("system", "system"),
    ("measurement", "label"),
    ("conns", "connections"),
    ("target/s", "extra:target_rate"),
    ("msgs", "count"),
    ("msg/s", "rate"),
    ("p50 ms", "p50_ms"),
    ("p99 ms", "p99_ms"),
    ("max ms", "max_ms"),
    ("send lag p99 ms", "extra:send_lag_p99_ms"),
    ("srv CPU s", "server_cpu_s"),
    ("srv wait s", "server_wait_s"),
    ("CPU us/msg", "cpu_us_per_msg"),
    ("redis CPU s", "redis_cpu_s"),
    ("client CPU s", "loadgen_cpu_s"),
    ("other CPU s", "other_cpu_s"),
    ("peak RSS MB", "peak_rss_mb"),
    ("procs", "server_processes"),
    ("errors", "errors"),
)
# Protocol plugins (bench/scenarios/plugin_base.py): requests in flight, and the MQTT broker's CPU.
PLUGIN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("system", "system"),
    ("measurement", "label"),
    ("in flight", "connections"),
    ("msgs", "count"),
    ("msg/s", "rate"),
    ("p50 ms", "p50_ms"),
    ("p99 ms", "p99_ms"),
    ("max ms", "max_ms"),
    ("srv CPU s", "server_cpu_s"),
    ("CPU us/msg", "cpu_us_per_msg"),
    ("redis CPU s", "redis_cpu_s"),
    ("broker CPU s", "extra:broker_cpu_s"),
    ("client CPU s", "loadgen_cpu_s"),
    ("other CPU s", "other_cpu_s"),
    ("peak RSS MB", "peak_rss_mb"),
    ("procs", "server_processes"),
    ("errors", "errors"),
)
SCENARIO_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "idle-ws": MEMORY_COLUMNS,
    "idle-poll": MEMORY_COLUMNS,
    "ws-echo-paced": PACED_COLUMNS,
    "udp-echo": PLUGIN_COLUMNS,
    "mqtt-rtt": PLUGIN_COLUMNS,
}
# Each system runs at its own rate here, so a Switchboard / Channels ratio compares unlike loads.
NO_RATIOS = {"ws-echo-paced"}


def columns_for(scenario: str) -> tuple[tuple[str, str], ...]:
    return SCENARIO_COLUMNS.get(scenario, COLUMNS)


def fmt(value: Any) -> str:
    """A table cell: thousands separators, three significant digits, "-" for NaN."""
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 100:
            return f"{value:.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def _cells(row: Row) -> list[str]:
    cells = []
    value: Any
    for _title, attr in columns_for(row.scenario):
        if attr.startswith("extra:"):
            value = row.extra.get(attr[6:], math.nan)
        else:
            value = getattr(row, attr)
        if attr == "label" and value == row.system:
            value = ""
        if attr == "server_processes" and value == 0:
            value = "-"
        cells.append(fmt(value))
    return cells


def best_rounds(rows: Sequence[Row]) -> list[Row]:
    """Per scenario, system and measurement, the round with the highest rate.

    Best-of-N because outside load on a shared machine only ever slows a round down; the
    other rounds' rates are kept in the notes (and all rounds in the JSON).
    """
    groups: dict[tuple[str, str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.scenario, row.system, row.label), []).append(row)
    best = []
    for group in groups.values():
        chosen = max(group, key=lambda r: -1.0 if math.isnan(r.rate) else r.rate)
        if len(group) > 1:
            chosen = dataclasses.replace(chosen, notes=list(chosen.notes))
            rates = " / ".join(f"{r.rate:,.0f}" for r in group)
            what = "" if chosen.label == chosen.system else f"{chosen.label}: "
            chosen.notes.append(f"{what}msg/s per round {rates}; round {chosen.round} shown")
        best.append(chosen)
    return best


def ratio_side(rows: Sequence[Row]) -> str:
    """What Switchboard is compared with in this group: Channels (and plain Django), or a plugin's bare server."""
    if any(r.side == "bare" for r in rows):
        return "bare"
    return "other server" if any(r.side == "django" for r in rows) else "channels"


#: Sides each comparison names (``django``: gunicorn and uvicorn with plain Django).
_COMPARED = {"bare": ("bare",), "channels": ("channels",), "other server": ("channels", "django")}
_COMPARED_TEXT = {"bare": "the bare server", "channels": "Channels", "other server": "Channels and plain Django servers"}


def ratio_rows(rows: Sequence[Row]) -> list[list[str]]:
    """Switchboard / Channels (or / bare) for every pair in one scenario: rate, p50, p99, CPU per message.

    Above 1 is better for Switchboard in ``msg/s``; below 1 is better in the other three.
    """
    if any(r.scenario in NO_RATIOS for r in rows):
        return []
    others = _COMPARED[ratio_side(rows)]
    ours = [r for r in rows if r.side == "switchboard" and r.count and not math.isnan(r.rate)]
    theirs = [r for r in rows if r.side in others and r.count and not math.isnan(r.rate)]
    table = []
    for a in ours:
        for b in theirs:
            if a.label != a.system and a.label != b.label:
                continue  # multi-measurement scenarios (fan-out sizes): compare like with like
            table.append(
                [
                    a.system if a.label == a.system else f"{a.system} ({a.label})",
                    b.system,
                    _ratio(a.rate, b.rate),
                    _ratio(a.p50_ms, b.p50_ms),
                    _ratio(a.p99_ms, b.p99_ms),
                    _ratio(a.cpu_us_per_msg, b.cpu_us_per_msg),
                ]
            )
    return table


BASELINE_HEADER = ["scenario", "system", "measurement", "msg/s ratio", "p50 ratio", "p99 ratio", "CPU/msg ratio"]


def baseline_rows(rows: Sequence[Row]) -> list[list[str]]:
    """Every system of a ``--baseline`` run against itself at the earlier commit.

    Above 1 is better now in ``msg/s``; below 1 is better now in the other three.
    """
    before = {(r.scenario, r.system.split("@")[0], r.label.split("@")[0]): r for r in rows if r.side == "before"}
    table = []
    for row in rows:
        then = before.get((row.scenario, row.system, row.label))
        if row.side == "before" or then is None:
            continue
        table.append(
            [
                row.scenario,
                row.system,
                "" if row.label == row.system else row.label,
                _ratio(row.rate, then.rate),
                _ratio(row.p50_ms, then.p50_ms),
                _ratio(row.p99_ms, then.p99_ms),
                _ratio(row.cpu_us_per_msg, then.cpu_us_per_msg),
            ]
        )
    return table


RATIO_HEADER = ["switchboard", "channels", "msg/s ratio", "p50 ratio", "p99 ratio", "CPU/msg ratio"]


def ratio_header(rows: Sequence[Row]) -> list[str]:
    return [RATIO_HEADER[0], ratio_side(rows), *RATIO_HEADER[2:]]


def summary_lines(scenario: str, rows: Sequence[Row]) -> list[str]:
    """The scenario's own lines under its table (ws-echo-paced: the 5 ms verdicts)."""
    found = SCENARIOS.get(scenario)
    return found.summary(rows) if found is not None else []


def headline_lines(rows: Sequence[Row]) -> list[str]:
    """Every scenario's lines for the top of the Results (ws-echo-paced: the issue's target)."""
    return [line for name, group in by_scenario(rows).items() if name in SCENARIOS for line in SCENARIOS[name].headline(group)]


def _ratio(a: float, b: float) -> str:
    if not b or math.isnan(a) or math.isnan(b):
        return "-"
    return f"{a / b:.2f}x"


def text_table(header: Sequence[str], body: Iterable[Sequence[str]]) -> str:
    rows = [list(header), *[list(r) for r in body]]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for n, r in enumerate(rows):
        lines.append("  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(header: Sequence[str], body: Iterable[Sequence[str]]) -> str:
    align = "|".join("---" if i < 2 else "---:" for i in range(len(header)))
    lines = ["| " + " | ".join(header) + " |", f"|{align}|"]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in r) + " |" for r in body]
    return "\n".join(lines)


def by_scenario(rows: Sequence[Row]) -> dict[str, list[Row]]:
    grouped: dict[str, list[Row]] = {}
    for row in rows:
        grouped.setdefault(row.scenario, []).append(row)
    return grouped


def render_text(rows: Sequence[Row], failures: Sequence[RunFailure]) -> str:
    out = []
    for scenario, group in by_scenario(rows).items():
        header = [title for title, _ in columns_for(scenario)]
        out.append(f"\n== {scenario} ==")
        out.append(text_table(header, (_cells(r) for r in group)))
        ratios = ratio_rows(group)
        if ratios:
            out.append(f"\nSwitchboard / {_COMPARED_TEXT[ratio_side(group)]} (same run):")
            out.append(text_table(ratio_header(group), ratios))
        for line in summary_lines(scenario, group):
            out.append(f"  {line}")
        notes = list(dict.fromkeys((r.system, n) for r in group for n in r.notes))  # stop notes repeat per row
        for system, note in notes:
            out.append(f"  note [{system}]: {note}")
    for line in headline_lines(rows):
        out.append(f"\n{line}")
    for failure in failures:
        out.append(f"\nFAILED {failure.scenario} on {failure.system}: {failure.error}")
        for role, tail in failure.logs.items():
            out.append(f"--- {role} log (tail) ---\n{tail}")
    return "\n".join(out)


def render_markdown(
    rows: Sequence[Row], failures: Sequence[RunFailure], meta: dict[str, Any], descriptions: dict[str, str]
) -> str:
    machine = meta["machine"]
    out = [
        f"Last run: **{meta['date']}**, {meta['elapsed_s']:.0f} s wall, git `{machine['git']}`.",
        "",
        "```",
        meta["command"],
        "```",
        "",
        f"- Machine: {machine['nproc']} cores ({machine['cpu']}), {machine['memory_gib']} GiB, Linux {machine['kernel']}",
        f"- Python {machine['python']}, Redis server {machine['redis_server']}",
        "- Main venv (Switchboard, load generators): " + ", ".join(f"{k} {v}" for k, v in machine["main_venv"].items()),
        "- bench/.env (Channels side): " + (", ".join(f"{k} {v}" for k, v in machine["bench_env"].items()) or "not used"),
        _options_line(meta),
        "",
        "Systems in this run:",
        "",
    ]
    for name, text in descriptions.items():
        out.append(f"- `{name}`: {text}")
    for line in headline_lines(rows):
        out += ["", line]  # each its own paragraph
    if meta.get("plot"):
        out += ["", f"![Switchboard and Channels side by side]({meta['plot']})"]
    for scenario, group in by_scenario(rows).items():
        header = [title for title, _ in columns_for(scenario)]
        out += ["", f"### {scenario}", "", markdown_table(header, (_cells(r) for r in group))]
        ratios = ratio_rows(group)
        if ratios:
            other = _COMPARED_TEXT[ratio_side(group)]
            out += [
                "",
                f"Switchboard / {other} from the same run (msg/s: above 1 is better for Switchboard; "
                "latency and CPU per message: below 1 is better):",
                "",
                markdown_table(ratio_header(group), ratios),
            ]
        summary = summary_lines(scenario, group)
        if summary:
            out += ["", *(f"- {line}" for line in summary)]
        notes = list(dict.fromkeys(f"- `{r.system}`: {n}" for r in group for n in r.notes))
        if notes:
            out += ["", "Notes:", "", *notes]
    before_after = baseline_rows(rows)
    if before_after:
        label = next(r.system.split("@")[1] for r in rows if r.side == "before")
        out += [
            "",
            f"### Before and after: this commit / `{label}`",
            "",
            "Each Switchboard system above ran again from a checkout of the earlier commit, right after "
            "itself in every round, on the same interpreter and dependencies (msg/s: above 1 is better now; "
            "latency and CPU per message: below 1 is better now):",
            "",
            markdown_table(BASELINE_HEADER, before_after),
        ]
    if failures:
        out += ["", "### Failures", ""]
        out += [f"- `{f.system}` / `{f.scenario}`: {f.error.splitlines()[0]}" for f in failures]
    return "\n".join(out)


def _options_line(meta: dict[str, Any]) -> str:
    options = meta["options"]
    load = "/".join(f"{x:.2f}" for x in meta.get("loadavg_before", ()))
    load_after = "/".join(f"{x:.2f}" for x in meta.get("loadavg_after", ()))
    return (
        f"- Load: {options['connections']} connections, {options['warmup_s']:g} s warm-up, "
        f"{options['duration_s']:g} s counted, best of {options['repeat']} round(s)"
        f"{' (quick)' if options['quick'] else ''}; load average before {load}, after {load_after}"
    )


def write_docs(path: Path, generated: str) -> None:
    """Replace the generated part of ``path``, keeping the hand-written text around it."""
    block = f"{START_MARKER}\n{generated}\n{END_MARKER}"
    if path.exists():
        text = path.read_text()
        if START_MARKER in text and END_MARKER in text:
            before, _, rest = text.partition(START_MARKER)
            _, _, after = rest.partition(END_MARKER)
            path.write_text(before + block + after)
            return
        path.write_text(text.rstrip() + "\n\n## Results\n\n" + block + "\n")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# Benchmarks\n\n## Results\n\n" + block + "\n")


def _nan_to_none(value: Any) -> Any:
    """NaN (not measured) becomes null, so the file is strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def write_json(directory: Path, stamp: str, rows: Sequence[Row], failures: Sequence[RunFailure], meta: dict[str, Any]) -> Path:
    """Raw results (every field, unrounded) to bench/results/<stamp>.json and latest.json."""
    directory.mkdir(parents=True, exist_ok=True)
    payload = {
        "meta": meta,
        "rows": [{**dataclasses.asdict(r), "cpu_us_per_msg": r.cpu_us_per_msg} for r in rows],
        "failures": [dataclasses.asdict(f) for f in failures],
    }
    text = json.dumps(_nan_to_none(payload), indent=2, default=str)
    path = directory / f"{stamp}.json"
    path.write_text(text)
    (directory / "latest.json").write_text(text)
    return path
