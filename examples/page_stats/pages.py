"""A small site with page statistics (seed 003), counted by visit-counter.

    REDIS_NODES=redis://127.0.0.1:6379 uvicorn pages:app --workers 4

Seed 003 counts every successful HTML page in a dict per worker and merges the
workers' files at start. Here the middleware counts successful HTML pages only
(`only_html=True`) under the page's slug, the Redis nodes add up every worker and
every restart, and each page shows how often it was viewed before, read in process
(this worker's visits not flushed yet included).
"""

from __future__ import annotations

from html import escape

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse
from starlette.types import Scope

from visit_counter import VisitCounterMiddleware

PAGES = {
    "": ("Home", "Welcome."),
    "about": ("About", "Who we are."),
    "blog/first-post": ("First post", "Hello, world."),
}

app = FastAPI(title="page statistics example")


@app.get("/api/ping")
async def ping() -> dict[str, str]:
    return {"pong": "json answers are not pages: never counted"}


@app.get("/{slug:path}", response_class=HTMLResponse)
async def page(slug: str, request: Request) -> str:
    if slug not in PAGES:
        raise HTTPException(404, "no such page")
    title, body = PAGES[slug]
    views = (await request.state.visit_counter.get_visits(slug or "/")).visits
    return (
        f"<!doctype html><title>{escape(title)}</title><h1>{escape(title)}</h1>"
        f"<p>{escape(body)}</p><footer>viewed {views} times before</footer>"
    )


def slug_of(scope: Scope) -> str:
    """The page's slug (`/` for the home page), as seed 003 keys its counts."""
    return str(scope["path_params"].get("slug") or "/")


app.add_middleware(VisitCounterMiddleware, only_html=True, page_of=slug_of)
