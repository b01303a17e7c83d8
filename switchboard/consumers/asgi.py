"""Type names for the ASGI callables consumers and routers pass around.

Kept in one place so every module spells an ASGI application the same way the worker
does (``app(scope, receive, send)``) and mypy can check the wiring between them.
"""

from __future__ import annotations

# Defined once, beside the gateway's ASGI helpers (switchboard/gateway/asgi.py).
from switchboard.gateway.asgi import ASGIApp, Message, Receive, Scope, Send

__all__ = ["ASGIApp", "Message", "Receive", "Scope", "Send"]
