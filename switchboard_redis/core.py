"""channels_redis's ``channels_redis.core``: the Redis channel layer."""

from switchboard.gateway.layers.compat import RedisChannelLayer
from switchboard.gateway.layers.core import ChannelFull

__all__ = ["ChannelFull", "RedisChannelLayer"]
