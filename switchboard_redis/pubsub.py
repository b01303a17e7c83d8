"""channels_redis's ``channels_redis.pubsub``, served by Switchboard's Redis lists.

See :class:`switchboard.gateway.layers.compat.RedisPubSubChannelLayer` for what differs.
"""

from switchboard.gateway.layers.compat import RedisPubSubChannelLayer

__all__ = ["RedisPubSubChannelLayer"]
