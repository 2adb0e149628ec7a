"""`GET /metrics`: Prometheus text exposition, included only when ENABLE_METRICS is true."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.responses import PlainTextResponse, Response

from visit_counter.api.deps import RuntimeDep
from visit_counter.schemas.counter import ErrorBody

router = APIRouter(tags=["monitoring"])


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        503: {
            "model": ErrorBody,
            "description": "Metrics are off in this worker: its files could not be allocated",
        },
    },
)
async def get_prometheus_metrics(runtime: RuntimeDep) -> Response:
    """Prometheus metrics of every worker, merged (text exposition format).

    503 `metrics_unavailable` from a worker whose metrics files could not be allocated
    (a full filesystem); the worker goes on counting visits.
    """
    # Async on purpose: `render` syncs from the engine's state, which lives on the event loop.
    prometheus = runtime.prometheus
    if prometheus is None:
        raise HTTPException(404, "metrics are off (ENABLE_METRICS=false)")
    return Response(prometheus.render(), media_type=prometheus.content_type)
