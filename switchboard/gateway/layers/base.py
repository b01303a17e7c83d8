"""``BaseChannelLayer``: the name checks and capacity rules Channels' layers share.

Channels code subclasses ``channels.layers.BaseChannelLayer`` for its own layers and calls
its helpers (``require_valid_channel_name``, ``get_capacity``, ``non_local_name``) from
consumers and tests. Switchboard's :class:`~switchboard.gateway.layers.core.ChannelLayer`
inherits from this class, so those calls and ``isinstance`` checks keep working, and the
rules are this package's own (``names.py``): one definition of a valid name everywhere.
"""

from __future__ import annotations

import fnmatch
import re
import warnings
from collections.abc import Mapping
from typing import Any

from .names import MAX_NAME_LENGTH, NAME_ERROR, InvalidName, check_channel_name, check_group_name, split_local

Message = dict[str, Any]


def compile_capacities(channel_capacity: Mapping[Any, int]) -> list[tuple[re.Pattern[str], int]]:
    """``{glob or compiled regex: capacity}`` as ``(regex, capacity)`` pairs, in order."""
    compiled = []
    for pattern, capacity in channel_capacity.items():
        regex = pattern if isinstance(pattern, re.Pattern) else re.compile(fnmatch.translate(pattern))
        compiled.append((regex, capacity))
    return compiled


class BaseChannelLayer:
    """The parts of a channel layer that do not depend on where messages are stored.

    Instantiated on its own it only checks names (as Channels' base class, whose I/O
    methods raise ``NotImplementedError``); :class:`ChannelLayer` is the real layer.
    """

    MAX_NAME_LENGTH = MAX_NAME_LENGTH
    #: Channels' attribute: the sentence every bad-name error starts with ("Channel"/"Group").
    invalid_name_error = NAME_ERROR
    extensions: list[str] = []

    def __init__(self, expiry: float = 60, capacity: int = 100, channel_capacity: Mapping[Any, int] | None = None) -> None:
        self.expiry = expiry
        self.capacity = capacity
        self.channel_capacity = compile_capacities(channel_capacity or {})

    # -- names --------------------------------------------------------------------------

    def match_type_and_length(self, name: object) -> bool:
        return isinstance(name, str) and len(name) <= self.MAX_NAME_LENGTH

    def require_valid_channel_name(self, name: object, receive: bool = False) -> bool:
        """True, or :class:`InvalidName` (a TypeError, as Channels raises)."""
        check_channel_name(name)
        return True

    def require_valid_group_name(self, name: object) -> bool:
        check_group_name(name)
        return True

    def valid_channel_names(self, names: list[str], receive: bool = False) -> bool:
        if not isinstance(names, list) or not names:
            raise InvalidName("names must be a non-empty list")
        for name in names:
            self.require_valid_channel_name(name, receive=receive)
        return True

    def valid_channel_name(self, name: object, receive: bool = False) -> bool:
        warnings.warn("valid_channel_name is deprecated, use require_valid_channel_name", DeprecationWarning, stacklevel=2)
        return self.require_valid_channel_name(name, receive)

    def valid_group_name(self, name: object) -> bool:
        warnings.warn("valid_group_name is deprecated, use require_valid_group_name", DeprecationWarning, stacklevel=2)
        return self.require_valid_group_name(name)

    def non_local_name(self, name: str) -> str:
        """``"x!y"`` -> ``"x!"`` (the part a process's local channels share); others unchanged."""
        return split_local(name)[0]

    # -- capacity -----------------------------------------------------------------------

    def get_capacity(self, channel: str) -> int:
        """The first matching ``channel_capacity`` pattern's capacity, else ``capacity``."""
        for pattern, capacity in self.channel_capacity:
            if pattern.match(channel):
                return capacity
        return self.capacity

    # -- the API a layer implements ------------------------------------------------------

    async def send(self, channel: str, message: Message) -> None:
        raise NotImplementedError("send() is implemented by a channel layer")

    async def receive(self, channel: str) -> Message:
        raise NotImplementedError("receive() is implemented by a channel layer")

    async def new_channel(self, prefix: str = "specific") -> str:
        raise NotImplementedError("new_channel() is implemented by a channel layer")

    async def flush(self) -> None:
        raise NotImplementedError("flush() is not implemented (flush extension)")

    async def group_add(self, group: str, channel: str) -> None:
        raise NotImplementedError("group_add() is not implemented (groups extension)")

    async def group_discard(self, group: str, channel: str) -> None:
        raise NotImplementedError("group_discard() is not implemented (groups extension)")

    async def group_send(self, group: str, message: Message) -> None:
        raise NotImplementedError("group_send() is not implemented (groups extension)")
