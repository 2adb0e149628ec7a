"""The on-disk journal: batches that could not be stored yet, kept across restarts.

One append-only file per process, `<journal_dir>/<writer>.jsonl`, so several
workers never write to the same file (seed 003's per-process file). The owning
process holds an exclusive `flock` on it for its whole life; the kernel drops
that lock when the process dies, however it dies, which is how a starting
process tells a dead writer's file (claimable) from a live one's (not).

Records are lines `<crc32> <json>` (see `journal_format.py`; lines of bare JSON
from the previous release are still read): a batch (see `Batch.to_json`), or an
acknowledgement `{"ack": [writer, seq, node]}` once that batch is stored. A
batch keeps its original writer and seq through any number of restarts, so
replaying it is idempotent (a node that already applied it adds nothing).

Damage. A claim replays every record it can read, and any line it cannot read
(bad checksum, not JSON, not a record), anywhere in the file, is damage: the
file is moved to the quarantine (`quarantine.py`), never deleted, with an ERROR
naming its unreadable bytes and what they seem to have held. That includes a
torn last line. A write cut short by its writer's death is harmless in itself:
`append` returns only after fsync, and until it returns the batch is still in
the writer's memory (and, with JOURNAL_VISITS, in its visit-log segments, which
are deleted only after the append returned and which the claim replays). But a
record that was complete, acknowledged and later cut (the file copied short, a
damaged disk) looks exactly the same, and its visits exist nowhere else; so a
torn last line is reported as damage too, marked "torn" so that an operator who
knows the writer was killed mid-write can tell which case it was.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from visit_counter.services.batch import Batch
from visit_counter.services.journal_format import (
    DamagedRecordError,
    describe_damaged,
    encode_record,
    record_text,
    split_damaged,
)
from visit_counter.services.orphans import orphan_lock
from visit_counter.services.quarantine import DamagedLine, FileDamage, quarantine
from visit_counter.services.visit_log import (
    SegmentRead,
    read_segment,
    segment_versions,
    segments_of,
    version_of,
    versions_path,
)

logger = logging.getLogger(__name__)


class Placement(Protocol):
    """Where pages go: a ring of the topology (visit_counter/core/consistent_hash.py)."""

    def owner(self, key: str) -> str: ...


BatchKey = tuple[str, int, str]  # writer, seq, node


class JournalError(Exception):
    """The journal cannot be written; visits that need it cannot be kept."""


class Journal:
    """This process's journal file, and the claiming of dead processes' files."""

    def __init__(self, directory: Path, writer: str) -> None:
        self.directory = directory
        self.writer = writer
        self.path = directory / f"{writer}.jsonl"
        self._fd: int | None = None
        self._outstanding: dict[BatchKey, int] = {}  # batch -> offset of its record
        self._last_write_failed = False
        self.damage_found: list[FileDamage] = []  # in dead writers' files this process claimed

    @property
    def outstanding(self) -> int:
        """Batches written here and not yet acknowledged."""
        return len(self._outstanding)

    def fileno(self) -> int:
        """The open file's descriptor (fault tests swap in a full device with dup2)."""
        return self._require_open()

    @property
    def is_open(self) -> bool:
        return self._fd is not None

    @property
    def damaged_records(self) -> int:
        """Unreadable lines found in claimed files since this process started."""
        return sum(len(damage.lines) for damage in self.damage_found)

    @property
    def damaged_bytes(self) -> int:
        return sum(damage.damaged_bytes for damage in self.damage_found)

    @property
    def writable(self) -> bool:
        """Open, and its last write (if any) succeeded. Probes nothing: no I/O."""
        return self._fd is not None and not self._last_write_failed

    def open(self) -> None:
        """Create the directory and this process's file, and lock the file."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        except OSError as exc:
            raise JournalError(f"cannot open journal {self.path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise JournalError(f"journal {self.path} is locked or cannot be locked: {exc}") from exc
        self._fd = fd

    def append(self, batch: Batch) -> int:
        """Write `batch` durably (fsync); return its offset for `read`."""
        offset = self._write(batch.to_json())
        self._outstanding[(batch.writer, batch.seq, batch.node)] = offset
        return offset

    def read(self, offset: int) -> Batch:
        """The batch this process appended at `offset`; JournalError if it reads back damaged."""
        fd = self._require_open()
        with os.fdopen(os.dup(fd), "rb") as handle:
            handle.seek(offset)
            raw = handle.readline()
        try:
            return Batch.from_json(record_text(raw))
        except (ValueError, KeyError, TypeError) as exc:
            raise JournalError(f"journal {self.path}: record at byte {offset} is damaged") from exc

    def acknowledge(self, batch: Batch) -> None:
        """Record that `batch` is stored; empty the file once nothing is outstanding."""
        key = (batch.writer, batch.seq, batch.node)
        if self._outstanding.pop(key, None) is None:
            return
        if not self._outstanding:
            os.ftruncate(self._require_open(), 0)
            return
        try:
            self._write(json.dumps({"ack": list(key)}), sync=False)
        except JournalError:
            # Harmless: the batch replays idempotently if this process dies.
            logger.warning("could not record the acknowledgement of batch %s", key)

    def claim_orphans(self, ring_at: Callable[[int], Placement]) -> list[tuple[Batch, int]]:
        """Take over the files of dead writers: copy their unsent batches here.

        A dead writer's batches come from its journal and, when it ran with
        JOURNAL_VISITS, from its visit-log segments: segment N becomes one batch
        per owner node with seq N (owners and version: the topology the writer routed
        segment N at, see `VisitLog.mark_version`), except where a journaled batch for that node
        already covers it. Each orphan file is locked, copied (fsync) and only
        then removed, so a crash at any point leaves every batch in at least one
        file, and replaying a batch twice is harmless (same writer and seq).
        A file with unreadable lines is moved to the quarantine instead of being
        removed, after its readable batches were copied (see the module docstring).
        Returns each claimed batch with its offset in this process's file.
        """
        claimed: list[tuple[Batch, int]] = []
        for path in sorted(self.directory.glob("*.jsonl")):
            if path == self.path:
                continue
            with orphan_lock(path) as orphaned:
                if orphaned:
                    claimed.extend(self._claim(path, path.name.removesuffix(".jsonl"), ring_at))
        return claimed

    def _claim(
        self, path: Path, writer: str, ring_at: Callable[[int], Placement]
    ) -> list[tuple[Batch, int]]:
        """Copy one dead writer's batches here; then remove its files, or quarantine them."""
        orphan = _read_orphan(path, writer)
        batches = orphan.batches
        damaged: list[tuple[Path, FileDamage]] = []
        segments = list(segments_of(self.directory, writer))
        versions = segment_versions(self.directory, writer)
        for number, segment in segments:
            read = read_segment(segment)
            version = version_of(versions, number)
            batches.extend(
                _segment_batches(writer, number, read, ring_at(version), version, orphan.covered)
            )
            if read.damage:
                size = segment.stat().st_size
                damaged.append((segment, FileDamage(segment.name, "visit_log", size, read.damage)))
        if orphan.damage:  # last: if a move fails, the journal file is still here to claim
            size = path.stat().st_size
            damaged.append((path, FileDamage(path.name, "journal", size, orphan.damage)))
        batches.sort(key=lambda batch: (batch.writer, batch.node, batch.seq))
        claimed = [(batch, self.append(batch)) for batch in batches]
        if damaged and not self._quarantine(writer, damaged, batches):
            return claimed  # every file stays; the next claim replays it again, harmlessly
        moved = {path for path, _ in damaged}
        for _, segment in segments:
            if segment not in moved:
                segment.unlink()
        if path not in moved:
            path.unlink()
        versions_path(self.directory, writer).unlink(missing_ok=True)
        if batches:
            logger.info(
                "journal replay: claimed %d batches (%d visits) from %s",
                len(batches),
                sum(batch.visits for batch in batches),
                path.name,
            )
        return claimed

    def _quarantine(
        self, writer: str, damaged: list[tuple[Path, FileDamage]], replayed: list[Batch]
    ) -> bool:
        """Move damaged files to the quarantine and log an ERROR for each; False if stuck."""
        batches, visits = len(replayed), sum(batch.visits for batch in replayed)
        self.damage_found.extend(damage for _, damage in damaged)
        try:
            incident: Path | None = quarantine(
                self.directory, writer, self.writer, damaged, (batches, visits)
            )
        except OSError as exc:
            incident, stuck = None, exc
        for path, damage in damaged:
            where, lost = _summary(damage)
            if incident is not None:
                kept = f"moved to {incident / damage.name}"
            else:
                kept = f"could not move it to the quarantine ({stuck}): left for the next start"
            logger.error(
                "journal damage: %s (writer %s) has %d unreadable lines, %d bytes, at %s; "
                "could not read %s; %s; the %d intact batches (%d visits) in its files "
                "were replayed",
                path,
                writer,
                len(damage.lines),
                damage.damaged_bytes,
                where,
                lost,
                kept,
                batches,
                visits,
            )
        return incident is not None

    def close(self, *, keep: bool = False) -> None:
        """Release the file; remove it when it holds nothing outstanding (unless `keep`)."""
        if self._fd is None:
            return
        if not self._outstanding and not keep:
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None

    def _write(self, line: str, *, sync: bool = True) -> int:
        fd = self._require_open()
        data = encode_record(line)
        try:
            offset = os.lseek(fd, 0, os.SEEK_END)
        except OSError as exc:
            self._last_write_failed = True
            raise JournalError(f"cannot write journal {self.path}: {exc}") from exc
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(f"short write ({written} of {len(data)} bytes)")
            if sync:
                os.fsync(fd)
        except OSError as exc:
            # Leave no partial or unsynced record behind: a torn line would swallow
            # the next record, and a record the caller thinks failed must not replay.
            try:
                os.ftruncate(fd, offset)
            except OSError:
                logger.exception("journal %s: could not cut a failed record", self.path)
            self._last_write_failed = True
            raise JournalError(f"cannot write journal {self.path}: {exc}") from exc
        self._last_write_failed = False
        return offset

    def _require_open(self) -> int:
        if self._fd is None:
            raise JournalError("journal is not open")
        return self._fd


@dataclass(slots=True)
class _Orphan:
    """What a dead writer's journal file holds."""

    batches: list[Batch]  # without a later acknowledgement
    covered: dict[str, int]  # per node, the highest seq of the writer's own batches
    damage: tuple[DamagedLine, ...]


def _read_orphan(path: Path, writer: str) -> _Orphan:
    """Read every record of a dead writer's file; collect the lines that cannot be read.

    `covered` counts journaled batches whether acknowledged or not, and only
    readable ones: a segment that a damaged batch covered is replayed (its
    visits are then counted once: same writer, the node's mark orders them).
    """
    batches: dict[BatchKey, Batch] = {}
    highest: dict[str, int] = {}
    damage: list[DamagedLine] = []
    offset = 0
    with path.open("rb") as handle:
        for raw in handle:
            line_offset, offset = offset, offset + len(raw)
            record = _record(raw)
            if record is None:
                lost, tail = split_damaged(raw)
                what, visits = describe_damaged(raw[:lost])
                torn = tail is None and not raw.endswith(b"\n")
                damage.append(DamagedLine(line_offset, lost, torn, what, visits))
                record = _parse(tail) if tail is not None else None
            if isinstance(record, Batch):
                batches[(record.writer, record.seq, record.node)] = record
                if record.writer == writer:
                    highest[record.node] = max(highest.get(record.node, 0), record.seq)
            elif record is not None:
                batches.pop(record, None)
    return _Orphan(list(batches.values()), highest, tuple(damage))


def _record(raw: bytes) -> Batch | BatchKey | None:
    """A line as a batch or an acknowledged batch's key; None if it cannot be read."""
    try:
        return _parse(record_text(raw))
    except DamagedRecordError:
        return None


def _parse(text: str) -> Batch | BatchKey | None:
    """A record's JSON as a batch or an acknowledged batch's key; None if it is neither."""
    try:
        record = json.loads(text)
        if "ack" in record:
            writer, seq, node = record["ack"]
            return str(writer), int(seq), str(node)
        return Batch.from_record(record)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _summary(damage: FileDamage, limit: int = 10) -> tuple[str, str]:
    """Where a file's damage is and what it held, for the ERROR line (`limit` items each)."""
    lines = damage.lines
    more = f", and {len(lines) - limit} more (see damage.json)" if len(lines) > limit else ""
    where = ", ".join(
        f"byte {line.offset} ({line.length} bytes{', torn last line' if line.torn else ''})"
        for line in lines[:limit]
    )
    if damage.kind == "visit_log":
        return where + more, f"{len(lines)} visit lines (one visit each, as written)"
    lost = "; ".join(
        line.what
        + (
            f" ({'at least ' if line.torn else ''}{line.visits} visits as written)"
            if line.visits is not None
            else ""
        )
        for line in lines[:limit]
    )
    return where + more, lost + more


def _segment_batches(
    writer: str,
    number: int,
    segment: SegmentRead,
    ring: Placement,
    version: int,
    covered: dict[str, int],
) -> Iterator[Batch]:
    """Batches (seq `number`) for the parts of a segment no journaled batch covers."""
    by_node: dict[str, dict[str, tuple[int, int]]] = {}
    for page_id, counted in segment.counts.items():
        by_node.setdefault(ring.owner(page_id), {})[page_id] = counted
    for node, increments in by_node.items():
        if number > covered.get(node, 0):
            yield Batch(
                writer=writer,
                seq=number,
                node=node,
                increments=increments,
                version=version,
                keys={
                    page: tuple(sorted(segment.keys[page]))
                    for page in increments
                    if page in segment.keys
                },
            )
