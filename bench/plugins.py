"""``python -m bench.plugins``: the protocol-plugin benchmarks, each beside its bare baseline.

Four scenarios (bench/scenarios/udp_echo.py, mqtt_rtt.py, webrtc_rtt.py, sms_rtt.py), each
on three systems of its own: Switchboard split (gateway + worker over Redis), Switchboard
``run`` (one process, in-memory layer) and a bare server doing the same work with the
same library. Every system is started fresh for every measurement, one at a time; rounds
go over all of them in turn (ABCABC) and the best round of each is reported.

The scenarios follow the shared harness's Scenario interface; ``udp-echo`` and
``mqtt-rtt`` are registered there too, with shorter windows (see
docs/benchmarks-plugins.md). This module is their standalone runner, with all four and
longer windows. It reuses the harness's load generator runner
(``bench.runner.run_loadgen``: CPU windows at the generator's
``measure_start``/``measure_end`` lines) and process handling (``bench.procs``); like
``bench.runner.run_pair`` it stops a system's processes in parallel (a split-mode worker
and gateway each take ~2 s to drain), which keeps a full run under four minutes.

Writes ``bench/results/plugins-<stamp>.json`` (every round, unrounded) and, for full runs,
the results section of ``docs/benchmarks-plugins.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from bench.loadgen.windowed import phases
from bench.machine import machine_info
from bench.procs import ServerProcess, machine_cpu_seconds, process_tree, stop_together, tree_usage
from bench.redisutil import flush_db
from bench.report import fmt
from bench.runner import RunFailure, run_loadgen
from bench.scenarios.base import Options, Row
from bench.scenarios.mqtt_rtt import MqttRtt
from bench.scenarios.plugin_base import PluginScenario, PluginSystem
from bench.scenarios.sms_rtt import SmsRtt
from bench.scenarios.udp_echo import UdpEcho
from bench.scenarios.webrtc_rtt import WebrtcRtt
from bench.systems import BENCH_DIR, REPO_DIR, Context

SCENARIOS: dict[str, PluginScenario] = {s.name: s for s in (UdpEcho(), MqttRtt(), WebrtcRtt(), SmsRtt())}
RESULTS_DIR = BENCH_DIR / "results"
DOCS_PATH = REPO_DIR / "docs" / "benchmarks-plugins.md"
START_MARKER = "<!-- bench-plugins:results:start -->"
END_MARKER = "<!-- bench-plugins:results:end -->"
HOST = "127.0.0.1"
STOP_TIMEOUT = 10.0
KINDS = ("split", "run", "bare")
PLUGIN_PACKAGES = ("switchboard", "django", "uvicorn", "uvloop", "httptools", "redis", "hiredis", "msgpack",
                   "paho-mqtt", "aiortc", "aioice", "aiohttp", "twilio")


# -- running ----------------------------------------------------------------------------


def kind_of(system: PluginSystem) -> str:
    return system.name.rsplit("-", 1)[1]


def run_plugin_pair(system: PluginSystem, scenario: PluginScenario, options: Options, log_dir: Path) -> list[Row] | RunFailure:
    """Measure ``scenario`` on a fresh ``system`` (as bench.runner.run_pair, parallel stop)."""
    ctx = Context(HOST, 0, sys.executable, None)
    url = system.redis_url(ctx)
    started: list[ServerProcess] = []
    pair_dir = log_dir / f"{scenario.name}--{system.name}"
    pair_dir.mkdir(parents=True, exist_ok=True)
    try:
        if url:
            flush_db(url)
        for spec in system.processes(ctx):
            started.append(ServerProcess(spec, pair_dir / f"{spec.role}.log"))
        pids = [p.pid for p in started]
        # The generator waits for a first answer through the whole stack before it counts.
        result, windows = run_loadgen(
            scenario.loadgen_argv(system, ctx, options, sys.executable), scenario.timeout(options),
            pair_dir / "loadgen.log", system.redis_nodes(ctx), pids, [p.spec.role for p in started],
        )
        died = [p.spec.role for p in started if not p.alive()]
        total = tree_usage(pids)
        process_count = sum(len(process_tree(pid)) for pid in pids)
        rows = scenario.rows(system, result, windows, options)
        stop_notes = stop_together(started, STOP_TIMEOUT)
        for row in rows:
            row.server_processes = process_count
            row.server_cpu_total_s = total.cpu_seconds
            row.peak_rss_mb = total.peak_rss_bytes / 2**20
            if died:
                row.notes.append(f"server process(es) died during the run: {', '.join(died)}")
            row.notes.extend(stop_notes)
        return rows
    except Exception as exc:
        logs = {p.spec.role: p.log_tail(40) for p in started}
        logs["loadgen"] = _tail(pair_dir / "loadgen.log")
        return RunFailure(scenario.name, system.name, f"{type(exc).__name__}: {exc}", logs)
    finally:
        stop_together(started, STOP_TIMEOUT)
        if url:
            try:
                flush_db(url)
            except Exception as exc:  # a failed flush must not hide the run's own outcome
                print(f"bench.plugins: could not flush {url}: {exc!r}")


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def best_rounds(rows: Sequence[Row]) -> list[Row]:
    """Per scenario, system and measurement, the round with the highest rate."""
    groups: dict[tuple[str, str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row.scenario, row.system, row.label), []).append(row)
    best = []
    for group in groups.values():
        chosen = max(group, key=lambda r: -1.0 if math.isnan(r.rate) else r.rate)
        if len(group) > 1:
            chosen = dataclasses.replace(chosen, notes=list(chosen.notes))
            rates = " / ".join(f"{r.rate:,.0f}" for r in group)
            chosen.notes.append(f"{chosen.label}: rate per round {rates}; round {chosen.round} shown")
        best.append(chosen)
    return best


# -- tables -----------------------------------------------------------------------------


def ratio(a: float, b: float) -> str:
    if not b or math.isnan(a) or math.isnan(b):
        return "-"
    return f"{a / b:.2f}"


def baseline_of(row: Row, rows: Sequence[Row]) -> Row | None:
    for other in rows:
        if other.scenario == row.scenario and other.label == row.label and other.side == "bare":
            return other
    return None


RESULT_HEADER = (
    "scenario", "system", "meas", "in flight", "msgs", "rate/s", "vs bare", "p50 ms", "p99 ms", "max ms",
    "srv CPU s", "CPU us/msg", "redis CPU s", "broker CPU s", "client CPU s", "other CPU s", "peak RSS MB",
    "procs", "errors",
)
RIGHT_FROM = 3  # columns from here on are numbers


def result_cells(row: Row, rows: Sequence[Row]) -> list[str]:
    bare = baseline_of(row, rows)
    versus = ratio(row.rate, bare.rate) if bare is not None and row.side != "bare" else ""
    system = row.system.split("-", 1)[1]  # the scenario column already names the plugin
    return [
        row.scenario, system, row.label, fmt(row.connections), fmt(row.count), fmt(row.rate), versus,
        fmt(row.p50_ms), fmt(row.p99_ms), fmt(row.max_ms), fmt(row.server_cpu_s), fmt(row.cpu_us_per_msg),
        fmt(row.redis_cpu_s), fmt(row.extra.get("broker_cpu_s", math.nan)), fmt(row.loadgen_cpu_s),
        fmt(row.other_cpu_s), fmt(row.peak_rss_mb), fmt(row.server_processes or "-"), fmt(row.errors),
    ]


RATIO_HEADER = ("scenario", "meas", "switchboard", "rate ratio", "p50 ratio", "p99 ratio", "CPU/msg ratio", "RSS ratio")


def ratio_cells(rows: Sequence[Row]) -> list[list[str]]:
    """Switchboard / bare for every Switchboard row with a baseline in the same run."""
    body = []
    for row in rows:
        bare = baseline_of(row, rows)
        if row.side != "switchboard" or bare is None:
            continue
        body.append([
            row.scenario, row.label, row.system.split("-", 1)[1], ratio(row.rate, bare.rate), ratio(row.p50_ms, bare.p50_ms),
            ratio(row.p99_ms, bare.p99_ms), ratio(row.cpu_us_per_msg, bare.cpu_us_per_msg),
            ratio(row.peak_rss_mb, bare.peak_rss_mb),
        ])
    return body


def sort_rows(rows: Iterable[Row]) -> list[Row]:
    order = {name: i for i, name in enumerate(SCENARIOS)}
    kinds = {kind: i for i, kind in enumerate(KINDS)}
    return sorted(rows, key=lambda r: (order.get(r.scenario, 99), int(r.label[1:]) if r.label[1:].isdigit() else 0,
                                       kinds.get(r.system.rsplit("-", 1)[1], 9)))


def text_table(header: Sequence[str], body: Sequence[Sequence[str]], right_from: int = 1) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *body)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i >= right_from else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(cells) for cells in body)])


def markdown_table(header: Sequence[str], body: Sequence[Sequence[str]], right_from: int = 1) -> str:
    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [header, align, *body])


def render_text(rows: Sequence[Row], failures: Sequence[RunFailure]) -> str:
    rows = sort_rows(rows)
    out = [text_table(RESULT_HEADER, [result_cells(r, rows) for r in rows], RIGHT_FROM)]
    ratios = ratio_cells(rows)
    if ratios:
        out += ["", "Switchboard / bare, same run (rate: above 1 is better for Switchboard; the rest: below 1 is better):",
                text_table(RATIO_HEADER, ratios, 3)]
    notes = [f"- {r.system}: {n}" for r in rows for n in r.notes]
    if notes:
        out += ["", "Notes:", *notes]
    for failure in failures:
        out += ["", f"FAILED {failure.scenario} on {failure.system}: {failure.error}"]
        for role, tail in failure.logs.items():
            if tail:
                out += [f"--- {role} (last lines) ---", tail]
    return "\n".join(out)


def render_markdown(rows: Sequence[Row], failures: Sequence[RunFailure], meta: dict[str, Any],
                    descriptions: dict[str, str]) -> str:
    rows = sort_rows(rows)
    machine = meta["machine"]
    options = meta["options"]
    out = [
        f"Last run: **{meta['date']}**, {meta['elapsed_s']:.0f} s wall, git `{machine.get('git', '?')}`.",
        "",
        "```",
        meta["command"],
        "```",
        "",
        f"- Machine: {machine.get('nproc')} cores ({machine.get('cpu')}), {machine.get('memory_gib')} GiB, "
        f"Linux {machine.get('kernel')}",
        f"- Python {machine.get('python')}, Redis server {machine.get('redis_server')}, {meta.get('mosquitto', 'Mosquitto ?')}",
        "- Packages: " + ", ".join(f"{k} {v}" for k, v in meta.get("packages", {}).items()),
        f"- Load: {options['connections']} in flight (xN), {options['warmup_s']:g} s warm-up and {options['duration_s']:g} s "
        f"counted (x1: {options['x1_warmup_s']:g} s and {options['x1_duration_s']:g} s), best of {options['repeat']} "
        f"round(s); load average before {_load(meta['loadavg_before'])}, after {_load(meta['loadavg_after'])}",
        "",
        "Systems in this run:",
        "",
        *(f"- `{name}`: {text}" for name, text in descriptions.items()),
        "",
        "### Results",
        "",
        markdown_table(RESULT_HEADER, [result_cells(r, rows) for r in rows], RIGHT_FROM),
    ]
    ratios = ratio_cells(rows)
    if ratios:
        out += [
            "",
            "Switchboard / bare from the same run (rate: above 1 is better for Switchboard; latency, CPU per "
            "message and memory: below 1 is better):",
            "",
            markdown_table(RATIO_HEADER, ratios, 3),
        ]
    notes = [f"- `{r.system}`: {n}" for r in rows for n in r.notes]
    if notes:
        out += ["", "Notes:", "", *notes]
    if failures:
        out += ["", "Failed:", ""]
        out += [f"- {f.scenario} on `{f.system}`: {f.error.splitlines()[0]}" for f in failures]
    return "\n".join(out)


def _load(values: Sequence[float]) -> str:
    return "/".join(f"{v:.2f}" for v in values)


def write_docs(path: Path, generated: str) -> None:
    """Replace the part between the markers; the prose around it is left alone."""
    text = path.read_text() if path.exists() else f"# Plugin benchmarks\n\n{START_MARKER}\n{END_MARKER}\n"
    if START_MARKER not in text or END_MARKER not in text:
        text = text.rstrip("\n") + f"\n\n## Results\n\n{START_MARKER}\n{END_MARKER}\n"
    head, rest = text.split(START_MARKER, 1)
    _, tail = rest.split(END_MARKER, 1)
    path.write_text(f"{head}{START_MARKER}\n{generated}\n{END_MARKER}{tail}")


def _plain(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def write_json(stamp: str, all_rows: Sequence[Row], best: Sequence[Row], failures: Sequence[RunFailure],
               meta: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"plugins-{stamp}.json"
    data = {
        "meta": meta,
        "rows": [{**dataclasses.asdict(r), "cpu_us_per_msg": r.cpu_us_per_msg} for r in all_rows],
        "best": [{"scenario": r.scenario, "system": r.system, "label": r.label, "round": r.round} for r in best],
        "failures": [dataclasses.asdict(f) for f in failures],
    }
    path.write_text(json.dumps(_plain(data), indent=2) + "\n")
    return path


# -- main -------------------------------------------------------------------------------


def _names(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


def _mosquitto_version() -> str:
    try:
        result = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True, timeout=5, check=False)
    except OSError:
        return "Mosquitto ?"
    first = (result.stdout or result.stderr).splitlines()[:1]
    return first[0].replace(" is an MQTT v5.0/v3.1.1/v3.1 broker.", "").strip() if first else "Mosquitto ?"


def _packages() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in PLUGIN_PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.plugins", description="Protocol-plugin benchmarks.")
    parser.add_argument("--quick", action="store_true", help="short windows, one round, docs left alone (under a minute)")
    parser.add_argument("--scenarios", action="append", help=f"comma-separated, default all: {', '.join(SCENARIOS)}")
    parser.add_argument("--systems", action="append", help="comma-separated kinds (split, run, bare) or full system names")
    parser.add_argument("--connections", type=int, help="requests in flight in the xN measurement (default 50)")
    parser.add_argument("--warmup", type=float, help="seconds before counting, xN (default 1, quick 0.3; x1 gets half)")
    parser.add_argument("--duration", type=float, help="counted seconds, xN (default 4, quick 1; x1 gets 40%%)")
    parser.add_argument("--repeat", type=int, help="rounds over all systems, best round reported (default 2, quick 1)")
    docs = parser.add_mutually_exclusive_group()
    docs.add_argument("--docs", dest="docs", action="store_true", default=None, help="write docs/benchmarks-plugins.md")
    docs.add_argument("--no-docs", dest="docs", action="store_false", help="do not write docs/benchmarks-plugins.md")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.monotonic()
    options = Options(
        quick=args.quick,
        connections=args.connections or 50,
        warmup=args.warmup if args.warmup is not None else (0.3 if args.quick else 1.0),
        duration=args.duration if args.duration is not None else (1.0 if args.quick else 4.0),
    )
    names = _names(args.scenarios)
    unknown = [n for n in names or [] if n not in SCENARIOS]
    if unknown:
        raise SystemExit(f"unknown scenario(s) {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    chosen = [s for name, s in SCENARIOS.items() if not names or name in names]
    wanted = _names(args.systems)
    pairs = [(scenario, system) for scenario in chosen for system in scenario.own_systems
             if not wanted or kind_of(system) in wanted or system.name in wanted]
    if not pairs:
        raise SystemExit("nothing to run: no system matches --systems")
    write = args.docs if args.docs is not None else not args.quick
    repeat = max(1, args.repeat if args.repeat is not None else (1 if args.quick else 2))
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    log_dir = RESULTS_DIR / f"logs-plugins-{stamp}"
    load_before = os.getloadavg()
    before = machine_cpu_seconds()
    time.sleep(0.5)
    busy = (machine_cpu_seconds() - before) / 0.5
    if busy > 0.3:
        print(f"bench.plugins: warning: other work keeps {busy:.1f} of {os.cpu_count()} cores busy; "
              "numbers will be noisy, see the 'other CPU s' column", flush=True)

    all_rows: list[Row] = []
    failures: list[RunFailure] = []
    for round_number in range(1, repeat + 1):
        for scenario, system in pairs:
            print(f"bench.plugins: [round {round_number}/{repeat}] {scenario.name} on {system.name} ...", flush=True)
            outcome = run_plugin_pair(system, scenario, options, log_dir / f"round{round_number}")
            if isinstance(outcome, RunFailure):
                failures.append(outcome)
                print(f"bench.plugins:   FAILED: {outcome.error.splitlines()[0]}", flush=True)
                continue
            for row in outcome:
                row.round = round_number
                all_rows.append(row)
                print(f"bench.plugins:   {row.label}: {row.rate:,.0f}/s, p50 {row.p50_ms:.3f} ms, p99 {row.p99_ms:.3f} ms, "
                      f"srv CPU {row.server_cpu_s:.2f} s, errors {row.errors}, other CPU {row.other_cpu_s:.1f} s", flush=True)
    best = best_rounds(all_rows)
    (_, _, x1_warmup, x1_duration), _ = phases(options.connections, options.warmup, options.duration)
    meta = {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": ".venv/bin/python -m bench.plugins" + "".join(" " + shlex.quote(a) for a in (argv or sys.argv[1:])),
        "elapsed_s": time.monotonic() - started,
        "options": {"connections": options.connections, "warmup_s": options.warmup, "duration_s": options.duration,
                    "x1_warmup_s": x1_warmup, "x1_duration_s": x1_duration, "quick": options.quick, "repeat": repeat},
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "machine": machine_info(sys.executable, None),
        "packages": _packages(),
        "mosquitto": _mosquitto_version(),
        "logs": str(log_dir),
    }
    print()
    print(render_text(best, failures))
    json_path = write_json(stamp, all_rows, best, failures, meta)
    print(f"\nbench.plugins: raw results in {json_path.relative_to(REPO_DIR)}; server logs in {log_dir}")
    if write:
        descriptions = {system.name: system.description for _, system in pairs}
        write_docs(DOCS_PATH, render_markdown(best, failures, meta, descriptions))
        print(f"bench.plugins: wrote {DOCS_PATH.relative_to(REPO_DIR)}")
    print(f"bench.plugins: done in {time.monotonic() - started:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
