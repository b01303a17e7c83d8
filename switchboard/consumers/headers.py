"""Turning the header forms users write into the ASGI form servers require.

ASGI wants an iterable of ``[name, value]`` byte strings. Users write dicts and str;
converting in one place lets ``send_headers(headers={"Content-Type": "text/plain"})`` work
instead of failing deep inside the gateway's protocol plugin.

Names keep the case and pairs the form the consumer gave (a dict becomes ``(name, value)``
tuples), exactly as Channels passes them on: tests ported from Channels compare the
header lists a communicator sees (``[(b"Content-Type", b"text/plain")]``). HTTP header
names are case-insensitive, and the gateway's HTTP plugin handles them so.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

HeaderPart = str | bytes
# Mapping keys are invariant for mypy, hence one Mapping per key type.
Headers = Mapping[str, HeaderPart] | Mapping[bytes, HeaderPart] | Iterable[Sequence[HeaderPart]]


def _as_bytes(part: HeaderPart, what: str) -> bytes:
    if isinstance(part, bytes):
        return part
    if isinstance(part, str):
        return part.encode("latin-1")
    raise TypeError(f"header {what} must be str or bytes, not {type(part).__name__}")


def normalize_headers(headers: Headers | None) -> list[Sequence[bytes]]:
    """``headers`` as ASGI ``[(name, value), ...]`` bytes, in order, as written otherwise.

    A pair given as a list stays a list and a tuple a tuple; a dict's items become tuples.
    """
    if headers is None:
        return []
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    result: list[Sequence[bytes]] = []
    for pair in pairs:
        name, value = pair
        converted = (_as_bytes(name, "name"), _as_bytes(value, "value"))
        result.append(list(converted) if isinstance(pair, list) else converted)
    return result
