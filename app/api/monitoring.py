"""`GET /metrics`: Prometheus text exposition, included only when ENABLE_METRICS is true."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.responses import PlainTextResponse, Response

from app.api.deps import RuntimeDep

router = APIRouter(tags=["monitoring"])


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def get_prometheus_metrics(runtime: RuntimeDep) -> Response:
    """Prometheus metrics of every worker, merged (text exposition format)."""
    # Async on purpose: `render` syncs from the engine's state, which lives on the event loop.
    prometheus = runtime.prometheus
    if prometheus is None:
        raise HTTPException(404, "metrics are off (ENABLE_METRICS=false)")
    return Response(prometheus.render(), media_type=prometheus.content_type)
