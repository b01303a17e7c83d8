"""channels_redis's import paths, for Switchboard's Redis layer.

A Channels project names ``channels_redis.core.RedisChannelLayer`` in its settings and
sometimes imports from ``channels_redis``; renaming ``channels`` to ``switchboard`` turns
those into ``switchboard_redis``, which this package provides: thin modules over
:mod:`switchboard.gateway.layers`. (Settings may also keep the channels_redis names:
they map to the same classes.)
"""
