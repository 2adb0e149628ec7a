"""`python -m app` in-process: help on every command, the ring commands, argument checks.

The commands that talk to nodes or a service run as real processes in
tests/e2e/test_cli_on_service.py.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from tests.support.serve_stub import run_serve
from visit_counter import __version__
from visit_counter.cli.commands import WORKER_APP, build_parser, main
from visit_counter.cli.load import NotLoopbackError, loopback_base_url
from visit_counter.core.config import Settings
from visit_counter.core.consistent_hash import ConsistentHashRing
from visit_counter.core.embedded_nodes import free_port
from visit_counter.core.http_limits import PROTOCOL_PATH
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


def test_version_names_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"visit-counter {__version__}\n"


def test_serve_help_shows_every_default(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    shown = " ".join(capsys.readouterr().out.split())  # argparse wraps the lines
    for default in ("127.0.0.1", "8000", "1", "off", "10.0"):
        assert f"(default: {default})" in shown, default


@pytest.mark.parametrize(
    ("web_concurrency", "argv", "workers"),
    [
        (None, [], 1),
        ("4", [], 4),
        ("4", ["--workers", "2"], 2),
        ("not-a-number", ["--workers", "3"], 3),
    ],
)
def test_serve_workers_default_to_web_concurrency(
    monkeypatch: pytest.MonkeyPatch, web_concurrency: str | None, argv: list[str], workers: int
) -> None:
    """As under plain uvicorn: `docker run -e WEB_CONCURRENCY=4` runs four workers."""
    if web_concurrency is None:
        monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    else:
        monkeypatch.setenv("WEB_CONCURRENCY", web_concurrency)
    assert build_parser().parse_args(["serve", *argv]).workers == workers


@pytest.mark.parametrize("web_concurrency", ["abc", "0", "-2"])
def test_a_bad_web_concurrency_is_refused_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], web_concurrency: str
) -> None:
    monkeypatch.setenv("WEB_CONCURRENCY", web_concurrency)
    with pytest.raises(SystemExit) as exited:
        main(["serve"])
    assert exited.value.code == 2
    assert "WEB_CONCURRENCY" in capsys.readouterr().err


def test_serve_runs_the_bounded_protocol_without_access_log(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_NODES", ",".join(NODES))
    monkeypatch.delenv("WEB_CONCURRENCY", raising=False)
    ran = run_serve(monkeypatch)
    assert ran["http"] == PROTOCOL_PATH, "plain httptools has no header limit"
    assert ran["access_log"] is False
    assert (ran["host"], ran["port"], ran["workers"]) == ("127.0.0.1", 8000, 1)
    assert (ran["target"], ran["factory"]) == (WORKER_APP, True)
    assert not ran["embedded_started"]


@pytest.fixture
def cli_log(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> pytest.LogCaptureFixture:
    """The service's records at INFO, even after a configure_logging stopped propagation."""
    monkeypatch.setattr(logging.getLogger("visit_counter"), "propagate", True)
    caplog.set_level(logging.INFO, logger="visit_counter")
    return caplog


def embedded_notices(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [
        (record.levelname, record.getMessage())
        for record in caplog.records
        if record.getMessage().startswith("REDIS_NODES is unset")
    ]


def test_serve_warns_when_it_runs_on_the_embedded_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cli_log: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "state"))
    assert run_serve(monkeypatch)["embedded_started"]
    ((level, message),) = embedded_notices(cli_log)
    assert level == "WARNING"
    assert "throwaway local nodes on 127.0.0.1:7070-7072" in message
    assert f"under {tmp_path / 'state' / 'nodes'};" in message
    assert message.endswith("set REDIS_NODES for production")


def test_serve_embedded_ok_says_it_at_info(
    monkeypatch: pytest.MonkeyPatch, cli_log: pytest.LogCaptureFixture
) -> None:
    """What `make run` passes: the embedded nodes are intended there."""
    assert run_serve(monkeypatch, "--embedded-ok")["embedded_started"]
    assert [level for level, _ in embedded_notices(cli_log)] == ["INFO"]
    assert "WARNING" not in {record.levelname for record in cli_log.records}


def test_serve_says_nothing_of_embedded_nodes_with_redis_nodes_set(
    monkeypatch: pytest.MonkeyPatch, cli_log: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("REDIS_NODES", ",".join(NODES))
    run_serve(monkeypatch)
    assert embedded_notices(cli_log) == []


def test_serve_warns_of_a_misspelt_setting_once(
    monkeypatch: pytest.MonkeyPatch, cli_log: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("REDIS_NODES", ",".join(NODES))
    monkeypatch.setenv("CACHE_TTL", "30")
    run_serve(monkeypatch)
    warned = [r.getMessage() for r in cli_log.records if r.levelname == "WARNING"]
    assert warned == ["CACHE_TTL: not a setting; did you mean CACHE_TTL_SECONDS?"]


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


def test_load_fails_fast_where_nothing_listens(capsys: pytest.CaptureFixture[str]) -> None:
    """One line and exit status 1 at once, not after the POSTs and the read-back timeout."""
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    assert main(["load", "--url", url, "--requests", "10", "--timeout", "30"]) == 1
    assert time.monotonic() - started < 10  # generous: it takes a fraction of a second
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1, err
    assert err.startswith(f"visit-counter load: nothing answers at {url} (")


def test_load_refuses_a_remote_url_before_sending_anything(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["load", "--url", "http://192.0.2.1:8000", "--requests", "1"]) == 2
    assert "not a loopback address" in capsys.readouterr().err
