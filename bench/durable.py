"""``python -m bench.durable``: what at-least-once delivery costs, and Switchboard beside Celery.

Three measurements (docs/benchmarks.md, *Durable delivery*), each on a private
``redis-server`` (no persistence, like the shared one) so that its CPU is this run's only:

1. **Durable vs at most once**, the same task channel ``bench.tasks``: one worker, no-op
   tasks sent with 64 sends in flight; CPU per message of the Switchboard processes
   (sender + worker) and of Redis. Rounds alternate (ABAB); the best round of each counts.
2. **Tasks beside Celery** (Redis broker, ``acks_late=True``, prefork), no-op and 10 ms
   tasks, ``--concurrency`` workers on both sides (Switchboard: worker processes, with
   ``durable_prefetch`` 256 for no-op tasks and 4 for 10 ms ones; Celery: prefork children,
   its default prefetch multiplier of 4). Throughput: ``--tasks`` tasks queued first, then
   the workers start; tasks/s while every worker process was busy. Latency: tasks paced at
   a rate both keep up with, send to handler start, p50 and p99. Celery lives only in the
   bench's own venv (bench/.env, built by bench/env.py).
3. **SMTP mails/s and MQTT QoS 1 msgs/s** end to end (sent until a consumer handled it):
   Switchboard durable, Switchboard at most once, and the bare baseline (aiosmtpd with no
   layer; one paho subscriber) beside them.

``--quick`` runs everything small (a smoke check, figures meaningless). Writes
``bench/results/durable-<stamp>.json`` and prints the tables; ``--write-docs`` puts them in
docs/benchmarks.md between its ``bench-durable`` markers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import shutil
import signal
import smtplib
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from bench.env import ensure_env
from bench.machine import machine_info
from bench.procs import free_port, tree_usage
from bench.redisutil import redis_cpu_seconds

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
DOCS_PATH = REPO_DIR / "docs" / "benchmarks.md"
START_MARKER = "<!-- bench-durable:results:start -->"
END_MARKER = "<!-- bench-durable:results:end -->"
SETTINGS = "durable_site.settings"


# -- processes ---------------------------------------------------------------------------


class Run:
    """One measurement's processes, output directory and logs."""

    def __init__(self, log_dir: Path, redis_port: int, name: str) -> None:
        self.name = name
        self.redis_url = f"redis://127.0.0.1:{redis_port}/0"
        self.redis_port = redis_port
        self.out = log_dir / f"{name}-out"
        self.out.mkdir(parents=True)
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.prefix = f"bench-durable-{secrets.token_hex(3)}:"

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            PYTHONPATH=os.pathsep.join([str(BENCH_DIR), str(REPO_DIR), env.get("PYTHONPATH", "")]),
            PYTHONUNBUFFERED="1",
            DJANGO_SETTINGS_MODULE=SETTINGS,
            BENCH_REDIS_URL=self.redis_url,
            BENCH_PREFIX=self.prefix,
            BENCH_OUT=str(self.out),
            **extra,
        )
        return env

    def start(self, role: str, argv: list[str], **extra: str) -> subprocess.Popen[bytes]:
        with open(self.log_dir / f"{self.name}-{role}.log", "ab") as log:
            proc = subprocess.Popen(argv, cwd=BENCH_DIR, env=self.env(**extra), stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def switchboard(self, role: str, *args: str, **extra: str) -> subprocess.Popen[bytes]:
        return self.start(role, [sys.executable, "-m", "switchboard", *args, "--settings", SETTINGS], **extra)

    def command(self, python: str, *args: str, **extra: str) -> dict[str, Any]:
        """Run a sender to its end; its JSON line."""
        result = subprocess.run([python, *args], cwd=BENCH_DIR, env=self.env(**extra), capture_output=True, timeout=1200)
        if result.returncode:
            raise RuntimeError(f"{args} failed: {result.stderr.decode()[-3000:]}")
        return dict(json.loads(result.stdout.decode().strip().splitlines()[-1]))

    def records(self) -> list[tuple[str, float, float, float]]:
        rows = []
        for path in self.out.glob("*.log"):
            for line in path.read_text().splitlines():
                parts = line.split()
                if len(parts) == 4:
                    rows.append((parts[0], float(parts[1]), float(parts[2]), float(parts[3])))
        return rows

    def steady_rate(self) -> float:
        """Tasks/s while every worker process was busy: from the last one's first task to
        the first one's last (worker start-up times differ by a second; Celery's prefork
        children start together). The whole span when that window is too short."""
        per_process = []
        for path in self.out.glob("*.log"):
            rows = [line.split() for line in path.read_text().splitlines()]
            if rows:
                per_process.append((min(float(r[2]) for r in rows), max(float(r[3]) for r in rows)))
        records = self.records()
        begin = max(first for first, _last in per_process)
        end = min(last for _first, last in per_process)
        inside = [r for r in records if r[2] >= begin and r[3] <= end]
        if end - begin < 0.5 or len(inside) < len(records) // 4:
            return len(records) / (max(r[3] for r in records) - min(r[2] for r in records))
        return len(inside) / (end - begin)

    def count(self) -> int:
        return sum(path.read_text().count("\n") for path in self.out.glob("*.log"))

    def wait_count(self, wanted: int, timeout: float = 600) -> None:
        end = time.monotonic() + timeout
        while self.count() < wanted:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"{self.name}: a process exited ({proc.args}); see {self.log_dir}")
            if time.monotonic() > end:
                raise RuntimeError(f"{self.name}: {self.count()} of {wanted} handled after {timeout}s")
            time.sleep(0.05)

    def reset_out(self) -> None:
        # Truncated, not deleted: the handlers keep their files open (append mode).
        for path in self.out.glob("*.log"):
            path.write_text("")

    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs if proc.poll() is None]

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()


class PrivateRedis:
    def __init__(self, directory: Path) -> None:
        self.port = free_port("127.0.0.1")
        directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        end = time.monotonic() + 10
        while True:
            try:
                redis_cpu_seconds(port=self.port)
                return
            except Exception:
                if time.monotonic() > end:
                    raise
                time.sleep(0.05)

    def cpu(self) -> float:
        return redis_cpu_seconds(port=self.port)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


class PrivateBroker:
    def __init__(self, directory: Path) -> None:
        self.port = free_port("127.0.0.1")
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "mosquitto.conf"
        config.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 1000000\nmax_inflight_messages 100\nuser root\n"
        )
        self.proc = subprocess.Popen([shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.3)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def wait_ready(run: Run, probe: Callable[[int], None]) -> None:
    """Send probes until one is handled: every process is up and reading."""
    end = time.monotonic() + 60
    number = 0
    while run.count() == 0:
        if time.monotonic() > end:
            raise RuntimeError(f"{run.name}: no probe handled in 60 s; see {run.log_dir}")
        probe(number)
        number += 1
        time.sleep(0.3)
    time.sleep(0.5)
    run.reset_out()


# -- 1. durable vs at most once ------------------------------------------------------


def cpu_round(log_dir: Path, redis: PrivateRedis, durable: bool, count: int) -> dict[str, float]:
    run = Run(log_dir, redis.port, f"cpu-{'durable' if durable else 'list'}-{secrets.token_hex(2)}")
    flag = "1" if durable else "0"
    try:
        run.switchboard("worker", "worker", "bench.tasks", BENCH_DURABLE=flag)
        probe_args = ["-m", "durable_site.send", "--system", "switchboard", "--count", "1"]
        wait_ready(run, lambda n: run.command(sys.executable, *probe_args, "--start", str(10_000_000 + n), BENCH_DURABLE=flag))
        worker_before, redis_before = tree_usage(run.pids()).cpu_seconds, redis.cpu()
        sender = run.command(sys.executable, "-m", "durable_site.send", "--system", "switchboard", "--count", str(count),
                             BENCH_DURABLE=flag)
        run.wait_count(count)
        worker_cpu = tree_usage(run.pids()).cpu_seconds - worker_before
        redis_cpu = redis.cpu() - redis_before
        records = run.records()
        span = max(r[3] for r in records) - min(r[1] for r in records)
        return {
            "messages": count,
            "msgs_per_s": count / span,
            "switchboard_cpu_us": (worker_cpu + sender["cpu"]) / count * 1e6,
            "worker_cpu_us": worker_cpu / count * 1e6,
            "sender_cpu_us": sender["cpu"] / count * 1e6,
            "redis_cpu_us": redis_cpu / count * 1e6,
        }
    finally:
        run.stop()


# -- 2. tasks beside Celery -------------------------------------------------------------


def task_system(log_dir: Path, redis: PrivateRedis, system: str, task: str, options: argparse.Namespace) -> dict[str, Any]:
    run = Run(log_dir, redis.port, f"{system}-{task}-{secrets.token_hex(2)}")
    celery_python = str(ensure_env()) if system == "celery" else None
    python = celery_python or sys.executable
    send = ["-m", "durable_site.send", "--system", "switchboard" if system != "celery" else "celery", "--task", task]

    def start_workers() -> None:
        for index in range(options.concurrency if system != "celery" else 1):
            if system == "celery":
                run.start("celery", [python, "-m", "celery", "-A", "durable_site.celery_app", "worker", "--pool", "prefork",
                                     "--concurrency", str(options.concurrency), "--loglevel", "WARNING", "--without-gossip",
                                     "--without-mingle", "--without-heartbeat"])
            else:
                run.switchboard(f"worker{index}", "worker", "bench.tasks", BENCH_PREFETCH="256" if task == "noop" else "4")

    try:
        # Throughput: the queue filled first, then the workers start and empty it.
        count = options.tasks if task == "noop" else options.sleep_tasks
        run.command(python, *send, "--count", str(count))
        start_workers()
        run.wait_count(count, timeout=1200)
        throughput = run.steady_rate()
        records = run.records()
        whole_span = count / (max(r[3] for r in records) - min(r[2] for r in records))
        cpu = tree_usage(run.pids()).cpu_seconds
        # Latency: paced at a rate both systems keep up with; send to handler start.
        run.reset_out()
        rate = options.noop_rate if task == "noop" else options.sleep_rate
        latency_count = int(rate * options.latency_seconds)
        run.command(python, *send, "--count", str(latency_count), "--start", str(count), "--rate", str(rate))
        run.wait_count(latency_count)
        delays = [(started - sent) * 1000 for _key, sent, started, _end in run.records()]
        return {
            "system": system, "task": task, "concurrency": options.concurrency, "tasks": count,
            "tasks_per_s": throughput, "tasks_per_s_whole_span": whole_span, "worker_cpu_s": cpu,
            "latency_rate": rate, "latency_tasks": latency_count,
            "p50_ms": statistics.median(delays), "p99_ms": percentile(delays, 0.99),
        }
    finally:
        run.stop()


# -- 3. SMTP and MQTT ---------------------------------------------------------------------


def smtp_system(log_dir: Path, redis: PrivateRedis, kind: str, count: int, clients: int) -> dict[str, Any]:
    run = Run(log_dir, redis.port, f"smtp-{kind}-{secrets.token_hex(2)}")
    port = free_port("127.0.0.1")
    try:
        if kind == "bare":
            run.start("bare", [sys.executable, "-m", "durable_site.bare_smtp", "--port", str(port)])
        else:
            flag = "1" if kind == "durable" else "0"
            run.switchboard("gateway", "gateway", BENCH_SMTP_BIND=f"127.0.0.1:{port}", BENCH_DURABLE=flag)
            run.switchboard("worker", "worker", BENCH_SMTP_BIND=f"127.0.0.1:{port}", BENCH_DURABLE=flag)

        def send(keys: list[str]) -> None:
            with smtplib.SMTP("127.0.0.1", port, local_hostname="bench.test", timeout=60) as client:
                for key in keys:
                    message = EmailMessage()
                    message["From"], message["To"], message["Subject"] = "a@example.org", "b@example.com", key
                    message["Message-ID"] = key
                    message.set_content("hello\n")
                    client.send_message(message)

        def probe(number: int) -> None:
            try:
                send([f"<probe{number}@bench>"])
            except OSError:
                pass

        wait_ready(run, probe)
        keys = [f"<{n}@bench>" for n in range(count)]
        chunks = [keys[i::clients] for i in range(clients)]
        began = time.time()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(send, chunks))
        accepted = time.time()
        run.wait_count(count)
        handled = max(r[3] for r in run.records())
        return {"kind": kind, "mails": count, "clients": clients, "accepted_per_s": count / (accepted - began),
                "handled_per_s": count / (handled - began)}
    finally:
        run.stop()


def mqtt_system(log_dir: Path, redis: PrivateRedis, kind: str, count: int) -> dict[str, Any]:
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    broker = PrivateBroker(log_dir / f"mosquitto-{kind}")
    run = Run(log_dir, redis.port, f"mqtt-{kind}-{secrets.token_hex(2)}")
    prefix = f"bench/{secrets.token_hex(3)}"
    client_id = f"bench-sub-{secrets.token_hex(3)}"
    publisher = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{secrets.token_hex(3)}")
    publisher.max_inflight_messages_set(100)
    try:
        if kind == "bare":
            run.start("bare", [sys.executable, "-m", "durable_site.bare_mqtt", "--broker", broker.url, "--prefix", prefix,
                               "--client-id", client_id])
        else:
            env = {"BENCH_MQTT_BROKER": broker.url, "BENCH_MQTT_PREFIX": prefix, "BENCH_MQTT_CLIENT_ID": client_id,
                   "BENCH_DURABLE": "1" if kind == "durable" else "0"}
            run.switchboard("gateway", "gateway", **env)
            run.switchboard("worker", "worker", **env)
        publisher.connect("127.0.0.1", broker.port)
        publisher.loop_start()
        wait_ready(run, lambda n: publisher.publish(f"{prefix}/probe", f"probe{n}".encode(), qos=1))
        began = time.time()
        infos = [publisher.publish(f"{prefix}/{n % 10}", str(n).encode(), qos=1) for n in range(count)]
        for info in infos:
            info.wait_for_publish(120)
        run.wait_count(count)
        handled = max(r[3] for r in run.records())
        return {"kind": kind, "messages": count, "handled_per_s": count / (handled - began)}
    finally:
        publisher.disconnect()
        publisher.loop_stop()
        run.stop()
        broker.stop()


# -- report -------------------------------------------------------------------------------


def markdown(results: dict[str, Any]) -> str:
    lines = []
    cpu = results["cpu"]
    lines += [
        "Durable vs at most once, the same task channel (one worker, no-op tasks, 64 sends in flight; "
        f"best of {len(cpu['durable'])} alternating rounds of {cpu['durable'][0]['messages']:,} messages):",
        "",
        "| Path | msgs/s | Switchboard CPU µs/msg (sender + worker) | Redis CPU µs/msg | Total µs/msg |",
        "|---|---:|---:|---:|---:|",
    ]
    best = {}
    for name in ("list", "durable"):
        best[name] = min(cpu[name], key=lambda r: r["switchboard_cpu_us"])
        r = best[name]
        label = "at most once (list)" if name == "list" else "durable (stream)"
        lines.append(f"| {label} | {r['msgs_per_s']:,.0f} | {r['switchboard_cpu_us']:.0f} | {r['redis_cpu_us']:.0f} | "
                     f"{r['switchboard_cpu_us'] + r['redis_cpu_us']:.0f} |")
    ratio = best["durable"]["switchboard_cpu_us"] / best["list"]["switchboard_cpu_us"]
    total = (best["durable"]["switchboard_cpu_us"] + best["durable"]["redis_cpu_us"]) / (
        best["list"]["switchboard_cpu_us"] + best["list"]["redis_cpu_us"])
    lines += ["", f"Durable / at most once: **{ratio:.2f}x** the Switchboard CPU per message "
              f"(target at most 1.5x), {total:.2f}x with Redis's.", ""]
    tasks = results["tasks"]
    lines += [
        f"Background tasks beside Celery ({tasks[0]['concurrency']} workers each; Celery: Redis broker, "
        "`acks_late=True`, prefork):",
        "",
        "| Task | System | tasks/s | p50 send→start (ms) | p99 send→start (ms) | paced at |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in tasks:
        system = "Switchboard durable channel" if r["system"] == "switchboard" else "Celery"
        lines.append(f"| {'no-op' if r['task'] == 'noop' else '10 ms'} | {system} | {r['tasks_per_s']:,.0f} | "
                     f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['latency_rate']:,.0f}/s |")
    for task in ("noop", "sleep"):
        pair = {r["system"]: r for r in tasks if r["task"] == task}
        if "switchboard" in pair and "celery" in pair:
            lines.append(f"\n{'No-op' if task == 'noop' else '10 ms'}: Switchboard at "
                         f"**{pair['switchboard']['tasks_per_s'] / pair['celery']['tasks_per_s']:.1f}x** Celery's tasks/s.")
    lines += ["", "SMTP and MQTT QoS 1 end to end (sent until a consumer handled it):", "",
              "| Protocol | System | handled/s |", "|---|---|---:|"]
    names = {"durable": "Switchboard, durable", "at-most-once": "Switchboard, at most once", "bare": "bare baseline"}
    for r in results["smtp"]:
        lines.append(f"| SMTP ({r['mails']:,} mails, {r['clients']} clients) | {names[r['kind']]} | {r['handled_per_s']:,.0f} |")
    for r in results["mqtt"]:
        lines.append(f"| MQTT QoS 1 ({r['messages']:,} messages) | {names[r['kind']]} | {r['handled_per_s']:,.0f} |")
    return "\n".join(lines) + "\n"


def write_docs(text: str, command: str, stamp: str) -> None:
    docs = DOCS_PATH.read_text()
    if START_MARKER not in docs:
        raise RuntimeError(f"{DOCS_PATH} has no {START_MARKER} marker")
    head, rest = docs.split(START_MARKER, 1)
    _old, tail = rest.split(END_MARKER, 1)
    body = f"\n`{command}` ({stamp}):\n\n{text}\n"
    DOCS_PATH.write_text(head + START_MARKER + body + END_MARKER + tail)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.durable", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke check, figures meaningless")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cpu-messages", type=int, default=20000)
    parser.add_argument("--tasks", type=int, default=20000, help="no-op tasks in the throughput run")
    parser.add_argument("--sleep-tasks", type=int, default=4000, help="10 ms tasks in the throughput run")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--noop-rate", type=float, default=200.0)
    parser.add_argument("--sleep-rate", type=float, default=100.0)
    parser.add_argument("--latency-seconds", type=float, default=10.0)
    parser.add_argument("--mails", type=int, default=2000)
    parser.add_argument("--smtp-clients", type=int, default=8)
    parser.add_argument("--mqtt-messages", type=int, default=10000)
    parser.add_argument("--only", choices=["cpu", "tasks", "smtp", "mqtt"], action="append")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.cpu_messages, args.tasks, args.sleep_tasks = 1, 500, 300, 100
        args.latency_seconds, args.mails, args.mqtt_messages = 1.0, 50, 200
    only = set(args.only or ["cpu", "tasks", "smtp", "mqtt"])
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    log_dir = RESULTS_DIR / f"durable-logs-{stamp}"
    log_dir.mkdir(parents=True)
    redis = PrivateRedis(log_dir / "redis")
    results: dict[str, Any] = {"cpu": {"list": [], "durable": []}, "tasks": [], "smtp": [], "mqtt": []}
    try:
        if "cpu" in only:
            for _round in range(args.rounds):
                for durable in (False, True):
                    row = cpu_round(log_dir, redis, durable, args.cpu_messages)
                    results["cpu"]["durable" if durable else "list"].append(row)
                    print(f"cpu {'durable' if durable else 'list'}: {row}", flush=True)
        if "tasks" in only:
            for task in ("noop", "sleep"):
                for system in ("switchboard", "celery"):
                    row = task_system(log_dir, redis, system, task, args)
                    results["tasks"].append(row)
                    print(f"tasks: {row}", flush=True)
        if "smtp" in only:
            for kind in ("durable", "at-most-once", "bare"):
                row = smtp_system(log_dir, redis, kind, args.mails, args.smtp_clients)
                results["smtp"].append(row)
                print(f"smtp: {row}", flush=True)
        mosquitto = shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists()
        if "mqtt" in only and mosquitto:
            for kind in ("durable", "at-most-once", "bare"):
                row = mqtt_system(log_dir, redis, kind, args.mqtt_messages)
                results["mqtt"].append(row)
                print(f"mqtt: {row}", flush=True)
    finally:
        redis.stop()
    results["machine"] = machine_info(sys.executable, str(ensure_env()) if "tasks" in only else None)
    results["arguments"] = vars(args)
    out = RESULTS_DIR / f"durable-{stamp}.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"wrote {out}")
    if only == {"cpu", "tasks", "smtp", "mqtt"}:
        text = markdown(results)
        print(text)
        if args.write_docs and not args.quick:
            command = "python -m bench.durable " + " ".join(argv if argv is not None else sys.argv[1:])
            write_docs(text, command.strip(), stamp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
