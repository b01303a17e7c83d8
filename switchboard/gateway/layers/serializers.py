"""Message serializers for the layer: msgpack or JSON, optionally encrypted.

The layer packs every stored item as msgpack ``[expires_at, suffixes, message]``. With the
defaults (``serializer_format="msgpack"``, no encryption) the message is packed in that one
call, and this module is not involved. When a deployment asks for encryption
(``symmetric_encryption_keys``, the channels_redis option of the same name) or another
format, the message slot holds the bytes a serializer made instead: the layer's envelope
(expiry, fan-out suffixes) stays readable, the message is sealed.

Encryption is Fernet from ``cryptography`` (AES-128-CBC with HMAC-SHA256), the scheme
channels_redis uses, keyed the same way (SHA-256 of each configured key): a deployment's
keys keep their meaning. The first key encrypts; every key may decrypt, so keys can be
rotated by putting the new one first and removing the old one once no message sealed
with it can still be waiting. A message that no key opens is counted as corrupt and dropped.

The registry (``registry.register_serializer("cbor", CborSerializer)``) is the API
channels_redis users know, so custom serializers move over unchanged.
"""

from __future__ import annotations

import abc
import base64
import hashlib
import json
import secrets
from collections.abc import Sequence
from typing import Any, Protocol

import msgpack


class SerializerDoesNotExist(KeyError):
    """No serializer is registered under the requested format name."""


class MessageSerializer(Protocol):
    def serialize(self, message: Any) -> bytes: ...

    def deserialize(self, data: bytes) -> Any: ...


class BaseMessageSerializer(abc.ABC):
    """Turns messages into bytes and back; encrypts and prefixes them when asked.

    ``random_prefix_length`` bytes of randomness go in front of each serialized message
    (channels_redis uses them so equal messages are distinct list members); ``expiry``
    bounds how old a sealed message may be when opened (seconds, with 10 s of clock skew
    allowed), None for no bound.
    """

    def __init__(
        self,
        symmetric_encryption_keys: Sequence[str | bytes] | None = None,
        random_prefix_length: int = 0,
        expiry: float | None = None,
    ) -> None:
        self.random_prefix_length = random_prefix_length
        self.expiry = expiry
        self.crypter = self._crypter(symmetric_encryption_keys)

    @staticmethod
    def _crypter(keys: Sequence[str | bytes] | None) -> Any:
        if not keys:
            return None
        if isinstance(keys, (str, bytes)):
            raise ValueError("symmetric_encryption_keys must be a list of keys, not one key")
        try:
            from cryptography.fernet import Fernet, MultiFernet
        except ImportError as exc:  # pragma: no cover - cryptography is a dependency of twilio/aiortc too
            raise ValueError("symmetric_encryption_keys needs the 'cryptography' package installed") from exc

        def fernet(key: str | bytes) -> Any:
            raw = key.encode("utf-8") if isinstance(key, str) else key
            return Fernet(base64.urlsafe_b64encode(hashlib.sha256(raw).digest()))

        return MultiFernet([fernet(key) for key in keys])

    @abc.abstractmethod
    def as_bytes(self, message: Any) -> bytes: ...

    @abc.abstractmethod
    def from_bytes(self, data: bytes) -> Any: ...

    def serialize(self, message: Any) -> bytes:
        data = self.as_bytes(message)
        if self.crypter is not None:
            data = self.crypter.encrypt(data)
        if self.random_prefix_length > 0:
            data = secrets.token_bytes(self.random_prefix_length) + data
        return data

    def deserialize(self, data: bytes) -> Any:
        if self.random_prefix_length > 0:
            data = data[self.random_prefix_length :]
        if self.crypter is not None:
            ttl = None if self.expiry is None else int(self.expiry) + 10
            data = self.crypter.decrypt(data, ttl)
        return self.from_bytes(data)


class MsgPackSerializer(BaseMessageSerializer):
    """msgpack, as the layer packs messages anyway (bytes stay bytes)."""

    def as_bytes(self, message: Any) -> bytes:
        data: bytes = msgpack.packb(message, use_bin_type=True)
        return data

    def from_bytes(self, data: bytes) -> Any:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)


class JSONSerializer(BaseMessageSerializer):
    """UTF-8 JSON: readable in Redis, but messages cannot carry bytes."""

    def as_bytes(self, message: Any) -> bytes:
        return json.dumps(message).encode("utf-8")

    def from_bytes(self, data: bytes) -> Any:
        return json.loads(data)


class SerializersRegistry:
    """Serializer classes by format name (``"msgpack"``, ``"json"``, your own)."""

    def __init__(self) -> None:
        self._registry: dict[str, type] = {}

    def register_serializer(self, format: str, serializer_class: type) -> None:
        """Register ``serializer_class`` (a class with ``serialize`` and ``deserialize``).

        Anything else is refused with an AssertionError, as channels_redis does, so a
        mistake shows when the project starts, not at the first message.
        """
        has_methods = all(callable(getattr(serializer_class, name, None)) for name in ("serialize", "deserialize"))
        assert isinstance(serializer_class, type) and (issubclass(serializer_class, BaseMessageSerializer) or has_methods), (
            f"{serializer_class!r} must be a class with serialize() and deserialize() methods"
        )
        self._registry[format] = serializer_class

    def get_serializer(self, format: str, *args: Any, **kwargs: Any) -> Any:
        try:
            serializer_class = self._registry[format]
        except KeyError:
            raise SerializerDoesNotExist(format) from None
        return serializer_class(*args, **kwargs)


registry = SerializersRegistry()
registry.register_serializer("json", JSONSerializer)
registry.register_serializer("msgpack", MsgPackSerializer)
