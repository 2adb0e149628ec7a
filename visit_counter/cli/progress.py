"""A one-line progress bar redrawn in place, for the commands that take a while."""

from __future__ import annotations

from typing import TextIO

BAR_WIDTH = 30


def draw_bar(
    stream: TextIO, done: int, total: int, elapsed: float, unit: str, *, final: bool
) -> None:
    """`[#####-----] 50/100 1,234 <unit>/s`, over the previous one (carriage return)."""
    filled = min(BAR_WIDTH, BAR_WIDTH * done // total) if total else BAR_WIDTH
    rate = done / elapsed if elapsed > 0 else 0.0
    bar = "#" * filled + "-" * (BAR_WIDTH - filled)
    stream.write(f"\r[{bar}] {done}/{total} {rate:,.0f} {unit}/s")
    if final:
        stream.write("\n")
    stream.flush()
