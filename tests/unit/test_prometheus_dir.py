"""DATA_DIR/prometheus: cleaned by the first worker to start, never under a live sibling."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.services.prometheus_dir import ENV_VAR, MultiprocessDirectory


@pytest.fixture
def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def sibling(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A live worker of the same service: another process holding the shared live lock."""
    lock = tmp_path / "prometheus" / ".live.lock"
    lock.parent.mkdir(parents=True)
    script = (
        "import fcntl, os, sys\n"
        f"fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT)\n"
        "fcntl.flock(fd, fcntl.LOCK_SH)\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "locked"
    yield process
    assert process.stdin is not None
    process.stdin.close()
    process.wait(5)
    process.stdout.close()


def touch(directory: Path, *names: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        (directory / name).write_bytes(b"")


def db_files(directory: Path) -> set[str]:
    return {path.name for path in directory.glob("*.db")}


def test_the_first_process_removes_every_earlier_file_even_for_a_reused_pid(
    tmp_path: Path, dead_pid: int
) -> None:
    directory = tmp_path / "prometheus"
    # An earlier run's worker had this very pid (containers reuse the same few).
    touch(directory, f"counter_{os.getpid()}.db", f"counter_{dead_pid}.db")
    touch(directory, f"gauge_livesum_{dead_pid}.db", "histogram_1.db")
    metrics_dir = MultiprocessDirectory(directory)
    metrics_dir.open()
    try:
        assert metrics_dir.wiped
        assert db_files(directory) == set()
        assert os.environ[ENV_VAR] == str(directory)
    finally:
        metrics_dir.close()


def test_with_a_live_sibling_only_dead_processes_live_gauges_go(
    tmp_path: Path, dead_pid: int, sibling: subprocess.Popen[str]
) -> None:
    directory = tmp_path / "prometheus"
    kept = {
        f"counter_{dead_pid}.db",  # a replaced worker's counts stay in the totals
        f"histogram_{dead_pid}.db",
        f"counter_{sibling.pid}.db",
        f"gauge_livesum_{sibling.pid}.db",
        f"gauge_livemin_{sibling.pid}.db",
    }
    touch(directory, *kept, f"gauge_livesum_{dead_pid}.db", f"gauge_livemin_{dead_pid}.db")
    metrics_dir = MultiprocessDirectory(directory)
    metrics_dir.open()
    try:
        assert not metrics_dir.wiped
        assert db_files(directory) == kept
    finally:
        metrics_dir.close()


def test_closing_drops_own_live_gauges_keeps_counters_and_restores_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_VAR, "/somewhere/else")
    directory = tmp_path / "prometheus"
    metrics_dir = MultiprocessDirectory(directory)
    metrics_dir.open()
    touch(directory, f"counter_{os.getpid()}.db", f"gauge_livesum_{os.getpid()}.db")
    metrics_dir.close()
    assert db_files(directory) == {f"counter_{os.getpid()}.db"}
    assert os.environ[ENV_VAR] == "/somewhere/else"


def test_the_next_start_after_everyone_stopped_cleans_again(tmp_path: Path) -> None:
    directory = tmp_path / "prometheus"
    first = MultiprocessDirectory(directory)
    first.open()
    touch(directory, f"counter_{os.getpid()}.db")
    first.close()
    second = MultiprocessDirectory(directory)
    second.open()
    try:
        assert second.wiped
        assert db_files(directory) == set()
    finally:
        second.close()


def test_scrub_removes_live_gauges_of_a_worker_that_died_without_closing(
    tmp_path: Path, dead_pid: int
) -> None:
    directory = tmp_path / "prometheus"
    metrics_dir = MultiprocessDirectory(directory)
    metrics_dir.open()
    try:
        touch(directory, f"gauge_livesum_{dead_pid}.db", f"counter_{dead_pid}.db")
        metrics_dir.scrub()
        assert db_files(directory) == {f"counter_{dead_pid}.db"}
    finally:
        metrics_dir.close()
