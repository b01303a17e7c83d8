"""Switchboard: a plugin-based multi-protocol gateway for Django, in the design of Channels.

Protocol servers (``switchboard gateway``) hold client connections of every protocol and
turn their events into ASGI messages on a channel layer; workers (``switchboard worker``)
run ordinary Django consumers for them. See docs/architecture.md.
"""

__version__ = "0.1.0"
