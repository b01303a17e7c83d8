"""Channels' import path ``channels.consumer``: the base consumers (see :mod:`switchboard.consumers.base`)."""

from switchboard.consumers.base import AsyncConsumer, SyncConsumer, handler_name

#: Channels' name for the message-type-to-method rule.
get_handler_name = handler_name

__all__ = ["AsyncConsumer", "SyncConsumer", "get_handler_name"]
