"""The envelope that carries a connection's events from a gateway to the worker pool.

Specified in ``specs/layer.md``. Workers read ``switchboard.<scope type>`` channels; each
message there names the connection's reply channel and carries the scope, so any worker,
including one started after the connection opened, can build the consumer instance.
"""

from __future__ import annotations

from typing import Any

EVENT_TYPE = "switchboard.event"
POOL_PREFIX = "switchboard."


def pool_channel(scope_type: str) -> str:
    """The worker pool channel for connections of one scope type."""
    return POOL_PREFIX + scope_type


def wrap(connection: str, scope: dict[str, Any], event: dict[str, Any]) -> dict[str, Any]:
    """Build the envelope for one event of ``connection``."""
    return {"type": EVENT_TYPE, "connection": connection, "scope": scope, "event": event}
