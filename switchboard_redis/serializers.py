"""channels_redis's ``channels_redis.serializers`` (see :mod:`switchboard.gateway.layers.serializers`)."""

from switchboard.gateway.layers.serializers import (
    BaseMessageSerializer,
    JSONSerializer,
    MsgPackSerializer,
    SerializerDoesNotExist,
    SerializersRegistry,
    registry,
)

__all__ = [
    "BaseMessageSerializer",
    "JSONSerializer",
    "MsgPackSerializer",
    "SerializerDoesNotExist",
    "SerializersRegistry",
    "registry",
]
