"""Channels' import path ``channels.routing`` (see :mod:`switchboard.consumers.routing`)."""

from typing import Any

from switchboard.consumers.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter


def get_default_application() -> Any:
    """The application ``ASGI_APPLICATION`` names (Channels' helper)."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured
    from django.utils.module_loading import import_string

    path = getattr(settings, "ASGI_APPLICATION", None)
    if not path:
        raise ImproperlyConfigured("ASGI_APPLICATION is not set: point it at your routing's application")
    try:
        return import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(f"Cannot import ASGI_APPLICATION {path!r}: {exc}") from exc


__all__ = ["ChannelNameRouter", "ProtocolTypeRouter", "URLRouter", "get_default_application"]
