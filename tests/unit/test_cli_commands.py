"""`python -m app` in-process: help on every command, the ring commands, argument checks.

The commands that talk to nodes or a service run as real processes in
tests/e2e/test_cli_on_service.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from visit_counter.cli.commands import main
from visit_counter.cli.load import NotLoopbackError, loopback_base_url
from visit_counter.core.config import Settings
from visit_counter.core.consistent_hash import ConsistentHashRing
from visit_counter.services.quarantine import DamagedLine, FileDamage, quarantine

FIELD_KEYS = {name.upper() for name in Settings.model_fields}
NODES = ["redis://127.0.0.1:7100", "redis://10.0.0.5:6379/2", "redis://cache.internal:6380"]


@pytest.fixture(autouse=True)
def _clean_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No developer exports and no `.env`: each test sets what it needs."""
    for key in FIELD_KEYS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["serve"],
        ["ring"],
        ["ring", "owner"],
        ["ring", "stats"],
        ["nodes"],
        ["load"],
        ["journal"],
        ["journal", "quarantine"],
    ],
    ids=lambda command: " ".join(command) or "top",
)
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith("usage: python -m app")


def test_ring_owner_agrees_with_the_ring(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_NODES", ",".join(NODES))
    monkeypatch.setenv("VIRTUAL_NODES", "37")
    ring = ConsistentHashRing(NODES, 37)
    for page_id in [f"page-{index}" for index in range(60)] + ["a", "~:.-_", "x" * 256]:
        assert main(["ring", "owner", "--listed", page_id]) == 0
        assert capsys.readouterr().out == f"{ring.owner(page_id)}\n"


def test_ring_owner_names_nodes_by_their_canonical_label(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # No credentials, lowercase host, the default port written, db 0 left out.
    monkeypatch.setenv("REDIS_NODES", "redis://:hunter2secret@LOCALHOST/0")
    assert main(["ring", "owner", "--listed", "page1"]) == 0
    assert capsys.readouterr().out == "redis://localhost:6379\n"


def test_ring_owner_refuses_an_invalid_page_id(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ring", "owner", "blog/../admin"]) == 2
    assert "page id must not hold '.' or '..' segments" in capsys.readouterr().err


def test_ring_stats_counts_every_sampled_page(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_NODES", ",".join(NODES))
    assert main(["ring", "stats", "--listed", "--sample", "3000"]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = ConsistentHashRing(NODES, 100).distribution(f"page-{i}" for i in range(3000))
    counts = {line.split()[0]: int(line.split()[1]) for line in lines[1:-1]}
    assert counts == expected
    imbalance = max(expected.values()) / (3000 / 3)
    assert lines[-1] == f"imbalance (max/mean): {imbalance:.3f}"


def test_journal_quarantine_lists_damaged_files_and_clears_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    journal_dir = tmp_path / "data" / "journal"
    journal_dir.mkdir(parents=True)
    assert main(["journal", "quarantine"]) == 0
    assert capsys.readouterr().out == f"0 damaged files in {journal_dir / 'quarantine'}\n"
    (journal_dir / "dead.jsonl").write_bytes(b"\x00\n")
    line = DamagedLine(offset=0, length=2, torn=False, what="unrecognisable")
    damage = FileDamage("dead.jsonl", "journal", 2, (line,))
    moved = [(journal_dir / "dead.jsonl", damage)]
    incident = quarantine(journal_dir, "dead", "heir", moved, (0, 0))

    assert main(["journal", "quarantine"]) == 1, "exit status 1 while anything is quarantined"
    listed = capsys.readouterr().out.splitlines()
    assert f"[{incident.name}]" in listed[0]
    assert "1 lines, 2 bytes unreadable" in listed[0]
    assert listed[0].endswith(f"  {incident / 'dead.jsonl'}")
    assert listed[1] == f"1 damaged files in {journal_dir / 'quarantine'}"

    assert main(["journal", "quarantine", "--clear", "nonsense"]) == 2
    assert "no quarantine incident named 'nonsense'" in capsys.readouterr().err
    assert main(["journal", "quarantine", "--clear", incident.name]) == 0
    assert not incident.exists()
    assert main(["journal", "quarantine"]) == 0


def test_bad_settings_are_reported_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VIRTUAL_NODES", "many")
    assert main(["ring", "owner", "--listed", "page1"]) == 2
    assert capsys.readouterr().err.startswith("visit-counter: invalid configuration: VIRTUAL_NODES")


@pytest.mark.parametrize(
    "arguments",
    [["--requests", "0"], ["--pages", "0"], ["--concurrency", "1001"], ["--timeout", "0"]],
)
def test_load_bounds_its_arguments(arguments: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["load", *arguments])
    assert exited.value.code == 2


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8000", "http://localhost:8000/", "https://[::1]:8443", "http://127.8.9.1"],
)
def test_loopback_urls_are_accepted(url: str) -> None:
    assert loopback_base_url(url) == url.rstrip("/")


@pytest.mark.parametrize(
    "url",
    [
        "http://192.0.2.1:8000",
        "http://10.0.0.1",
        "http://[2001:db8::1]/",
        "ftp://127.0.0.1",
        "127.0.0.1:8000",
    ],
)
def test_other_hosts_are_refused(url: str) -> None:
    with pytest.raises(NotLoopbackError):
        loopback_base_url(url)


def test_load_refuses_a_remote_url_before_sending_anything(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["load", "--url", "http://192.0.2.1:8000", "--requests", "1"]) == 2
    assert "not a loopback address" in capsys.readouterr().err
