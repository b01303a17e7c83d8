"""The systems under test, each a recipe for the server processes to start.

A :class:`System` knows how to start itself on a port with a Redis db of its own; the
runner starts it fresh for every scenario, measures it, stops it and flushes its db.
Adding a system is one small subclass plus an entry in :data:`SYSTEMS`.

Fairness on a 2-core machine (see docs/benchmarks.md): the single-process systems
(``switchboard-run``, ``channels-daphne``, ``channels-uvicorn``) are compared with each
other, and the two-process ones (``switchboard-split``: gateway + worker;
``channels-uvicorn-2w``: two uvicorn workers) with each other. ``switchboard-split-2w``
(gateway + 2 workers) shows what a second worker buys when there is no third core.

The plain Django servers (side ``django``: gunicorn with gthread or sync workers, uvicorn
running Django's own ASGI handler) serve HTTP only, from bench/django_site/, and run only
the HTTP scenarios: they are what a site runs before it moves behind Switchboard.
"""

from __future__ import annotations

import copy
import os
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from bench.procs import ProcSpec

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent

# One Redis db per side, flushed before and after each run; nothing else should use them.
CHANNELS_REDIS_DB = 11
SWITCHBOARD_REDIS_DB = 12
FLOOR_REDIS_DB = 13


@dataclass(frozen=True)
class Context:
    """Where and with what one system run starts."""

    host: str
    port: int
    main_python: str
    env_python: str | None
    redis_host: str = "127.0.0.1"
    redis_port: int = 6379


class System(ABC):
    """A system under test: its processes, its Redis db, and how to tell it is ready."""

    name: str
    side: str  # "switchboard", "channels" or "baseline"
    description: str
    needs_bench_env: bool = False
    serves_http: bool = True  # it listens on a port and serves channels_site-like routes
    serves_websocket: bool = True  # it also serves the sites' WebSocket routes (/ws/echo/...)
    #: How its Django keeps PostgreSQL connections (bench/benchapp/database.py): one per
    #: long-lived thread (``persistent``) or psycopg's pool for thread-per-request servers.
    db_connections: str = "persistent"
    redis_db: int | None = None  # its own Redis db, flushed before and after each run
    #: Other names ``--systems`` selects it by (a plugin bench's ``udp-switchboard-run``
    #: answers to ``switchboard-run``, its baseline to ``bare``).
    aliases: tuple[str, ...] = ()
    #: The system this one is an earlier commit of (``--baseline``), else its own name:
    #: scenarios decide by it whether they apply, so a commit runs what its current self runs.
    family: str = ""

    @property
    def family_name(self) -> str:
        return self.family or self.name

    @abstractmethod
    def processes(self, ctx: Context) -> list[ProcSpec]:
        """The server processes, in start order."""

    def redis_url(self, ctx: Context) -> str | None:
        if self.redis_db is None:
            return None
        return f"redis://{ctx.redis_host}:{ctx.redis_port}/{self.redis_db}"

    def redis_prefix(self) -> str:
        return f"bench-{self.name}:"

    def base_env(self, ctx: Context) -> dict[str, str]:
        env = {
            "BENCH_BIND": f"{ctx.host}:{ctx.port}",
            "BENCH_DB_CONNECTIONS": self.db_connections,
            "BENCH_REDIS_PREFIX": self.redis_prefix(),
            "PYTHONPATH": str(BENCH_DIR),
            "PYTHONUNBUFFERED": "1",
        }
        url = self.redis_url(ctx)
        if url:
            env["BENCH_REDIS_URL"] = url
        return env


class SwitchboardSystem(System):
    """Switchboard from the main venv, configured by bench/switchboard_site/settings.py.

    ``tree`` is another checkout of the repository (``--baseline``): its ``switchboard``
    package and its bench site are imported instead of the installed ones, on the same
    interpreter and dependencies, so a before/after pair differs in our code only.
    """

    side = "switchboard"
    redis_db: int | None = SWITCHBOARD_REDIS_DB
    tree: Path | None = None

    @property
    def bench_dir(self) -> Path:
        return BENCH_DIR if self.tree is None else self.tree / "bench"

    def base_env(self, ctx: Context) -> dict[str, str]:
        env = super().base_env(ctx)
        if self.tree is not None:
            # First on sys.path, before the editable install's finder of the main tree.
            env["PYTHONPATH"] = f"{self.tree}{os.pathsep}{self.bench_dir}"
        return env

    def command(self, ctx: Context, *args: str) -> list[str]:
        return [
            ctx.main_python,
            "-m",
            "switchboard",
            *args,
            "--settings",
            "switchboard_site.settings",
            "--pythonpath",
            str(self.bench_dir),
            "--log-level",
            "WARNING",
        ]


class SwitchboardSplit(SwitchboardSystem):
    """``switchboard gateway`` + ``workers`` x ``switchboard worker`` over the Redis layer."""

    def __init__(self, name: str, workers: int) -> None:
        self.name = name
        self.workers = workers
        self.description = f"switchboard gateway + {workers} worker{'s' if workers > 1 else ''}, Redis layer"

    def processes(self, ctx: Context) -> list[ProcSpec]:
        env = self.base_env(ctx)
        specs = [ProcSpec("gateway", self.command(ctx, "gateway"), self.bench_dir, env)]
        specs += [ProcSpec(f"worker{i + 1}", self.command(ctx, "worker"), self.bench_dir, env) for i in range(self.workers)]
        return specs


class SwitchboardRun(SwitchboardSystem):
    """``switchboard run``: gateway and worker in one process on the in-memory layer."""

    name = "switchboard-run"
    description = "switchboard run (one process, in-memory layer)"
    redis_db = None  # `run` always uses the in-memory layer

    def processes(self, ctx: Context) -> list[ProcSpec]:
        return [ProcSpec("server", self.command(ctx, "run"), self.bench_dir, self.base_env(ctx))]


class ChannelsSystem(System):
    """Django Channels 4 from bench/.env, configured by bench/channels_site/settings.py."""

    side = "channels"
    needs_bench_env = True
    redis_db: int | None = CHANNELS_REDIS_DB
    db_connections = "pool"  # Django's ASGI handler: a new thread per sync request

    def python(self, ctx: Context) -> str:
        if ctx.env_python is None:
            raise RuntimeError(f"{self.name} needs the comparison venv bench/.env")
        return ctx.env_python

    def env(self, ctx: Context) -> dict[str, str]:
        return {**self.base_env(ctx), "DJANGO_SETTINGS_MODULE": "channels_site.settings"}


class ChannelsDaphne(ChannelsSystem):
    """daphne (Twisted) serving the Channels application, consumers in the same process."""

    name = "channels-daphne"
    description = "Channels 4 on daphne (one process), channels-redis layer"

    def processes(self, ctx: Context) -> list[ProcSpec]:
        bin_dir = Path(self.python(ctx)).parent
        argv = [str(bin_dir / "daphne"), "-b", ctx.host, "-p", str(ctx.port), "-v", "0"]
        argv.append("channels_site.asgi:application")
        return [ProcSpec("daphne", argv, BENCH_DIR, self.env(ctx))]


class ChannelsUvicorn(ChannelsSystem):
    """uvicorn (uvloop, httptools, websockets-sansio) serving the Channels application."""

    def __init__(self, name: str, workers: int) -> None:
        self.name = name
        self.workers = workers
        processes = f"{workers} process{'es' if workers > 1 else ''}"
        self.description = f"Channels 4 on uvicorn ({processes}), channels-redis layer"

    def processes(self, ctx: Context) -> list[ProcSpec]:
        argv = [
            self.python(ctx),
            "-m",
            "uvicorn",
            "channels_site.asgi:application",
            "--host",
            ctx.host,
            "--port",
            str(ctx.port),
            "--log-level",
            "warning",
            "--no-access-log",
        ]
        if self.workers > 1:
            argv += ["--workers", str(self.workers)]
        return [ProcSpec("uvicorn", argv, BENCH_DIR, self.env(ctx))]


class DjangoSystem(System):
    """Plain Django from bench/.env (no Channels, no Switchboard): bench/django_site/."""

    side = "django"
    needs_bench_env = True
    serves_websocket = False

    def python(self, ctx: Context) -> str:
        if ctx.env_python is None:
            raise RuntimeError(f"{self.name} needs the comparison venv bench/.env")
        return ctx.env_python

    def env(self, ctx: Context) -> dict[str, str]:
        return {**self.base_env(ctx), "DJANGO_SETTINGS_MODULE": "django_site.settings"}


class Gunicorn(DjangoSystem):
    """gunicorn serving Django's WSGI handler: ``gthread`` (threads per worker) or ``sync`` workers."""

    def __init__(self, name: str, worker_class: str, workers: int, threads: int = 1) -> None:
        self.name = name
        self.worker_class = worker_class
        self.workers = workers
        self.threads = threads
        shape = f"{workers} {worker_class} worker{'s' if workers > 1 else ''}"
        if worker_class == "gthread":
            shape += f" x {threads} threads"
        self.description = f"gunicorn, {shape}, Django WSGI (no Channels)"

    def processes(self, ctx: Context) -> list[ProcSpec]:
        argv = [
            self.python(ctx), "-m", "gunicorn", "django_site.wsgi:application",
            "--bind", f"{ctx.host}:{ctx.port}",
            "--workers", str(self.workers),
            "--worker-class", self.worker_class,
            "--log-level", "warning",
        ]
        if self.worker_class == "gthread":
            argv += ["--threads", str(self.threads)]
        return [ProcSpec("gunicorn", argv, BENCH_DIR, self.env(ctx))]


class UvicornDjango(DjangoSystem):
    """uvicorn serving Django's own ASGI handler (``get_asgi_application()``), no Channels."""

    db_connections = "pool"  # Django's ASGI handler: a new thread per sync request

    def __init__(self, name: str, workers: int) -> None:
        self.name = name
        self.workers = workers
        processes = f"{workers} process{'es' if workers > 1 else ''}"
        self.description = f"uvicorn ({processes}), Django ASGI (no Channels)"

    def processes(self, ctx: Context) -> list[ProcSpec]:
        argv = [
            self.python(ctx), "-m", "uvicorn", "django_site.asgi:application",
            "--host", ctx.host, "--port", str(ctx.port),
            "--log-level", "warning", "--no-access-log",
        ]
        if self.workers > 1:
            argv += ["--workers", str(self.workers)]
        return [ProcSpec("uvicorn", argv, BENCH_DIR, self.env(ctx))]


class RawRedis(System):
    """No server of ours: redis-py straight against Redis, for the floor measurement."""

    name = "redis"
    side = "baseline"
    description = "redis-py asyncio (hiredis) straight to Redis: the floor"
    serves_http = False
    redis_db = FLOOR_REDIS_DB

    def processes(self, ctx: Context) -> list[ProcSpec]:
        return []


SYSTEMS: dict[str, System] = {
    system.name: system
    for system in (
        RawRedis(),
        SwitchboardSplit("switchboard-split", workers=1),
        SwitchboardSplit("switchboard-split-2w", workers=2),
        SwitchboardRun(),
        ChannelsDaphne(),
        ChannelsUvicorn("channels-uvicorn", workers=1),
        ChannelsUvicorn("channels-uvicorn-2w", workers=2),
        Gunicorn("gunicorn-gthread", "gthread", workers=2, threads=8),
        Gunicorn("gunicorn-gthread-1w", "gthread", workers=1, threads=8),
        Gunicorn("gunicorn-sync", "sync", workers=2),
        UvicornDjango("uvicorn-django", workers=1),
    )
}


def select(names: list[str] | None) -> list[System]:
    """Systems by name or alias, in :data:`SYSTEMS` order; ``None`` means all."""
    if not names:
        return list(SYSTEMS.values())
    known = set(SYSTEMS) | {alias for system in SYSTEMS.values() for alias in system.aliases}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise SystemExit(f"unknown system(s) {', '.join(unknown)}; known: {', '.join(SYSTEMS)} (and 'bare')")
    return [s for n, s in SYSTEMS.items() if n in names or any(alias in names for alias in s.aliases)]


#: The Redis db of a ``--baseline`` commit's systems (one at a time runs, like the others).
BASELINE_REDIS_DB = 15


def with_baseline(chosen: list[System], tree: Path, label: str) -> list[System]:
    """``chosen`` with, after each Switchboard system, the same system from ``tree``.

    The copy is named ``<name>@<label>`` and has the side ``before``, so the Channels
    ratio tables leave it out and :func:`bench.report.baseline_rows` pairs it with its
    current self.
    """
    result: list[System] = []
    for system in chosen:
        result.append(system)
        if isinstance(system, SwitchboardSystem):
            before = copy.copy(system)
            before.name = f"{system.name}@{label}"
            before.family = system.name
            before.side = "before"
            before.tree = tree
            before.description = f"{system.description}, at commit {label}"
            if before.redis_db is not None:
                before.redis_db = BASELINE_REDIS_DB
            result.append(before)
    return result


def main_python() -> str:
    """The interpreter of the main venv (the one running the harness)."""
    return sys.executable
