"""Prometheus value files whose every page is allocated before it is mapped.

prometheus_client (0.26, `mmap_dict.py`) keeps each worker's values in files it
maps with mmap. `MmapedDict` creates a file with `truncate(64 KiB)` and, when a
new key does not fit, doubles it with `truncate` and maps it again. Both leave a
sparse file: no block stands behind a page until something is first stored in
it through the map, and if the filesystem has none to give at that moment (full,
over quota), a store to memory has no way to fail but a signal: the kernel kills
the process with SIGBUS. No log line, no shutdown flush, no journal (issue 9).

`AllocatedMmapedDict` allocates the file's blocks (`posix_fallocate`) before
prometheus_client maps it, and grows the file the same way (doubling) with an
allocation instead of a `truncate`, so a full
filesystem becomes an OSError (ENOSPC) raised where a value or series is created,
before the map is touched. `PrometheusMetrics` then turns metrics off for that
worker. Allocated blocks are never given back while the file lives, so storing
into a value that exists cannot fail. (Copy-on-write filesystems such as btrfs
and ZFS may need new blocks even then: keep PROMETHEUS_DIR off them.)

`allocate_pages()` makes prometheus_client build its files with this class, by
replacing the `MmapedDict` name its `values` module looks up when a worker opens
a file. prometheus-client is pinned; tests/unit/test_prometheus_files.py
fails if an upgrade moves the lookup or changes the growth rule.
"""

from __future__ import annotations

import logging
import mmap
import os

from prometheus_client import values
from prometheus_client.mmap_dict import MmapedDict

logger = logging.getLogger(__name__)

INITIAL_SIZE = 1 << 16  # what MmapedDict gives a new file; any size works (it maps st_size)


class AllocatedMmapedDict(MmapedDict):
    """An `MmapedDict` that never maps a page without a block behind it."""

    def __init__(self, filename: str, read_mode: bool = False) -> None:
        if not read_mode:
            _allocate_file(filename)
        super().__init__(filename, read_mode)  # type: ignore[no-untyped-call]  # untyped

    def _init_value(self, key: str) -> None:
        """Grow as `MmapedDict._init_value` would, allocating instead of truncating; then
        let it append the entry, which now fits."""
        encoded = key.encode("utf-8")
        # Its entry: a 4-byte length, the key padded to 8-byte alignment, value, timestamp.
        entry = 4 + len(encoded) + (8 - (len(encoded) + 4) % 8) + 16
        while self._used + entry > self._capacity:
            grown = self._capacity * 2
            os.posix_fallocate(self._f.fileno(), 0, grown)  # raises before anything is mapped
            self._m = mmap.mmap(self._f.fileno(), grown)
            self._capacity = grown
        super()._init_value(key)  # type: ignore[no-untyped-call]  # untyped


def _allocate_file(filename: str) -> None:
    """Allocate every block of `filename` (created if missing) up to its size, at least
    INITIAL_SIZE. A file created here is removed again if that fails: a scrape cannot
    read an empty one."""
    fd = os.open(filename, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        try:
            os.posix_fallocate(fd, 0, max(size, INITIAL_SIZE))
        except OSError:
            if size == 0:
                os.unlink(filename)
            raise
    finally:
        os.close(fd)


def allocate_pages() -> bool:
    """From now on, prometheus_client opens its files allocated; False where it cannot."""
    if not hasattr(os, "posix_fallocate"):  # macOS: nothing to allocate with
        logger.warning(
            "this platform has no posix_fallocate: a full filesystem under the Prometheus "
            "files can kill the process (SIGBUS); keep PROMETHEUS_DIR on a volume with room"
        )
        return False
    values.MmapedDict = AllocatedMmapedDict  # type: ignore[attr-defined]  # the name it calls
    return True
