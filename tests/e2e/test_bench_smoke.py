"""The benchmark harness runs end to end (issues 4, 10, 11). Wiring only: no timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.report_parts import marked
from bench.scenarios import SCENARIOS

REPO_ROOT = Path(__file__).resolve().parents[2]
# One scenario of each kind: hot page, spread pages, browsers (every analytics structure),
# an analytics read (seeded by n), each server (no cache, per-visit log, raw ASGI), batch
# ingest, a paused node, and the bare route the ratios compare with.
SMOKE_SCENARIOS = "abnpdgkihe"


def run_bench(*args: str) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, f"{completed.stdout}\n{completed.stderr}"


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_bench_smoke_run_writes_the_scenarios_the_chart_the_move_and_the_cluster(
    tmp_path: Path,
) -> None:
    report = tmp_path / "benchmarks.md"
    # Flushes every 0.25 s, not 1 s: each scenario that counts visits waits for its last
    # flush. And one scenario of each kind (`SMOKE_SCENARIOS`), not all of them: the suite
    # has a time budget, and the others differ only in their path and parameters.
    run_bench("--batch-interval", "0.25", "--scenarios", SMOKE_SCENARIOS, "--out", str(report))

    text = report.read_text()
    for scenario in SCENARIOS:
        if scenario.key in SMOKE_SCENARIOS:
            assert f"| {scenario.label} |" in text, f"no row for {scenario.label}:\n{text}"
    assert "Flush of 10,000 distinct pages to the 3 nodes" in text
    assert "## Ratios" in text
    assert (tmp_path / "benchmarks.png").stat().st_size > 0
    assert "## Moving 2,000 pages from 3 nodes to 4" in text
    assert text.count("**exact**") == 1, text
    assert text.index("## Moving") < text.index("## Redis Cluster") < text.index("## Machine")
    for goal in ("POST throughput, cluster / ring", "Redis commands per 1,000 visits on the "
                 "cluster", "10,000-page flush on the cluster"):  # fmt: skip
        assert f"| {goal}" in text, f"no goal row {goal!r}:\n{text}"
    numbers = json.loads((tmp_path / "benchmarks.json").read_text())
    runs = {run["scenario"]: run for run in numbers["measurements"]}
    # (n)'s requests reach the service as a browser's (Origin, a User-Agent per visitor):
    # its flushes write the HyperLogLogs of visitors, (b)'s do not.
    assert runs["n"]["commands"].get("pfadd", 0) > 0, runs["n"]
    assert "pfadd" not in runs["b"]["commands"], runs["b"]
    for key in "p":  # the analytics reads answer
        assert runs[key]["load"]["requests"] > 0, runs[key]
        assert runs[key]["load"]["status_errors"] == 0, runs[key]
    cluster = numbers["cluster"]
    assert [len(cluster["ring"]), len(cluster["cluster"])] == [1, 1]
    ring_run, cluster_run = cluster["ring"][0], cluster["cluster"][0]
    assert ring_run["scenario"] == cluster_run["scenario"] == "b"
    assert cluster_run["load"]["requests"] > 0
    # Counted on the cluster's primaries: its bucket scripts and the WAIT ending each
    # primary's part of a flush; the ring server sends no WAIT.
    assert cluster_run["commands"]["evalsha"] > 0
    assert cluster_run["commands"]["wait"] > 0
    assert "wait" not in ring_run["commands"]
    assert cluster["flush_ms"]["repeats"] == cluster["ring_flush_ms"]["repeats"] == 5


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_bench_move_section_alone_moves_every_count_exactly(tmp_path: Path) -> None:
    """`--only move`: a small paced move to a 4th node under POST load, the load generator
    beside the server (the full run above covers the other placement); every visit
    accounted for. Into an existing report, it replaces only the move's part."""
    report = tmp_path / "benchmarks.md"
    earlier = "# Benchmarks\n\nthe scenarios of an earlier run\n\n"
    kept = "\n".join(marked("cluster", ["an earlier cluster run"])) + "\n"
    report.write_text(f"{earlier}{kept}## Machine\n\nthe earlier machine\n")
    run_bench(
        "--only", "move", "--move-pages", "1000", "--move-placement", "beside-server",
        "--move-max-rate", "5000", "--out", str(report),
    )  # fmt: skip

    text = report.read_text()
    assert "## Moving 1,000 pages from 3 nodes to 4" in text
    # Only the move's part of the existing report is written: the rest is the earlier run's.
    assert text.startswith(earlier + "<!-- bench section: move -->"), text
    assert text.endswith(f"{kept}## Machine\n\nthe earlier machine\n"), text
    assert "## Ratios" not in text
    assert not (tmp_path / "benchmarks.png").exists()
    moves = json.loads((tmp_path / "benchmarks.json").read_text())["moves"]
    assert [move["placement"] for move in moves] == ["beside-server"]
    assert "| 5,000 pages/s |" in text
    for move in moves:
        assert move["pages"] == 1000
        assert 0 < move["pages_moved"] < 1000
        assert move["visits_moved"] > 0
        assert move["topology"].startswith("version 4, stable")
        assert len(move["nodes_after"]) == 4
        assert all(node["pages"] > 0 and node["misplaced"] == 0 for node in move["nodes_after"])
        assert move["pages_after"] == 1000
        assert move["accepted"] >= move["acknowledged"] > 0
        assert move["visits_after"] == move["visits"] + move["accepted"]
        assert move["exact"] is True
