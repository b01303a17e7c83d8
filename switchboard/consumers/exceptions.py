"""Exceptions consumers and routers raise; the worker maps them to protocol outcomes."""

from __future__ import annotations


class StopConsumer(Exception):
    """Raised by a consumer to end its instance cleanly (after a disconnect, say)."""


class DenyConnection(Exception):
    """Raised in a connect handler to refuse the connection (WebSocket: HTTP 403)."""


class AcceptConnection(Exception):
    """Raised in a WebSocket connect handler to accept the connection (Channels' API)."""


class RequestAborted(Exception):
    """The client went away before its request was read in full."""


class RequestTimeout(RequestAborted):
    """The client took too long to send its request body."""


class MessageTooLarge(Exception):
    """A message is larger than the layer or protocol allows."""


class RouteNotFound(ValueError):
    """No route matched the scope: the worker answers HTTP 404 or WebSocket close 4404."""
