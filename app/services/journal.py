"""The on-disk journal: batches that could not be stored yet, kept across restarts.

One append-only file per process, `<journal_dir>/<writer>.jsonl`, so several
workers never write to the same file (seed 003's per-process file). The owning
process holds an exclusive `flock` on it for its whole life; the kernel drops
that lock when the process dies, however it dies, which is how a starting
process tells a dead writer's file (claimable) from a live one's (not).

Records are JSON lines: a batch (see `Batch.to_json`), or an acknowledgement
`{"ack": [writer, seq, node]}` once that batch is stored. A batch keeps its
original writer and seq through any number of restarts, so replaying it is
idempotent (a node that already applied it adds nothing).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from app.services.batch import Batch
from app.services.visit_log import read_segment, segments_of

logger = logging.getLogger(__name__)

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

    @property
    def outstanding(self) -> int:
        """Batches written here and not yet acknowledged."""
        return len(self._outstanding)

    @property
    def is_open(self) -> bool:
        return self._fd is not None

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
        fd = self._require_open()
        with os.fdopen(os.dup(fd), "rb") as handle:
            handle.seek(offset)
            return Batch.from_json(handle.readline().decode())

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

    def claim_orphans(self, owner_of: Callable[[str], str]) -> list[tuple[Batch, int]]:
        """Take over the files of dead writers: copy their unsent batches here.

        A dead writer's batches come from its journal and, when it ran with
        JOURNAL_VISITS, from its visit-log segments: segment N becomes one batch
        per owner node with seq N, except where a journaled batch for that node
        already covers it. Each orphan file is locked, copied (fsync) and only
        then removed, so a crash at any point leaves every batch in at least one
        file, and replaying a batch twice is harmless (same writer and seq).
        Returns each claimed batch with its offset in this process's file.
        """
        claimed: list[tuple[Batch, int]] = []
        for path in sorted(self.directory.glob("*.jsonl")):
            if path == self.path:
                continue
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue  # another process claimed it first
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its writer is alive
                if not path.exists() or os.stat(path).st_ino != os.fstat(fd).st_ino:
                    continue
                writer = path.name.removesuffix(".jsonl")
                batches, covered = _unacknowledged(path, writer)
                segments = list(segments_of(self.directory, writer))
                for number, segment in segments:
                    batches.extend(_segment_batches(writer, number, segment, owner_of, covered))
                batches.sort(key=lambda batch: (batch.writer, batch.node, batch.seq))
                claimed.extend((batch, self.append(batch)) for batch in batches)
                for _, segment in segments:
                    segment.unlink()
                path.unlink()
                if batches:
                    logger.info(
                        "journal replay: claimed %d batches (%d visits) from %s",
                        len(batches),
                        sum(batch.visits for batch in batches),
                        path.name,
                    )
            finally:
                os.close(fd)
        return claimed

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
        data = (line + "\n").encode()
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


def _unacknowledged(path: Path, writer: str) -> tuple[list[Batch], dict[str, int]]:
    """Batches in `path` without a later acknowledgement, and per node the highest
    seq journaled (acknowledged or not). A torn last line is skipped."""
    batches: dict[BatchKey, Batch] = {}
    highest: dict[str, int] = {}
    with path.open("rb") as handle:
        for raw in handle:
            try:
                record = json.loads(raw)
                if "ack" in record:
                    writer, seq, node = record["ack"]
                    batches.pop((writer, int(seq), node), None)
                else:
                    batch = Batch.from_json(raw.decode())
                    batches[(batch.writer, batch.seq, batch.node)] = batch
                    if batch.writer == writer:
                        highest[batch.node] = max(highest.get(batch.node, 0), batch.seq)
            except (ValueError, KeyError, TypeError):
                logger.warning("journal %s: skipping an unreadable line", path.name)
    return list(batches.values()), highest


def _segment_batches(
    writer: str,
    number: int,
    segment: Path,
    owner_of: Callable[[str], str],
    covered: dict[str, int],
) -> Iterator[Batch]:
    """Batches (seq `number`) for the parts of a segment no journaled batch covers."""
    by_node: dict[str, dict[str, tuple[int, int]]] = {}
    for page_id, counted in read_segment(segment).items():
        by_node.setdefault(owner_of(page_id), {})[page_id] = counted
    for node, increments in by_node.items():
        if number > covered.get(node, 0):
            yield Batch(writer=writer, seq=number, node=node, increments=increments)
