"""Exceptions consumers and routers raise; the worker maps them to protocol outcomes."""

from __future__ import annotations


class StopConsumer(Exception):
    """Raised by a consumer to end its instance cleanly (after a disconnect, say)."""


class DenyConnection(Exception):
    """Raised in a connect handler to refuse the connection (WebSocket: HTTP 403)."""


class RouteNotFound(ValueError):
    """No route matched the scope: the worker answers HTTP 404 or WebSocket close 4404."""
