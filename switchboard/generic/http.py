"""Channels' import path ``channels.generic.http`` (see :mod:`switchboard.consumers.http`).

``HttpConsumer``, the sync variant, is Switchboard's own addition.
"""

from switchboard.consumers.http import AsyncHttpConsumer, HttpConsumer

__all__ = ["AsyncHttpConsumer", "HttpConsumer"]
