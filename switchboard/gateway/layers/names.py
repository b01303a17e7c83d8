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


#: The rule every bad-name error states first, in the words of Channels' ``BaseChannelLayer``
#: (``invalid_name_error``), so code and tests that match on Channels' message still do.
NAME_ERROR = (
    "{} name must be a valid unicode string with length at most "
    + str(MAX_NAME_LENGTH)
    + " containing only ASCII alphanumerics, hyphens, underscores, or periods"
)


class InvalidName(TypeError, ValueError):
    """A channel or group name breaks the naming rules.

    A TypeError, as Channels and channels_redis raise for bad names (so code and tests
    written for them catch it), and a ValueError, as this layer raised before.
    """


def check_channel_name(name: object, *, receive: bool = False) -> str:
    """Return ``name`` if it is a valid channel name, else raise :class:`InvalidName`.

    ``receive`` additionally allows the bare process-local prefix form ``"gateway.x!"``,
    which only a process reading its own local channels may use.
    """
    if not isinstance(name, str):
        raise InvalidName(f"{NAME_ERROR.format('Channel')}, not a {type(name).__name__}")
    if name in _checked_channels:
        return name
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidName(f"{NAME_ERROR.format('Channel')}: {name[:20]!r}... has {len(name)} characters")
    if not _CHANNEL_RE.fullmatch(name):
        raise InvalidName(f"{NAME_ERROR.format('Channel')} (and at most one '!'): {name!r}")
    if name.endswith("!"):
        if not receive:
            raise InvalidName(f"{name!r} is a process-local prefix, not a channel to send to")
        return name
    if len(_checked_channels) >= _CHECKED_KEPT:
        _checked_channels.clear()
    _checked_channels[name] = None
    return name


#: Names that passed as channels to send to, so a name checked again is one lookup: a
#: worker's replies to one client name the same reply channel (an HTTP response is a claim,
#: a start and a body), and the regular expression was ~2% of a worker's loop on them.
#: Bounded: cleared when it fills.
_checked_channels: dict[str, None] = {}
_CHECKED_KEPT = 4096


def check_group_name(name: object) -> str:
    """Return ``name`` if it is a valid group name, else raise :class:`InvalidName`."""
    if not isinstance(name, str):
        raise InvalidName(f"{NAME_ERROR.format('Group')}, not a {type(name).__name__}")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidName(f"{NAME_ERROR.format('Group')}: {name[:20]!r}... has {len(name)} characters")
    if not _GROUP_RE.fullmatch(name):
        raise InvalidName(f"{NAME_ERROR.format('Group')}: {name!r}")
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
