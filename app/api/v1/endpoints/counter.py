"""HTTP layer of the counter: turns requests into service calls and results into JSON."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter

from app.api.deps import CounterDep, RuntimeDep
from app.api.health import overall_health
from app.core.page_id import validate_page_id
from app.schemas.counter import (
    CounterMetrics,
    CounterMetricValues,
    CounterReset,
    ErrorBody,
    VisitCount,
    VisitRecorded,
)

router = APIRouter(prefix="/counter", tags=["counter"])
metrics_router = APIRouter(prefix="/counter", tags=["monitoring"])  # only when ENABLE_METRICS

_INVALID: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorBody, "description": "Invalid page id"}
}
_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorBody, "description": "The visit or count cannot be served now"}
}


@router.post("/visit/{page_id}", response_model=VisitRecorded, responses=_INVALID | _UNAVAILABLE)
async def record_visit(page_id: str, counter: CounterDep) -> VisitRecorded:
    """Count one visit; stored on the page's node within one flush interval."""
    counter.record_visit(validate_page_id(page_id))
    return VisitRecorded(
        message=f"Visit recorded for page {page_id}",
        page_id=page_id,
        timestamp=datetime.now(UTC),
    )


@router.get("/visits/{page_id}", response_model=VisitCount, responses=_INVALID | _UNAVAILABLE)
async def get_visits(page_id: str, counter: CounterDep) -> VisitCount:
    """Read a page's count: stored plus this worker's pending visits."""
    count = await counter.get_visits(validate_page_id(page_id))
    return VisitCount(visits=count.visits, served_via=count.served_via, stale=count.stale)


@router.delete("/visits/{page_id}", response_model=CounterReset, responses=_INVALID | _UNAVAILABLE)
async def reset_visits(page_id: str, counter: CounterDep) -> CounterReset:
    """Reset a page's count to 0 on its node and in every worker."""
    await counter.reset(validate_page_id(page_id))
    return CounterReset(message=f"Counter reset for page {page_id}", page_id=page_id)


@metrics_router.get("/metrics", response_model=CounterMetrics)
async def get_metrics(runtime: RuntimeDep) -> CounterMetrics:
    """Counter metrics: cache, buffer, batches, journal and node health."""
    counter, node_status = runtime.counter, runtime.manager.node_status()
    stats = counter.stats
    return CounterMetrics(
        status=overall_health(node_status),
        metrics=CounterMetricValues(
            cache_hits=counter.cache.hits,
            cache_misses=counter.cache.misses,
            cache_size=len(counter.cache),
            write_buffer_size=counter.write_buffer_size(),
            pending_visits=counter.pending_visits(),
            visits_accepted=stats.visits_accepted,
            visits_stored=stats.visits_stored,
            batches_stored=stats.batches_stored,
            batches_failed=stats.batches_failed,
            batches_duplicate=stats.batches_duplicate,
            journal_batches=counter.journal_batches(),
        ),
        redis_nodes=node_status,
        last_batch_write=stats.last_batch_write,
    )
