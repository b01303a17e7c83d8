"""What the report says about the machine and software, so a number can be reproduced."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from bench.env import freeze
from bench.redisutil import redis_version
from bench.systems import REPO_DIR

# Packages worth naming in the report, per venv.
MAIN_PACKAGES = ("switchboard", "django", "uvicorn", "websockets", "redis", "hiredis", "msgpack", "uvloop", "httptools")
ENV_PACKAGES = (
    "channels",
    "channels-redis",
    "daphne",
    "django",
    "uvicorn",
    "websockets",
    "redis",
    "hiredis",
    "msgpack",
    "twisted",
    "autobahn",
    "uvloop",
    "httptools",
)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def _git_commit() -> str:
    try:
        result = subprocess.run(
            ["git", "-C", str(REPO_DIR), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return result.stdout.strip() or "?"
    except OSError:
        return "?"


def _pick(versions: dict[str, str], names: tuple[str, ...]) -> dict[str, str]:
    normal = {k.replace("_", "-").lower(): v for k, v in versions.items()}
    return {name: normal[name] for name in names if name in normal}


def machine_info(main_python: str, env_python: str | None) -> dict[str, Any]:
    """Cores, CPU, memory, kernel, Python, Redis and the package versions on both sides."""
    try:
        redis = redis_version()
    except Exception as exc:  # the report still gets written, with the reason
        redis = f"unavailable ({exc!r})"
    return {
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gib": round(_memory_gib(), 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis_server": redis,
        "git": _git_commit(),
        "main_venv": _pick(freeze(main_python), MAIN_PACKAGES),
        "bench_env": _pick(freeze(env_python), ENV_PACKAGES) if env_python else {},
    }
