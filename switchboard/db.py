"""Channels' import path ``channels.db`` (see :mod:`switchboard.consumers.db`)."""

from switchboard.consumers.db import close_stale_connections, database_sync_to_async


async def aclose_old_connections() -> None:
    """Close this process's stale database connections from async code (Channels 4.2+)."""
    from asgiref.sync import sync_to_async

    await sync_to_async(close_stale_connections)()


__all__ = ["aclose_old_connections", "database_sync_to_async"]
