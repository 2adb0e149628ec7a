"""The report's self-contained parts (the move, the cluster) and keeping them across runs.

Each of these sections is written between two HTML comments that mark it, and ends
with the command, date and commit it was measured with. So a run of one section
(`--only cluster`) can replace its part of an existing report and keep the rest, the
scenarios of the last full run included; and a run without it keeps the part the
last run wrote. A part goes where it stood, else before the next part, else before
`## Machine`, else at the end.
"""

from __future__ import annotations

import re

PARTS = ("move", "cluster")  # in the order they appear in the report
MACHINE_HEADING = "## Machine"


def begin_marker(name: str) -> str:
    return f"<!-- bench section: {name} -->"


def end_marker(name: str) -> str:
    return f"<!-- end of bench section: {name} -->"


def marked(name: str, lines: list[str]) -> list[str]:
    """`lines` between the part's markers."""
    return [begin_marker(name), "", *lines, "", end_marker(name), ""]


def _pattern(name: str) -> re.Pattern[str]:
    return re.compile(
        re.escape(begin_marker(name)) + r".*?" + re.escape(end_marker(name)) + r"\n*", re.DOTALL
    )


def part_of(text: str, name: str) -> str | None:
    """The part `name` of a report, from its first marker to the blank lines after its last;
    None if absent."""
    found = _pattern(name).search(text)
    return None if found is None else found.group(0)


def with_part(text: str, name: str, part: str) -> str:
    """`text` with part `name` replaced by `part`, or `part` added where it belongs."""
    if part_of(text, name) is not None:
        return _pattern(name).sub(lambda _: part, text, count=1)
    for later in PARTS[PARTS.index(name) + 1 :]:
        position = text.find(begin_marker(later))
        if position >= 0:
            return text[:position] + part + text[position:]
    heading = re.search(rf"^{re.escape(MACHINE_HEADING)}$", text, re.MULTILINE)
    if heading is not None:
        return text[: heading.start()] + part + text[heading.start() :]
    return text + ("" if text.endswith("\n") or not text else "\n") + part


def keep_parts(old: str, new: str, written: tuple[str, ...]) -> str:
    """`new`, with each part of `old` that this run did not write kept.

    `written`: the parts this run measured; `new` holds them, and they replace the
    old ones wherever `new` is not a whole report.
    """
    merged = new
    for name in PARTS:
        if name in written:
            continue
        kept = part_of(old, name)
        if kept is not None:
            merged = with_part(merged, name, kept)
    return merged
