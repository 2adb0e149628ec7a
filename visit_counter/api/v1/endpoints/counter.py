"""HTTP layer of the counter: turns requests into service calls and results into JSON."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response

from visit_counter.admin.audit import PageChange
from visit_counter.api import visit_answers
from visit_counter.api.deps import CounterDep, RuntimeDep, limit_visits, page_id_of
from visit_counter.api.fast_visit import browser_user_agent, client_host
from visit_counter.api.health import overall_health
from visit_counter.core.idempotency import (
    HEADER,
    KEY_RULES,
    QUERY_PARAMETER,
    idempotency_key,
    key_schema,
)
from visit_counter.core.page_id import PAGE_ID_RULES, page_id_schema
from visit_counter.schemas.counter import (
    CounterMetrics,
    CounterMetricValues,
    CounterReset,
    ErrorBody,
    SinkStatus,
    VisitCount,
    VisitRecorded,
)

router = APIRouter(prefix="/counter", tags=["counter"])
reset_router = APIRouter(prefix="/counter", tags=["counter"])  # behind ADMIN_TOKEN when set
metrics_router = APIRouter(prefix="/counter", tags=["monitoring"])  # only when ENABLE_METRICS

# The rules are documented, not enforced by FastAPI: `normalize_page_id` enforces them, so
# a bad id gets the service's own 422 body rather than FastAPI's validation error.
PageId = Annotated[
    str,
    Path(
        description=f"The rest of the path: {PAGE_ID_RULES}. Percent-decoded, NFC-normalised, "
        "leading and (by default) trailing '/' dropped; the site root is `%2F` (id `/`). "
        "See the README, 'Page ids'.",
        examples=["home", "blog/2026/hello", "caf%C3%A9"],
        json_schema_extra=page_id_schema(),
    ),
]

_INVALID: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorBody, "description": "Invalid page id"},
}
_INVALID_VISIT: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorBody, "description": "Invalid page id or idempotency key"},
}
_KEY_DOC = (
    f"The visit's idempotency key: {KEY_RULES}. A visit repeated with the same key "
    "within IDEMPOTENCY_WINDOW_SECONDS (24 h) is answered 200 again and counted once."
)
_UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": ErrorBody, "description": "The visit or count cannot be served now"}
}
_RATE_LIMITED: dict[int | str, dict[str, Any]] = {
    429: {
        "model": ErrorBody,
        "description": "Too many visits from this client (only when RATE_LIMIT_PER_SECOND > 0); "
        "the visit is not counted",
        "headers": {
            "Retry-After": {
                "description": "Whole seconds until the client may send a visit again.",
                "schema": {"type": "integer", "minimum": 1},
                "required": True,
            }
        },
    }
}


@router.post(
    "/visit/{page_id:path}",
    response_model=VisitRecorded,
    response_model_exclude_none=True,
    responses=_INVALID_VISIT | _RATE_LIMITED | _UNAVAILABLE,
    dependencies=[Depends(limit_visits)],
)
async def record_visit(
    page_id: PageId,
    request: Request,
    runtime: RuntimeDep,
    return_: Annotated[
        Literal["count"] | None,
        Query(alias="return", description="`count`: answer the page's count too"),
    ] = None,
    key_header: Annotated[
        str | None, Header(alias=HEADER, description=_KEY_DOC, json_schema_extra=key_schema())
    ] = None,
    key_query: Annotated[
        str | None,
        Query(
            alias=QUERY_PARAMETER,
            description=f"The same as the {HEADER} header (it wins), for clients that "
            "cannot set headers (`navigator.sendBeacon`).",
            json_schema_extra=key_schema(),
        ),
    ] = None,
) -> Response:
    """Count one visit; stored on the page's node within one flush interval."""
    body = await visit_answers.record_visit(
        runtime,
        page_id_of(request, "visit"),
        browser_user_agent(request.scope),
        idempotency_key(key_header if key_header is not None else key_query),
        client_host(request.scope),
        return_count=return_ == "count",
    )
    return Response(body, media_type="application/json")


@router.get("/visits/{page_id:path}", response_model=VisitCount, responses=_INVALID | _UNAVAILABLE)
async def get_visits(page_id: PageId, request: Request, runtime: RuntimeDep) -> Response:
    """Read a page's count: stored plus this worker's pending visits."""
    body = await visit_answers.read_visits(runtime, page_id_of(request, "visits"))
    return Response(body, media_type="application/json")


@reset_router.delete(
    "/visits/{page_id:path}", response_model=CounterReset, responses=_INVALID | _UNAVAILABLE
)
async def reset_visits(page_id: PageId, request: Request, counter: CounterDep) -> CounterReset:
    """Reset a page's count to 0 on its node and in every worker."""
    page_id = page_id_of(request, "visits")
    await counter.reset(page_id, PageChange(action="reset", client=client_host(request.scope)))
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
            bots_rejected=stats.bots_rejected,
            visits_repeated=stats.visits_repeated,
            visits_stored=stats.visits_stored,
            batches_stored=stats.batches_stored,
            batches_failed=stats.batches_failed,
            batches_duplicate=stats.batches_duplicate,
            journal_batches=counter.journal_batches(),
            journal_damaged_records=counter.journal.damaged_records,
            journal_damaged_bytes=counter.journal.damaged_bytes,
        ),
        redis_nodes=node_status,
        last_batch_write=stats.last_batch_write,
        sinks=[SinkStatus(**asdict(queue)) for queue in counter.sinks.stats()],
    )
