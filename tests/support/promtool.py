"""promtool, Prometheus' own checker: lints an exposition, checks and unit-tests alert rules.

Debian ships it in the `prometheus` package; `make test-tools` installs that with apt-get when
it can. Without it the tests that need it are skipped, saying so.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

MISSING = (
    "promtool is not on PATH: it comes with Debian's `prometheus` package, which "
    "`make test-tools` installs with apt-get when it can"
)


def find_promtool() -> str:
    """promtool's path; the calling test is skipped without it."""
    found = shutil.which("promtool")
    if found is None:
        pytest.skip(MISSING)
    return found


def run_promtool(
    promtool: str, *args: str, stdin: str | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`promtool args...`, its answer as text (the caller checks the exit code)."""
    return subprocess.run(
        [promtool, *args],
        input=stdin,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
