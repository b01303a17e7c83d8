"""Channel and group name rules, checked at the layer boundary.

Names are checked where they enter the layer so that a malformed or hostile name (from a
routing table, a consumer or anything a client influenced) fails loudly at the call site
instead of reaching Redis keys or another connection's reply channel.
"""

from __future__ import annotations

import re

MAX_NAME_LENGTH = 100

# Checked with fullmatch: "$" alone would also match before a trailing newline.
_CHANNEL_RE = re.compile(r"[a-zA-Z\d\-_.]+(![\w\-.]*)?")
_GROUP_RE = re.compile(r"[a-zA-Z\d\-_.]+")


class InvalidName(ValueError):
    """A channel or group name breaks the naming rules."""


def check_channel_name(name: object, *, receive: bool = False) -> str:
    """Return ``name`` if it is a valid channel name, else raise :class:`InvalidName`.

    ``receive`` additionally allows the bare process-local prefix form ``"gateway.x!"``,
    which only a process reading its own local channels may use.
    """
    if not isinstance(name, str):
        raise InvalidName(f"channel name must be a str, not {type(name).__name__}")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidName(f"channel name {name[:20]!r}... is over {MAX_NAME_LENGTH} characters")
    if not _CHANNEL_RE.fullmatch(name):
        raise InvalidName(f"invalid channel name {name!r}: must match {_CHANNEL_RE.pattern}")
    if name.endswith("!") and not receive:
        raise InvalidName(f"{name!r} is a process-local prefix, not a channel to send to")
    return name


def check_group_name(name: object) -> str:
    """Return ``name`` if it is a valid group name, else raise :class:`InvalidName`."""
    if not isinstance(name, str):
        raise InvalidName(f"group name must be a str, not {type(name).__name__}")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidName(f"group name {name[:20]!r}... is over {MAX_NAME_LENGTH} characters")
    if not _GROUP_RE.fullmatch(name):
        raise InvalidName(f"invalid group name {name!r}: must match {_GROUP_RE.pattern}")
    return name


#: Longest marker key (:meth:`ChannelLayer.mark`): ids of events, not documents.
MAX_MARKER_LENGTH = 200
# Printable ASCII without spaces: ids such as ``sms:SM0123...:delivered``.
_MARKER_RE = re.compile(r"[\x21-\x7e]+")


def check_marker_key(key: object) -> str:
    """Return ``key`` if it is a valid marker key, else raise :class:`InvalidName`."""
    if not isinstance(key, str):
        raise InvalidName(f"marker key must be a str, not {type(key).__name__}")
    if len(key) > MAX_MARKER_LENGTH:
        raise InvalidName(f"marker key {key[:20]!r}... is over {MAX_MARKER_LENGTH} characters")
    if not _MARKER_RE.fullmatch(key):
        raise InvalidName(f"invalid marker key {key!r}: printable ASCII without spaces, at least one character")
    return key


def split_local(name: str) -> tuple[str, str | None]:
    """Split ``"gateway.x!conn"`` into (``"gateway.x!"``, ``"conn"``); others into (name, None).

    The part up to and including ``!`` is the storage key shared by every channel of one
    process, which is what lets one read loop serve all of a process's connections.
    """
    index = name.find("!")
    if index < 0:
        return name, None
    return name[: index + 1], name[index + 1 :]
