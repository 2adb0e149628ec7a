"""Files of dead processes: each process `flock`s its own file for its whole life, and the
kernel drops the lock however the process dies, so a file nobody holds is an orphan.

Used by the journal and by the sinks' queues to take over what a dead worker left.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def orphan_lock(path: Path) -> Iterator[bool]:
    """Hold `path`'s lock while the block runs; True if its writer is gone and the file is
    still the one at `path` (not already claimed and removed by another process)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        yield False  # another process claimed it first
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False  # its writer is alive
            return
        yield path.exists() and os.stat(path).st_ino == os.fstat(fd).st_ino
    finally:
        os.close(fd)
