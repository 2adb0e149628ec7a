"""A shields-style SVG badge: `label | value`, two flat boxes, text widths estimated.

No font is measured (the badge is drawn per request, with no dependency): each
character counts as the average width of Verdana 11px, which is what shields.io
renders with, so labels up to a few dozen characters fit.
"""

from __future__ import annotations

import re
from xml.sax.saxutils import escape

NAMED_COLOURS = {
    "brightgreen": "#4c1",
    "green": "#97ca00",
    "yellow": "#dfb317",
    "yellowgreen": "#a4a61d",
    "orange": "#fe7d37",
    "red": "#e05d44",
    "blue": "#007ec6",
    "grey": "#555",
    "gray": "#555",
    "lightgrey": "#9f9f9f",
    "lightgray": "#9f9f9f",
}
_HEX = re.compile(r"#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})")
# The query parameter's pattern (OpenAPI; ECMA-262 and Python alike).
COLOUR_PATTERN = "^(#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})|" + "|".join(NAMED_COLOURS) + ")$"
MAX_LABEL = 64
_CHAR_WIDTH = 6.5
_PADDING = 10


def colour(value: str) -> str | None:
    """A named colour or a 3/6-digit hex value as `#rgb`; None when it is neither."""
    named = NAMED_COLOURS.get(value.lower())
    if named is not None:
        return named
    match = _HEX.fullmatch(value)
    return f"#{match[1]}" if match else None


def render(label: str, value: str, colour_hex: str, label_colour_hex: str = "#555") -> str:
    label = "".join(char for char in label if char.isprintable())  # XML allows no controls
    label_width = round(len(label) * _CHAR_WIDTH) + _PADDING
    value_width = round(len(value) * _CHAR_WIDTH) + _PADDING
    width = label_width + value_width
    label_text, value_text = escape(label), escape(value)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="20" role="img" '
        f'aria-label="{escape(label, {chr(34): "&quot;"})}: {escape(value)}">'
        f"<title>{label_text}: {value_text}</title>"
        f'<rect width="{label_width}" height="20" fill="{label_colour_hex}"/>'
        f'<rect x="{label_width}" width="{value_width}" height="20" fill="{colour_hex}"/>'
        '<g fill="#fff" text-anchor="middle" '
        'font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="11">'
        f'<text x="{label_width / 2}" y="14">{label_text}</text>'
        f'<text x="{label_width + value_width / 2}" y="14">{value_text}</text>'
        "</g></svg>"
    )
