"""Run a snippet of Python in a child process of the repository's interpreter.

For faults that must not touch pytest's own process (e.g. RLIMIT_FSIZE standing in
for a disk that fills up mid-write).
"""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.service import REPO_ROOT


def run_python(code: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """`python -c code args...` from the repository root, with its packages importable."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
