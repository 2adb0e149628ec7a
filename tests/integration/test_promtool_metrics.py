"""`promtool check metrics` finds nothing to fix in a real app's /metrics (issue 14).

promtool lints what Prometheus would scrape: names (no type word such as "counter" in
them, `_total` on counters, base units), help texts. Both expositions the service can
give are checked, after visits, reads and a 404, with every metric family present:
single-process mode (this process imported prometheus_client first, as in the other
in-process tests) and multiprocess mode, as under uvicorn workers (a child process, see
test_prometheus_in_process.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import SettingsFactory, node_urls
from tests.support.child import run_python
from tests.support.promtool import find_promtool, run_promtool
from visit_counter.core.embedded_nodes import RedisNodeProcess
from visit_counter.main import create_app

pytestmark = pytest.mark.integration

API = "/api/v1/counter"
CHILD = """
import json, sys, time, warnings
warnings.simplefilter("error")
warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
from fastapi.testclient import TestClient
from visit_counter.core.config import Settings
from visit_counter.main import create_app

nodes, root = sys.argv[1], sys.argv[2]
settings = Settings(
    _env_file=None,
    redis_nodes=nodes,
    data_dir=f"{root}/data",
    prometheus_dir=f"{root}/prometheus",
    batch_interval_seconds=0.1,
    sinks="log",  # so the sink families have samples too
)
with TestClient(create_app(settings)) as client:
    for page in ("a", "b", "c"):
        client.post(f"/api/v1/counter/visit/{page}")
    client.get("/api/v1/counter/visits/a")
    client.get("/nope")
    runtime = client.app_state["runtime"]
    deadline = time.monotonic() + 5
    while runtime.counter.stats.visits_stored < 3:  # every batch family has a sample
        assert time.monotonic() < deadline, "3 visits not stored in 5 s"
        time.sleep(0.05)
    prometheus, text = runtime.prometheus, client.get("/metrics").text
    families = sorted(metric.name for metric in prometheus.registry.collect())
    print(json.dumps({"multiprocess": prometheus.multiprocess, "families": families, "text": text}))
"""


@pytest.fixture
def promtool() -> str:
    return find_promtool()


def check_metrics(promtool: str, text: str, families: set[str]) -> None:
    """Every family is in `text`, and promtool has nothing to say about it."""
    shown = {family.name for family in text_string_to_metric_families(text)}
    assert families, "no metric families registered"
    assert families <= shown, f"families missing from /metrics: {sorted(families - shown)}"
    done = run_promtool(promtool, "check", "metrics", stdin=text)
    assert (done.returncode, done.stdout + done.stderr) == (0, ""), done.stdout + done.stderr


def test_promtool_accepts_the_metrics_of_an_app(
    promtool: str, redis_nodes: list[RedisNodeProcess], make_settings: SettingsFactory
) -> None:
    settings = make_settings(redis_nodes, batch_interval_seconds=0.1, sinks="log")
    with TestClient(create_app(settings)) as client:
        for page in ("a", "b", "c"):
            assert client.post(f"{API}/visit/{page}").status_code == 200
        client.get(f"{API}/visits/a")
        client.get("/nope")
        runtime = client.app_state["runtime"]
        deadline = time.monotonic() + 5
        while runtime.counter.stats.visits_stored < 3:  # every batch family has a sample
            assert time.monotonic() < deadline, "3 visits not stored in 5 s"
            time.sleep(0.05)
        prometheus, text = runtime.prometheus, client.get("/metrics").text
        assert not prometheus.multiprocess
        families = {metric.name for metric in prometheus.registry.collect()}
    check_metrics(promtool, text, families)


def test_promtool_accepts_the_metrics_of_multiprocess_workers(
    promtool: str, redis_nodes: list[RedisNodeProcess], tmp_path: Path
) -> None:
    done = run_python(CHILD, node_urls(redis_nodes), str(tmp_path), timeout=30)
    assert done.returncode == 0, done.stderr
    scrape = json.loads(done.stdout)
    assert scrape["multiprocess"]
    check_metrics(promtool, scrape["text"], set(scrape["families"]))
