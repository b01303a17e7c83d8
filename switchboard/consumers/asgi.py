"""Type names for the ASGI callables consumers and routers pass around.

Kept in one place so every module spells an ASGI application the same way the worker
does (``app(scope, receive, send)``) and mypy can check the wiring between them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
