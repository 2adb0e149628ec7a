"""VisitCounterMiddleware in a third-party FastAPI app, on real nodes (issue 14).

The host app's lifespan runs under `with TestClient(app)`; once it has shut down
(the engine's final flush done), the counts are read back by a separate engine on
the same nodes, as the standalone service would read them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse
from fastapi.testclient import TestClient
from starlette.routing import Mount, Route
from starlette.types import Scope

from tests.conftest import SettingsFactory, node_urls
from tests.support.cluster import LocalCluster
from tests.support.on_cluster import cluster_counts
from visit_counter import LogSink, VisitCounterMiddleware
from visit_counter.core.config import Settings, SettingsError
from visit_counter.core.embedded_nodes import RedisNodeProcess
from visit_counter.services.running import running_counter

pytestmark = pytest.mark.integration


def host_app(**middleware: Any) -> FastAPI:
    app = FastAPI()

    @app.get("/downloads/{asset_id}")
    async def download(asset_id: str) -> dict[str, str]:
        return {"asset": asset_id}

    @app.get("/about", response_class=HTMLResponse)
    async def about() -> str:
        return "<html><body>about</body></html>"

    @app.get("/broken")
    async def broken() -> None:
        raise HTTPException(404)

    @app.get("/visits/{page:path}")
    async def visits(page: str, request: Request) -> dict[str, int]:
        """In-process read: the engine the middleware runs, from the request's state."""
        counted = await request.state.visit_counter.get_visits(page)
        return {"visits": counted.visits}

    async def plain(request: Request) -> HTMLResponse:
        return HTMLResponse("<p>plain</p>")

    app.mount("/legacy", app=Mount("", routes=[Route("/pages/{name}", plain)]))
    app.add_middleware(VisitCounterMiddleware, **middleware)
    return app


async def stored(settings: Settings, pages: list[str]) -> dict[str, int]:
    async with running_counter(settings) as counter:
        return {page: (await counter.get_visits(page)).visits for page in pages}


PAGES = ["downloads/{asset_id}", "about", "broken", "legacy/pages/{name}", "asset:a1", "asset:b2"]


async def test_the_matched_route_template_is_counted_for_2xx_answers(
    redis_nodes: list[RedisNodeProcess], make_settings: SettingsFactory
) -> None:
    settings = make_settings(redis_nodes)
    with TestClient(host_app(settings=settings)) as client:
        for asset in ("a1", "b2", "a1"):
            assert client.get(f"/downloads/{asset}").status_code == 200
        assert client.get("/about").status_code == 200
        assert client.get("/broken").status_code == 404
        assert client.get("/nowhere").status_code == 404
        assert client.get("/legacy/pages/x").status_code == 200
    counts = await stored(settings, PAGES)
    assert counts == {
        "downloads/{asset_id}": 3,
        "about": 1,
        "broken": 0,
        "legacy/pages/{name}": 1,
        "asset:a1": 0,
        "asset:b2": 0,
    }


async def test_page_of_names_the_page_from_the_route_and_its_parameters(
    redis_nodes: list[RedisNodeProcess], make_settings: SettingsFactory
) -> None:
    def asset_of(scope: Scope) -> str | None:
        if getattr(scope.get("route"), "path", None) != "/downloads/{asset_id}":
            return None  # only downloads are counted
        return f"asset:{scope['path_params']['asset_id']}"

    settings = make_settings(redis_nodes)
    with TestClient(host_app(settings=settings, page_of=asset_of)) as client:
        for asset in ("a1", "b2", "a1"):
            client.get(f"/downloads/{asset}")
        client.get("/about")
    counts = await stored(settings, PAGES)
    assert counts["asset:a1"] == 2
    assert counts["asset:b2"] == 1
    assert counts["about"] == counts["downloads/{asset_id}"] == 0


async def test_only_html_counts_successful_html_pages(
    redis_nodes: list[RedisNodeProcess], make_settings: SettingsFactory
) -> None:
    settings = make_settings(redis_nodes)
    with TestClient(host_app(settings=settings, only_html=True)) as client:
        client.get("/downloads/a1")  # JSON
        client.get("/about")
        client.get("/about")
        client.get("/legacy/pages/x")
    counts = await stored(settings, PAGES)
    assert counts["about"] == 2
    assert counts["legacy/pages/{name}"] == 1
    assert counts["downloads/{asset_id}"] == 0


def test_counts_are_readable_in_process_before_any_flush(
    redis_nodes: list[RedisNodeProcess], tmp_path: Path
) -> None:
    app = host_app(
        redis_nodes=node_urls(redis_nodes),
        data_dir=tmp_path / "data",
        batch_interval_seconds=60,  # nothing reaches the nodes while the test reads
    )
    with TestClient(app) as client:
        client.get("/downloads/a1")
        client.get("/downloads/a2")
        assert client.get("/visits/downloads/{asset_id}").json() == {"visits": 2}


def test_keywords_are_setting_names_and_a_misspelt_one_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="did you mean batch_interval_seconds"):
        VisitCounterMiddleware(FastAPI(), redis_nodes="redis://127.0.0.1:1", batch_interval=0.5)
    with pytest.raises(SettingsError, match="BATCH_INTERVAL_SECONDS"):
        VisitCounterMiddleware(
            FastAPI(), redis_nodes="redis://127.0.0.1:1", batch_interval_seconds=-1
        )
    middleware = VisitCounterMiddleware(
        FastAPI(), redis_nodes="redis://127.0.0.1:1", batch_interval_seconds=0.5
    )
    assert middleware.settings.batch_interval_seconds == 0.5


def test_redis_nodes_are_required(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("REDIS_NODES", raising=False)
    monkeypatch.chdir(tmp_path)  # no .env here
    with pytest.raises(SettingsError, match="needs redis_nodes"):
        VisitCounterMiddleware(FastAPI(), batch_interval_seconds=1)


async def test_sinks_get_each_stored_batch(
    redis_nodes: list[RedisNodeProcess],
    make_settings: SettingsFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(redis_nodes)
    with (
        caplog.at_level(logging.INFO, logger="visit_counter.sinks.log"),
        TestClient(host_app(settings=settings, sinks=[LogSink()])) as client,
    ):
        for _ in range(4):
            client.get("/about")
    lines = [r.getMessage() for r in caplog.records if r.name == "visit_counter.sinks.log"]
    assert lines
    assert all(line.startswith("sink log: batch ") for line in lines)
    assert sum(int(line.split(", ")[-1].split()[0]) for line in lines) == 4


@pytest.mark.cluster
async def test_the_middleware_counts_on_a_redis_cluster_too(
    cluster: LocalCluster, make_settings: SettingsFactory
) -> None:
    settings = make_settings(cluster.nodes[:1], redis_mode="cluster")
    with TestClient(host_app(settings=settings)) as client:
        for asset in ("a1", "b2", "a1"):
            assert client.get(f"/downloads/{asset}").status_code == 200
        client.get("/about")
    assert cluster_counts(cluster, ["downloads/{asset_id}", "about"]) == {
        "downloads/{asset_id}": 3,
        "about": 1,
    }
