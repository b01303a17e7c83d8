"""Dead letters in the console: counts per durable channel, inspect, replay, drop.

Durable channels (at-least-once delivery with a dead-letter store) are the layer's job;
this module is the console's seam to them. :class:`DeadLetters` is what the console
needs; :func:`dead_letters_of` returns an implementation when the layer has durable
channels (``layer.durable`` with the methods used below), else None, and then the page
says that dead letters need durable channels instead of showing empty counts.

Kept small and duck-typed on purpose: the durable store lives in the layer package and
may grow; the console needs four calls of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

#: Most dead letters one inspect call returns.
INSPECT_LIMIT = 100


class NotDurable(LookupError):
    """The channel asked about is not a durable channel (it has no dead letters): a 404."""


class DeadLetters(Protocol):
    async def counts(self) -> dict[str, int]:
        """Dead letters waiting, by durable channel."""
        ...

    async def inspect(self, channel: str, limit: int = INSPECT_LIMIT) -> list[dict[str, Any]]:
        """The oldest dead letters of ``channel`` as dicts (the console summarizes and redacts them)."""
        ...

    async def replay(self, channel: str, ids: Sequence[str] | None) -> dict[str, int]:
        """Put them (all when ``ids`` is None) back on their channel; counts of what happened."""
        ...

    async def drop(self, channel: str, ids: Sequence[str] | None) -> dict[str, int]:
        """Delete them (all when ``ids`` is None); how many went."""
        ...


class LayerDeadLetters:
    """:class:`DeadLetters` over the layer's durable channels (``layer.durable``)."""

    def __init__(self, durable: Any) -> None:
        self.durable = durable

    def _durable(self, channel: str) -> None:
        options_for = getattr(self.durable, "options_for", None)
        if callable(options_for) and options_for(channel) is None:
            raise NotDurable(f"{channel} is not a durable channel (LAYER.CONFIG.durable does not name it)")

    async def counts(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in (await self.durable.dead_letter_channels()).items()}

    async def inspect(self, channel: str, limit: int = INSPECT_LIMIT) -> list[dict[str, Any]]:
        self._durable(channel)
        letters = await self.durable.dead_letters(channel, count=min(limit, INSPECT_LIMIT))
        shown = []
        for letter in letters:
            fields = {k: v for k, v in vars(letter).items() if not k.startswith("_")}
            message = getattr(letter, "message", None)
            if message is not None and not callable(message):
                fields["message"] = message
            shown.append(fields)
        return shown

    async def replay(self, channel: str, ids: Sequence[str] | None) -> dict[str, int]:
        self._durable(channel)
        replayed, left = await self.durable.replay(channel, list(ids) if ids is not None else None)
        return {"replayed": int(replayed), "left": int(left)}

    async def drop(self, channel: str, ids: Sequence[str] | None) -> dict[str, int]:
        self._durable(channel)
        return {"dropped": int(await self.durable.drop(channel, list(ids) if ids is not None else None))}


def dead_letters_of(layer: Any) -> DeadLetters | None:
    """The layer's dead letters, or None when it has no durable channels (yet)."""
    durable = getattr(layer, "durable", None)
    needed = ("dead_letter_channels", "dead_letters", "replay", "drop")
    if durable is None or not all(callable(getattr(durable, name, None)) for name in needed):
        return None
    return LayerDeadLetters(durable)
