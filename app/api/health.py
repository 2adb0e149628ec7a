"""`GET /status`: service and node health, outside the versioned API prefix."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter

from app import __version__
from app.api.deps import RuntimeDep
from app.schemas.counter import CounterStatus, HealthState, RedisStatus, ServiceStatus

router = APIRouter(tags=["status"])


def overall_health(node_status: dict[str, bool]) -> HealthState:
    """healthy: every node up; degraded: some down; unhealthy: all down."""
    up = sum(node_status.values())
    if up == len(node_status):
        return "healthy"
    return "degraded" if up else "unhealthy"


@router.get("/status", response_model=ServiceStatus)
async def get_status(runtime: RuntimeDep) -> ServiceStatus:
    """Service status: uptime, request count, node health and buffer sizes."""
    node_status = runtime.manager.node_status()
    down = {
        name: health.last_error or "not checked yet"
        for name, health in runtime.manager.health().items()
        if not node_status[name]
    }
    return ServiceStatus(
        status=overall_health(node_status),
        uptime=str(datetime.now(UTC) - runtime.started_at),
        total_requests=runtime.request_stats.total_requests,
        redis_status=RedisStatus(
            nodes=len(node_status),
            healthy_nodes=sum(node_status.values()),
            node_status=node_status,
            down_nodes=down,
        ),
        counter_status=CounterStatus(
            cache_size=len(runtime.counter.cache),
            write_buffer_size=runtime.counter.write_buffer_size(),
        ),
        version=__version__,
        debug_mode=runtime.settings.debug,
    )
