"""Channels' import path ``channels.auth`` (see :mod:`switchboard.consumers.auth`)."""

from switchboard.consumers.auth import AuthMiddleware, AuthMiddlewareStack, UserLazyObject, get_user, login, logout

__all__ = ["AuthMiddleware", "AuthMiddlewareStack", "UserLazyObject", "get_user", "login", "logout"]
