"""The "image processing": a 64x64 SVG badge with the text's initials.

Stands in for real work (resizing an upload with Pillow, say) without a dependency; what
matters for the example is that it runs in a worker, off the request.
"""

from __future__ import annotations

import hashlib
from xml.sax.saxutils import escape

SIZE = 64


def initials(text: str) -> str:
    """Up to two initials of ``text``'s words, upper-cased; "?" for text without letters."""
    letters = [word[0] for word in text.split() if word[0].isalnum()]
    return "".join(letters[:2]).upper() or "?"


def badge_svg(text: str) -> str:
    """An SVG badge for ``text``: its initials on a colour derived from the text."""
    hue = int(hashlib.sha256(text.encode()).hexdigest()[:4], 16) % 360
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{SIZE}" height="{SIZE}" viewBox="0 0 {SIZE} {SIZE}">'
        f'<rect width="{SIZE}" height="{SIZE}" rx="12" fill="hsl({hue},55%,45%)"/>'
        f'<text x="50%" y="54%" font-family="sans-serif" font-size="26" fill="#fff" '
        f'text-anchor="middle" dominant-baseline="middle">{escape(initials(text))}</text></svg>'
    )
