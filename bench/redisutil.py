"""The few Redis calls the harness makes itself: flush a bench db, read Redis's CPU."""

from __future__ import annotations

import redis


def flush_db(url: str) -> None:
    """Empty the db at ``url`` (one of the bench's own dbs, never another)."""
    with redis.Redis.from_url(url, socket_timeout=5) as client:
        client.flushdb()


def redis_cpu_seconds(host: str = "127.0.0.1", port: int = 6379) -> float:
    """CPU seconds the Redis server has used so far (INFO cpu), for per-window deltas.

    Redis does the layer's work on both sides, so its CPU belongs in the cost of a system
    that uses it; it comes from Redis itself, so it works even when the server's pid is
    in another namespace.
    """
    with redis.Redis(host=host, port=port, socket_timeout=5) as client:
        info = client.info("cpu")
    return float(info.get("used_cpu_sys", 0.0)) + float(info.get("used_cpu_user", 0.0))


def redis_version(host: str = "127.0.0.1", port: int = 6379) -> str:
    with redis.Redis(host=host, port=port, socket_timeout=5) as client:
        return str(client.info("server").get("redis_version", "?"))
