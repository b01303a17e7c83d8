"""Real Redis Cluster and Sentinel setups of ``redis-server`` processes, for tests and benches.

* :class:`ClusterOfServers`: 3 primaries + 3 replicas on loopback ports, created with
  ``redis-cli --cluster create ... --cluster-replicas 1``; ready once every node says
  ``cluster_state:ok`` and every replica's link is up.
* :class:`SentinelSetup`: a primary, a replica and 3 Sentinels (``redis-server conf
  --sentinel``: this machine has no ``redis-sentinel`` binary, and the server binary runs
  either role).

Both offer the one fault the failover tests need, ``kill_primary_of(key)`` /
``kill_primary()``: SIGKILL the primary (no shutdown, no handover), wait until the
topology has promoted its replica, and return how long that took (the failover window the
clients lived through). ``restore()`` starts the killed server again; it rejoins as a
replica, so a session-scoped setup is whole for the next test. Everything is torn down by
pid (``stop()``), never by name.

Why fixed port ranges rather than any free port: a cluster node also listens on its port
+ 10000 (the cluster bus), so both must be free; and concurrent engineers on one machine
each own a range (``SWITCHBOARD_TEST_CLUSTER_PORTS`` / ``SWITCHBOARD_TEST_SENTINEL_PORTS``,
``"27000-27999"``), which keeps their setups apart.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .redis_server import RedisServer
from .waiting import wait_until_sync

__all__ = ["ClusterOfServers", "SentinelSetup", "port_range"]

#: Node timeout of the test cluster and Sentinel's down-after: short, so a failover takes
#: seconds, not the production default's 15 s; the waits below are generous anyway. Not
#: 1 s: under two CPU hogs a new primary, busy with the restarted server's full sync,
#: answered a Sentinel's PING over a second late, and the Sentinels failed over again to
#: the server still syncing, which wiped the data (the e2e test saw 198 posts lost).
NODE_TIMEOUT_MS = 2000


def port_range(variable: str, default: str) -> range:
    """The ports ``variable`` (``"27000-27999"``) allows, or ``default``'s."""
    text = os.environ.get(variable, default)
    low, _, high = text.partition("-")
    return range(int(low), int(high) + 1)


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _take_ports(ports: range, count: int, bus: bool) -> list[int]:
    """``count`` ports of ``ports`` that are free (with their bus port + 10000 when ``bus``).

    The start is spread by pid so two sessions of one engineer rarely race for the same.
    """
    found: list[int] = []
    offset = (os.getpid() * 7) % max(1, len(ports))
    for i in range(len(ports)):
        port = ports[(offset + i) % len(ports)]
        if _free(port) and (not bus or _free(port + 10000)):
            found.append(port)
            if len(found) == count:
                return found
    raise RuntimeError(f"no {count} free ports in {ports.start}-{ports.stop - 1}")


def _cli(binary: str, port: int, *args: str, timeout: float = 5.0) -> str:
    cli = str(Path(binary).with_name("redis-cli"))
    done = subprocess.run(
        [cli, "-h", "127.0.0.1", "-p", str(port), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    return done.stdout


def _wait(condition: str, check: Callable[[], object], seconds: float) -> None:
    """:func:`waiting.wait_until_sync` where a check may fail while a server starts: a
    ``redis-cli`` that cannot connect yet (or times out) counts as "not yet"."""

    def ready() -> bool:
        try:
            return bool(check())
        except (OSError, subprocess.SubprocessError):
            return False

    wait_until_sync(ready, seconds, condition)


def _info(binary: str, port: int, section: str) -> dict[str, str]:
    text = _cli(binary, port, "INFO", section)
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))


class ClusterOfServers:
    """A 3-primary + 3-replica Redis Cluster on loopback ports (see module docstring)."""

    def __init__(self, binary: str, workdir: Path, *, primaries: int = 3, ports: range | None = None) -> None:
        self.binary = binary
        self.workdir = workdir
        ports = ports or port_range("SWITCHBOARD_TEST_CLUSTER_PORTS", "27000-27999")
        self.servers = [
            RedisServer(
                binary,
                workdir / f"node{port}",
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    str(NODE_TIMEOUT_MS),
                    # A replica that lost touch for a while may still take over: the test
                    # kills the primary, the replica must win.
                    "--cluster-replica-validity-factor",
                    "0",
                    "--appendonly",
                    "no",
                ],
                port=port,
            )
            for port in _take_ports(ports, primaries * 2, bus=True)
        ]
        self.killed: list[RedisServer] = []

    @property
    def seeds(self) -> list[str]:
        """``redis+cluster://`` seed URLs of every node (a layer needs only one that answers)."""
        return [f"redis+cluster://127.0.0.1:{server.port}" for server in self.servers]

    def start(self) -> None:
        try:
            for server in self.servers:
                server.start()
            cli = str(Path(self.binary).with_name("redis-cli"))
            addresses = [f"127.0.0.1:{server.port}" for server in self.servers]
            subprocess.run(
                [cli, "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
                capture_output=True, text=True, timeout=60, check=True,
            )  # fmt: skip
            self.wait_ok()
        except BaseException:
            self.stop()
            raise

    def _alive(self) -> Iterator[RedisServer]:
        return (server for server in self.servers if server.process is not None)

    def wait_ok(self, seconds: float = 60.0) -> None:
        """Until every live node says ``cluster_state:ok`` and every replica's link is up."""

        def ok() -> bool:
            for server in self._alive():
                info = _cli(self.binary, server.port, "CLUSTER", "INFO")
                if "cluster_state:ok" not in info or "cluster_slots_ok:16384" not in info:
                    return False
                replication = _info(self.binary, server.port, "replication")
                if replication.get("role") == "slave" and replication.get("master_link_status") != "up":
                    return False
            roles = [_info(self.binary, s.port, "replication").get("role") for s in self._alive()]
            return roles.count("master") >= len(self.servers) // 2 and "slave" in roles

        _wait("the cluster to be ok on every node", ok, seconds)

    def _slot_owner(self, slot: int, asking: RedisServer) -> int | None:
        """The port of the primary serving ``slot``, as ``asking`` sees the cluster."""
        for line in _cli(self.binary, asking.port, "CLUSTER", "NODES").splitlines():
            fields = line.split()
            if len(fields) < 8 or "master" not in fields[2] or "fail" in fields[2]:
                continue
            for span in fields[8:]:
                if span.startswith("["):
                    continue
                low, _, high = span.partition("-")
                if int(low) <= slot <= int(high or low):
                    return int(fields[1].split("@")[0].rpartition(":")[2])
        return None

    def keyslot(self, key: str) -> int:
        server = next(self._alive())
        return int(_cli(self.binary, server.port, "CLUSTER", "KEYSLOT", key).strip())

    def primary_of(self, key: str) -> RedisServer:
        slot = self.keyslot(key)
        port = self._slot_owner(slot, next(self._alive()))
        return next(server for server in self.servers if server.port == port)

    def key_served_by(self, port: int) -> str:
        """A key whose slot the primary on ``port`` serves (to name that primary to
        :meth:`kill_primary_of`); CRC16 slots computed locally, one ``CLUSTER NODES``."""
        from redis.crc import key_slot

        asking = next(self._alive())
        nodes = _cli(self.binary, asking.port, "CLUSTER", "NODES")
        spans: list[tuple[int, int]] = []
        for line in nodes.splitlines():
            fields = line.split()
            if len(fields) >= 8 and int(fields[1].split("@")[0].rpartition(":")[2]) == port:
                for span in fields[8:]:
                    if not span.startswith("["):
                        low, _, high = span.partition("-")
                        spans.append((int(low), int(high or low)))
        for n in range(1 << 20):
            key = f"k{n}"
            if any(low <= key_slot(key.encode()) <= high for low, high in spans):
                return key
        raise ValueError(f"no primary on port {port} serves any slot")

    def kill_primary_of(self, key: str, seconds: float = 60.0) -> float:
        """SIGKILL the primary holding ``key``'s slot; wait for its replica to take over.

        Returns the seconds from the kill until every live node sees a new primary for the
        slot and ``cluster_state:ok``: the window in which clients of that slot had no primary.
        """
        slot = self.keyslot(key)
        victim = self.primary_of(key)
        started = time.monotonic()
        victim.kill()
        self.killed.append(victim)

        def promoted() -> bool:
            for server in self._alive():
                owner = self._slot_owner(slot, server)
                if owner is None or owner == victim.port:
                    return False
                if "cluster_state:ok" not in _cli(self.binary, server.port, "CLUSTER", "INFO"):
                    return False
            return True

        _wait(f"a replica to take over slot {slot}", promoted, seconds)
        return time.monotonic() - started

    def restore(self) -> None:
        """Start the killed servers again; they rejoin as replicas of the new primaries."""
        while self.killed:
            self.killed.pop().start()
        self.wait_ok()

    def stop(self) -> None:
        for server in self.servers:
            server.stop()


class SentinelSetup:
    """A primary, one replica and 3 Sentinels watching them as ``master_name``."""

    def __init__(self, binary: str, workdir: Path, *, master_name: str = "mymaster", ports: range | None = None) -> None:
        self.binary = binary
        self.workdir = workdir
        self.master_name = master_name
        ports = ports or port_range("SWITCHBOARD_TEST_SENTINEL_PORTS", "28000-28999")
        primary, replica, *sentinels = _take_ports(ports, 5, bus=False)
        self.primary = RedisServer(binary, workdir / f"redis{primary}", port=primary)
        self.replica = RedisServer(binary, workdir / f"redis{replica}", ["--replicaof", "127.0.0.1", str(primary)], port=replica)
        self.sentinel_ports = sentinels
        self._sentinels: list[subprocess.Popen[bytes]] = []
        self.killed: RedisServer | None = None

    @property
    def sentinels(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", port) for port in self.sentinel_ports]

    @property
    def hosts_entry(self) -> dict[str, object]:
        """The layer's ``hosts`` entry, in channels_redis's Sentinel form."""
        return {"sentinels": self.sentinels, "master_name": self.master_name, "sentinel_kwargs": {"socket_timeout": 2}}

    def _sentinel_config(self, port: int) -> Path:
        directory = self.workdir / f"sentinel{port}"
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "sentinel.conf"  # Sentinel rewrites it: one writable file each
        config.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {directory}\nlogfile {directory / 'sentinel.log'}\n"
            f"sentinel monitor {self.master_name} 127.0.0.1 {self.primary.port} 2\n"
            f"sentinel down-after-milliseconds {self.master_name} {NODE_TIMEOUT_MS}\n"
            f"sentinel failover-timeout {self.master_name} 10000\n"
            f"sentinel parallel-syncs {self.master_name} 1\n"
        )
        return config

    def start(self) -> None:
        try:
            self.primary.start()
            self.replica.start()
            for port in self.sentinel_ports:
                process = subprocess.Popen(
                    [self.binary, str(self._sentinel_config(port)), "--sentinel"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                self._sentinels.append(process)
            self.wait_ok()
        except BaseException:
            self.stop()
            raise

    def master_port(self, sentinel_port: int) -> int | None:
        reply = _cli(self.binary, sentinel_port, "SENTINEL", "get-master-addr-by-name", self.master_name).split()
        return int(reply[1]) if len(reply) == 2 else None

    def current_primary(self) -> RedisServer:
        port = self.master_port(self.sentinel_ports[0])
        return self.primary if port == self.primary.port else self.replica

    def wait_ok(self, seconds: float = 60.0) -> None:
        """Until every Sentinel agrees on the primary, knows the replica and the other Sentinels."""

        def ok() -> bool:
            primaries = {self.master_port(port) for port in self.sentinel_ports}
            if len(primaries) != 1 or None in primaries:
                return False
            for port in self.sentinel_ports:
                state = _cli(self.binary, port, "SENTINEL", "master", self.master_name).split("\n")
                fields = dict(zip(state[::2], state[1::2]))
                if fields.get("num-other-sentinels") != "2" or fields.get("num-slaves") != "1":
                    return False
                if "s_down" in fields.get("flags", "") or "o_down" in fields.get("flags", ""):
                    return False
            replica = self.replica if self.current_primary() is self.primary else self.primary
            return _info(self.binary, replica.port, "replication").get("master_link_status") == "up"

        _wait("the Sentinels to agree on a healthy primary and replica", ok, seconds)

    def kill_primary(self, seconds: float = 60.0) -> float:
        """SIGKILL the current primary; wait until every Sentinel names the replica and it
        accepts writes. Returns those seconds (the window clients had no primary)."""
        victim = self.current_primary()
        survivor = self.replica if victim is self.primary else self.primary
        started = time.monotonic()
        victim.kill()
        self.killed = victim

        def promoted() -> bool:
            if any(self.master_port(port) != survivor.port for port in self.sentinel_ports):
                return False
            return _info(self.binary, survivor.port, "replication").get("role") == "master"

        _wait("Sentinel to promote the replica", promoted, seconds)
        return time.monotonic() - started

    def restore(self) -> None:
        """Start the killed server again as a replica of the new primary."""
        victim, self.killed = self.killed, None
        if victim is None:
            return
        survivor = self.replica if victim is self.primary else self.primary
        victim.options = ["--replicaof", "127.0.0.1", str(survivor.port)]
        victim.start()
        self.wait_ok()

    def stop(self) -> None:
        for process in self._sentinels:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)
        self._sentinels = []
        self.replica.stop()
        self.primary.stop()
