"""The quarantine of damaged journal files: moving, reporting, listing, clearing. Real files."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from visit_counter.services.quarantine import (
    DamagedLine,
    FileDamage,
    clear,
    quarantine,
    quarantine_dir,
    quarantined,
)


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    path = tmp_path / "journal"
    path.mkdir()
    return path


def damaged_file(directory: Path, name: str, kind: str = "journal") -> tuple[Path, FileDamage]:
    path = directory / name
    path.write_bytes(b"good\nbad\x00\n")
    line = DamagedLine(offset=5, length=5, torn=False, what="unrecognisable")
    return path, FileDamage(name, "journal" if kind == "journal" else "visit_log", 10, (line,))


def test_quarantine_moves_the_files_and_writes_a_report(directory: Path) -> None:
    segment = damaged_file(directory, "dead.visits.4", "visit_log")
    journal = damaged_file(directory, "dead.jsonl")
    before = datetime.now(UTC)

    incident = quarantine(directory, "dead", "heir", [segment, journal], (3, 40))

    assert incident.parent == quarantine_dir(directory)
    assert incident.name.endswith("-dead")
    assert sorted(path.name for path in incident.iterdir()) == [
        "damage.json",
        "dead.jsonl",
        "dead.visits.4",
    ]
    assert not segment[0].exists()
    assert not journal[0].exists()
    assert (incident / "dead.jsonl").read_bytes() == b"good\nbad\x00\n"
    report = json.loads((incident / "damage.json").read_text())
    assert (report["writer"], report["claimed_by"]) == ("dead", "heir")
    assert (report["replayed_batches"], report["replayed_visits"]) == (3, 40)
    assert report["files"][1]["lines"] == [
        {"offset": 5, "length": 5, "torn": False, "what": "unrecognisable", "visits": None}
    ]
    listed = quarantined(directory)
    assert [(item.path.name, item.kind, item.lines, item.bytes) for item in listed] == [
        ("dead.jsonl", "journal", 1, 5),
        ("dead.visits.4", "visit_log", 1, 5),
    ]
    assert all(item.writer == "dead" and item.incident == incident.name for item in listed)
    assert before - timedelta(seconds=1) <= listed[0].found_at <= datetime.now(UTC)


def test_nothing_is_listed_without_a_quarantine(directory: Path) -> None:
    assert quarantined(directory) == []
    assert quarantined(directory / "missing") == []


def test_a_file_without_its_report_is_listed_with_unknown_sizes(directory: Path) -> None:
    # A crash between moving the files and writing the report.
    damaged = [damaged_file(directory, "dead.jsonl")]
    incident = quarantine(directory, "dead", "heir", damaged, (0, 0))
    (incident / "damage.json").unlink()

    (item,) = quarantined(directory)

    assert (item.path.name, item.lines, item.bytes) == ("dead.jsonl", None, None)


def test_an_operators_own_folder_in_the_quarantine_is_ignored(directory: Path) -> None:
    quarantine(directory, "dead", "heir", [damaged_file(directory, "dead.jsonl")], (0, 0))
    notes = quarantine_dir(directory) / "notes"
    notes.mkdir()
    (notes / "dead.jsonl").write_text("a copy")

    assert [item.writer for item in quarantined(directory)] == ["dead"]


def test_clearing_removes_one_incident_and_it_is_listed_no_more(directory: Path) -> None:
    first = quarantine(directory, "one", "heir", [damaged_file(directory, "one.jsonl")], (0, 0))
    second = quarantine(directory, "two", "heir", [damaged_file(directory, "two.jsonl")], (0, 0))

    assert clear(directory, first.name) == first

    assert not first.exists()
    assert [item.incident for item in quarantined(directory)] == [second.name]


@pytest.mark.parametrize("name", ["missing", "..", "../journal", "notes", ""])
def test_clearing_refuses_anything_but_an_incident(directory: Path, name: str) -> None:
    (quarantine_dir(directory) / "notes").mkdir(parents=True)

    with pytest.raises(ValueError, match="no quarantine incident"):
        clear(directory, name)

    assert directory.exists()
    assert (quarantine_dir(directory) / "notes").exists()
