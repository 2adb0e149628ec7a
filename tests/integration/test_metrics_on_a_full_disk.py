"""Metrics files that can no longer grow (full filesystem): metrics off in that worker, all else on.

Runs the app in a child process in multiprocess mode (as a uvicorn worker does),
with PROMETHEUS_DIR on a small tmpfs written full while the app runs. New series
then need a file to grow, and growing fails with ENOSPC, not SIGBUS.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import node_urls
from tests.support.full_disk import mounted_tmpfs
from tests.support.load import stored_counts
from visit_counter.core.embedded_nodes import RedisNodeProcess

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import os, sys, warnings
warnings.simplefilter("error")
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
from pathlib import Path
from fastapi.testclient import TestClient
from visit_counter.core.config import Settings
from visit_counter.main import create_app
from tests.support.full_disk import fill

nodes, disk, data = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
settings = Settings(
    _env_file=None, redis_nodes=nodes, data_dir=data, prometheus_dir=disk, batch_interval_seconds=60
)
with TestClient(create_app(settings)) as client:
    print("before", client.get("/metrics").status_code)
    fill(disk)
    metrics = client.app_state["runtime"].prometheus
    for number in range(100):  # 100 new series: the histogram file must grow
        metrics.observe_request("GET", f"/route-{number}", 200, 0.001)
    scrape = client.get("/metrics")
    print("after", scrape.status_code, scrape.json()["error"])
    print("visit", client.post("/api/v1/counter/visit/page").status_code)
    print("status", client.get("/status").json()["metrics_status"]["error"])
    print("own live gauges", sorted(p.name for p in disk.glob(f"gauge_live*_{os.getpid()}.db")))
    from prometheus_client.multiprocess import MultiProcessCollector
    merged = MultiProcessCollector.merge([str(path) for path in disk.glob("*.db")])
    seen = [s.value for f in merged for s in f.samples if s.name.endswith("metrics_failures_total")]
    print("failures seen by other workers", seen)
"""


def test_a_worker_whose_metrics_cannot_grow_turns_them_off_and_goes_on_counting(
    redis_nodes: list[RedisNodeProcess], tmp_path: Path
) -> None:
    with mounted_tmpfs(tmp_path / "metrics", "1m") as disk:
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT, node_urls(redis_nodes), str(disk), str(tmp_path / "d")],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 0, (done.returncode, done.stderr)
    lines = done.stdout.splitlines()
    assert lines[:3] == ["before 200", "after 503 metrics_unavailable", "visit 200"]
    assert lines[3].startswith(f"status cannot write the metrics files in {disk}: ")
    assert "No space left on device" in lines[3]
    assert lines[4:] == ["own live gauges []", "failures seen by other workers [1.0]"]
    assert "Prometheus metrics are off in this worker until it restarts" in done.stderr
    assert stored_counts(redis_nodes, ["page"]) == Counter({"page": 1})  # flushed at shutdown
