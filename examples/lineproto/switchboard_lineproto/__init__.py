"""A line-based TCP protocol for Switchboard, as a third-party plugin in its own distribution.

Installed, it registers ``lineproto`` in the ``switchboard.protocols`` entry-point group
(see ``pyproject.toml``), so a project enables it like a built-in plugin::

    SWITCHBOARD = {"PROTOCOLS": {"lineproto": {"bind": ["127.0.0.1:7777"]}}}

and routes its scope type ``line`` to a consumer::

    application = ProtocolTypeRouter({"line": EchoConsumer.as_asgi()})

The plugin (:mod:`.plugin`), its spec (``lineproto.md``), the spec's TypedDicts
(:mod:`.messages`, generated) and a consumer base (:mod:`.consumers`) are all there is.
"""

from .consumers import AsyncLineConsumer, LineConsumer
from .plugin import LineOptions, LinePlugin

__all__ = ["AsyncLineConsumer", "LineConsumer", "LineOptions", "LinePlugin"]
