"""`GET /status` and the probes `/health/live`, `/health/ready`, outside the API prefix."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter

from visit_counter import __version__
from visit_counter.api.deps import AdminAccessDep, RuntimeDep
from visit_counter.cluster.manager import ClusterManager
from visit_counter.core.errors import NotReadyError
from visit_counter.core.redis_manager import RedisManager
from visit_counter.schemas.counter import (
    ClusterMemberStatus,
    ClusterStatus,
    CounterStatus,
    ErrorBody,
    HealthState,
    JournalDamage,
    Liveness,
    MetricsStatus,
    Readiness,
    RedisStatus,
    ServiceStatus,
    ServiceStatusSummary,
    TopologyStatus,
)

router = APIRouter(tags=["status"])


def overall_health(node_status: dict[str, bool]) -> HealthState:
    """healthy: every node up; degraded: some down; unhealthy: all down."""
    up = sum(node_status.values())
    if up == len(node_status):
        return "healthy"
    return "degraded" if up else "unhealthy"


@router.get("/status", response_model=ServiceStatus | ServiceStatusSummary)
async def get_status(
    runtime: RuntimeDep, admin: AdminAccessDep
) -> ServiceStatus | ServiceStatusSummary:
    """Service status: uptime, request count, node health, buffer sizes, journal damage.

    With ADMIN_TOKEN set, a request without `Authorization: Bearer <token>` gets
    the status word alone, so health probes need no token and learn nothing more.
    """
    node_status = runtime.manager.node_status()
    if not admin:
        return ServiceStatusSummary(status=overall_health(node_status))
    down = {
        name: health.last_error or "not checked yet"
        for name, health in runtime.manager.health().items()
        if not node_status[name]
    }
    prometheus = runtime.prometheus
    topology = runtime.counter.topology
    metrics_status = (
        None
        if prometheus is None
        else MetricsStatus(directory=str(prometheus.directory), error=prometheus.failure)
    )
    return ServiceStatus(
        status=overall_health(node_status),
        uptime=str(datetime.now(UTC) - runtime.started_at),
        total_requests=runtime.request_stats.total_requests,
        redis_status=RedisStatus(
            mode=runtime.settings.redis_mode,
            cluster=_cluster_status(runtime.manager),
            topology=TopologyStatus(
                version=topology.version,
                state=topology.state,
                members=list(topology.members),
                moving_from=None if topology.previous is None else list(topology.previous),
            ),
            nodes=len(node_status),
            healthy_nodes=sum(node_status.values()),
            node_status=node_status,
            down_nodes=down,
            config_warnings=runtime.manager.config_warnings(),
            replaced_nodes={
                name: replaced.reason
                for name, replaced in runtime.manager.identities.replaced.items()
            },
        ),
        counter_status=CounterStatus(
            cache_size=len(runtime.counter.cache),
            write_buffer_size=runtime.counter.write_buffer_size(),
        ),
        metrics_status=metrics_status,
        journal_damage=[
            JournalDamage(
                file=str(item.path.relative_to(runtime.settings.data_dir)),
                incident=item.incident,
                writer=item.writer,
                kind=item.kind,
                lines=item.lines,
                bytes=item.bytes,
                found_at=item.found_at,
            )
            for item in runtime.counter.journal_damage()
        ],
        version=__version__,
        debug_mode=runtime.settings.debug,
    )


def _cluster_status(manager: RedisManager) -> ClusterStatus | None:
    if not isinstance(manager, ClusterManager):
        return None
    return ClusterStatus(
        state=manager.state,
        min_replicas_ack=manager.min_replicas_ack,
        redirections=manager.redirections,
        members=[
            ClusterMemberStatus(
                address=member.address,
                role="replica" if member.role == "replica" else "primary",
                primary=member.primary,
                slots=member.slots,
                connected=member.connected,
                failing=member.failing,
            )
            for member in manager.members
        ],
    )


@router.get("/health/live", response_model=Liveness)
async def get_liveness() -> Liveness:
    """Liveness probe: the process answers (nothing else is checked)."""
    return Liveness()


@router.get(
    "/health/ready",
    response_model=Readiness,
    responses={503: {"model": ErrorBody, "description": "No visit could be kept now"}},
)
async def get_readiness(runtime: RuntimeDep) -> Readiness:
    """Readiness probe: 503 while no node is reachable and the journal cannot be written.

    Reads what the periodic health checks and the last journal write found; no I/O.
    """
    nodes_reachable = any(runtime.manager.node_status().values())
    journal_writable = runtime.counter.can_journal()
    if not nodes_reachable and not journal_writable:
        raise NotReadyError("no node is reachable and the journal cannot be written")
    return Readiness(nodes_reachable=nodes_reachable, journal_writable=journal_writable)
