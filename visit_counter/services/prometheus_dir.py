"""Where prometheus_client keeps every worker's values, and how that place is cleaned.

With several uvicorn workers, each process writes its metric values to files of
its own in PROMETHEUS_MULTIPROC_DIR (`counter_<pid>.db`, `histogram_<pid>.db`,
`gauge_livesum_<pid>.db`, ...), and a scrape answered by any worker merges them
all, so `/metrics` is the service's total whichever worker answers.
prometheus_client chooses that mode when it is first imported and reads the
directory when it creates a value, so `open_prometheus` sets the variable and
only then imports the metrics module.

Where (`directory_for`). PROMETHEUS_DIR when set. Otherwise off the data volume,
on /dev/shm (a tmpfs: RAM, on Linux hosts and in containers), in
`visit-counter-<hash of the resolved DATA_DIR>`: every worker of one service
computes the same name, and two services on one host share it only if they share
DATA_DIR, that is the journal too, which makes them one deployment anyway (each
container has a /dev/shm of its own). Nothing there needs to outlive the
process: the first worker to start empties it. Without a writable /dev/shm:
DATA_DIR/prometheus. The files are memory maps, and a sparse page of one that
cannot get a block kills the process with SIGBUS, so they are allocated before
they are mapped (prometheus_files.py): a full DATA_DIR then costs nothing here,
and a full metrics filesystem only turns metrics off. /dev/shm is shared by
every user of the host, so a directory found there must be a real directory of
this user's, writable by no one else, or the metrics stay off (ERROR logged).

Cleaning at start. `uvicorn --workers N` runs the lifespan in every worker, at
about the same time, and restarts a worker that died; the Dockerfile starts
uvicorn directly, so there is no parent of ours to clean before spawning. So
the workers agree among themselves, with `flock` (as the journal does):

- every live worker holds a shared lock on `.live.lock` for its whole life;
- a starting worker, holding `.clean.lock` so starters go one at a time, tries
  an exclusive lock on `.live.lock`. If it gets it, no worker of this service is
  alive: every value file is from an earlier run and it removes them all
  (counters restart from zero, which Prometheus reads as a counter reset; only
  files named as prometheus_client names them go, as PROMETHEUS_DIR may be a
  directory an operator picked). If it does not, siblings are running: it
  removes only the live gauges of dead processes (`mark_process_dead`), so a
  replaced worker's counts stay in the totals and no sibling's file is touched.

Why not "delete the files whose pid is not alive": pids repeat, above all in
containers, where the workers of every run get the same few pids; an earlier
run's file for a pid that is alive again would survive and its values would be
added to the new run's. The kernel drops a dead process's lock however it
died, so the lock cannot go stale.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from visit_counter.core.config import Settings
    from visit_counter.core.redis_manager import RedisManager
    from visit_counter.services.prometheus_metrics import PrometheusMetrics
    from visit_counter.services.visit_counter import VisitCounter

logger = logging.getLogger(__name__)

ENV_VAR = "PROMETHEUS_MULTIPROC_DIR"
_LIVE_LOCK = ".live.lock"
_CLEAN_LOCK = ".clean.lock"
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live[a-z]+_(?P<pid>\d+)\.db$")
_VALUE_FILE = re.compile(r"^(counter|histogram|summary|gauge_[a-z]+)_\d+\.db$")
SHARED_MEMORY = Path("/dev/shm")


def directory_for(settings: Settings, shared_memory: Path = SHARED_MEMORY) -> MultiprocessDirectory:
    """PROMETHEUS_DIR, else a directory on /dev/shm named after DATA_DIR, else
    DATA_DIR/prometheus (see the module docstring). Not opened yet."""
    if settings.prometheus_dir is not None:
        return MultiprocessDirectory(settings.prometheus_dir)
    if shared_memory.is_dir() and os.access(shared_memory, os.W_OK | os.X_OK):
        data_dir = str(settings.data_dir.resolve()).encode()
        name = f"visit-counter-{hashlib.sha256(data_dir).hexdigest()[:16]}"
        return MultiprocessDirectory(shared_memory / name, private=True)
    return MultiprocessDirectory(settings.data_dir / "prometheus")


class MultiprocessDirectory:
    """The metrics directory of one process: set as PROMETHEUS_MULTIPROC_DIR, cleaned, locked.

    `private`: the directory is in a place every user of the host can write (/dev/shm),
    so it must be a directory of this user's that no one else can write.
    """

    # Apps open in this process. Production runs one; tests run several in turn, each
    # with its own directory, and prometheus_client caches its open files per process.
    _open_in_process = 0
    _env_before: str | None = None  # PROMETHEUS_MULTIPROC_DIR before the first one opened

    def __init__(self, path: Path, *, private: bool = False) -> None:
        self.path = path
        self.private = private
        self.wiped = False  # whether this process found no live sibling and cleaned up
        self._live_fd: int | None = None

    def open(self) -> None:
        """Point prometheus_client here, then clean (see the module docstring) and lock.

        Raises OSError when the directory cannot be made, locked or trusted; the
        variable is then as it was.
        """
        first = not MultiprocessDirectory._open_in_process
        if first:
            MultiprocessDirectory._env_before = os.environ.get(ENV_VAR)
        else:
            logger.warning("another app in this process already writes Prometheus files")
        os.environ[ENV_VAR] = str(self.path)
        try:
            self._make()
            self._live_fd = self._clean_and_lock()
        except BaseException:
            if first:
                _restore(ENV_VAR, MultiprocessDirectory._env_before)
            raise
        MultiprocessDirectory._open_in_process += 1

    def _make(self) -> None:
        if not self.private:
            self.path.mkdir(parents=True, exist_ok=True)
            return
        with contextlib.suppress(FileExistsError):
            self.path.mkdir(mode=0o700)
        found = os.lstat(self.path)
        if (
            not stat.S_ISDIR(found.st_mode)
            or found.st_uid != os.geteuid()
            or found.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        ):
            raise PermissionError(
                f"{self.path} is not a directory of this user's alone (set PROMETHEUS_DIR)"
            )

    def _clean_and_lock(self) -> int:
        """Clean as the module docstring says; return the live lock's fd, held shared."""
        live = os.open(self.path / _LIVE_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            with _exclusive(self.path / _CLEAN_LOCK):
                try:
                    fcntl.flock(live, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    self.wiped = False
                    self._forget({os.getpid(), *self._dead_pids()})
                else:
                    self.wiped = True
                    for entry in os.scandir(self.path):
                        if _VALUE_FILE.match(entry.name):
                            Path(entry.path).unlink(missing_ok=True)
                # Not atomic, and need not be: `.clean.lock` keeps other starters out.
                fcntl.flock(live, fcntl.LOCK_SH)
        except BaseException:
            os.close(live)
            raise
        return live

    def scrub(self) -> None:
        """Drop the live gauges of processes that died without closing (at every scrape)."""
        self._forget(self._dead_pids())

    def forget_own_gauges(self) -> None:
        """Drop this process's live gauges, which it will no longer keep current."""
        self._forget({os.getpid()})

    def close(self) -> None:
        """This process stops being live: drop its live gauges, keep its counters, unlock."""
        if self._live_fd is None:
            return
        try:
            self._forget({os.getpid()})
        finally:
            os.close(self._live_fd)
            self._live_fd = None
            MultiprocessDirectory._open_in_process -= 1
            if not MultiprocessDirectory._open_in_process:
                self._release_process_state()

    def _release_process_state(self) -> None:
        """Close prometheus_client's cached files and restore the variable (tests, mostly)."""
        from prometheus_client import values

        # The class's own method: `values.close_all_multiprocess_files()` works only once
        # per process (it forgets its cleanups). Single-process mode has nothing to close.
        close_all_files = getattr(values.ValueClass, "close_all_files", None)
        if close_all_files is not None:
            close_all_files()
        _restore(ENV_VAR, MultiprocessDirectory._env_before)

    def _dead_pids(self) -> set[int]:
        pids = set()
        for entry in os.scandir(self.path):
            match = _LIVE_GAUGE_FILE.match(entry.name)
            if match and not _alive(int(match["pid"])):
                pids.add(int(match["pid"]))
        return pids

    def _forget(self, pids: set[int]) -> None:
        from prometheus_client.multiprocess import mark_process_dead

        for pid in pids:
            mark_process_dead(pid, str(self.path))  # type: ignore[no-untyped-call]  # untyped


def _restore(name: str, previous: str | None) -> None:
    if previous is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = previous


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path` (blocking: held only while a worker cleans)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def open_prometheus(
    settings: Settings, manager: RedisManager, counter: VisitCounter
) -> PrometheusMetrics:
    """Set up the directory, then import and build the metrics (in that order: see above).

    A directory that cannot be set up gives metrics that are off in this worker
    (`PrometheusMetrics.failure` says why), never a worker that cannot start.
    """
    directory = directory_for(settings)
    failure: OSError | None = None
    try:
        directory.open()
    except OSError as exc:
        failure = exc
    try:
        from visit_counter.services.prometheus_files import allocate_pages
        from visit_counter.services.prometheus_metrics import PrometheusMetrics

        allocate_pages()
        return PrometheusMetrics(settings, manager, counter, directory, failure=failure)
    except BaseException:
        directory.close()
        raise
