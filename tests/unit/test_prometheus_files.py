"""Metric files allocated before they are mapped: a full filesystem is an OSError, not SIGBUS.

The risky parts run in child processes, so a SIGBUS kills the child and the
test reads its exit status. The full filesystem is a small tmpfs (root only).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.full_disk import mounted_tmpfs
from visit_counter.services.prometheus_files import INITIAL_SIZE, AllocatedMmapedDict

REPO_ROOT = Path(__file__).resolve().parents[2]
LONG = "x" * 200  # a key about the size of a labelled histogram bucket's


def allocated(path: Path) -> bool:
    """Every byte of the file has a block behind it (no hole)."""
    info = os.stat(path)
    return info.st_blocks * 512 >= info.st_size


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "disk", "512k") as path:
        yield path


def test_a_new_file_and_every_growth_are_allocated(tmp_path: Path) -> None:
    path = tmp_path / "counter_1.db"
    values = AllocatedMmapedDict(str(path))
    try:
        assert os.stat(path).st_size == INITIAL_SIZE
        assert allocated(path)
        for number in range(1000):  # about 240 KiB of entries: two doublings
            values.write_value(f"{LONG}-{number}", float(number), 0.0)
        assert os.stat(path).st_size == 4 * INITIAL_SIZE
        assert allocated(path)
        assert values.read_value(f"{LONG}-999") == (999.0, 0.0)
    finally:
        values.close()
    # What a scrape reads: every entry, the file's header and layout intact.
    entries = AllocatedMmapedDict.read_all_values_from_file(str(path))
    stored = {key: value for key, value, _, _ in entries}
    assert len(stored) == 1000
    assert stored[f"{LONG}-500"] == 500.0


GROW_ON_A_FULL_DISK = """
import errno, sys
from visit_counter.services.prometheus_files import AllocatedMmapedDict
from tests.support.full_disk import fill
from pathlib import Path

disk = Path(sys.argv[1])
values = AllocatedMmapedDict(str(disk / "counter_1.db"))
values.write_value("before", 1.0, 0.0)
fill(disk)
try:
    for number in range(1000):
        values.write_value("x" * 200 + str(number), 1.0, 0.0)
except OSError as exc:
    print("grow", errno.errorcode[exc.errno])
values.write_value("before", 2.0, 0.0)  # a value that exists: its block is there
print("before", values.read_value("before")[0])
try:
    AllocatedMmapedDict(str(disk / "histogram_1.db"))
except OSError as exc:
    print("create", errno.errorcode[exc.errno])
print("left behind", (disk / "histogram_1.db").exists())
"""


def test_on_a_full_filesystem_growing_or_creating_raises_and_the_process_lives(
    small_disk: Path,
) -> None:
    done = run(GROW_ON_A_FULL_DISK, str(small_disk))
    assert done.returncode == 0, (done.returncode, done.stderr)
    assert done.stdout.splitlines() == [
        "grow ENOSPC",
        "before 2.0",
        "create ENOSPC",
        "left behind False",  # a scrape cannot read an empty file
    ]


UNALLOCATED_ON_A_FULL_DISK = """
import sys
from prometheus_client.mmap_dict import MmapedDict
from tests.support.full_disk import fill
from pathlib import Path

disk = Path(sys.argv[1])
values = MmapedDict(str(disk / "counter_1.db"))
fill(disk)
for number in range(1000):
    values.write_value("x" * 200 + str(number), 1.0, 0.0)
print("survived")
"""


def test_what_this_guards_against_prometheus_clients_own_files_die_of_sigbus(
    small_disk: Path,
) -> None:
    """If this ever passes with "survived", prometheus_client allocates by itself now."""
    done = run(UNALLOCATED_ON_A_FULL_DISK, str(small_disk))
    assert done.returncode == -signal.SIGBUS, (done.returncode, done.stdout, done.stderr)


HOOKED = """
import os, sys
os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]
if sys.argv[2] == "allocate":
    from visit_counter.services.prometheus_files import allocate_pages
    assert allocate_pages()
from prometheus_client import CollectorRegistry, Counter
Counter("visits", "Visits.", registry=CollectorRegistry()).inc()
"""


@pytest.mark.parametrize(("mode", "expected"), [("allocate", True), ("plain", False)])
def test_allocate_pages_is_what_prometheus_client_opens_its_files_with(
    tmp_path: Path, mode: str, expected: bool
) -> None:
    done = run(HOOKED, str(tmp_path), mode)
    assert done.returncode == 0, done.stderr
    (path,) = tmp_path.glob("counter_*.db")
    assert allocated(path) is expected
