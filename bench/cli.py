"""``python -m bench``: run the selected scenarios on the selected systems, report, save.

Every system is started fresh for every scenario, one at a time, so the two cores are
never shared between two systems under test.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from bench import env, report, scenarios, systems
from bench.machine import machine_info
from bench.procs import machine_cpu_seconds
from bench.runner import RunFailure, run_pair
from bench.scenarios import Options, Row

RESULTS_DIR = systems.BENCH_DIR / "results"
DOCS_PATH = systems.REPO_DIR / "docs" / "benchmarks.md"


def _names(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [name.strip() for value in values for name in value.split(",") if name.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Switchboard vs Django Channels benchmark.")
    parser.add_argument("--quick", action="store_true", help="short durations: a smoke test of the harness")
    parser.add_argument("--systems", action="append", help=f"comma-separated, default all: {', '.join(systems.SYSTEMS)}")
    parser.add_argument("--scenarios", action="append", help=f"comma-separated, default all: {', '.join(scenarios.SCENARIOS)}")
    parser.add_argument("--connections", type=int, help="concurrent connections (default 50)")
    parser.add_argument("--warmup", type=float, help="seconds of load before counting (default 1, quick 0.5)")
    parser.add_argument("--duration", type=float, help="counted seconds per system (default 5, quick 2)")
    parser.add_argument(
        "--repeat",
        type=int,
        help="rounds over all systems, best round reported (default 2, quick 1): "
        "other load on the machine only ever slows a round down",
    )
    parser.add_argument(
        "--pace-rate",
        type=float,
        help="ws-echo-paced: echo msg/s to send when the run has no ws-echo peak of the system to halve",
    )
    parser.add_argument(
        "--pace-fanout-rate",
        type=float,
        help="ws-echo-paced: fan-out x100 deliveries/s when the run has no ws-fanout rate to halve (else no fan-out)",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also run every selected Switchboard system at commit REV (a git revision), each right "
        "after its current self, and print current / REV: a before-and-after in one run",
    )
    docs = parser.add_mutually_exclusive_group()
    docs.add_argument("--docs", dest="docs", action="store_true", default=None, help="write docs/benchmarks.md")
    docs.add_argument("--no-docs", dest="docs", action="store_false", help="do not write docs/benchmarks.md")
    return parser


def baseline_tree(revision: str) -> tuple[Path, str]:
    """A checkout of ``revision`` to import the baseline's code from, and its short label.

    A detached git worktree under bench/results/ (ignored by git), made once per commit and
    reused; nothing is installed into it, since the systems put it first on PYTHONPATH.
    """

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=systems.REPO_DIR, capture_output=True, text=True, check=True).stdout.strip()

    try:
        sha = git("rev-parse", "--verify", f"{revision}^{{commit}}")
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"--baseline {revision!r}: not a commit of this repository ({exc.stderr.strip()})") from None
    label = sha[:7]
    tree = RESULTS_DIR / f"baseline-{label}"
    if not (tree / "switchboard" / "__init__.py").is_file():
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        git("worktree", "prune")
        git("worktree", "add", "--force", "--detach", str(tree), sha)
    return tree, label


def _busy_cores(seconds: float = 0.5) -> float:
    """Cores busy right now (the load average would still count a run that just ended)."""
    before = machine_cpu_seconds()
    time.sleep(seconds)
    return (machine_cpu_seconds() - before) / seconds


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    started = time.monotonic()
    options = Options(
        quick=args.quick,
        connections=args.connections or 50,
        warmup=args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0),
        duration=args.duration if args.duration is not None else (2.0 if args.quick else 5.0),
        pace_rate=args.pace_rate,
        pace_fanout_rate=args.pace_fanout_rate,
    )
    chosen_systems = systems.select(_names(args.systems))
    chosen_scenarios = scenarios.select(_names(args.scenarios))
    baseline_label: str | None = None
    if args.baseline:
        tree, baseline_label = baseline_tree(args.baseline)
        chosen_systems = systems.with_baseline(chosen_systems, tree, baseline_label)
    # Docs hold full runs only, unless asked: a smoke test must not overwrite real numbers.
    write_docs = args.docs if args.docs is not None else not args.quick

    env_python: str | None = None
    if any(s.needs_bench_env for s in chosen_systems):
        env_python = str(env.ensure_env())
    main_python = systems.main_python()

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    log_dir = RESULTS_DIR / f"logs-{stamp}"
    repeat = max(1, args.repeat if args.repeat is not None else (1 if args.quick else 2))
    load_before = os.getloadavg()
    busy = _busy_cores()
    if busy > 0.3:
        print(
            f"bench: warning: other work keeps {busy:.1f} of {os.cpu_count()} cores busy; "
            "numbers will be noisy, see the 'other CPU s' column",
            flush=True,
        )
    all_rows: list[Row] = []
    failures: list[RunFailure] = []
    for scenario in list(chosen_scenarios):
        try:
            scenario.prepare(main_python)
        except Exception as exc:
            print(f"bench: {scenario.name} left out: {exc}", flush=True)
            failures.append(RunFailure(scenario.name, "-", f"prepare: {exc}"))
            chosen_scenarios.remove(scenario)
    pair_seconds: dict[str, float] = {}  # wall time of every start-measure-stop: the run's budget
    # Rounds go over every system in turn (ABCABC), so a burst of outside load hits one
    # round of one system, not every round of it.
    for round_number in range(1, repeat + 1):
        for scenario in chosen_scenarios:
            for system in chosen_systems:
                if (
                    not scenario.applies_to(system)
                    or (scenario.single_round and round_number > 1)
                    or (scenario.last_round and round_number < repeat)
                ):
                    continue
                print(f"bench: [round {round_number}/{repeat}] {scenario.name} on {system.name} ...", flush=True)
                pair_started = time.monotonic()
                outcome = run_pair(
                    system,
                    scenario,
                    options,
                    main_python=main_python,
                    env_python=env_python,
                    log_dir=log_dir / f"round{round_number}",
                    prior=all_rows,
                )
                seconds = pair_seconds[f"{round_number}/{scenario.name}/{system.name}"] = time.monotonic() - pair_started
                if isinstance(outcome, RunFailure):
                    failures.append(outcome)
                    print(f"bench:   FAILED after {seconds:.1f} s: {outcome.error.splitlines()[0]}", flush=True)
                    continue
                print(f"bench:   {seconds:.1f} s start to stop", flush=True)
                for row in outcome:
                    row.round = round_number
                    all_rows.append(row)
                    print(
                        f"bench:   {row.label}: {row.rate:,.0f} msg/s, p50 {row.p50_ms:.2f} ms, "
                        f"p99 {row.p99_ms:.2f} ms, errors {row.errors}, other CPU {row.other_cpu_s:.1f} s",
                        flush=True,
                    )
    rows = report.best_rounds(all_rows)

    meta = {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": ".venv/bin/python -m bench" + "".join(" " + shlex.quote(a) for a in (argv or sys.argv[1:])),
        "elapsed_s": time.monotonic() - started,
        "options": {
            "connections": options.connections,
            "warmup_s": options.warmup,
            "duration_s": options.duration,
            "quick": options.quick,
            "repeat": repeat,
            "pace_rate": options.pace_rate,
            "pace_fanout_rate": options.pace_fanout_rate,
        },
        "pair_seconds": pair_seconds,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "machine": machine_info(main_python, env_python),
        "logs": str(log_dir),
    }
    print(report.render_text(rows, failures))
    if baseline_label is not None:
        print(f"\nBefore and after: current / {baseline_label} (same run, alternating)\n")
        print(report.text_table(report.BASELINE_HEADER, report.baseline_rows(rows)))
    json_path = report.write_json(RESULTS_DIR, stamp, all_rows, failures, meta)
    print(f"\nbench: raw results in {json_path.relative_to(systems.REPO_DIR)}; server logs in {log_dir}")
    if write_docs and env_python is not None:
        plot = systems.REPO_DIR / "docs" / "img" / "benchmarks.png"
        drawn = subprocess.run(
            [env_python, "-m", "bench.plot", str(json_path), str(plot)],
            cwd=systems.REPO_DIR, capture_output=True, text=True, check=False, timeout=120,
        )
        if drawn.returncode == 0:
            meta["plot"] = "img/benchmarks.png"
            print(f"bench: wrote {plot.relative_to(systems.REPO_DIR)}")
        else:
            print(f"bench: plot failed: {drawn.stderr[-1500:]}")
    if write_docs:
        ran = {r.system for r in all_rows} | {f.system for f in failures}
        descriptions = {s.name: s.description for s in chosen_systems if s.name in ran}
        report.write_docs(DOCS_PATH, report.render_markdown(rows, failures, meta, descriptions))
        print(f"bench: wrote {DOCS_PATH.relative_to(systems.REPO_DIR)}")
    print(f"bench: done in {meta['elapsed_s']:.0f} s")
    return 1 if failures else 0


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entry()
