"""Channels' import path ``channels.security.websocket`` (see :mod:`switchboard.consumers.security`).

The validators also guard HTTP and WebRTC scopes; other scope types pass through.
"""

from switchboard.consumers.security import AllowedHostsOriginValidator, OriginValidator

__all__ = ["AllowedHostsOriginValidator", "OriginValidator"]
