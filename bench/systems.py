"""The systems under test, each a recipe for the server processes to start.

A :class:`System` knows how to start itself on a port with a Redis db of its own; the
runner starts it fresh for every scenario, measures it, stops it and flushes its db.
Adding a system is one small subclass plus an entry in :data:`SYSTEMS`.

Fairness on a 2-core machine (see docs/benchmarks.md): the single-process systems
(``switchboard-run``, ``channels-daphne``, ``channels-uvicorn``) are compared with each
other, and the two-process ones (``switchboard-split``: gateway + worker;
``channels-uvicorn-2w``: two uvicorn workers) with each other. ``switchboard-split-2w``
(gateway + 2 workers) shows what a second worker buys when there is no third core.

``switchboard-split-2g`` (2 gateways on one port with ``reuse_port``, 1 worker) and
``switchboard-split-2g2w`` add gateway processes; ``switchboard-split-cluster`` (and
``-cluster-2g2w``) run the same processes on a private 3-primary + 3-replica Redis Cluster,
``switchboard-split-private`` on one private ``redis-server`` (bench/cluster.py), which the
runner starts fresh for every pair: one Redis and the cluster in one run, each with only
this system's load on it (issue 18).

``switchboard-split-pinned`` and ``gunicorn-gthread-pinned`` are the same processes each
held to one core (the gateway on CPU 0, the worker on CPU 1; gunicorn's two workers one
on each): issue 14's measure of what the scheduler's placement costs a pipeline of
processes on 2 cores. Asked for by name only.

The plain Django servers (side ``django``: gunicorn with gthread or sync workers, uvicorn
running Django's own ASGI handler) serve HTTP only, from bench/django_site/, and run only
the HTTP scenarios: they are what a site runs before it moves behind Switchboard.
"""

from __future__ import annotations

import copy
import os
import shutil
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from bench.cluster import BenchCluster, BenchServer, PrivateRedis, RedisNode
from bench.procs import ProcSpec
from bench.redisutil import flush_db

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent


def on_cpu(cpu: int, argv: list[str]) -> list[str]:
    """``argv`` run on CPU ``cpu`` only (util-linux ``taskset``, which execs it: same pid)."""
    if shutil.which("taskset") is None:
        raise RuntimeError("the pinned systems need taskset (util-linux)")
    if cpu not in os.sched_getaffinity(0):
        raise RuntimeError(f"the pinned systems need CPU {cpu}; this process may use {sorted(os.sched_getaffinity(0))}")
    return ["taskset", "--cpu-list", str(cpu), *argv]


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
    #: Processes that listen on the port (``reuse_port``): the runner waits for all of them
    #: before its probe, so no gateway is still starting when the clock starts.
    listeners: int = 1
    #: Whether a run without ``--systems`` includes it (issue 18's process-count and
    #: cluster systems are asked for by name: they would double a full run's ten minutes).
    in_default_run: bool = True
    #: Whether ``--baseline`` runs it from an earlier commit too (our own systems), and
    #: that checkout when this is the earlier commit's copy: its ``switchboard`` package
    #: and bench sites are imported instead of the installed ones, on the same interpreter
    #: and dependencies, so a before/after pair differs in our code only.
    baseline_capable: bool = False
    tree: Path | None = None

    @property
    def bench_dir(self) -> Path:
        return BENCH_DIR if self.tree is None else self.tree / "bench"

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

    def start_services(self, workdir: Path) -> None:
        """Start servers of its own that the system needs (a Redis Cluster); none by default."""
        return None

    def stop_services(self) -> None:
        """Stop what :meth:`start_services` started; safe to call when nothing runs."""
        return None

    def flush(self, ctx: Context) -> None:
        """Empty the system's Redis db (before and after every run)."""
        url = self.redis_url(ctx)
        if url:
            flush_db(url)

    def redis_nodes(self, ctx: Context) -> list[RedisNode]:
        """The Redis servers whose CPU is the system's ``redis CPU s``: the shared one by default."""
        return [RedisNode("redis", ctx.redis_host, ctx.redis_port)]

    def redis_prefix(self) -> str:
        return f"bench-{self.name}:"

    def base_env(self, ctx: Context) -> dict[str, str]:
        env = {
            "BENCH_BIND": f"{ctx.host}:{ctx.port}",
            "BENCH_DB_CONNECTIONS": self.db_connections,
            "BENCH_REDIS_PREFIX": self.redis_prefix(),
            # A baseline's tree first on sys.path, before the editable install's finder.
            "PYTHONPATH": str(BENCH_DIR) if self.tree is None else f"{self.tree}{os.pathsep}{self.bench_dir}",
            "PYTHONUNBUFFERED": "1",
        }
        url = self.redis_url(ctx)
        if url:
            env["BENCH_REDIS_URL"] = url
        return env


class SwitchboardSystem(System):
    """Switchboard from the main venv, configured by bench/switchboard_site/settings.py
    (from an earlier commit's checkout with ``--baseline``: :attr:`System.tree`)."""

    side = "switchboard"
    redis_db: int | None = SWITCHBOARD_REDIS_DB
    baseline_capable = True

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


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'s' if n > 1 else ''}"


class SwitchboardSplit(SwitchboardSystem):
    """``gateways`` x ``switchboard gateway`` + ``workers`` x ``switchboard worker`` over the Redis layer.

    Several gateways share the port with ``reuse_port`` (SO_REUSEPORT): the kernel spreads
    the load generator's connections over them, as it would a site's clients on one host.
    """

    layer = "Redis layer"

    def __init__(
        self, name: str, workers: int, gateways: int = 1, *, in_default_run: bool = True, pinned: bool = False
    ) -> None:
        self.name = name
        self.workers = workers
        self.gateways = self.listeners = gateways
        self.in_default_run = in_default_run
        #: Gateways on CPU 0, workers on CPU 1 (:func:`on_cpu`), instead of where the scheduler puts them.
        self.pinned = pinned
        gateway = "switchboard gateway" if gateways == 1 else f"{gateways} switchboard gateways (reuse_port)"
        where = "; gateway on CPU 0, worker on CPU 1" if pinned else ""
        self.description = f"{gateway} + {_count(workers, 'worker')}, {self.layer}{where}"

    def base_env(self, ctx: Context) -> dict[str, str]:
        env = super().base_env(ctx)
        if self.gateways > 1:
            env["BENCH_REUSE_PORT"] = "1"
        return env

    def processes(self, ctx: Context) -> list[ProcSpec]:
        env = self.base_env(ctx)
        names = ["gateway"] if self.gateways == 1 else [f"gateway{i + 1}" for i in range(self.gateways)]
        gateway, worker = self.command(ctx, "gateway"), self.command(ctx, "worker")
        if self.pinned:
            gateway, worker = on_cpu(0, gateway), on_cpu(1, worker)
        specs = [ProcSpec(name, gateway, self.bench_dir, env) for name in names]
        specs += [ProcSpec(f"worker{i + 1}", worker, self.bench_dir, env) for i in range(self.workers)]
        return specs


class SwitchboardSplitPrivate(SwitchboardSplit):
    """:class:`SwitchboardSplit` on Redis servers of its own: one, or a 3+3 Redis Cluster.

    Started fresh for every pair (bench/cluster.py, the tests' ``RedisServer`` and
    ``ClusterOfServers``), so nothing is left to flush, no run sees another's keys, and
    ``redis CPU s`` is this system's alone (the shared server on 6379 also serves other
    engineers' tests). On a cluster it is all six nodes' CPU (a replica applying the
    primaries' writes is part of the cost); each node's is in the row's ``extra``, since a
    cluster's capacity is that of its busiest primary.
    """

    redis: PrivateRedis | None = None

    def __init__(self, name: str, workers: int, gateways: int = 1, *, cluster: bool) -> None:
        self.cluster = cluster
        self.layer = "Redis Cluster of its own (3 primaries + 3 replicas)" if cluster else "a Redis server of its own"
        super().__init__(name, workers, gateways, in_default_run=False)

    def start_services(self, workdir: Path) -> None:
        self.redis = BenchCluster(workdir / "cluster") if self.cluster else BenchServer(workdir / "redis")
        self.redis.start()

    def stop_services(self) -> None:
        redis, self.redis = self.redis, None
        if redis is not None:
            redis.stop()

    def _running(self) -> PrivateRedis:
        if self.redis is None:
            raise RuntimeError(f"{self.name}: its Redis is not started")
        return self.redis

    def redis_url(self, ctx: Context) -> str | None:
        return self._running().url

    def flush(self, ctx: Context) -> None:
        return None  # fresh servers for every pair

    def redis_nodes(self, ctx: Context) -> list[RedisNode]:
        return self._running().nodes()


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

    def __init__(self, name: str, worker_class: str, workers: int, threads: int = 1, *, pinned: bool = False) -> None:
        self.name = name
        self.worker_class = worker_class
        self.workers = workers
        self.threads = threads
        #: Each worker on a CPU of its own (bench/django_site/gunicorn_pinned.py), asked for by name only.
        self.pinned = pinned
        self.in_default_run = not pinned
        shape = f"{workers} {worker_class} worker{'s' if workers > 1 else ''}"
        if worker_class == "gthread":
            shape += f" x {threads} threads"
        where = ", each worker on a CPU of its own" if pinned else ""
        self.description = f"gunicorn, {shape}{where}, Django WSGI (no Channels)"

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
        if self.pinned:
            argv += ["--config", "python:django_site.gunicorn_pinned"]
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
        SwitchboardSplit("switchboard-split-pinned", workers=1, in_default_run=False, pinned=True),
        SwitchboardSplit("switchboard-split-2g", workers=1, gateways=2, in_default_run=False),
        SwitchboardSplit("switchboard-split-2g2w", workers=2, gateways=2, in_default_run=False),
        SwitchboardSplitPrivate("switchboard-split-private", workers=1, cluster=False),
        SwitchboardSplitPrivate("switchboard-split-cluster", workers=1, cluster=True),
        SwitchboardSplitPrivate("switchboard-split-cluster-2g2w", workers=2, gateways=2, cluster=True),
        SwitchboardRun(),
        ChannelsDaphne(),
        ChannelsUvicorn("channels-uvicorn", workers=1),
        ChannelsUvicorn("channels-uvicorn-2w", workers=2),
        Gunicorn("gunicorn-gthread", "gthread", workers=2, threads=8),
        Gunicorn("gunicorn-gthread-1w", "gthread", workers=1, threads=8),
        Gunicorn("gunicorn-gthread-pinned", "gthread", workers=2, threads=8, pinned=True),
        Gunicorn("gunicorn-sync", "sync", workers=2),
        UvicornDjango("uvicorn-django", workers=1),
    )
}


def select(names: list[str] | None) -> list[System]:
    """Systems by name or alias, in :data:`SYSTEMS` order; ``None`` means the default run's."""
    if not names:
        return [system for system in SYSTEMS.values() if system.in_default_run]
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
        if system.baseline_capable:
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
