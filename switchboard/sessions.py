"""Channels' import path ``channels.sessions`` (see :mod:`switchboard.consumers.sessions`)."""

from switchboard.consumers.sessions import (
    CookieMiddleware,
    InvalidSameSite,
    SessionInterruptedError,
    SessionMiddleware,
    SessionMiddlewareStack,
)

__all__ = ["CookieMiddleware", "InvalidSameSite", "SessionInterruptedError", "SessionMiddleware", "SessionMiddlewareStack"]
