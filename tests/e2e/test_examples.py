"""The examples run: a third-party app with the middleware and PostgresSink under uvicorn
with 2 workers (seed 000), and the page statistics site (seed 003).

The downloads app is its own project, with its own `app` package, served from its
directory with this checkout's `visit_counter` on the path. After SIGTERM, both the
standalone service's reads (on the same nodes) and PostgreSQL's `downloads` column
equal the downloads made.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.conftest import ServiceFactory, node_urls, service_env
from tests.support.postgres import PgSchema
from tests.support.service import REPO_ROOT, ServiceProcess
from visit_counter.core.embedded_nodes import RedisNodeProcess

pytestmark = pytest.mark.e2e

EXAMPLES = REPO_ROOT / "examples"


@pytest.fixture
def schema(postgres: PgSchema) -> PgSchema:
    postgres.execute(
        f"CREATE TABLE {postgres.table('asset_downloads')}"
        " (asset_id text PRIMARY KEY, downloads bigint NOT NULL DEFAULT 0)"
    )
    return postgres


def shown_downloads(app: ServiceProcess, asset: str) -> int:
    downloads: int = httpx.get(f"{app.url}/assets/{asset}", timeout=5).json()["downloads"]
    return downloads


def wait_for(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def test_downloads_in_two_workers_reach_the_nodes_and_postgres_exactly(
    redis_nodes: list[RedisNodeProcess],
    service_factory: ServiceFactory,
    schema: PgSchema,
    tmp_path: Path,
) -> None:
    env = service_env(redis_nodes, tmp_path / "data", postgres_dsn=schema.dsn)
    downloads = ServiceProcess(
        env,
        tmp_path / "downloads.log",
        workers=2,
        app_dir=EXAMPLES / "downloads",
        target="app.main:app",  # the example's own `app` package, not this repository's
        ready_path="/healthz",
    )
    downloads.start()
    made: Counter[str] = Counter()
    try:
        for n in range(60):
            asset = ("hg38", "mm10", "t7", "hg38")[n % 4]
            # A new connection each time, so the kernel hands them to both workers.
            answer = httpx.get(f"{downloads.url}/assets/{asset}/download", timeout=5)
            assert answer.status_code == 200
            made[asset] += 1
        assert httpx.get(f"{downloads.url}/assets/nope/download").status_code == 404
        # The app's own page reads the count in process: exact once both workers flushed.
        assert wait_for(lambda: shown_downloads(downloads, "t7") == made["t7"])
    finally:
        exit_code = downloads.terminate()
    assert exit_code == 0, downloads.log()
    assert "sink log: batch" in downloads.log()  # the catalog's other handler

    service = service_factory(redis_nodes)
    for asset, count in made.items():
        answer = httpx.get(f"{service.url}/api/v1/counter/visits/{asset}").json()
        assert answer["visits"] == count, asset
    assert schema.hits("asset_downloads", "asset_id", "downloads") == dict(made)
    assert made == {"hg38": 30, "mm10": 15, "t7": 15}


def test_the_page_statistics_site_counts_html_pages_and_shows_them(
    redis_nodes: list[RedisNodeProcess], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("REDIS_NODES", node_urls(redis_nodes))
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.syspath_prepend(str(EXAMPLES / "page_stats"))
    import pages  # the example's module, as `uvicorn pages:app` imports it

    with TestClient(pages.app) as client:
        for _ in range(3):
            assert client.get("/about").status_code == 200
        assert client.get("/").status_code == 200
        assert client.get("/api/ping").status_code == 200  # JSON: not a page
        assert client.get("/missing").status_code == 404
        about = client.get("/about").text
        home = client.get("/").text
    assert "viewed 3 times before" in about
    assert "viewed 1 times before" in home
