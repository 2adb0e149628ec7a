"""The benchmark harness runs end to end (issue 4). Wiring only: no timing is asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.scenarios import SCENARIOS

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_bench_smoke_run_writes_a_row_per_scenario_and_the_chart(tmp_path: Path) -> None:
    report = tmp_path / "benchmarks.md"
    completed = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--out", str(report)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = f"{completed.stdout}\n{completed.stderr}"
    assert completed.returncode == 0, output

    text = report.read_text()
    for scenario in SCENARIOS:
        assert f"| {scenario.label} |" in text, f"no row for {scenario.label}:\n{text}"
    assert "Flush of 10,000 distinct pages to the 3 nodes" in text
    assert "## Ratios" in text
    assert (tmp_path / "benchmarks.png").stat().st_size > 0
