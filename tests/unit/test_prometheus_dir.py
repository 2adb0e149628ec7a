"""The metrics directory: where it is, cleaned by the first worker to start, never under a
live sibling, and trusted in /dev/shm only when it is this user's alone."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from visit_counter.core.config import Settings
from visit_counter.services.prometheus_dir import ENV_VAR, MultiprocessDirectory, directory_for


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


# -- where the files go ------------------------------------------------------------------------


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **{"prometheus_dir": None, **values})


def test_prometheus_dir_wins(tmp_path: Path) -> None:
    chosen = tmp_path / "metrics"
    directory = directory_for(settings(prometheus_dir=chosen), tmp_path)
    assert directory.path == chosen
    assert not directory.private  # the operator's choice, trusted as it is


def test_by_default_shared_memory_holds_a_directory_named_after_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shared_memory = tmp_path / "shm"
    shared_memory.mkdir()
    monkeypatch.chdir(tmp_path)
    relative = directory_for(settings(data_dir="data"), shared_memory)
    absolute = directory_for(settings(data_dir=tmp_path / "data"), shared_memory)
    other = directory_for(settings(data_dir=tmp_path / "other"), shared_memory)
    assert relative.path == absolute.path  # every worker of one service, however spelled
    assert absolute.path.parent == shared_memory
    assert absolute.path.name.startswith("visit-counter-")
    assert absolute.private  # every user of the host can write there
    assert other.path != absolute.path  # another service on the host: another directory


def test_without_shared_memory_the_files_go_under_the_data_dir(tmp_path: Path) -> None:
    directory = directory_for(settings(data_dir=tmp_path / "data"), tmp_path / "no-shm")
    assert directory.path == tmp_path / "data" / "prometheus"
    assert not directory.private


def test_a_directory_in_shared_memory_is_made_for_this_user_alone(tmp_path: Path) -> None:
    directory = tmp_path / "visit-counter-x"
    metrics_dir = MultiprocessDirectory(directory, private=True)
    metrics_dir.open()
    try:
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    finally:
        metrics_dir.close()


@pytest.mark.parametrize("planted", ["writable by others", "symlink"])
def test_a_directory_planted_in_shared_memory_is_refused_and_nothing_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, planted: str
) -> None:
    monkeypatch.setenv(ENV_VAR, "/somewhere/else")
    directory = tmp_path / "visit-counter-x"
    if planted == "symlink":
        (tmp_path / "elsewhere").mkdir()
        directory.symlink_to(tmp_path / "elsewhere")
    else:
        directory.mkdir()
        directory.chmod(0o777)
    touch(directory, "counter_1.db")
    with pytest.raises(PermissionError, match="not a directory of this user's alone"):
        MultiprocessDirectory(directory, private=True).open()
    assert os.environ[ENV_VAR] == "/somewhere/else"
    assert db_files(directory) == {"counter_1.db"}


def test_the_wipe_removes_only_files_named_as_prometheus_client_names_them(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "chosen-by-an-operator"
    touch(directory, "counter_7.db", "histogram_7.db", "gauge_livesum_7.db", "gauge_all_7.db")
    touch(directory, "inventory.db", "counter.db", "counter_7.db.bak")
    metrics_dir = MultiprocessDirectory(directory)
    metrics_dir.open()
    try:
        assert metrics_dir.wiped
        assert db_files(directory) == {"inventory.db", "counter.db"}
        assert (directory / "counter_7.db.bak").exists()
    finally:
        metrics_dir.close()
