"""The per-visit log (JOURNAL_VISITS=true): every acknowledged visit is on disk first.

Each visit appends one line (`<page>`, or `<page> <tag>` when its tag, see
`batch.py`, is not 0, or `<page> <tag> <idempotency key>` for a keyed visit; in
`<page>`, `%` and space are written `%25` and `%20`, so the line splits one way
only, and a key holds neither space nor control bytes). Several visits of one
page sent together (batch ingest) are one line `%n <count> <page> <tag>[ <key>]`:
no page line starts with `%n`, as a written page's `%` is always `%25` or `%20`.
A batch request's lines go out in one write(). to the current segment with a single O_APPEND
`write()`, before the 200 goes out. There is no fsync: the line survives the
process dying in any way (`kill -9` included), because it is in the kernel's page
cache, but not a crash of the machine itself within the kernel's writeback delay
(about 30 s by default).

Segment N (`<writer>.visits.<N>`) holds exactly the visits of flush number N:
the buffer swap that ends a segment also starts the next one. A segment is
deleted once every node has stored or journaled its part. After a crash, the
next start turns the surviving segments into batches with seq N, so the node's
applied-batch mark (see `batch.py`) tells which parts it already has.

Reading a segment back, a torn last line (no newline) that could be the start
of a visit line is skipped: it is a write() that never completed, so its visit
was never acknowledged. Any other line that is not `<page id>[ <epoch>[ <key>]]` (a bad
epoch, bytes that are not a page id, invalid UTF-8, or a torn tail that no
visit line starts with) is damage: `read_segment` reports it, and the claim
quarantines the segment (see `quarantine.py`). A flipped byte that turns one
valid page id into another cannot be detected: lines carry no checksum, to keep
the hot path at one small write().
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from visit_counter.core.errors import InvalidPageIdError
from visit_counter.core.idempotency import MAX_KEY_LENGTH
from visit_counter.core.page_id import MAX_PAGE_ID_LENGTH, validate_page_id
from visit_counter.services.batch import PendingKeys, key_member
from visit_counter.services.quarantine import DamagedLine

logger = logging.getLogger(__name__)

SegmentCounts = dict[str, tuple[int, int]]  # page -> (visits, epoch)

# A page id as written (no control byte, no space: see `_escape`); at most 4 bytes per character.
_PAGE = rf"[^\x00-\x20\x7f]{{1,{4 * MAX_PAGE_ID_LENGTH}}}"
_ESCAPED = re.compile(r"%(25|20)")
_BARE_PERCENT = re.compile(rb"%(?!25|20)")  # never written: every `%` of a page is escaped
# The tag is an epoch, or -1 (UNKNOWN_TAG: logged before the node's reset count was read).
_KEY = rf"[\x21-\x7e]{{1,{MAX_KEY_LENGTH}}}"
_VISIT_LINE = re.compile(rf"({_PAGE})(?: (-1|[0-9]{{1,19}})(?: ({_KEY}))?)?\n".encode())
_VISITS_LINE = re.compile(
    rf"%n ([1-9][0-9]{{0,9}}) ({_PAGE}) (-1|[0-9]{{1,19}})(?: ({_KEY}))?\n".encode()
)
# What a write() of a visit line cut short can leave: a prefix of a visit line.
_TORN_VISIT = re.compile(
    rf"{_PAGE}(?: -?[0-9]{{0,19}}(?: [\x21-\x7e]{{0,{MAX_KEY_LENGTH}}})?)?".encode()
)
_TORN_VISITS = re.compile(
    rf"%n(?: [0-9]{{0,10}}(?: {_PAGE}(?: -?[0-9]{{0,19}}"
    rf"(?: [\x21-\x7e]{{0,{MAX_KEY_LENGTH}}})?)?)?)?".encode()
)


@dataclass(frozen=True, slots=True)
class SegmentRead:
    counts: SegmentCounts
    damage: tuple[DamagedLine, ...]  # unreadable lines (never a torn last visit)
    keys: PendingKeys = field(default_factory=dict)  # of the keyed visits among `counts`


class VisitLog:
    def __init__(self, directory: Path, writer: str) -> None:
        self.directory = directory
        self.writer = writer
        self._fd: int | None = None
        self._segment = 0

    def path(self, segment: int) -> Path:
        return self.directory / f"{self.writer}.visits.{segment}"

    def open(self, segment: int) -> None:
        """Start writing segment `segment` (the visits of flush number `segment`)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path(segment), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._segment = fd, segment

    def append(self, page_id: str, epoch: int, key: str | None = None) -> None:
        """One visit, one write(); raises OSError if the kernel does not take all of it."""
        assert self._fd is not None, "visit log is not open"
        page = _escape(page_id)
        if key is not None:
            data = f"{page} {epoch} {key}\n".encode()
        else:
            data = (f"{page} {epoch}\n" if epoch else f"{page}\n").encode()
        written = os.write(self._fd, data)
        if written != len(data):
            self._cut(written)

    def append_many(self, records: list[tuple[str, int, int, str | None]]) -> None:
        """(page, epoch, count, key) records in one write(), so a request's visits reach the
        log together; raises OSError if the kernel does not take all of it."""
        assert self._fd is not None, "visit log is not open"
        lines = []
        for page_id, epoch, count, key in records:
            page, suffix = _escape(page_id), "" if key is None else f" {key}"
            if count == 1:
                lines.append(f"{page} {epoch}{suffix}\n")
            else:
                lines.append(f"%n {count} {page} {epoch}{suffix}\n")
        data = "".join(lines).encode()
        written = os.write(self._fd, data)
        if written != len(data):
            self._cut(written)

    def _cut(self, written: int) -> None:
        """Remove the part of a line a short write (disk full) left, then refuse the visit.

        Left in place, the next visit's line would continue it: "hom" + "blog\n"
        reads back as a visit to page "homblog".
        """
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, os.fstat(self._fd).st_size - written)
        except OSError:
            logger.exception("visit log %s: could not cut a partial line", self.path(self._segment))
        raise OSError(f"short write to the visit log ({written} bytes)")

    def mark_version(self, segment: int, version: int) -> None:
        """From `segment` on, visits are routed at topology `version` (visit_counter/topology).

        A replay routes a segment's visits as this process did, so the node's
        applied mark (or its refusal of an old version) decides (journal.py).
        One small append, as for a visit; OSError if it cannot be written.
        """
        path = versions_path(self.directory, self.writer)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, f"{segment} {version}\n".encode())
        finally:
            os.close(fd)

    def delete_through(self, segment: int) -> None:
        """Remove segments up to and including `segment` (all stored or journaled)."""
        for number, path in segments_of(self.directory, self.writer):
            if number <= segment and number != self._segment:
                path.unlink(missing_ok=True)

    def close(self, *, remove: bool) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if remove:
            for _, path in segments_of(self.directory, self.writer):
                path.unlink(missing_ok=True)
            versions_path(self.directory, self.writer).unlink(missing_ok=True)


def versions_path(directory: Path, writer: str) -> Path:
    return directory / f"{writer}.visits.versions"


def segment_versions(directory: Path, writer: str) -> dict[int, int]:
    """First segment -> the topology version its visits were routed at (see `mark_version`)."""
    versions: dict[int, int] = {}
    try:
        text = versions_path(directory, writer).read_text(errors="replace")
    except FileNotFoundError:
        return versions
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit() and parts[1].isdigit():
            versions[int(parts[0])] = int(parts[1])
    return versions


def version_of(versions: dict[int, int], segment: int) -> int:
    """The version segment `segment` was routed at: the newest mark at or before it (0: none)."""
    marked = [first for first in versions if first <= segment]
    return versions[max(marked)] if marked else 0


def segments_of(directory: Path, writer: str) -> Iterator[tuple[int, Path]]:
    """A writer's segment files, oldest first."""
    found = []
    for path in directory.glob(f"{writer}.visits.*"):
        suffix = path.name.rsplit(".", 1)[1]
        if suffix.isdigit():
            found.append((int(suffix), path))
    yield from sorted(found)


def read_segment(path: Path) -> SegmentRead:
    """Visits per page in one segment (for a page reset meanwhile, only the newest epoch's),
    and the lines that could not be read."""
    counts: SegmentCounts = {}
    keys: PendingKeys = {}
    damage: list[DamagedLine] = []
    offset = 0
    with path.open("rb") as handle:
        for raw in handle:
            line_offset, offset = offset, offset + len(raw)
            visit = _VISIT_LINE.fullmatch(raw)
            if visit is not None:
                count, page, tag, key = 1, visit.group(1), visit.group(2), visit.group(3)
            elif (visits_line := _VISITS_LINE.fullmatch(raw)) is not None:
                count = int(visits_line.group(1))
                page, tag, key = visits_line.group(2, 3, 4)
            else:
                torn = not raw.endswith(b"\n")
                if torn and (_TORN_VISIT.fullmatch(raw) or _TORN_VISITS.fullmatch(raw)):
                    continue  # a visit line cut short: its visit was never acknowledged
                damage.append(
                    DamagedLine(line_offset, len(raw), torn, "unreadable visit line", visits=None)
                )
                continue
            page_id = _page_of(page)
            if page_id is None:
                damage.append(DamagedLine(line_offset, len(raw), False, "not a page id", None))
                continue
            epoch = int(tag or 0)
            visits, known_epoch = counts.get(page_id, (0, epoch))
            if epoch > known_epoch:
                visits, known_epoch = 0, epoch
                keys.pop(page_id, None)
            elif epoch < known_epoch:
                continue  # counted before a reset this writer had seen: fenced anyway
            if key is not None:
                member = key_member(key.decode(), count)
                page_keys = keys.setdefault(page_id, set())
                if member in page_keys:
                    continue  # a repeat: counted once
                page_keys.add(member)
            counts[page_id] = (visits + count, known_epoch)
    return SegmentRead(counts, tuple(damage), keys)


def _escape(page_id: str) -> str:
    """`%` and space written as `%25` and `%20`: page ids of release 1 hold neither."""
    if "%" not in page_id and " " not in page_id:
        return page_id
    return page_id.replace("%", "%25").replace(" ", "%20")


def _page_of(written: bytes) -> str | None:
    """The page id a line holds, or None when the bytes are not one (damage)."""
    if _BARE_PERCENT.search(written):
        return None
    try:
        page_id = _ESCAPED.sub(lambda match: chr(int(match[1], 16)), written.decode())
        return validate_page_id(page_id)
    except (UnicodeDecodeError, InvalidPageIdError):
        return None
