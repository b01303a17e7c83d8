"""Switchboard: a plugin-based multi-protocol gateway for Django, in the design of Channels.

Protocol servers (``switchboard gateway``) hold client connections of every protocol and
turn their events into ASGI messages on a channel layer; workers (``switchboard worker``)
run ordinary Django consumers for them. See docs/architecture.md.

Channels' import paths exist here with the same names (``switchboard.generic.websocket``,
``switchboard.layers``, ``switchboard.testing``...), each a thin module over
``switchboard.consumers`` and ``switchboard.gateway``, so a Channels app moves over by
renaming its imports (docs/porting-from-channels.md).
"""

__version__ = "0.1.0"

#: The alias of the layer consumers use unless they name another (Channels' constant).
DEFAULT_CHANNEL_LAYER = "default"
