"""channels_redis's ``channels_redis.utils`` helpers that code outside it calls.

``_consistent_hash`` is channels_redis's shard rule (CRC-32 of the name, its low 12 bits
spread over the servers), kept for code that computes where channels_redis would put a
key. Switchboard's own Redis layer does not shard with it: it uses a consistent-hash ring
(``switchboard.gateway.layers.redis.HashRing``), so adding a server moves about 1/n of
the keys instead of most of them.
"""

from __future__ import annotations

import binascii
from typing import Any


def _consistent_hash(value: str | bytes, ring_size: int) -> int:
    """Which of ``ring_size`` servers channels_redis picks for ``value``."""
    if ring_size == 1:
        return 0
    data = value.encode("utf-8") if isinstance(value, str) else value
    return (binascii.crc32(data) & 0xFFF) * ring_size // 4096


async def _close_redis(client: Any) -> None:
    """Close a redis-py client and its pool (it reconnects if used again)."""
    await client.aclose()


__all__ = ["_close_redis", "_consistent_hash"]
