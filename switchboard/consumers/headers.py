"""Turning the header forms users write into the ASGI form servers require.

ASGI wants an iterable of ``[name, value]`` byte strings with lower-case names. Users
write dicts and str; converting in one place lets ``send_headers(headers={"Content-Type":
"text/plain"})`` work instead of failing deep inside the gateway's protocol plugin.
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


def normalize_headers(headers: Headers | None) -> list[list[bytes]]:
    """``headers`` as ASGI ``[[name, value], ...]`` bytes, names lower-cased, order kept."""
    if headers is None:
        return []
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    result = []
    for pair in pairs:
        name, value = pair
        result.append([_as_bytes(name, "name").lower(), _as_bytes(value, "value")])
    return result
