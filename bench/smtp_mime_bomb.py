"""HTTP latency and CPU while six 100,000-part mails hit the SMTP side (issue 12, item 10).

Starts ``switchboard gateway`` (smtp + http) and ``switchboard worker`` over Redis with the
SMTP test project (tests/smtp/smtp_settings.py), measures HTTP GET latency alone, then
while six MIME bombs are sent at once from separate processes (so the senders' smtplib
work cannot hold the measuring process's GIL), and reports the bombs' answers and the CPU
the gateway and its parser processes used. ``--switchboard`` picks the code under test
(another checkout, to compare); ``--seconds`` bounds the measuring window (the code before
the fix takes minutes per bomb).

    .venv/bin/python bench/smtp_mime_bomb.py [--switchboard PATH] [--seconds 120] [--redis URL]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import multiprocessing
import os
import secrets
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ROOT / "tests" / "smtp"
BOMBS = 6
PARTS = 100_000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bomb() -> bytes:
    body = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(PARTS))
    return (b"From: a@example.org\r\nTo: lobby@chat.example.com\r\nSubject: bomb\r\n"
            b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + body + b"--b--\r\n")


def send(port: int, raw: bytes) -> tuple[Any, float]:
    start = time.perf_counter()
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=600) as client:
            client.sendmail("a@example.org", ["lobby@chat.example.com"], raw)
        code: Any = 250
    except smtplib.SMTPResponseException as exc:
        code = exc.smtp_code
    except Exception as exc:
        code = type(exc).__name__
    return code, round(time.perf_counter() - start, 2)


def get(port: int) -> float:
    start = time.perf_counter()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=120) as response:
        response.read()
    return time.perf_counter() - start


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds(parent: int) -> float:
    """CPU of ``parent``'s live children (the parser processes)."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def percentile(values: list[float], fraction: float) -> float:
    return sorted(values)[min(len(values) - 1, int(len(values) * fraction))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--switchboard", type=Path, default=ROOT, help="checkout whose switchboard package runs")
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--redis", default=os.environ.get("SWITCHBOARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"))
    args = parser.parse_args()
    smtp_port, http_port = free_port(), free_port()
    work = Path(tempfile.mkdtemp(prefix="smtp-mime-bomb-"))
    (work / "out").mkdir()
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(args.switchboard), str(PROJECT), str(ROOT / "examples" / "chatsite")]),
        SMTP_TEST_BIND=f"127.0.0.1:{smtp_port}", SMTP_TEST_HTTP_BIND=f"127.0.0.1:{http_port}",
        SMTP_TEST_OUT_DIR=str(work / "out"), SMTP_TEST_STORAGE=str(work / "storage"),
        SMTP_TEST_REDIS_URL=args.redis, SMTP_TEST_REDIS_PREFIX=f"bench-bomb-{secrets.token_hex(3)}:",
    )
    processes = [
        subprocess.Popen([sys.executable, "-m", "switchboard", role, "--settings", "smtp_settings"], cwd=PROJECT,
                         env=env, stdout=open(work / f"{role}.log", "wb"), stderr=subprocess.STDOUT)
        for role in ("gateway", "worker")
    ]
    senders = concurrent.futures.ProcessPoolExecutor(BOMBS, mp_context=multiprocessing.get_context("fork"))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                get(http_port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        alone = [get(http_port) for _ in range(200)]
        raw = bomb()
        gateway = processes[0].pid
        cpu_before, children_before = cpu_seconds(gateway), children_cpu_seconds(gateway)
        start = time.perf_counter()
        futures = [senders.submit(send, smtp_port, raw) for _ in range(BOMBS)]
        during: list[float] = []
        slow: list[tuple[float, float]] = []
        while not all(f.done() for f in futures) and time.perf_counter() - start < args.seconds:
            at = time.perf_counter() - start
            during.append(get(http_port))
            if during[-1] > 0.1:
                slow.append((round(at, 2), round(during[-1], 2)))
        elapsed = time.perf_counter() - start
        cpu_after, children_after = cpu_seconds(gateway), children_cpu_seconds(gateway)
        answers = [f.result() if f.done() else "no answer yet" for f in futures]
        print(f"HTTP alone: p50 {percentile(alone, .5):.1f} ms, p95 {percentile(alone, .95):.1f} ms (n={len(alone)})")
        print(f"HTTP during the bombs: p50 {percentile(during, .5):.1f} ms, p95 {percentile(during, .95):.1f} ms, "
              f"max {max(during) * 1000:.0f} ms (n={len(during)}); over 100 ms (at s, took s): {slow[:10]}")
        print(f"bombs: {answers} within {elapsed:.1f} s; gateway CPU {cpu_after - cpu_before:.2f} s, "
              f"parser processes CPU {children_after - children_before:.2f} s")
        print(f"logs: {work}")
    finally:
        for process in processes:
            process.kill()
            process.wait()
        for sender in list(getattr(senders, "_processes", {}).values()):
            sender.kill()
        senders.shutdown(wait=False, cancel_futures=True)


if __name__ == "__main__":
    main()
