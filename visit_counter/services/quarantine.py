"""Damaged journal and visit-log files: kept under `<journal_dir>/quarantine`, never deleted.

When a claim (`Journal.claim_orphans`) finds unreadable lines in a dead writer's
files, it replays what it can read and moves the damaged files here, one
directory per incident:

    quarantine/<found_at>-<writer>/          found_at as 20261123T135911.120664Z
        <writer>.jsonl, <writer>.visits.<N>  the files as they were found, byte for byte
        damage.json                          what could not be read (offsets, lengths, guesses)

The directory is the whole state: every worker (and the CLI) lists it to report
damage, and an operator clears an incident by removing or moving its directory
(or `python -m app journal quarantine --clear <name>`). Files are moved first and
the report written after, so a crash in between leaves a quarantined file without
its report (listed with unknown sizes), never a report of files that are not there.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

QUARANTINE_DIR = "quarantine"
REPORT_NAME = "damage.json"
REPORT_LINES = 1000  # damaged lines listed one by one per file; the totals count them all
_STAMP = "%Y%m%dT%H%M%S.%fZ"
_INCIDENT = re.compile(r"(\d{8}T\d{6}\.\d{6}Z)-(.+)")

logger = logging.getLogger(__name__)

FileKind = Literal["journal", "visit_log"]


@dataclass(frozen=True, slots=True)
class DamagedLine:
    """Bytes of a file that could not be read as a record (or a visit)."""

    offset: int
    length: int
    torn: bool  # the file's last line, without its newline
    what: str  # best-effort description of what it held
    visits: int | None = None  # visits it held as written, when that could be made out


@dataclass(frozen=True, slots=True)
class FileDamage:
    name: str  # the file's name where it was found
    kind: FileKind
    size: int
    lines: tuple[DamagedLine, ...]

    @property
    def damaged_bytes(self) -> int:
        return sum(line.length for line in self.lines)


@dataclass(frozen=True, slots=True)
class QuarantinedFile:
    """One quarantined file, as /status and the CLI report it."""

    incident: str  # the incident directory's name
    path: Path
    writer: str
    kind: FileKind
    lines: int | None  # unreadable lines; None when the report is missing
    bytes: int | None  # unreadable bytes; None when the report is missing
    found_at: datetime


def quarantine_dir(journal_dir: Path) -> Path:
    return journal_dir / QUARANTINE_DIR


def quarantine(
    journal_dir: Path,
    writer: str,
    claimed_by: str,
    damaged: list[tuple[Path, FileDamage]],
    replayed: tuple[int, int],
) -> Path:
    """Move the damaged files of `writer` into a new incident directory; return it.

    `replayed` is (batches, visits) replayed from the writer's files, for the report.
    Moves them in order; put the journal file last, so that when one cannot be moved
    (OSError) the journal file is still in place and the next claim tries again.
    """
    found_at = datetime.now(UTC)
    root = quarantine_dir(journal_dir)
    root.mkdir(parents=True, exist_ok=True)
    incident = root / f"{found_at.strftime(_STAMP)}-{writer}"
    incident.mkdir()
    for path, damage in damaged:
        os.rename(path, incident / damage.name)
    report = {
        "writer": writer,
        "claimed_by": claimed_by,
        "found_at": found_at.isoformat(),
        "replayed_batches": replayed[0],
        "replayed_visits": replayed[1],
        "files": [
            {
                "name": damage.name,
                "kind": damage.kind,
                "size": damage.size,
                "damaged_lines": len(damage.lines),
                "damaged_bytes": damage.damaged_bytes,
                "lines": [asdict(line) for line in damage.lines[:REPORT_LINES]],
            }
            for _, damage in damaged
        ],
    }
    temporary = incident / f".{REPORT_NAME}.tmp"
    try:
        _fsync_directory(incident)
        _fsync_directory(journal_dir)
        with temporary.open("w") as handle:
            json.dump(report, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.rename(temporary, incident / REPORT_NAME)
    except OSError as exc:  # the files are moved; only the details may be missing
        logger.error("quarantine %s: could not write %s: %s", incident, REPORT_NAME, exc)
    return incident


def quarantined(journal_dir: Path) -> list[QuarantinedFile]:
    """Every quarantined file still present, oldest incident first. Reads only this directory."""
    try:
        incidents = sorted(path for path in quarantine_dir(journal_dir).iterdir() if path.is_dir())
    except FileNotFoundError:
        return []
    found: list[QuarantinedFile] = []
    for incident in incidents:
        match = _INCIDENT.fullmatch(incident.name)
        if match is None:
            continue  # not ours: an operator's own folder
        found_at = datetime.strptime(match.group(1), _STAMP).replace(tzinfo=UTC)
        sizes = _reported_sizes(incident / REPORT_NAME)
        for path in sorted(incident.iterdir()):
            if path.name in (REPORT_NAME, f".{REPORT_NAME}.tmp") or not path.is_file():
                continue
            kind: FileKind = "journal" if path.name.endswith(".jsonl") else "visit_log"
            lines, damaged_bytes = sizes.get(path.name, (None, None))
            found.append(
                QuarantinedFile(
                    incident.name, path, match.group(2), kind, lines, damaged_bytes, found_at
                )
            )
    return found


def clear(journal_dir: Path, incident: str) -> Path:
    """Remove one incident directory (the operator has dealt with it); return its path.

    Raises ValueError unless `incident` names an incident directory in the quarantine.
    """
    path = quarantine_dir(journal_dir) / incident
    if "/" in incident or _INCIDENT.fullmatch(incident) is None or not path.is_dir():
        raise ValueError(f"no quarantine incident named {incident!r} in {path.parent}")
    shutil.rmtree(path)
    return path


def _reported_sizes(report: Path) -> dict[str, tuple[int, int]]:
    """Per file name: (damaged lines, damaged bytes), from an incident's report."""
    try:
        files = json.loads(report.read_text())["files"]
        return {str(f["name"]): (int(f["damaged_lines"]), int(f["damaged_bytes"])) for f in files}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
