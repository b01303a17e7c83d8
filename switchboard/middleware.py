"""Channels' import path ``channels.middleware`` (see :mod:`switchboard.consumers.middleware`)."""

from switchboard.consumers.middleware import BaseMiddleware

__all__ = ["BaseMiddleware"]
