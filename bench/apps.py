"""The service plus two comparison routes: `uvicorn --factory bench.apps:create_bench_app`.

Both extra routes live on the very app the service runs (same middleware, same
exception handlers, same server settings), so only what the route does differs:

- `POST /bench/bare/{page_id}` (scenario e): the visit route's response, no counting.
- `POST /bench/naive/{page_id}` (scenario f): awaits `INCR visits:<page_id>` on the
  page's owner node per request, the way most hand-written counters work.
"""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import FastAPI, Request

from visit_counter.api.deps import Runtime
from visit_counter.core.config import SettingsError, load_settings
from visit_counter.core.logging import configure_logging
from visit_counter.main import create_app
from visit_counter.schemas.counter import VisitRecorded
from visit_counter.services.batch import page_key

BARE_PATH = "/bench/bare/{page_id}"
NAIVE_PATH = "/bench/naive/{page_id}"


def _recorded(page_id: str) -> VisitRecorded:
    return VisitRecorded(
        message=f"Visit recorded for page {page_id}",
        page_id=page_id,
        timestamp=datetime.now(UTC),
    )


async def post_bare(page_id: str) -> VisitRecorded:
    """Benchmark ceiling: the visit response without counting anything."""
    return _recorded(page_id)


async def post_naive(page_id: str, request: Request) -> VisitRecorded:
    """Benchmark baseline: one awaited INCR on the page's owner node per request."""
    runtime: Runtime = request.state.runtime
    owner = runtime.counter.ring.owner(page_id)
    await runtime.manager.client(owner).incr(page_key(page_id))
    return _recorded(page_id)


def create_bench_app() -> FastAPI:
    """The service built from the environment, with the two comparison routes added."""
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise SystemExit(f"visit-counter bench: {exc}") from None
    configure_logging(settings.debug)
    app = create_app(settings)
    app.add_api_route(
        BARE_PATH, post_bare, methods=["POST"], response_model=VisitRecorded, tags=["bench"]
    )
    app.add_api_route(
        NAIVE_PATH, post_naive, methods=["POST"], response_model=VisitRecorded, tags=["bench"]
    )
    return app
