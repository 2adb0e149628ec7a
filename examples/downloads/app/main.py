"""Download counts per asset (seed 000: a middleware that records matched routes and their
path parameters, and a catalog of handlers fed at each interval), with visit-counter.

    REDIS_NODES=redis://127.0.0.1:6379 POSTGRES_DSN="dbname=shop" uvicorn app.main:app

Every successful `GET /assets/{asset_id}/download` counts one download of that asset,
under the page named by the asset id. The counts live on the Redis nodes (exact across
any number of workers) and, with POSTGRES_DSN set, are mirrored into the `downloads`
column of `asset_downloads` by the PostgresSink: seed 000's handler catalog is the
`sinks` list. `GET /assets/{asset_id}` shows the asset with its download count.
"""

from __future__ import annotations

import logging
import os

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import PlainTextResponse
from starlette.types import Scope

from visit_counter import LogSink, PostgresSink, Sink, VisitCounterMiddleware

ASSETS = {"hg38": "human genome, GRCh38", "mm10": "mouse genome, GRCm38", "t7": "phage T7"}
DOWNLOAD_ROUTE = "/assets/{asset_id}/download"

# The library logs under `visit_counter` and configures nothing: show its INFO lines here
# (the LogSink's one line per stored batch among them).
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

app = FastAPI(title="assets")


@app.get(DOWNLOAD_ROUTE, response_class=PlainTextResponse)
async def download(asset_id: str) -> str:
    if asset_id not in ASSETS:
        raise HTTPException(404, f"no asset {asset_id}")
    return f">{asset_id}\nACGT\n"


@app.get("/assets/{asset_id}")
async def asset(asset_id: str, request: Request) -> dict[str, object]:
    if asset_id not in ASSETS:
        raise HTTPException(404, f"no asset {asset_id}")
    counted = await request.state.visit_counter.get_visits(asset_id)
    return {"asset": asset_id, "title": ASSETS[asset_id], "downloads": counted.visits}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def download_of(scope: Scope) -> str | None:
    """Only downloads count, one page per asset id (a 404 is never counted: not a 2xx)."""
    if getattr(scope.get("route"), "path", None) != DOWNLOAD_ROUTE:
        return None
    return str(scope["path_params"]["asset_id"])


def handlers() -> list[Sink]:
    """Seed 000's handler catalog: every sink gets each stored batch exactly once."""
    catalog: list[Sink] = [LogSink()]
    if dsn := os.environ.get("POSTGRES_DSN"):
        catalog.append(PostgresSink(dsn, "asset_downloads", "asset_id", "downloads"))
    return catalog


# Settings not given here (REDIS_NODES, DATA_DIR, ...) come from the environment.
app.add_middleware(
    VisitCounterMiddleware,
    batch_interval_seconds=0.5,
    page_of=download_of,
    sinks=handlers(),
)
