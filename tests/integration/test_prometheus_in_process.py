"""Several apps, one after another, in one fresh process in multiprocess mode.

The test process itself imports prometheus_client while collecting (the
scrape parser), so its in-process apps run in single-process mode; the
multiprocess path runs here in a child process, as in a uvicorn worker:
the app sets PROMETHEUS_MULTIPROC_DIR before anything imports the library.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import node_urls
from visit_counter.core.embedded_nodes import RedisNodeProcess

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import sys, warnings
warnings.simplefilter("error")
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
from fastapi.testclient import TestClient
from visit_counter.core.config import Settings
from visit_counter.main import create_app

nodes, root = sys.argv[1], sys.argv[2]
for run in range(3):
    settings = Settings(
        _env_file=None,
        redis_nodes=nodes,
        data_dir=f"{root}/run-{run}",
        prometheus_dir=f"{root}/run-{run}/prometheus",
        batch_interval_seconds=60,
    )
    with TestClient(create_app(settings)) as client:
        for _ in range(run + 1):
            client.post("/api/v1/counter/visit/page")
        text = client.get("/metrics").text
    (line,) = [l for l in text.splitlines() if l.startswith("pagevisits_accepted_total")]
    print(run, float(line.split()[-1]))
from prometheus_client import values
print("multiprocess", values.ValueClass is not values.MutexValue)
"""


def test_each_app_counts_in_its_own_directory_and_closes_its_files(
    redis_nodes: list[RedisNodeProcess], tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, node_urls(redis_nodes), str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["0 1.0", "1 2.0", "2 3.0", "multiprocess True"]
    assert "ResourceWarning" not in done.stderr, done.stderr  # every mmapped file closed
    for run in range(3):
        assert list((tmp_path / f"run-{run}" / "prometheus").glob("counter_*.db"))
