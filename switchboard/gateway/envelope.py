"""The envelope that carries a connection's events from a gateway to the worker pool.

Specified in ``specs/layer.md``. Workers read ``switchboard.<scope type>`` channels; each
message there names the connection's reply channel and carries the scope, so any worker,
including one started after the connection opened, can build the consumer instance.
Envelopes sent to a claiming worker's own channel leave the scope out (that worker has
it); a worker that has no instance for such an event asks the gateway for the scope.
"""

from __future__ import annotations

from typing import Any

EVENT_TYPE = "switchboard.event"
POOL_PREFIX = "switchboard."

# Control messages between workers and gateways (specs/layer.md, "Worker affinity").
CLAIM = "switchboard.claim"  # worker -> connection's reply channel: send my events to me
RELEASE = "switchboard.release"  # worker -> reply channel: back to the pool
HEARTBEAT = "switchboard.heartbeat"  # worker -> gateway.<id>!control: I am alive
WORKER_STOPPING = "switchboard.worker_stopping"  # worker -> gateway control: release all mine
RELEASED = "switchboard.released"  # gateway -> worker: nothing more will come from me
DRAINED = "switchboard.drained"  # worker -> gateway control: I finished all I had; send on
SCOPE_REQUEST = "switchboard.scope_request"  # worker -> reply channel: I got events without a scope
SCOPE = "switchboard.scope"  # gateway -> worker: the scope of a connection it asked about
GROUP_ADD = "switchboard.group_add"  # layer -> connection's reply channel: it joined a group
GROUP_DISCARD = "switchboard.group_discard"  # layer -> connection's reply channel: it left one
MARK = "switchboard.mark"  # gateway -> its own control channel: read back, all before it was read


def pool_channel(scope_type: str) -> str:
    """The worker pool channel for connections of one scope type."""
    return POOL_PREFIX + scope_type


def control_channel_of(reply_channel: str) -> str:
    """The control channel of the gateway that owns ``reply_channel``."""
    return reply_channel[: reply_channel.index("!") + 1] + "control"


def wrap(connection: str, scope: dict[str, Any] | None, event: dict[str, Any]) -> dict[str, Any]:
    """Build the envelope for one event of ``connection``.

    ``scope`` is None for an event sent to the worker that claimed the connection: that
    worker holds the instance, hence the scope, and packing and unpacking the whole scope
    again for every frame was the largest per-event cost after the layer's round trips.
    """
    if scope is None:
        return {"type": EVENT_TYPE, "connection": connection, "event": event}
    return {"type": EVENT_TYPE, "connection": connection, "scope": scope, "event": event}
